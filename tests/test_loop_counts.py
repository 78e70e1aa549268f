"""Loop execution counts (``MachineCode.loops``) of the x86-64 int16/int8 dense baselines and of every
convolution function (pack, gather, gemm, fix): complete for llvm-mca's regions, and exact.

The expected counts are derived here from the workload's geometry alone (trip counts of each loop
kind, multiplied through the nest), independently of the emitters' own bookkeeping; a loop is
identified by its kind, the label name without its number (``g_row_3`` -> ``g_row``).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter

import pytest

import bitsearch as bs
from bitsearch.cost.mca import McaModel, parse_listing, regions
from bitsearch.space import ConvSchedule, IntConvSchedule

TARGETS = ("x86_64-avx2", "x86_64-avx512")
needs_mca = pytest.mark.skipif(shutil.which("llvm-mca") is None, reason="needs llvm-mca (Debian: llvm)")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def codes(kern) -> dict[str, object]:
    return dict(kern.functions)


def declared(code) -> Counter:
    return Counter((lc.label.rsplit("_", 1)[0], lc.executions) for lc in code.loops)


def assert_covered(code) -> None:
    """Every backward branch of the listing heads a counted loop, and mca cuts it into regions."""
    insns, labels = parse_listing(code.listing, "x86_64")
    heads = {i.target for n, i in enumerate(insns) if i.target in labels and labels[i.target] <= n}
    assert heads == {lc.label for lc in code.loops}, code.name
    assert len(code.loops) == len(heads)
    regions(code.listing, code.loops, "x86_64")  # raises for a missing or inconsistent loop


# ---------------------------------------------------------------------------------------------
# Expected counts from the geometry


def int_dense_expected(wl: bs.IntDense, s: bs.IntSchedule) -> dict[str, Counter]:
    es = 2 if wl.dtype == "int16" else 1
    row_bytes = cdiv(wl.k * es, 32) * 32
    kcb = s.kc * es
    block = kcb if 0 < kcb < row_bytes else row_bytes
    nblocks = cdiv(row_bytes, block)
    last_bytes = row_bytes - (nblocks - 1) * block
    # pack: 32-byte chunks, 4 per iteration of the quad loop then singles
    pack: Counter = Counter()

    def copy(runs: int, chunks: int) -> None:
        pack[("p_quad", runs * (chunks // 4))] += 1
        pack[("p_single", runs * (chunks % 4))] += 1

    if nblocks == 1:
        copy(1, wl.m * row_bytes // 32)  # one copy of all rows
    else:
        pack[("p_row", wl.m)] += 1
        fixed = [(wl.m, block)] * (nblocks - 1) if nblocks <= 4 else [(wl.m * (nblocks - 1), block)]
        if nblocks > 4:
            pack[("p_block", wl.m * (nblocks - 1))] += 1
        for runs, nbytes in [*fixed, (wl.m, last_bytes)]:
            if nbytes // 32 > 8:  # short blocks are copied straight-line
                copy(runs, nbytes // 32)
    # gemm: per K block (the middle ones in a loop), a row x column tile nest, a K loop per tile
    step = 4 if s.formulation == "broadcast" else 32
    used = cdiv(wl.k * es, step) * step
    steps_first, steps_last = block // step, (used - (nblocks - 1) * block) // step
    blocks = [(1, steps_last)] if nblocks == 1 else (
        [(1, steps_first)] + ([(nblocks - 2, steps_first)] if nblocks > 2 else []) + [(1, steps_last)])
    unit = 8 * s.nr if s.formulation == "broadcast" else s.nr
    mt, me = divmod(wl.m, s.mr)
    nt, ne = divmod(wl.n, unit)
    gemm: Counter = Counter()
    if nblocks > 2:
        gemm[("g_kblock", nblocks - 2)] += 1
    row_tiles = [mt] + ([1] if me else [])  # per block: the full row tiles, then the edge tile
    col_tiles = ([nt] if nt else []) + ([1] if ne else [])
    for b, steps in blocks:
        if s.loop_order == "mn":
            gemm[("g_row", b * mt)] += 1
            for r in row_tiles:
                if nt:
                    gemm[("g_col", b * r * nt)] += 1
        else:
            if nt:
                gemm[("g_col", b * nt)] += 1
            for c in col_tiles:
                gemm[("g_row", b * c * mt)] += 1
        iters = (steps - 1) // s.k_unroll  # the first step is peeled
        if iters > 1:
            for r in row_tiles:
                for c in col_tiles:
                    gemm[("g_k", b * r * c * iters)] += 1
    return {"pack": pack, "gemm": gemm}


def border_positions(c) -> int:
    """Output positions whose window reaches into the padding."""
    pt, _, pl, _ = c.pads
    sh, sw = c.strides
    inner_h = sum(pt <= oy * sh <= pt + c.h - c.kh for oy in range(c.out_h))
    inner_w = sum(pl <= ox * sw <= pl + c.w - c.kw for ox in range(c.out_w))
    return c.batch * (c.out_h * c.out_w - inner_h * inner_w)


def conv_expected(kern) -> dict[str, Counter]:
    """pack, gather, fix and the implicit GEMM's whole nest (im2col / int16 GEMMs: see the tests)."""
    c, lay, s = kern.workload, kern.operands.layout, kern.schedule
    bit = isinstance(c, bs.Conv2d)
    unipolar = bit and c.mode == "unipolar"
    _, _, pl, pr = c.pads
    hp, wp, pix = lay.hp, lay.wp, lay.pix_bytes
    x_rows, border_rows = c.batch * c.h, c.batch * (hp - c.h)
    out: dict[str, Counter] = {"pack": Counter({("cp_row", c.batch * hp): 1})}

    def zero(runs: int, nbytes: int) -> None:  # 128 bytes per iteration, when 3 or more
        if nbytes // 128 > 2:
            out["pack"][("cp_zero", runs * (nbytes // 128))] += 1

    for pad in (pl, pr):
        if pad:
            zero(x_rows, pad * pix)
    if bit:
        out["pack"][("cp_pixel", x_rows * c.w)] += 1
    elif c.w * c.cin * 2 >= 128:
        out["pack"][("cp_copy", x_rows * (c.w * c.cin * 2 // 128))] += 1
    zero(border_rows, wp * pix)
    if unipolar:
        zero(border_rows, 4 * wp)
    if "gather" in kern.functions:
        out["gather"] = Counter({("cg_pos", c.gemm_m): 1, ("cg_origin", c.batch * c.out_h): 1})
    if "fix" in kern.functions:
        out["fix"] = Counter({("cf_pos", c.gemm_m): 1})
        if c.cout >= 8:
            out["fix"][("cf_vec", c.cout // 8 * border_positions(c))] += 1
    if bit and s.lowering == "implicit":
        out["gemm"] = implicit_gemm_expected(c, s)
    return out


def implicit_gemm_expected(c: bs.Conv2d, s: ConvSchedule) -> Counter:
    rows = c.batch * c.out_h  # output rows, the GEMM's row range
    tiles, edge = divmod(c.out_w, s.mr)  # spatial tiles of mr output columns
    nt, ne = divmod(c.cout, s.nr)
    pairs = c.abits * c.wbits
    iters = cdiv(c.cin, s.block_bits) // s.k_unroll  # K loop per tap over the pixel's blocks
    gemm: Counter = Counter()

    def tile(runs: int) -> None:
        if c.abits > 1:
            gemm[("L_pi", runs * c.abits)] += 1
        if c.wbits > 1:
            gemm[("L_pj", runs * pairs)] += 1
        if iters > 1:
            gemm[("L_k", runs * pairs * iters)] += c.taps

    def spatial(row_runs: int, per_tile) -> None:  # one output row's spatial tiles
        if tiles:
            gemm[("L_otile", row_runs * tiles)] += 1
            per_tile(row_runs * tiles)
        if edge:
            per_tile(row_runs)

    if s.loop_order == "mn":
        gemm[("L_orow", rows)] += 1

        def channels(runs: int) -> None:
            if nt:
                gemm[("L_col", runs * nt)] += 1
                tile(runs * nt)
            if ne:
                tile(runs)

        spatial(rows, channels)
    else:  # blocks of row_block rows, channel tiles outermost
        gemm[("L_orow", cdiv(rows, s.row_block))] += 1
        if nt:
            gemm[("L_bcol", cdiv(rows, s.row_block) * nt)] += 1
        for sweeps in ([nt] if nt else []) + ([1] if ne else []):
            gemm[("L_brow", sweeps * rows)] += 1
            spatial(sweeps * rows, tile)
    return gemm


def assert_conv_counts(kern) -> None:
    expected = conv_expected(kern)
    for name, code in codes(kern).items():
        assert_covered(code)
        if name in expected:
            assert declared(code) == expected[name], name
    c, s = kern.workload, kern.schedule
    if isinstance(c, bs.IntConv2d):  # the int16 GEMM on the im2col rows
        view = bs.IntDense(c.gemm_m, c.cout, c.gemm_k, dtype=c.dtype)
        assert declared(kern.functions["gemm"]) == int_dense_expected(view, s)["gemm"]
    elif s.lowering == "im2col" and s.loop_order == "mn" and s.nc == 0:  # dense.py's own nest
        rows = [n for kind, n in declared(kern.functions["gemm"]) if kind == "L_row"]
        assert rows == [c.gemm_m // s.mr]


# ---------------------------------------------------------------------------------------------
# int16 / int8 dense


INT_CASES = [
    (bs.IntDense(10, 40, 150, dtype="int16"), bs.IntSchedule(mr=3, nr=2, k_unroll=4, loop_order="mn")),
    (bs.IntDense(10, 21, 150, dtype="int16"), bs.IntSchedule(formulation="dot", mr=3, nr=2, k_unroll=1)),
    (bs.IntDense(9, 40, 300, dtype="int8"), bs.IntSchedule(mr=4, nr=1, k_unroll=2, loop_order="nm", kc=64)),
    (bs.IntDense(9, 13, 300, dtype="int8"), bs.IntSchedule(formulation="dot", mr=2, nr=3, loop_order="mn",
                                                          kc=96)),
    (bs.IntDense(7, 20, 1100, dtype="int16"), bs.IntSchedule(mr=2, nr=1, k_unroll=1, kc=160)),  # 7 blocks
    (bs.IntDense(4, 8, 40, dtype="int8"), bs.IntSchedule(mr=5, nr=1, k_unroll=8)),  # m < mr, no K loop
]


@pytest.mark.parametrize(("wl", "schedule"), INT_CASES)
def test_int_dense_counts_match_the_geometry(wl: bs.IntDense, schedule: bs.IntSchedule) -> None:
    kern = bs.build(wl, schedule)
    expected = int_dense_expected(wl, schedule)
    for name, code in codes(kern).items():
        assert_covered(code)
        assert declared(code) == expected[name], name


def test_int_dense_space_sample_is_covered_and_exact() -> None:
    wl = bs.IntDense(11, 20, 150, dtype="int8")
    for target in TARGETS:
        for schedule in list(bs.Space(wl, target=target).enumerate())[target == TARGETS[1]::41]:
            test_int_dense_counts_match_the_geometry(wl, schedule)


@pytest.mark.parametrize(("wl", "schedule"), INT_CASES[:5])
def test_int_dense_doubling_m_doubles_the_row_dependent_loops(wl: bs.IntDense,
                                                              schedule: bs.IntSchedule) -> None:
    m = 4 * schedule.mr  # no edge row tile, whole 4-chunk quads in the unblocked pack
    small = bs.build(dataclasses.replace(wl, m=m), schedule)
    large = bs.build(dataclasses.replace(wl, m=2 * m), schedule)
    fixed = {"g_kblock"} | ({"g_col"} if schedule.loop_order == "nm" else set())  # outside the rows
    for name in ("pack", "gemm"):
        a, b = codes(small)[name].loops, codes(large)[name].loops
        assert [lc.label for lc in a] == [lc.label for lc in b]
        for x, y in zip(a, b, strict=True):
            kind = x.label.rsplit("_", 1)[0]
            assert y.executions == (x.executions if kind in fixed else 2 * x.executions), x.label
        assert any(y.executions == 2 * x.executions > 0 for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------
# Convolutions


CONV = bs.Conv2d(h=4, w=7, cin=40, cout=10, abits=2, mode="bipolar")  # fix: cout 10 -> one vector
CONV_CASES = [
    (CONV, ConvSchedule(lowering="im2col", mr=2, nr=3), "x86_64-avx2"),
    (CONV, ConvSchedule(lowering="implicit", mr=3, nr=2), "x86_64-avx2"),
    (CONV, ConvSchedule(lowering="implicit", mr=2, nr=3, loop_order="nm", row_block=2), "x86_64-avx2"),
    (bs.Conv2d(h=7, w=6, cin=600, cout=9, stride=2, wbits=2, mode="unipolar"),
     ConvSchedule(lowering="implicit", mr=2, nr=2, popcount="scalar", acc_bits=64, k_unroll=2),
     "x86_64-avx2"),
    (bs.Conv2d(h=6, w=6, cin=1100, cout=5, kernel=(1, 3), abits=3, mode="and", padding="VALID"),
     ConvSchedule(lowering="implicit", mr=2, nr=2, popcount="vpopcnt", acc_bits=64,
                     loop_order="nm", row_block=4), "x86_64-avx512"),
    (bs.Conv2d(h=6, w=5, cin=300, cout=17, stride=2, abits=3, wbits=2, mode="unipolar", batch=2),
     ConvSchedule(lowering="im2col", mr=1, nr=2, popcount="csa", nc=3), "x86_64-avx2"),
    (bs.IntConv2d(h=6, w=5, cin=200, cout=6), IntConvSchedule(mr=2, nr=1, loop_order="mn"), "x86_64-avx2"),
    (bs.IntConv2d(h=7, w=7, cin=24, cout=20, stride=2, batch=2),
     IntConvSchedule(formulation="dot", mr=4, nr=2, k_unroll=2), "x86_64-avx512"),
]


@pytest.mark.parametrize(("conv", "schedule", "target"), CONV_CASES)
def test_conv_counts_match_the_geometry(conv, schedule, target: str) -> None:
    assert_conv_counts(bs.build(conv, schedule, target=target))


def test_conv_space_sample_is_covered_and_exact() -> None:
    conv = bs.Conv2d(h=4, w=5, cin=70, cout=9, stride=(1, 2), abits=2, wbits=2, mode="bipolar")
    for i, target in enumerate(TARGETS):
        space = bs.Space(conv, target=target, fixed={"k_unroll": 2, "layout": "plane_major"})
        for schedule in list(space.enumerate())[i * 150 :: 400]:
            assert_conv_counts(bs.build(conv, schedule, target=target))


@pytest.mark.parametrize("index", [0, 1, 2, 3, 6, 7])
def test_conv_doubling_the_batch_doubles_every_count(index: int) -> None:
    conv, schedule, target = CONV_CASES[index]
    one = dataclasses.replace(conv, batch=1)
    two = dataclasses.replace(conv, batch=2)
    a, b = bs.build(one, schedule, target=target), bs.build(two, schedule, target=target)
    # Every loop runs per image row, position or output row (the shapes keep the tile grids whole),
    # but for the outer column tiles of the int16 GEMM in loop order nm.
    fixed = {"g_col"} if schedule.loop_order == "nm" and isinstance(conv, bs.IntConv2d) else set()
    for name, code in a.functions.items():
        other = b.functions[name]
        assert [lc.label for lc in code.loops] == [lc.label for lc in other.loops]
        for x, y in zip(code.loops, other.loops, strict=True):
            kind = x.label.rsplit("_", 1)[0]
            assert y.executions == (x.executions if kind in fixed else 2 * x.executions), (name, x.label)


# ---------------------------------------------------------------------------------------------
# Modeled


@needs_mca
@pytest.mark.parametrize("case", ["int16", "int8", "im2col", "implicit", "int_conv"])
def test_kernels_are_modeled(case: str) -> None:
    target = "x86_64-avx2"
    if case in ("int16", "int8"):
        wl, schedule = INT_CASES[0 if case == "int16" else 2][:2]
    else:
        wl, schedule, target = CONV_CASES[{"im2col": 0, "implicit": 2, "int_conv": 6}[case]]
    model = McaModel(target=target, clock_hz=3e9)
    kern = bs.build(wl, schedule, target=target)
    for code in codes(kern).values():
        cost = model.cost(code)
        assert cost.cycles > 0
        assert {r.label for r in cost.regions} >= {lc.label for lc in code.loops}
    assert model.seconds(codes(kern).values()) > 0
