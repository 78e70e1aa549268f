"""NEON kernels for the Cortex-A53 agree bit for bit with ``bs.reference`` under
``qemu-aarch64 -cpu cortex-a53`` (the emulator enforces the A53's instruction set; the harness
checks the AAPCS64 callee-saved registers and guards every buffer).

Bit-serial: a hypothesis sweep over shapes (m, n off the tile grid, K off 64/128), bit widths,
modes and every NEON knob, on random and all-maximal inputs; the byte-counter and 16-bit lane
bounds at their limits; the packing kernel's bytes, row sums and returned OR. int16 baseline:
random and extreme values (wrap-around modulo 2^32), every tile.
"""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bitsearch as bs
from bitsearch.asm.aarch64.neon_common import gnu_assemble
from bitsearch.asm.aarch64.neon_shortk import SHORT_K_MAX_CHUNKS, ShortKPlan, short_k_applies
from bitsearch.records import Buffer, Call, ErrorClass, Job
from bitsearch.space.int_schedule import IntSchedule
from bitsearch.space.schedule import (
    CNT_WINDOW,
    NEON_CHAINS,
    NEON_K_UNROLLS,
    NEON_REDUCTIONS,
    UADALP_MAX_BLOCKS,
    NeonSchedule,
)

TARGET = "aarch64-cortex-a53"
pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc")
         and shutil.which("aarch64-linux-gnu-as")),
    reason="needs qemu-aarch64, aarch64-linux-gnu-gcc and aarch64-linux-gnu-as",
)
MODES = ["and", "unipolar", "bipolar"]


def _runner():
    from bitsearch.runners.qemu import QemuRunner

    return QemuRunner()


def _random(wl: bs.Dense, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, wl.amax + 1, (wl.m, wl.k), dtype=np.uint8)
    w = rng.integers(0, wl.wmax + 1, (wl.n, wl.k), dtype=np.uint8)
    return x, w


def _maximal(wl: bs.Dense) -> tuple[np.ndarray, np.ndarray]:
    return (np.full((wl.m, wl.k), wl.amax, np.uint8), np.full((wl.n, wl.k), wl.wmax, np.uint8))


def _check(kern, wl, x, w) -> None:
    y = kern(x, w)
    np.testing.assert_array_equal(y, bs.reference(wl, x, w), err_msg=f"{wl} {kern.schedule}")


# ---------------------------------------------------------------------------------------------
# Bit-serial sweep
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 9), n=st.integers(1, 11),
    k=st.one_of(st.integers(1, 300), st.sampled_from([63, 64, 65, 127, 128, 129, 31 * 128 + 5])),
    abits=st.sampled_from([1, 1, 1, 2, 3, 8]), wbits=st.sampled_from([1, 1, 2, 3, 4]),
    mode=st.sampled_from(MODES),
    mr=st.integers(1, 5), nr=st.integers(1, 8), vector_bits=st.sampled_from([64, 128]),
    reduction=st.sampled_from(NEON_REDUCTIONS), k_unroll=st.sampled_from(NEON_K_UNROLLS),
    chains=st.sampled_from(NEON_CHAINS), short_k=st.booleans(), seed=st.integers(0, 2**32 - 1),
)
def test_dense_sweep(m, n, k, abits, wbits, mode, mr, nr, vector_bits, reduction, k_unroll, chains,
                     short_k, seed) -> None:
    wl = bs.Dense(m, n, k, abits=abits, wbits=wbits, mode=mode)
    s = NeonSchedule(mr=mr, nr=nr, vector_bits=vector_bits, reduction=reduction, k_unroll=k_unroll,
                     chains=chains, short_k=short_k)
    assume(s.register_problem(abits * wbits) is None)
    kern = bs.build(wl, s, target=TARGET)
    x, w = _random(wl, np.random.default_rng(seed))
    _check(kern, wl, x, w)
    _check(kern, wl, *_maximal(wl))


@pytest.mark.parametrize("reduction", NEON_REDUCTIONS)
@pytest.mark.parametrize("vector_bits", [64, 128])
def test_byte_counters_at_their_bound(reduction: str, vector_bits: int) -> None:
    # All ones over several full windows of 31 blocks: every byte counter reaches 31 * 8 = 248.
    k = vector_bits * (2 * CNT_WINDOW + 1) + 3
    wl = bs.Dense(3, 5, k, abits=2, wbits=2, mode="and")
    kern = bs.build(wl, NeonSchedule(mr=2, nr=4, vector_bits=vector_bits, reduction=reduction,
                                     k_unroll=4, chains=2), target=TARGET)
    _check(kern, wl, *_maximal(wl))


def test_uadalp_lanes_at_their_bound() -> None:
    k = UADALP_MAX_BLOCKS * 64
    wl = bs.Dense(1, 2, k, mode="and")
    s = NeonSchedule(mr=1, nr=2, vector_bits=64, reduction="uadalp", k_unroll=1, chains=2)
    _check(bs.build(wl, s, target=TARGET), wl, *_maximal(wl))
    with pytest.raises(ValueError, match="uadalp"):
        bs.build(bs.Dense(1, 2, k + 1), s, target=TARGET)


@pytest.mark.parametrize("mode", MODES)
def test_eight_bits_all_maximal(mode: str) -> None:
    wl = bs.Dense(2, 3, 1000, abits=8, wbits=8, mode=mode)
    kern = bs.build(wl, NeonSchedule(mr=1, nr=3, reduction="uaddlv"), target=TARGET)
    _check(kern, wl, *_maximal(wl))
    x, w = _random(wl, np.random.default_rng(1))
    _check(kern, wl, x, w)


def test_default_schedule_and_kernel_interface(tmp_path) -> None:
    wl = bs.Dense(6, 9, 200, abits=2, wbits=1, mode="unipolar")
    kern = bs.build(wl, target=TARGET)
    assert isinstance(kern.schedule, NeonSchedule) and kern.target == TARGET
    x, w = _random(wl, np.random.default_rng(2))
    wp = kern.pack_weights(w)
    out = np.full((wl.m, wl.n), 7, np.int32)
    assert kern(x, wp, out=out) is out
    np.testing.assert_array_equal(out, bs.reference(wl, x, w))
    bad = x.copy()
    bad[3, 5] = 4  # out of range for 2-bit activations
    with pytest.raises(ValueError, match="out of range"):
        kern(bad, wp)
    job = kern.job(x, w)
    assert job.arch == "aarch64"
    res = _runner().run(job, timing=False)
    assert res.error is ErrorClass.NONE, res.message
    np.testing.assert_array_equal(kern.output(res.outputs),
                                  bs.reference(wl, x, w))
    paths = kern.export(tmp_path, prefix="a53")
    elf = paths["o"].read_bytes()
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    assert "a53_gemm" in paths["h"].read_text()


def test_schedule_errors_name_the_problem() -> None:
    wl = bs.Dense(4, 4, 64)
    with pytest.raises(ValueError, match="NEON registers"):
        bs.build(wl, NeonSchedule(mr=5, nr=5), target=TARGET)
    with pytest.raises(ValueError, match="vector_bits"):
        bs.build(wl, NeonSchedule(vector_bits=256), target=TARGET)
    with pytest.raises(ValueError, match="NeonSchedule"):
        bs.build(wl, bs.Schedule(), target=TARGET)
    with pytest.raises(ValueError, match="targets"):
        NeonSchedule().check(wl, "x86_64-avx2")
    assert NeonSchedule.from_json(NeonSchedule(mr=3, chains=1).to_json()) == NeonSchedule(mr=3, chains=1)


@pytest.mark.parametrize("reduction", NEON_REDUCTIONS)
def test_project_encoder_matches_gnu_as(reduction: str) -> None:
    # build() encodes with bitsearch.asm.aarch64.assemble; GNU as is the oracle.
    for vector_bits in (64, 128):
        kern = bs.build(bs.Dense(5, 6, 900, abits=2, wbits=2, mode="unipolar"),
                        NeonSchedule(mr=2, nr=5, vector_bits=vector_bits, reduction=reduction,
                                     chains=2), target=TARGET)
        for code in tuple(kern.functions.values()):
            assert code.code == gnu_assemble(code.listing), (code.name, vector_bits)
    kern = bs.build(bs.IntDense(5, 6, 90), target=TARGET)
    for code in tuple(kern.functions.values()):
        assert code.code == gnu_assemble(code.listing), code.name


@pytest.mark.parametrize(("abits", "wbits", "mode"), [(1, 1, "and"), (2, 2, "bipolar"), (3, 1, "unipolar")])
def test_default_schedule_spills_column_sums(abits: int, wbits: int, mode: str) -> None:
    # The default 4x4 tile with 8 chains uses all 32 registers: its 32-bit sums live on the stack.
    wl = bs.Dense(9, 10, 128 * 60 + 17, abits=abits, wbits=wbits, mode=mode)
    kern = bs.build(wl, target=TARGET)
    assert "[sp, #176]" in kern.functions["gemm"].listing
    _check(kern, wl, *_maximal(wl))
    _check(kern, wl, *_random(wl, np.random.default_rng(abits)))


def test_space_suggests_valid_buildable_schedules() -> None:
    import optuna

    wl = bs.Dense(5, 6, 700, abits=2, wbits=1, mode="unipolar")
    space = bs.Space(wl, target=TARGET)
    assert space.default() == bs.build(wl, target=TARGET).schedule
    assert space.size().valid > 1000
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(3)
    for _ in range(4):
        trial = study.ask()
        s = space.suggest(trial)
        assert isinstance(s, NeonSchedule) and space.invalid_reason(s) is None
        _check(bs.build(wl, s, target=TARGET), wl, *_random(wl, rng))
        study.tell(trial, 1.0)
    ispace = bs.Space(bs.IntDense(4, 4, 64), target=TARGET)
    assert all(space_s.formulation == "dot" for space_s in ispace.enumerate())
    with pytest.raises(ValueError, match="int16 baseline only"):
        bs.Space(bs.IntDense(4, 4, 64, dtype="int8"), target=TARGET)


# ---------------------------------------------------------------------------------------------
# Short-K path: whole K in 8-bit counters, one straight-line scheduled block per tile.
def _k_loops(kern) -> list[str]:
    return [lc.label for lc in kern.functions["gemm"].loops if not lc.label.startswith(("row", "col"))]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 9), n=st.integers(1, 11),
    k=st.one_of(st.integers(1, 700), st.sampled_from([64, 576, 577, 640, 63 * 64])),
    abits=st.integers(1, 8), wbits=st.integers(1, 8), mode=st.sampled_from(MODES),
    mr=st.integers(1, 6), nr=st.integers(1, 8), vector_bits=st.sampled_from([64, 128]),
    seed=st.integers(0, 2**32 - 1),
)
def test_short_k_sweep(m, n, k, abits, wbits, mode, mr, nr, vector_bits, seed) -> None:
    wl = bs.Dense(m, n, k, abits=abits, wbits=wbits, mode=mode)
    s = NeonSchedule(mr=mr, nr=nr, vector_bits=vector_bits, k_unroll=1, chains=1)
    assume(s.register_problem() is None and short_k_applies(wl, s))
    kern = bs.build(wl, s, target=TARGET)
    assert _k_loops(kern) == []  # no K, window or plane loop: the whole K is straight-line
    _check(kern, wl, *_random(wl, np.random.default_rng(seed)))
    _check(kern, wl, *_maximal(wl))


@pytest.mark.parametrize(("k", "abits", "wbits", "vector_bits"), [
    (SHORT_K_MAX_CHUNKS * 128, 1, 1, 128),  # 31 chunks: every byte counter reaches 248
    (SHORT_K_MAX_CHUNKS * 128 - 64, 1, 1, 64),  # 30 Q chunks + a D tail
    (15 * 128, 2, 2, 128),  # 15 chunks: the weight-2 group of 2 pairs reaches 240
    (16 * 128, 2, 2, 128),  # 16 chunks: the two weight-2 pairs are split into two groups
    (5 * 128, 3, 3, 64),  # five weight groups
])
@pytest.mark.parametrize("mode", MODES)
def test_short_k_counters_at_their_bound(k: int, abits: int, wbits: int, vector_bits: int, mode: str) -> None:
    wl = bs.Dense(5, 6, k, abits=abits, wbits=wbits, mode=mode)
    s = NeonSchedule(mr=4, nr=4, vector_bits=vector_bits)
    assert short_k_applies(wl, s)
    kern = bs.build(wl, s, target=TARGET)
    assert _k_loops(kern) == []
    _check(kern, wl, *_maximal(wl))


def test_short_k_far_and_misaligned_addresses() -> None:
    # 64-bit blocks, odd block count: planes start 72 bytes apart, so Q loads beyond 255 bytes
    # go through a computed address; n = 101 puts row stores off 16-byte alignment and far away.
    wl = bs.Dense(6, 101, 576, abits=4, wbits=2, mode="unipolar")
    s = NeonSchedule(mr=4, nr=4, vector_bits=64)
    assert short_k_applies(wl, s)
    kern = bs.build(wl, s, target=TARGET)
    assert "movz" in kern.functions["gemm"].listing.split("col_")[1]  # the computed-address form is exercised
    _check(kern, wl, *_random(wl, np.random.default_rng(7)))
    _check(kern, wl, *_maximal(wl))


def test_pack_far_planes() -> None:
    # 8 planes of 10000 bytes: plane 7 lies beyond the STR immediate range (computed address).
    wl = bs.Dense(2, 2, 80000, abits=8, wbits=1, mode="unipolar")
    kern = bs.build(wl, NeonSchedule(mr=2, nr=2, vector_bits=128, k_unroll=8, chains=4), target=TARGET)
    assert "movz" in kern.functions["pack"].listing.split("pack_block")[1]
    _check(kern, wl, *_random(wl, np.random.default_rng(8)))


def test_short_k_selection() -> None:
    # One chunk past the byte-counter bound, or short_k=False: the windowed loop is used.
    s = NeonSchedule(mr=4, nr=4, vector_bits=128, k_unroll=2)
    wl = bs.Dense(4, 4, SHORT_K_MAX_CHUNKS * 128 + 1)
    assert not short_k_applies(wl, s)
    kern = bs.build(wl, s, target=TARGET)
    assert _k_loops(kern) != []
    _check(kern, wl, *_maximal(wl))
    wl = bs.Dense(4, 4, 576)
    assert short_k_applies(wl, s) and not short_k_applies(wl, dataclasses.replace(s, short_k=False))
    assert _k_loops(bs.build(wl, dataclasses.replace(s, short_k=False), target=TARGET)) != []
    plan = ShortKPlan.of(wl, dataclasses.replace(s, vector_bits=64))
    assert plan.chunks == ((0, True), (16, True), (32, True), (48, True), (64, False))  # no padding
    with pytest.raises(ValueError, match="short_k"):
        NeonSchedule(short_k=1).check(wl)


@pytest.mark.parametrize(("abits", "wbits", "mode"), [(1, 1, "and"), (2, 1, "unipolar"), (2, 2, "bipolar")])
def test_default_schedule_takes_the_short_k_path(abits: int, wbits: int, mode: str) -> None:
    # ResNet-18 C2 as a GEMM has K = 576: the default is the straight-line path (5x4 when the
    # registers allow it); a cut-down M and N off the tile grid keep the same K under qemu.
    wl = bs.Dense(11, 9, 576, abits=abits, wbits=wbits, mode=mode)
    kern = bs.build(wl, target=TARGET)
    assert kern.schedule.short_k and short_k_applies(wl, kern.schedule) and _k_loops(kern) == []
    assert (kern.schedule.mr, kern.schedule.nr) == ((5, 4) if abits * wbits == 1 else (4, 4))
    _check(kern, wl, *_random(wl, np.random.default_rng(abits + wbits)))
    _check(kern, wl, *_maximal(wl))


def test_loop_counts_match_the_listing() -> None:
    # Whole tiles and 2 whole windows of 31 blocks; a window's first block is peeled off the
    # loop (its CNT starts the byte counters), the other 30 are kloop steps.
    wl = bs.Dense(4, 8, 128 * 2 * CNT_WINDOW, abits=2, wbits=3)
    s = NeonSchedule(mr=2, nr=4, vector_bits=128, k_unroll=1)
    kern = bs.build(wl, s, target=TARGET)
    labels = set(re.findall(r"^(\w+):", kern.functions["gemm"].listing, re.M))
    assert {lc.label for lc in kern.functions["gemm"].loops} <= labels
    kloops = [lc for lc in kern.functions["gemm"].loops if lc.label.startswith("kloop")]
    tiles = (wl.m // s.mr) * (wl.n // s.nr)
    assert sum(lc.executions for lc in kloops) * s.k_unroll == tiles * 6 * 2 * (CNT_WINDOW - 1)
    assert "// LOOP:" in kern.listing


# ---------------------------------------------------------------------------------------------
# The packing kernel on its own: bytes, row sums and the returned OR (through a wrapper that
# calls it and stores w0).
WRAPPER = """
    stp x29, x30, [sp, #-32]!
    str x5, [sp, #16]
    bl .+20
    ldr x5, [sp, #16]
    str w0, [x5]
    ldp x29, x30, [sp], #32
    ret
"""


@pytest.mark.parametrize(("abits", "vector_bits", "mode"),
                         [(1, 128, "and"), (3, 64, "unipolar"), (8, 128, "unipolar"), (2, 128, "bipolar")])
def test_pack_kernel(abits: int, vector_bits: int, mode: str) -> None:
    wl = bs.Dense(5, 1, 300, abits=abits, mode=mode)
    kern = bs.build(wl, NeonSchedule(mr=2, nr=1, vector_bits=vector_bits), target=TARGET)
    rng = np.random.default_rng(abits)
    x = rng.integers(0, wl.amax + 1, (wl.m, wl.k), dtype=np.uint8)
    x[2, 7] = 255 if abits == 8 else 1 << abits  # out of range (except at 8 bits): shows in the OR
    code = gnu_assemble(WRAPPER) + kern.functions["pack"].code
    buffers = (Buffer.input(kern.prepare_x(x)), Buffer.out(wl.m * kern.operands.x_layout.row_bytes),
               Buffer.out(4 * wl.m), Buffer.out(4))
    job = Job(code=(code,), buffers=buffers, arch="aarch64", calls=(Call(0, (
        ("buf", 0), ("buf", 1), ("buf", 2), ("int", 1), ("int", wl.m), ("buf", 3))),))
    res = _runner().run(job, timing=False)
    assert res.error is ErrorClass.NONE, res.message
    seen = int.from_bytes(res.outputs[3], "little")
    assert seen == int(np.bitwise_or.reduce(x[1:], axis=None))
    packed = np.frombuffer(res.outputs[1], np.uint8).reshape(wl.m, -1)
    expect = kern.operands.x_layout.pack(x & wl.amax)
    np.testing.assert_array_equal(packed[1:], expect[1:])
    assert not packed[0].any()  # row 0 was outside [row_begin, row_end)
    rowsum = np.frombuffer(res.outputs[2], np.int32)
    if mode == "unipolar":
        np.testing.assert_array_equal(rowsum[1:], x[1:].astype(np.int64).sum(axis=1))


# ---------------------------------------------------------------------------------------------
# int16 baseline
def _int_inputs(wl: bs.IntDense, kind: str, rng: np.random.Generator):
    lo, hi = -(2**15), 2**15 - 1
    if kind == "random":
        return (rng.integers(lo, hi + 1, wl.x_shape).astype(np.int16),
                rng.integers(lo, hi + 1, wl.w_shape).astype(np.int16))
    vals = {"min": (lo, lo), "max": (hi, hi), "mixed": (lo, hi)}[kind]
    return np.full(wl.x_shape, vals[0], np.int16), np.full(wl.w_shape, vals[1], np.int16)


@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 9), k=st.sampled_from([1, 7, 8, 9, 16, 17, 64, 100, 333, 576]),
       mr=st.integers(1, 4), nr=st.integers(1, 6), k_unroll=st.sampled_from([1, 2, 4]),
       kind=st.sampled_from(["random", "min", "max", "mixed"]), seed=st.integers(0, 2**32 - 1))
def test_int16_sweep(m, n, k, mr, nr, k_unroll, kind, seed) -> None:
    wl = bs.IntDense(m, n, k, dtype="int16")
    s = IntSchedule(formulation="dot", mr=mr, nr=nr, k_unroll=k_unroll, loop_order="mn")
    assume(s.neon_registers() <= 32)
    kern = bs.build(wl, s, target=TARGET)
    x, w = _int_inputs(wl, kind, np.random.default_rng(seed))
    np.testing.assert_array_equal(kern(x, w), bs.reference(wl, x, w))


def test_int16_default_wraps_modulo_2_32() -> None:
    wl = bs.IntDense(5, 6, 1000, dtype="int16")
    kern = bs.build(wl, target=TARGET)
    x, w = _int_inputs(wl, "min", np.random.default_rng(0))  # 1000 * 2^30 wraps many times
    np.testing.assert_array_equal(kern(x, w), bs.reference(wl, x, w))
    with pytest.raises(ValueError, match="int16"):
        bs.build(bs.IntDense(2, 2, 8, dtype="int8"), target=TARGET)
    with pytest.raises(ValueError, match="dot"):
        bs.build(wl, IntSchedule(formulation="broadcast"), target=TARGET)


@pytest.mark.parametrize(("k", "mr"), [(576, 4), (12000, 4)])
def test_int16_row_addressing(k: int, mr: int) -> None:
    # k=576: one base pointer per operand (rows are immediate offsets); k=12000: rows 24000
    # bytes apart do not fit the immediate, one pointer per row.
    wl = bs.IntDense(mr + 1, 3, k, dtype="int16")
    kern = bs.build(wl, IntSchedule(formulation="dot", mr=mr, nr=2, k_unroll=8, loop_order="mn"),
                    target=TARGET)
    for kind in ("random", "min", "mixed"):
        rng = np.random.default_rng(k)
        if kind == "random":
            x = rng.integers(-(2**15), 2**15, wl.x_shape).astype(np.int16)
            w = rng.integers(-(2**15), 2**15, wl.w_shape).astype(np.int16)
        else:
            x = np.full(wl.x_shape, -(2**15), np.int16)
            w = np.full(wl.w_shape, -(2**15) if kind == "min" else 2**15 - 1, np.int16)
        np.testing.assert_array_equal(kern(x, w), bs.reference(wl, x, w))
