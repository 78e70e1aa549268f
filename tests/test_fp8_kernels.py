"""FP8 kernels: the GEMM (``Fp8Dense`` + ``Fp8Schedule``), ``bitsearch.ops`` and the quantize kernel.

GEMM outputs are FP32 sums, checked against the float64 reference within the tolerance derived in
:class:`bitsearch.Fp8Dense`: ``|y - ref| <= (K * 2**-23 + 2**-40) * sum_k |a_k b_k|`` (every FP8
product is exact in FP32; at most 2K roundings of partial sums bounded by sum_k |a_k b_k|), with
NaN / +-inf exactly where the reference has them. The sweep draws shapes off the tile grid (m = 1
included), all four format pairs and schedules from the whole space (decode in the kernel or while
packing, tiles, unrolling, K blocks, loop orders), on random finite inputs and the adversarial
cases of :func:`bitsearch.workloads.fp8_verification_inputs` (maximal magnitudes, cancelling
signs, subnormals, +-0, inf/NaN codes).

The quantize kernel must equal :func:`bitsearch.numerics.quantize` bit for bit: random fp32 bit
patterns (every class: NaN, inf, subnormal), FP8 subnormals, halfway points in every binade
including the top one, overflow with saturate on and off, +-0, and sizes that are not a multiple
of the 8-lane vector.
"""

from __future__ import annotations

import json
import platform

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitsearch as bs
import bitsearch.ops as ops
from bitsearch.asm.x86_64.fp8_layout import Fp8PanelLayout, decode_table
from bitsearch.measure import measure
from bitsearch.numerics import quantize
from bitsearch.space.fp8_schedule import Fp8Schedule, default_fp8_schedule, vector_registers
from bitsearch.targets import missing_features
from bitsearch.workloads import fp8_dtype, fp8_mismatch, fp8_tolerance, fp8_verification_inputs

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="runs x86-64 machine code")

FMTS = ("e5m2", "e4m3")
# The AVX-512 variant (zmm GEMM) runs wherever this CPU has AVX-512: the sweep covers both then.
TARGETS = ("x86_64-avx2",) + (() if missing_features("x86_64-avx512") else ("x86_64-avx512",))
DT = {"e5m2": ml_dtypes.float8_e5m2, "e4m3": ml_dtypes.float8_e4m3fn}


def _check_all_cases(wl: bs.Fp8Dense, kern, seed: int = 0) -> None:
    for name, a, b in fp8_verification_inputs(wl, seed):
        y = kern(a, kern.pack_weights(b))
        assert y.dtype == np.float32 and y.shape == (wl.m, wl.n)
        problem = fp8_mismatch(wl, a, b, y)
        assert problem is None, f"{wl} {kern.schedule} {name}: {problem}"


# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------
@st.composite
def gemm_cases(draw):
    m = draw(st.sampled_from([1, 1, 2, 3, 5, 7, 9, 13]))
    n = draw(st.integers(1, 40))
    k = draw(st.sampled_from([1, 2, 3, 7, 15, 16, 17, 33, 40, 70]))
    afmt, wfmt = draw(st.sampled_from(FMTS)), draw(st.sampled_from(FMTS))
    decode = draw(st.sampled_from(["kernel", "pack"]))
    target = draw(st.sampled_from(TARGETS))
    nr = draw(st.integers(1, 3))
    extra = 0 if decode == "pack" else 1 if wfmt == "e5m2" else 3
    limit = max(1, (vector_registers(target, nr) - nr - 1 - extra) // nr)
    mr = draw(st.integers(1, min(6, limit)))
    schedule = Fp8Schedule(decode=decode, mr=mr, nr=nr, k_unroll=draw(st.sampled_from([1, 2, 4])),
                           loop_order=draw(st.sampled_from(["mn", "nm"])),
                           kc=draw(st.sampled_from([0, 16, 32])))
    return bs.Fp8Dense(m, n, k, afmt=afmt, wfmt=wfmt), schedule, target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gemm_cases(), st.integers(0, 2**16))
def test_gemm_sweep_within_tolerance(case, seed):
    wl, schedule, target = case
    schedule.check(wl, target)
    _check_all_cases(wl, bs.build(wl, schedule, target), seed)


@pytest.mark.parametrize("afmt", FMTS)
@pytest.mark.parametrize("wfmt", FMTS)
@pytest.mark.parametrize("target", TARGETS)
def test_default_schedules_all_formats(afmt, wfmt, target):
    for m, n, k in ((1, 61, 45), (6, 19, 300)):  # GEMV default (decode in kernel), GEMM (K blocks)
        wl = bs.Fp8Dense(m, n, k, afmt=afmt, wfmt=wfmt)
        _check_all_cases(wl, bs.build(wl, target=target))


@pytest.mark.skipif("x86_64-avx512" not in TARGETS, reason="this CPU lacks AVX-512")
@pytest.mark.parametrize("decode", ["kernel", "pack"])
def test_avx512_every_edge_width(decode):
    """zmm columns: edges of 1..15 lanes (the 9..15 ones store a whole ymm, then a partial one)."""
    for n in (1, 4, 8, 9, 12, 15, 16, 17, 31):
        for wfmt in FMTS:
            wl = bs.Fp8Dense(3, n, 21, afmt="e5m2", wfmt=wfmt)
            kern = bs.build(wl, Fp8Schedule(decode=decode, mr=2, nr=1, kc=16), "x86_64-avx512")
            _check_all_cases(wl, kern, n)


def test_decode_paths_agree_and_nan_columns():
    """Decoding in the kernel and while packing give the same sums (same FMA order); a NaN code
    in one weight column (E4M3: the panel's NaN mask) poisons exactly that column."""
    wl = bs.Fp8Dense(5, 21, 50, afmt="e4m3", wfmt="e4m3")
    rng = np.random.default_rng(3)
    a = rng.standard_normal(wl.x_shape).astype(np.float32).astype(DT["e4m3"])
    b = rng.standard_normal(wl.w_shape).astype(np.float32).astype(DT["e4m3"])
    b[17, 33] = np.nan
    ys = [bs.build(wl, Fp8Schedule(decode=d, mr=2, nr=2))(a, b) for d in ("kernel", "pack")]
    np.testing.assert_array_equal(ys[0], ys[1])
    assert np.isnan(ys[0][:, 17]).all() and not np.isnan(np.delete(ys[0], 17, axis=1)).any()
    assert fp8_mismatch(wl, a, b, ys[0]) is None


def test_threads_give_identical_results_and_out():
    wl = bs.Fp8Dense(23, 30, 41, afmt="e5m2", wfmt="e4m3")
    kern = bs.build(wl, Fp8Schedule(decode="pack", mr=3, nr=2, kc=16))
    _, a, b = fp8_verification_inputs(wl, 1)[0]
    wp = kern.pack_weights(b)
    y1 = kern(a, wp)
    out = np.full((wl.m, wl.n), np.nan, np.float32)
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(kern(a, wp, threads=threads), y1)
    assert kern(a, wp, threads=2, out=out) is out
    np.testing.assert_array_equal(out, y1)
    with pytest.raises(ValueError, match="threads"):
        kern(a, wp, threads=0)
    with pytest.raises(ValueError, match="out must be"):
        kern(a, wp, out=np.empty((wl.m, wl.n), np.float64))


@pytest.mark.skipif("x86_64-avx512" not in TARGETS, reason="this CPU lacks AVX-512")
@pytest.mark.parametrize(("decode", "mr", "nr", "wfmt"), [("pack", 6, 4, "e5m2"), ("kernel", 8, 3, "e4m3")])
def test_avx512_tiles_in_upper_registers(decode, mr, nr, wfmt):
    """Tiles beyond 16 registers: accumulators in zmm16-31, copied down for the edge stores (the
    last panel is nr vectors wide, its last one 13 of 16 lanes, so upper registers meet it)."""
    wl = bs.Fp8Dense(2 * mr + 3, 32 * nr - 3, 37, afmt="e4m3", wfmt=wfmt)
    schedule = Fp8Schedule(decode=decode, mr=mr, nr=nr, kc=16)
    assert schedule.ymm_registers(wfmt) > 16
    with pytest.raises(ValueError, match="offers 16"):
        schedule.check(wl, "x86_64-avx2")
    _check_all_cases(wl, bs.build(wl, schedule, "x86_64-avx512"))


@pytest.mark.parametrize("decode", ["kernel", "pack"])
@pytest.mark.parametrize("target", TARGETS)
def test_measure_in_native_harness(decode, target):
    """Through the runner: verified on every adversarial case in another process, then timed."""
    res = measure(bs.Fp8Dense(7, 29, 66, afmt="e4m3", wfmt="e4m3"),
                  Fp8Schedule(decode=decode, mr=3, nr=2, kc=32, loop_order="mn"), target=target)
    assert res.error.name == "NONE", res.message
    assert res.stats.median > 0


def test_tolerance_and_mismatch_detect_errors():
    wl = bs.Fp8Dense(2, 3, 4)
    a = np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.float32).astype(DT["e5m2"])
    b = np.ones((3, 4), np.float32).astype(DT["e5m2"])
    tol = fp8_tolerance(wl, a, b)
    assert tol[0, 0] == (4 * 2**-23 + 2**-40) * 10 and tol[1, 0] == 0
    exact = np.array([[10, 10, 10], [0, 0, 0]], np.float32)
    assert fp8_mismatch(wl, a, b, exact) is None
    off = exact.copy()
    off[0, 1] = np.nextafter(np.float32(10), np.float32(11))  # 1 ulp: within K * 2**-23 * 10
    assert fp8_mismatch(wl, a, b, off) is None
    off[0, 1] = 10 + 2 * 4 * 2**-23 * 10
    assert "y[0,1]" in fp8_mismatch(wl, a, b, off)
    off = exact.copy()
    off[1, 2] = 1e-30  # an exact zero sum must stay exactly 0
    assert "y[1,2]" in fp8_mismatch(wl, a, b, off)
    off[1, 2] = np.nan
    assert "y[1,2]" in fp8_mismatch(wl, a, b, off)
    b[2, 0] = np.inf
    want_inf = exact.copy()
    want_inf[0, 2] = np.inf
    want_inf[1, 2] = np.nan  # 0 * inf
    assert fp8_mismatch(wl, a, b, want_inf) is None
    assert fp8_mismatch(wl, a, b, exact) is not None


def test_panel_layout_and_decode_table():
    vals = np.arange(256, dtype=np.uint8)
    for fmt in FMTS:
        table = decode_table(fmt)
        ref = vals.view(DT[fmt]).astype(np.float32)
        np.testing.assert_array_equal(table.view(np.uint32), ref.view(np.uint32))
    b = np.arange(5 * 3, dtype=np.uint8).reshape(5, 3).view(DT["e5m2"])
    lay = Fp8PanelLayout(n=5, k=3, fmt="e5m2", decode="kernel", panel=16)
    flat = lay.pack(b).reshape(-1)
    assert flat[:8].tolist() == [0, 3, 6, 9, 12, 0, 0, 0]  # k=0 of columns 0..4, zero padding
    assert flat[8:16].tolist() == [1, 4, 7, 10, 13, 0, 0, 0]


def test_workload_and_schedule_validation():
    with pytest.raises(ValueError, match="afmt"):
        bs.Fp8Dense(1, 1, 1, afmt="e3m4")
    with pytest.raises(ValueError, match="k must"):
        bs.Fp8Dense(1, 1, 0)
    wl = bs.Fp8Dense(4, 4, 4, wfmt="e4m3")
    for bad, match in ((Fp8Schedule(decode="lut"), "decode"), (Fp8Schedule(mr=0), "mr"),
                       (Fp8Schedule(k_unroll=3), "k_unroll"), (Fp8Schedule(kc=20), "kc"),
                       (Fp8Schedule(decode="kernel", mr=4, nr=3), "vector registers")):
        with pytest.raises(ValueError, match=match):
            bs.build(wl, bad)
    with pytest.raises(ValueError, match="Fp8Schedule"):
        bs.build(wl, bs.Schedule())
    kern = bs.build(wl)
    with pytest.raises(ValueError, match="dtype"):
        kern(np.zeros((4, 4), np.float32), np.zeros((4, 4), DT["e4m3"]))
    with pytest.raises(ValueError, match="shape"):
        kern(np.zeros((4, 5), DT["e5m2"]), np.zeros((4, 4), DT["e4m3"]))
    assert Fp8Schedule.from_json(default_fp8_schedule(wl).to_json()) == default_fp8_schedule(wl)


def test_export_object_and_header(tmp_path):
    kern = bs.build(bs.Fp8Dense(3, 20, 33, afmt="e4m3", wfmt="e5m2"))
    paths = kern.export(tmp_path, "fp8k")
    assert paths["o"].stat().st_size > 0
    header = paths["h"].read_text()
    assert "float *y" in header and "#define FP8K_K 33" in header


def test_space_and_tune_small_study():
    wl = bs.Fp8Dense(9, 20, 33, afmt="e5m2", wfmt="e4m3")
    space = bs.Space(wl)
    assert space.size().valid > 100
    assert space.schedule({"decode": "pack", "tile": "2x2", "kc": 512}).kc == 0  # one block: no blocking
    for params in space.experts():
        assert space.invalid_reason(space.schedule({k.split("[")[0]: v for k, v in params.items()})) is None
    res = bs.tune(wl, trials=3, storage="sqlite:///:memory:", progress=False, seed=0)
    assert isinstance(res.best_schedule, Fp8Schedule) and res.best_seconds > 0
    assert res.study.study_name == "fp8-dense-9x20x33-e5m2xe4m3-x86_64-avx2"


def test_cli_tunes_fp8_dense(tmp_path, capsys):
    from bitsearch.cli import main

    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["tune", "fp8-dense", "--m", "5", "--n", "18", "--k", "40", "--afmt", "e4m3", "--wfmt",
                 "e5m2", "--trials", "2", "--storage", url, "--study", "cli", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["workload"] == {"op": "fp8_dense", "m": 5, "n": 18, "k": 40, "afmt": "e4m3", "wfmt": "e5m2"}
    assert record["best_schedule"] is not None
    kern = bs.load("cli", url)
    assert isinstance(kern.schedule, Fp8Schedule) and kern.workload.afmt == "e4m3"


# ---------------------------------------------------------------------------------------------
# ops.fp8_matmul
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 3), (2, 1, 5), (3, 9, 1), (1, 130, 17)])
def test_fp8_matmul_tiny_shapes_all_formats(shape):
    m, n, k = shape
    rng = np.random.default_rng(m * 100 + n)
    for afmt in FMTS:
        for wfmt in FMTS:
            a = (rng.standard_normal((m, k)) * 8).astype(np.float32).astype(DT[afmt])
            b = (rng.standard_normal((n, k)) * 8).astype(np.float32).astype(DT[wfmt])
            y = ops.fp8_matmul(a, b)
            assert y.dtype == np.float32 and y.shape == (m, n)
            assert fp8_mismatch(bs.Fp8Dense(m, n, k, afmt=afmt, wfmt=wfmt), a, b, y) is None


def test_fp8_matmul_cache_views_and_errors():
    a = np.ones((4, 6), DT["e5m2"])
    bt = np.ones((6, 5), DT["e4m3"])  # a transposed view: made contiguous
    y = ops.fp8_matmul(a, bt.T)
    assert (y == 6).all()
    wl = bs.Fp8Dense(4, 5, 6, afmt="e5m2", wfmt="e4m3")
    assert ops.fp8_kernel(wl) is ops.fp8_kernel(wl)
    assert ops.fp8_matmul(np.ones((0, 6), DT["e5m2"]), np.ones((5, 6), DT["e5m2"])).shape == (0, 5)
    assert (ops.fp8_matmul(np.ones((2, 0), DT["e5m2"]), np.ones((3, 0), DT["e5m2"])) == 0).all()
    with pytest.raises(ValueError, match="dtype float8"):
        ops.fp8_matmul(np.ones((2, 2), np.float32), np.ones((2, 2), DT["e5m2"]))
    with pytest.raises(ValueError, match="agree in k"):
        ops.fp8_matmul(np.ones((2, 3), DT["e5m2"]), np.ones((2, 2), DT["e5m2"]))
    with pytest.raises(ValueError, match="2-D"):
        ops.fp8_matmul(np.ones((2, 2, 2), DT["e5m2"]), np.ones((2, 2), DT["e5m2"]))
    with pytest.raises(ValueError, match="numpy array"):
        ops.fp8_matmul([[1.0]], np.ones((1, 1), DT["e5m2"]))


def test_fp8_matmul_disk_cache(tmp_path, monkeypatch):
    """A new process (here: an emptied memory cache) loads the machine code instead of rebuilding;
    a corrupt cache file is rebuilt over."""
    monkeypatch.setenv("BITSEARCH_CACHE", str(tmp_path))
    a = (np.arange(2 * 19) % 7).reshape(2, 19).astype(np.float32).astype(DT["e4m3"])
    b = (np.arange(5 * 19) % 5).reshape(5, 19).astype(np.float32).astype(DT["e5m2"])
    ops.configure()
    y = ops.fp8_matmul(a, b)
    files = list((tmp_path / "fp8").glob("*.pkl"))
    assert len(files) == 1
    ops.configure()
    np.testing.assert_array_equal(ops.fp8_matmul(a, b), y)
    files[0].write_bytes(b"not a pickle")
    ops.configure()
    np.testing.assert_array_equal(ops.fp8_matmul(a, b), y)
    assert fp8_mismatch(bs.Fp8Dense(2, 5, 19, afmt="e4m3", wfmt="e5m2"), a, b, y) is None
    ops.configure()


# ---------------------------------------------------------------------------------------------
# Quantize kernel vs the specification (bitsearch.numerics.quantize)
# ---------------------------------------------------------------------------------------------
def _edge_inputs(fmt: str) -> np.ndarray:
    """Every representable value, the midpoints between neighbours (ties, incl. the top binade
    and the subnormals), one fp32 ulp either side of each, overflow and special values."""
    reps = np.unique(np.abs(np.arange(256, dtype=np.uint8).view(DT[fmt]).astype(np.float64)))
    reps = reps[np.isfinite(reps)]
    mids = (reps[:-1] + reps[1:]) / 2
    fmax = reps[-1]
    top_ulp = reps[-1] - reps[-2]
    base = np.concatenate([reps, mids, [fmax + top_ulp / 2, fmax + top_ulp, 2 * fmax, 1e30, 3.4e38,
                                        reps[1] / 2, reps[1] / 4, 1e-30, 1.4e-45, 2.0**-126]])
    x = base.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(0))])
    x = np.concatenate([x, -x, np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0], np.float32)])
    return x


def _bits(q: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(q).view(np.uint8)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("saturate", [False, True])
def test_quantize_kernel_matches_spec_on_edges_and_random_bits(fmt, rounding, saturate):
    rng = np.random.default_rng(7)
    random_bits = rng.integers(0, 2**32, 20011, dtype=np.uint64).astype(np.uint32).view(np.float32)
    scaled = (rng.standard_normal(5003) * np.exp2(rng.integers(-40, 20, 5003))).astype(np.float32)
    for x in (_edge_inputs(fmt), random_bits, scaled):
        for seed in (0, 12345, 2**32 - 1):
            want = quantize(x, fmt, rounding=rounding, seed=seed, saturate=saturate)
            got = ops.quantize_fp8(x, fmt, rounding=rounding, seed=seed, saturate=saturate)
            assert got.dtype == want.dtype and got.shape == x.shape
            bad = np.flatnonzero(_bits(got) != _bits(want))
            assert not bad.size, (f"{len(bad)} differ, first x={x[bad[0]]!r} "
                                  f"({x.view(np.uint32)[bad[0]]:#x}): got {_bits(got)[bad[0]]:#04x}, "
                                  f"spec {_bits(want)[bad[0]]:#04x}")
            if rounding == "nearest":
                break


@given(st.integers(1, 40), st.integers(0, 2**32 - 1), st.sampled_from(FMTS))
@settings(max_examples=30, deadline=None)
def test_quantize_any_size_and_counter_offsets(size, seed, fmt):
    """Sizes off the 8-lane grid: the tail block must use counters size - size % 8 ..."""
    x = (np.random.default_rng(size).standard_normal((size, 3)) * 3).astype(np.float32)
    want = quantize(x, fmt, rounding="stochastic", seed=seed)
    got = ops.quantize_fp8(x, fmt, rounding="stochastic", seed=seed)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_quantize_stochastic_is_unbiased_and_reproducible():
    x = np.full(1 << 16, 1.1, np.float32)  # between 1.0 and 1.25 in E5M2: P(up) = 0.4
    q = ops.quantize_fp8(x, "e5m2", rounding="stochastic", seed=5).astype(np.float64)
    assert set(np.unique(q)) == {1.0, 1.25}
    assert abs(q.mean() - np.float64(np.float32(1.1))) < 0.005
    np.testing.assert_array_equal(_bits(q), _bits(ops.quantize_fp8(x, "e5m2", rounding="stochastic",
                                                                   seed=5).astype(np.float64)))
    other = ops.quantize_fp8(x, "e5m2", rounding="stochastic", seed=6)
    assert (_bits(other) != _bits(ops.quantize_fp8(x, "e5m2", rounding="stochastic", seed=5))).any()
    assert ops.quantize_fp8(x[:9], "e4m3", rounding="stochastic").dtype == DT["e4m3"]  # seed=None


def test_ops_quantize_dispatches_large_arrays_to_the_kernel(monkeypatch):
    """``numerics.quantize`` is the numpy specification; ``ops.quantize`` hands large FP8 arrays
    to the kernel, with the same bits."""
    x = (np.random.default_rng(9).standard_normal((300, 70)) * 100).astype(np.float32)
    want = {r: _bits(quantize(x, "e4m3", rounding=r, seed=3)) for r in ("nearest", "stochastic")}
    assert ops.kernel_quantizer("e4m3", "stochastic", x.size) is ops.quantize_fp8
    assert ops.kernel_quantizer("fp16", "stochastic", x.size) is None
    assert ops.kernel_quantizer("e5m2", "nearest", 10) is None
    calls = []
    monkeypatch.setattr(ops, "quantize_fp8", lambda *a, **k: calls.append(1) or quantize(*a, **k))
    for rounding in ("nearest", "stochastic"):
        got = ops.quantize(x, "e4m3", rounding=rounding, seed=3)
        np.testing.assert_array_equal(_bits(got), want[rounding])
    assert len(calls) == 2
    monkeypatch.setattr(ops, "KERNEL_DISPATCH", False)
    ops.quantize(x, "e4m3", rounding="nearest")
    assert len(calls) == 2


def test_quantize_noncontiguous_and_errors():
    x = np.arange(60, dtype=np.float64).reshape(6, 10)[:, ::3] / 7  # float64, strided
    np.testing.assert_array_equal(_bits(ops.quantize_fp8(x, "e4m3")), _bits(quantize(x, "e4m3")))
    assert ops.quantize_fp8(np.float32(3.3), "e5m2").shape == ()
    with pytest.raises(ValueError, match="fmt"):
        ops.quantize_fp8(x, "fp4")
    with pytest.raises(ValueError, match="rounding"):
        ops.quantize_fp8(x, "e5m2", rounding="up")
    with pytest.raises(ValueError, match="seed"):
        ops.quantize_fp8(x, "e5m2", rounding="stochastic", seed=2**32)
    with pytest.raises(ValueError, match="numeric"):
        ops.quantize_fp8(np.array(["a"]), "e5m2")


def test_fp8_dtype_names():
    assert fp8_dtype("e4m3") == np.dtype(ml_dtypes.float8_e4m3fn)
    with pytest.raises(ValueError, match="FP8 format"):
        fp8_dtype("e8m0")
