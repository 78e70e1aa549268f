"""Bit-serial conv2d and the int16 conv baseline on x86-64: real machine code, checked bit for bit
against the numpy reference (itself checked against a direct loop), in process and in the harness."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitsearch as bs
from bitsearch.measure import MeasureInput, build_candidate, measure, run_candidate
from bitsearch.records import ErrorClass
from bitsearch.runners import LocalRunner
from bitsearch.space.conv_schedule import ConvSchedule, IntConvSchedule
from bitsearch.targets import missing_features
from bitsearch.workloads import RESNET18_LAYERS, resnet18_layer

CSV = Path("/work/shared/reference/resnet18_layers.csv")
RNG = np.random.default_rng(7)


def direct_conv(cv: bs.Conv2d | bs.IntConv2d, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The definition, loop by loop (independent of the reference's im2col)."""
    xv, wv = x.astype(np.int64), w.astype(np.int64)
    if isinstance(cv, bs.Conv2d):
        if cv.mode != "and":
            wv = 2 * wv - cv.wmax
        if cv.mode == "bipolar":
            xv = 2 * xv - cv.amax
    pt, _, pl, _ = cv.pads
    sh, sw = cv.strides
    y = np.zeros(cv.y_shape, np.int64)
    for b, oy, ox in np.ndindex(cv.batch, cv.out_h, cv.out_w):
        for dy, dx in np.ndindex(cv.kh, cv.kw):
            iy, ix = oy * sh + dy - pt, ox * sw + dx - pl
            if 0 <= iy < cv.h and 0 <= ix < cv.w:
                y[b, oy, ox] += wv[:, dy, dx, :] @ xv[b, iy, ix, :]
    return ((y + 2**31) % 2**32 - 2**31).astype(np.int32)


def operands(cv: bs.Conv2d, kind: str = "random") -> tuple[np.ndarray, np.ndarray]:
    if kind == "max":
        return np.full(cv.x_shape, cv.amax, np.uint8), np.full(cv.w_shape, cv.wmax, np.uint8)
    if kind == "x0":  # bipolar: every padded tap would count -A without the border correction
        return np.zeros(cv.x_shape, np.uint8), np.full(cv.w_shape, cv.wmax, np.uint8)
    if kind == "w0":  # unipolar: -W weights against the x rowsum, which must skip padded taps
        return np.full(cv.x_shape, cv.amax, np.uint8), np.zeros(cv.w_shape, np.uint8)
    return (RNG.integers(0, cv.amax + 1, cv.x_shape, dtype=np.uint8),
            RNG.integers(0, cv.wmax + 1, cv.w_shape, dtype=np.uint8))


def check(kern, cv, kinds=("random", "max"), threads: int = 1) -> None:
    for kind in kinds:
        x, w = operands(cv, kind)
        want = bs.reference(cv, x, w)
        got = kern(x, kern.pack_weights(w), threads=threads)
        assert got.dtype == np.int32 and got.shape == cv.y_shape
        bad = np.argwhere(got != want)
        assert not len(bad), f"{cv} {kern.schedule} {kind}: {len(bad)} wrong, first {bad[0]}"


# -- workloads --------------------------------------------------------------------------------
def test_resnet18_table_matches_the_paper_csv() -> None:
    if not CSV.exists():
        pytest.skip(f"{CSV} not present")
    rows = [r for r in csv.reader(CSV.read_text().splitlines()) if r and not r[0].startswith("#")]
    header, rows = rows[0], rows[1:]
    assert [r[0] for r in rows] == list(RESNET18_LAYERS)
    for row in rows:
        rec = dict(zip(header, row, strict=True))
        cv = resnet18_layer(rec["layer"])
        assert (cv.h, cv.cin, cv.cout, cv.kh, cv.strides[0]) == (
            int(rec["in_hw"]), int(rec["c_in"]), int(rec["c_out"]), int(rec["k"]), int(rec["stride"]))
        assert (cv.out_h, cv.out_w) == (int(rec["out_hw"]),) * 2
        assert (cv.gemm_m, cv.gemm_n, cv.gemm_k, cv.macs) == tuple(
            int(rec[k]) for k in ("gemm_m", "gemm_n", "gemm_k", "macs"))


def test_same_padding_is_tensorflows() -> None:
    assert resnet18_layer("C4").pads == (0, 1, 0, 1)  # 3x3 stride 2 on 56: 0 before, 1 after
    assert resnet18_layer("C2").pads == (1, 1, 1, 1)
    assert bs.Conv2d(h=7, w=8, cin=1, cout=1, kernel=(3, 4), stride=2).pads == (1, 1, 1, 1)
    assert bs.Conv2d(h=5, w=5, cin=1, cout=1, kernel=1, stride=2, padding="SAME").pads == (0,) * 4
    cv = bs.Conv2d(h=5, w=6, cin=1, cout=1, kernel=3, padding=((0, 2), (1, 0)))
    assert cv.pads == (0, 2, 1, 0) and (cv.out_h, cv.out_w) == (5, 5)


@pytest.mark.parametrize("cv", [
    bs.Conv2d(h=6, w=5, cin=3, cout=4, kernel=3, stride=2, abits=2, wbits=2, mode="bipolar", batch=2),
    bs.Conv2d(h=5, w=7, cin=9, cout=3, kernel=(1, 3), padding=2, abits=3, wbits=1, mode="unipolar"),
    bs.Conv2d(h=4, w=4, cin=5, cout=2, kernel=3, padding="VALID", mode="and"),
    bs.IntConv2d(h=5, w=4, cin=6, cout=3, kernel=3, stride=(2, 1), padding=(1, 0, 0, 2)),
])
def test_reference_is_the_direct_convolution(cv) -> None:
    if isinstance(cv, bs.IntConv2d):
        x = RNG.integers(-2**15, 2**15, cv.x_shape).astype(np.int16)
        w = RNG.integers(-2**15, 2**15, cv.w_shape).astype(np.int16)
    else:
        x, w = operands(cv)
    assert np.array_equal(bs.reference(cv, x, w), direct_conv(cv, x, w))
    d = cv.to_dict()
    assert type(cv)(**{k: v for k, v in d.items() if k != "op"}) == cv


@pytest.mark.parametrize("kwargs, needle", [
    ({"h": 0}, "h must be"), ({"padding": "FULL"}, "padding"), ({"padding": -1}, "padding"),
    ({"kernel": (1, 2, 3)}, "kernel"), ({"stride": 0}, "stride"), ({"abits": 9}, "abits"),
    ({"mode": "xnor"}, "mode"), ({"h": 2, "padding": "VALID"}, "does not fit"),
    ({"cin": 2**20, "abits": 8, "wbits": 8}, "int32"),
])
def test_bad_workloads_name_the_problem(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        bs.Conv2d(**{"h": 8, "w": 8, "cin": 4, "cout": 4, **kwargs})


def test_unknown_layer_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"C2, C3.*C12"):
        resnet18_layer("C13")
    assert isinstance(resnet18_layer("C5", dtype="int16"), bs.IntConv2d)


# -- kernels ----------------------------------------------------------------------------------
SCHEDULE_CHOICES = st.sampled_from([
    ("im2col", "lut", True), ("im2col", "lut", False), ("im2col", "scalar", False),
    ("im2col", "csa", False), ("implicit", "lut", True), ("implicit", "lut", False),
    ("implicit", "scalar", False),
])


@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(3, 9), w=st.integers(3, 9), cin=st.sampled_from([1, 3, 8, 33, 65, 130]),
    cout=st.integers(1, 9), kernel=st.sampled_from([1, 3, (1, 3), (3, 2)]),
    stride=st.sampled_from([1, 2, (2, 1)]),
    padding=st.sampled_from(["SAME", "VALID", 1, (0, 2, 1, 0)]), batch=st.sampled_from([1, 2]),
    mode=st.sampled_from(bs.MODES), abits=st.sampled_from([1, 2, 3]), wbits=st.sampled_from([1, 2]),
    strategy=SCHEDULE_CHOICES, layout=st.sampled_from(["plane_major", "interleaved"]),
    mr=st.integers(1, 2), nr=st.integers(1, 3), k_unroll=st.sampled_from([1, 2]),
    loop_order=st.sampled_from(["mn", "nm"]), row_block=st.sampled_from([1, 2, 4]),
    threads=st.sampled_from([1, 2]),
)
def test_conv_kernels_are_exact(h, w, cin, cout, kernel, stride, padding, batch, mode, abits, wbits,
                                strategy, layout, mr, nr, k_unroll, loop_order, row_block,
                                threads) -> None:
    cv = bs.Conv2d(h=h, w=w, cin=cin, cout=cout, kernel=kernel, stride=stride, padding=padding,
                   abits=abits, wbits=wbits, mode=mode, batch=batch)
    lowering, popcount, split = strategy
    if popcount == "csa":  # 2*mr*nr + 5 ymm registers
        nr = min(nr, 5 // mr)
    s = ConvSchedule(lowering=lowering, popcount=popcount, nibble_split=split, layout=layout, mr=mr,
                     nr=nr, k_unroll=k_unroll, acc_bits=64 if popcount == "scalar" else 8,
                     loop_order=loop_order, row_block=row_block)
    kern = bs.build(cv, s)
    check(kern, cv, ("random", "max", "x0" if mode == "bipolar" else "w0"), threads=threads)


@pytest.mark.parametrize("lowering", ["im2col", "implicit"])
def test_eight_bits_and_wide_accumulators(lowering) -> None:
    cv = bs.Conv2d(h=5, w=6, cin=40, cout=5, kernel=3, stride=2, abits=8, wbits=3, mode="unipolar")
    for s in (ConvSchedule(lowering=lowering, mr=2, nr=2, acc_bits=32),
              ConvSchedule(lowering=lowering, mr=1, nr=3, popcount="scalar", acc_bits=64)):
        check(bs.build(cv, s), cv, ("random", "max", "w0"))


def test_default_schedule_on_a_resnet_shape_all_modes() -> None:
    # C7's geometry at a quarter of its size: 3x3 stride 2, asymmetric SAME padding, 128 channels
    for mode in bs.MODES:
        cv = bs.Conv2d(h=8, w=8, cin=128, cout=12, kernel=3, stride=2, abits=2, wbits=1, mode=mode)
        check(bs.build(cv), cv, ("random", "max", "x0", "w0"), threads=2)


def test_byte_counters_widen_across_taps() -> None:
    # implicit + lut + 8-bit counters: 9 taps x 4 blocks of 256 channels = 36 blocks > 31
    cv = bs.Conv2d(h=3, w=4, cin=1000, cout=3, kernel=3, abits=1, wbits=1, mode="bipolar")
    check(bs.build(cv, ConvSchedule(lowering="implicit", mr=2, nr=2)), cv, ("random", "max", "x0"))


@pytest.mark.skipif(bool(missing_features("x86_64-avx512")), reason="no AVX-512 VPOPCNTDQ here")
@pytest.mark.parametrize("lowering", ["im2col", "implicit"])
def test_avx512_vpopcnt(lowering) -> None:
    cv = bs.Conv2d(h=7, w=6, cin=70, cout=5, kernel=3, stride=(2, 1), abits=2, mode="bipolar", batch=2)
    kern = bs.build(cv, ConvSchedule(lowering=lowering, popcount="vpopcnt", mr=2, nr=3), "x86_64-avx512")
    check(kern, cv, ("random", "max", "x0"), threads=2)


def test_out_and_packed_weights_and_range_checks() -> None:
    cv = bs.Conv2d(h=5, w=5, cin=20, cout=3, kernel=3, abits=2)
    kern = bs.build(cv)
    x, w = operands(cv)
    out = np.empty(cv.y_shape, np.int32)
    assert kern(x, w, out=out) is out and np.array_equal(out, bs.reference(cv, x, w))
    with pytest.raises(ValueError, match="out of range"):
        kern(np.full(cv.x_shape, 4, np.uint8), w)
    with pytest.raises(ValueError, match="shape"):
        kern(x[:, :4], w)
    with pytest.raises(ValueError, match="dtype"):
        kern(x.astype(np.int16), w)
    with pytest.raises(ValueError, match="out must be"):
        kern(x, w, out=np.empty((1, 5, 5, 2), np.int32))
    other = bs.build(cv, ConvSchedule(lowering="implicit"))
    with pytest.raises(ValueError, match="packed weights"):
        kern(x, other.pack_weights(w))
    with pytest.raises(ValueError, match="threads"):
        kern(x, w, threads=0)


@pytest.mark.parametrize("schedule, target, needle", [
    (ConvSchedule(lowering="implicit", popcount="csa"), "x86_64-avx2", "csa"),
    (ConvSchedule(lowering="sideways"), "x86_64-avx2", "lowering"),
    (ConvSchedule(lowering="implicit", loop_order="nm", row_block=3), "x86_64-avx2", "row_block"),
    (ConvSchedule(mr=4, nr=4), "x86_64-avx2", "ymm"),
    (bs.Schedule(), "x86_64-avx2", "ConvSchedule"),
    (None, "aarch64-cortex-a53", "x86_64"),
])
def test_bad_schedules_name_the_problem(schedule, target, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        bs.build(bs.Conv2d(h=4, w=4, cin=8, cout=8), schedule, target)


# -- int16 baseline ---------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [None, IntConvSchedule(formulation="dot", mr=2, nr=3, k_unroll=1),
                                      IntConvSchedule(formulation="broadcast", mr=3, nr=1)])
def test_int16_conv_exact_at_its_extremes(schedule) -> None:
    cv = bs.IntConv2d(h=7, w=6, cin=21, cout=11, kernel=3, stride=2, batch=2)
    kern = bs.build(cv, schedule)
    lo, hi = -(2**15), 2**15 - 1
    cases = [(np.full(cv.x_shape, lo, np.int16), np.full(cv.w_shape, lo, np.int16)),  # wraps mod 2^32
             (np.full(cv.x_shape, lo, np.int16), np.full(cv.w_shape, hi, np.int16)),
             (RNG.integers(lo, hi + 1, cv.x_shape).astype(np.int16),
              RNG.integers(lo, hi + 1, cv.w_shape).astype(np.int16))]
    for x, w in cases:
        assert np.array_equal(kern(x, kern.pack_weights(w), threads=2), direct_conv(cv, x, w))
    with pytest.raises(ValueError, match="kc"):
        bs.build(cv, IntConvSchedule(kc=32))
    with pytest.raises(ValueError, match="int16"):
        bs.IntConv2d(h=4, w=4, cin=4, cout=4, dtype="int8")


# -- harness, search, storage -----------------------------------------------------------------
@pytest.mark.parametrize("cv, schedule", [
    (bs.Conv2d(h=6, w=7, cin=20, cout=6, kernel=3, stride=2, abits=2, mode="bipolar", batch=2),
     ConvSchedule(lowering="implicit", mr=3, nr=2)),
    (bs.Conv2d(h=6, w=7, cin=3, cout=5, kernel=3, abits=2, wbits=2, mode="unipolar"), None),
    (bs.IntConv2d(h=5, w=5, cin=17, cout=6, kernel=3), None),
])
def test_measure_in_the_native_harness(cv, schedule) -> None:
    res = measure(cv, schedule)
    assert res.error is ErrorClass.NONE, res.message
    assert res.stats.repeats >= 10 and res.to_dict()["workload"]["op"] in ("conv2d", "int_conv2d")


def test_measure_catches_a_missing_border_correction() -> None:
    cv = bs.Conv2d(h=6, w=6, cin=16, cout=4, kernel=3, mode="bipolar")
    built = build_candidate(MeasureInput(cv, ConvSchedule()))
    assert built.kernel is not None and "fix" in built.kernel.functions
    broken = built.kernel.replace_function("fix", code=b"\xc3")  # a fix that returns at once
    res = run_candidate(dataclasses.replace(built, kernel=broken), LocalRunner())
    assert res.error is ErrorClass.WRONG_ANSWER, res.message


def test_space_tune_and_load(tmp_path) -> None:
    cv = bs.Conv2d(h=6, w=6, cin=32, cout=8, kernel=3, stride=2, abits=1, wbits=2, mode="bipolar")
    space = bs.Space(cv, fixed={"popcount": "lut", "acc_bits": 8, "nibble_split": True})
    names = [k.name for k in space.knobs]
    assert names[0] == "lowering" and "mr" in names
    schedules = list(space.enumerate())
    assert {s.lowering for s in schedules} == {"im2col", "implicit"}
    assert {s.row_block for s in schedules if s.lowering == "im2col" or s.loop_order == "mn"} == {1}
    assert {s.row_block for s in schedules if s.lowering == "implicit"} == {1, 2, 4, 8}
    assert all(isinstance(s, ConvSchedule) for s in schedules)
    url = f"sqlite:///{tmp_path}/conv.db"
    res = bs.tune(cv, trials=3, storage=url, study_name="c", progress=False, seed=1)
    assert res.best_schedule is not None and isinstance(res.best_schedule, ConvSchedule)
    kern = bs.load("c", url)
    assert kern.workload == cv and kern.schedule == res.best_schedule
    check(kern, cv, ("random", "x0"))
    int_cv = bs.IntConv2d(h=5, w=5, cin=8, cout=8, kernel=3)
    res = bs.tune(int_cv, trials=2, storage=url, study_name="i", progress=False)
    assert isinstance(res.best_schedule, IntConvSchedule) and res.best_schedule.kc == 0
    assert bs.load("i", url).workload == int_cv


def test_export(tmp_path) -> None:
    kern = bs.build(bs.Conv2d(h=5, w=5, cin=8, cout=4, mode="bipolar"))
    paths = kern.export(tmp_path, prefix="cv")
    header = paths["h"].read_text()
    for name in ("cv_pack", "cv_gather", "cv_gemm", "cv_fix"):
        assert name + "(" in header
    assert paths["o"].stat().st_size > 0 and "bitsearch_conv_gemm" in kern.listing
