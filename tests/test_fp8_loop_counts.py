"""Loop counts of the FP8 pack and GEMM emitters (``MachineCode.loops``, read by the llvm-mca model).

Every backward branch must have a LoopCount (:func:`bitsearch.cost.mca.regions` refuses a listing
otherwise), and each count must be how often that loop's body runs over rows [0, m): derived here
from the geometry alone (row tiles, column panels, K blocks, K steps per iteration), checked
against the work the listing does (broadcasts and FMAs executed) and against doubling m.
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

import bitsearch as bs
from bitsearch.asm.x86_64.fp8_layout import Fp8Geometry, vector_lanes
from bitsearch.cost.mca import McaModel, regions
from bitsearch.measure import measure
from bitsearch.runners import ErrorClass
from bitsearch.runners.model import ModelRunner
from bitsearch.space.fp8_schedule import Fp8Schedule
from bitsearch.targets import missing_features

S = Fp8Schedule
AVX2, AVX512 = "x86_64-avx2", "x86_64-avx512"
# (workload, schedule, target): both loop orders; 1, 2, 3 and 8 K blocks; with and without a K
# loop (k_unroll steps per iteration), a row edge (m % mr), an edge panel (n % panel), full panels.
CASES = [
    (bs.Fp8Dense(7, 37, 300, afmt="e4m3", wfmt="e5m2"),
     S(decode="kernel", mr=2, nr=2, k_unroll=2, loop_order="nm", kc=128), AVX2),
    (bs.Fp8Dense(7, 37, 300, afmt="e4m3", wfmt="e5m2"),
     S(decode="kernel", mr=3, nr=2, k_unroll=4, loop_order="mn", kc=128), AVX2),
    (bs.Fp8Dense(7, 37, 300, afmt="e5m2", wfmt="e4m3"),
     S(decode="kernel", mr=3, nr=2, k_unroll=4, loop_order="mn"), AVX512),
    (bs.Fp8Dense(1, 64, 33, afmt="e5m2", wfmt="e4m3"),
     S(decode="kernel", mr=1, nr=6, k_unroll=8, loop_order="mn"), AVX2),
    (bs.Fp8Dense(4, 8, 16, afmt="e4m3", wfmt="e4m3"),
     S(decode="pack", mr=4, nr=1, k_unroll=8, loop_order="nm"), AVX2),
    (bs.Fp8Dense(9, 100, 600, afmt="e5m2", wfmt="e5m2"),
     S(decode="pack", mr=4, nr=3, k_unroll=4, loop_order="nm", kc=256), AVX512),
    (bs.Fp8Dense(5, 70, 1000, afmt="e4m3", wfmt="e4m3"),
     S(decode="kernel", mr=2, nr=3, k_unroll=1, loop_order="mn", kc=128), AVX512),
    (bs.Fp8Dense(2, 20, 40, afmt="e5m2", wfmt="e5m2"),
     S(decode="pack", mr=4, nr=1, k_unroll=2, loop_order="nm"), AVX2),  # mr > m: no full row tile
]
IDS = [f"{wl.m}x{wl.n}x{wl.k}-{s.loop_order}-mr{s.mr}nr{s.nr}u{s.k_unroll}kc{s.kc}-{t[7:]}"
       for wl, s, t in CASES]


def kind(label: str) -> str:
    return label.rsplit("_", 1)[0]  # "g_row_12" -> "g_row"


def declared(code) -> Counter:
    return Counter((kind(lc.label), lc.executions) for lc in code.loops)


def expected_pack(wl: bs.Fp8Dense) -> Counter:
    chunks = -(-wl.k // 16)  # 16 FP8 bytes per iteration
    return Counter({("p_row", wl.m): 1, ("p_chunk", wl.m * chunks): 1})


def k_blocks(wl: bs.Fp8Dense, s: Fp8Schedule) -> list[tuple[int, int]]:
    """(how often the block's loop nest runs, its K steps): the first, the middle ones (one runtime
    loop), the last."""
    kc = s.kc if 0 < s.kc < wl.k else wl.k
    count = -(-wl.k // kc)
    blocks = [(1, kc)]
    if count > 2:
        blocks.append((count - 2, kc))
    if count > 1:
        blocks.append((1, wl.k - (count - 1) * kc))
    return blocks


def expected_gemm(wl: bs.Fp8Dense, s: Fp8Schedule, target: str) -> Counter:
    w = Fp8Geometry.of(wl, s, target).w
    row_tiles, row_edge = divmod(wl.m, s.mr)
    rows = [row_tiles] + ([1] if row_edge else [])  # how often each class of row tile runs
    cols = ([w.full_panels] if w.full_panels else []) + ([1] if w.edge_columns else [])
    blocks = k_blocks(wl, s)
    out = Counter()
    if len(blocks) == 3:
        out[("g_kblock", blocks[1][0])] += 1
    for runs, klen in blocks:
        if s.loop_order == "nm":  # a loop over full panels, row tiles inside each panel class
            if w.full_panels:
                out[("g_col", runs * w.full_panels)] += 1
            for c in cols:
                out[("g_row", runs * c * row_tiles)] += 1
        else:  # a loop over row tiles, full panels inside each row class
            out[("g_row", runs * row_tiles)] += 1
            if w.full_panels:
                for r in rows:
                    out[("g_col", runs * r * w.full_panels)] += 1
        iterations = (klen - 1) // s.k_unroll  # the first K step is peeled (it sets the sums)
        if iterations > 1:  # a single iteration is straight-line code
            for r in rows:
                for c in cols:
                    out[("g_k", runs * r * c * iterations)] += 1
    return out


def executed(code, mnemonic: str) -> int:
    """How often ``mnemonic`` runs in one call, region by region (raises for an uncounted loop)."""
    return sum(r.executions * sum(i.split()[0] == mnemonic for i in r.instructions)
               for r in regions(code.listing, code.loops, "x86_64"))


@pytest.mark.parametrize(("wl", "schedule", "target"), CASES, ids=IDS)
def test_fp8_loop_counts_are_complete_and_exact(wl, schedule, target) -> None:
    kern = bs.build(wl, schedule, target)
    for code in (kern.functions["pack"], kern.functions["gemm"]):
        regions(code.listing, code.loops, "x86_64")  # every backward branch has its LoopCount
        for missing in code.loops:  # ... and the check notices any one of them missing
            with pytest.raises(ValueError, match="has no LoopCount"):
                regions(code.listing, [lc for lc in code.loops if lc != missing], "x86_64")
    assert declared(kern.functions["pack"]) == expected_pack(wl)
    assert declared(kern.functions["gemm"]) == expected_gemm(wl, schedule, target)
    # The work the counted listing does: one broadcast per row, panel and K step; FMAs for all
    # but the first K step of each block; two decoded vectors per 16 activation bytes.
    w = kern.operands.w_layout
    panels = w.full_panels + (1 if w.edge_columns else 0)
    vectors = w.full_panels * schedule.nr + -(-w.edge_columns // vector_lanes(target))
    assert executed(kern.functions["gemm"], "vbroadcastss") == wl.m * panels * wl.k
    blocks = sum(runs for runs, _ in k_blocks(wl, schedule))
    assert executed(kern.functions["gemm"], "vfmadd231ps") == wl.m * vectors * (wl.k - blocks)
    assert executed(kern.functions["pack"], "vcvtph2ps") == 2 * wl.m * -(-wl.k // 16)


@pytest.mark.parametrize(("wl", "schedule", "target"), CASES, ids=IDS)
def test_doubling_m_doubles_the_row_dependent_counts(wl, schedule, target) -> None:
    # m a multiple of mr (no row edge), so both builds emit the same loops.
    wl = bs.Fp8Dense(schedule.mr * max(1, wl.m // schedule.mr), wl.n, wl.k, afmt=wl.afmt, wfmt=wl.wfmt)
    double = bs.Fp8Dense(2 * wl.m, wl.n, wl.k, afmt=wl.afmt, wfmt=wl.wfmt)
    one, two = bs.build(wl, schedule, target), bs.build(double, schedule, target)
    for a, b in zip(one.functions.values(), two.functions.values(), strict=True):
        assert a.loops and [lc.label for lc in a.loops] == [lc.label for lc in b.loops]  # same code
        for x, y in zip(a.loops, b.loops, strict=True):
            per_row = kind(x.label) in ("p_row", "p_chunk", "g_row", "g_k") or (
                kind(x.label) == "g_col" and schedule.loop_order == "mn")
            assert y.executions == (2 if per_row else 1) * x.executions, (x, y)


@pytest.mark.skipif(shutil.which("llvm-mca") is None, reason="needs llvm-mca (Debian: llvm)")
@pytest.mark.parametrize("target", [AVX2, AVX512])
def test_model_runner_models_fp8_kernels(target) -> None:
    if missing_features(target):
        pytest.skip(f"this CPU cannot run {target} code (verification runs it)")
    model = McaModel(target=target, clock_hz=1e9)
    wl = bs.Fp8Dense(6, 40, 300, afmt="e4m3", wfmt="e5m2")
    result = measure(wl, target=target, runner=ModelRunner(models={target: model}))
    assert result.error is ErrorClass.NONE, result.message
    kern = bs.build(wl, None, target)
    assert result.modeled and result.stats.median == model.seconds(kern.functions.values()) > 0
