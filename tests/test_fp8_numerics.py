"""FP8/FP16 quantization: nearest == ml_dtypes, and the stochastic-rounding spec checked independently."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsearch.numerics import FORMATS, dequantize, format_info, quantize, random_bits

FP8 = {"e5m2": ml_dtypes.float8_e5m2, "e4m3": ml_dtypes.float8_e4m3fn}
ALL = {**FP8, "fp16": np.float16}
MBITS = {"e5m2": 2, "e4m3": 3, "fp16": 10}
EMIN = {"e5m2": -14, "e4m3": -6, "fp16": -14}
MAXV = {"e5m2": 57344.0, "e4m3": 448.0, "fp16": 65504.0}


# ---- independent pure-Python model of the spec (integers only) ----
def py_fmix32(h: int) -> int:
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % 2**32
    h ^= h >> 16
    return h


def py_r(i: int, seed: int) -> int:
    return py_fmix32(i ^ py_fmix32(seed))


def py_stochastic(x: float, i: int, seed: int, fmt: str, saturate: bool) -> float:
    """Spec in integer terms on the fp32 bit pattern of x; returns the rounded value as a Python float."""
    bits = int(np.array([x], np.float32).view(np.uint32)[0])
    sign = -1.0 if bits >> 31 else 1.0
    ef, mf = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if ef == 255:
        if mf:
            return math.nan
        return sign * MAXV[fmt] if saturate else sign * (math.nan if fmt == "e4m3" else math.inf)
    if ef == 0 and mf == 0:
        return sign * 0.0
    if ef == 0:  # fp32 subnormal: value = mf * 2**-149
        s_int, e0 = mf, -149
        e = mf.bit_length() - 1 - 149
    else:
        s_int, e0, e = mf | (1 << 23), ef - 127 - 23, ef - 127
    ulp_exp = max(e, EMIN[fmt]) - MBITS[fmt]
    d = ulp_exp - e0
    assert d > 0
    k, s_low = s_int >> d, s_int & ((1 << d) - 1)
    r = py_r(i, seed)
    up = r < (s_low << (32 - d)) if d <= 32 else r < -(-s_low // (1 << (d - 32)))
    mag = (k + up) * 2.0**ulp_exp
    if mag > MAXV[fmt]:
        if saturate:
            mag = MAXV[fmt]
        else:
            return math.nan if fmt == "e4m3" else sign * math.inf
    return sign * mag


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


def bits_of(q: np.ndarray) -> np.ndarray:
    return q.view(np.uint16 if q.dtype == np.float16 else np.uint8)


def all_finite_values(fmt: str) -> np.ndarray:
    """Every finite non-negative value of the format, ascending (float64)."""
    if fmt == "fp16":
        v = np.arange(2**15, dtype=np.uint16).view(np.float16).astype(np.float64)
    else:
        v = np.arange(128, dtype=np.uint8).view(FP8[fmt]).astype(np.float64)
    return np.unique(v[np.isfinite(v)])


def edge_cases() -> np.ndarray:
    """fp32 edge cases for all formats: zeros, subnormals, exact values, midpoints +- 1 ulp, max, inf, nan."""
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38]
    for fmt in ("e5m2", "e4m3"):
        v = all_finite_values(fmt)
        mids = (v[:-1] + v[1:]) / 2
        f = format_info(fmt)
        top = [f.max, f.max + f.max / 16, f.max * 1.1, f.max * 2, f.min_subnormal / 2, f.min_subnormal / 4]
        vals += [*v, *mids, *top]
    x = np.array(vals, np.float32)
    with np.errstate(over="ignore"):
        x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    return np.concatenate([x, -x])


# ---- nearest ----
@pytest.mark.parametrize("fmt", list(ALL))
def test_nearest_matches_ml_dtypes_on_edge_cases_and_random(fmt: str) -> None:
    rng = np.random.default_rng(0)
    rnd = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for x in (edge_cases(), rnd, rng.standard_normal(5000).astype(np.float32) * 100):
        with np.errstate(over="ignore", invalid="ignore"):
            want = x.astype(ALL[fmt])
        got = quantize(x, fmt)
        assert got.dtype == ALL[fmt]
        assert np.array_equal(bits_of(got), bits_of(want))


@pytest.mark.parametrize("fmt", list(FP8))
def test_nearest_is_round_to_nearest_even_by_enumeration(fmt: str) -> None:
    """An independent check of what the ml_dtypes cast does on in-range values: nearest, ties to even."""
    v = all_finite_values(fmt)
    codes = np.arange(128, dtype=np.uint8)
    val_to_code = {float(c.view(FP8[fmt])): int(c) for c in codes if np.isfinite(float(c.view(FP8[fmt])))}
    x = edge_cases()
    x = x[np.isfinite(x) & (np.abs(x) <= v[-1])]
    got = dequantize(quantize(x, fmt)).astype(np.float64)
    for xi, gi in zip(x.astype(np.float64), got, strict=True):
        dist = np.abs(v - abs(xi))
        cand = v[dist == dist.min()]
        if len(cand) == 2:  # tie: the even code (mantissa LSB 0)
            cand = [c for c in cand if val_to_code[float(c)] % 2 == 0]
        assert abs(gi) == cand[0] and math.copysign(1, gi) == math.copysign(1, xi), (xi, gi)


@pytest.mark.parametrize("fmt", list(ALL))
def test_nearest_saturate(fmt: str) -> None:
    m = MAXV[fmt]
    x = np.array([m * 1.5, -m * 1.5, np.inf, -np.inf, np.nan, 1.0], np.float32)
    got = dequantize(quantize(x, fmt, saturate=True))
    assert got[:4].tolist() == [m, -m, m, -m] and np.isnan(got[4]) and got[5] == 1.0
    unsat = dequantize(quantize(x, fmt))
    assert not np.isfinite(unsat[:4]).any()  # inf (E5M2/FP16) or NaN (E4M3)


def test_format_info_and_bad_input() -> None:
    assert {f: FORMATS[f].max for f in FORMATS} == MAXV
    for name, f in FORMATS.items():
        fi = ml_dtypes.finfo(f.dtype)
        assert f.min_normal == float(fi.smallest_normal) and f.max == float(fi.max), name
        assert f.min_subnormal == float(fi.smallest_subnormal), name
    with pytest.raises(ValueError, match="fmt"):
        quantize(np.zeros(2, np.float32), "e3m4")
    with pytest.raises(ValueError, match="rounding"):
        quantize(np.zeros(2, np.float32), "e5m2", rounding="up")
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            quantize(np.zeros(2, np.float32), "e5m2", rounding="stochastic", seed=bad)
    with pytest.raises(ValueError, match="dtype"):
        quantize(np.array(["a"]), "e5m2")


# ---- stochastic ----
def test_random_bits_formula_hand_computed() -> None:
    assert py_fmix32(0) == 0
    for seed in (0, 1, 12345, 2**32 - 1):
        r = random_bits(64, seed)
        assert [int(v) for v in r] == [py_r(i, seed) for i in range(64)]


@pytest.mark.parametrize(("fmt", "x_of_r"), [
    # e5m2 in [1, 2): ulp 2**-2, d = 21 dropped bits; threshold = S_low << 11.
    ("e5m2", lambda r, up: 1.0 + ((r >> 11) + up) * 2.0**-23),
    # e4m3 in [8, 16): ulp 1, d = 20; threshold = S_low << 12.
    ("e4m3", lambda r, up: 8.0 + ((r >> 12) + up) * 2.0**-20),
    # fp16 in [2, 4): ulp 2**-9, d = 13; threshold = S_low << 19.
    ("fp16", lambda r, up: 2.0 + ((r >> 19) + up) * 2.0**-22),
])
def test_stochastic_decision_on_the_random_word(fmt: str, x_of_r, seed: int = 99) -> None:
    """Values built from each element's own r_i so that the spec forces 'up' or 'down' exactly."""
    n = 16
    r = [py_r(i, seed) for i in range(n)]
    ups = [i % 2 for i in range(n)]
    x = np.array([x_of_r(ri, u) for ri, u in zip(r, ups, strict=True)], np.float32)
    assert all(float(v) == x_of_r(ri, u) for v, ri, u in zip(x, r, ups, strict=True))  # exactly fp32
    got = dequantize(quantize(x, fmt, rounding="stochastic", seed=seed)).astype(np.float64)
    ulp = 2.0 ** (math.floor(math.log2(float(x[0]))) - MBITS[fmt])
    base = np.floor(x.astype(np.float64) / ulp) * ulp
    assert (got == base + np.array(ups) * ulp).all()


def test_stochastic_decision_when_more_than_32_bits_are_dropped(seed: int = 5) -> None:
    """e4m3, |x| ~ 2**-20: d = 34 dropped bits, up iff r < ceil(S_low / 4) -- needs a small r_i."""
    r = random_bits(200_000, seed)
    idx = np.flatnonzero(r < 2**21)[:8]
    assert len(idx) == 8
    x = np.zeros(200_000, np.float32)
    # S = 4*r (+1): value S * 2**-43 (e0 = -20 - 23); S < 2**23 stays a 24-bit fp32 significand.
    want_up = np.arange(8) % 2 == 1
    s = 4 * r[idx].astype(np.int64) + want_up
    x[idx] = (s * 2.0**-43).astype(np.float32)
    assert (x[idx].astype(np.float64) == s * 2.0**-43).all()
    got = dequantize(quantize(x, "e4m3", rounding="stochastic", seed=seed))[idx]
    # ulp = 2**-9 (subnormal step of e4m3); k = 0, so the result is 0 or 2**-9.
    assert (got == np.where(want_up, 2.0**-9, 0.0)).all()


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(list(ALL)), st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 2**32 - 1))
def test_stochastic_matches_integer_spec_on_random_bit_patterns(fmt: str, seed: int, saturate: bool,
                                                                 data_seed: int) -> None:
    rng = np.random.default_rng(data_seed)
    x = rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32).view(np.float32)
    # Also values near the format's range, where rounding is most interesting.
    near = (rng.standard_normal(300) * MAXV[fmt] ** rng.uniform(-1.2, 1.1, 300)).astype(np.float32)
    x = np.concatenate([x, near, edge_cases()[:200]])
    got = dequantize(quantize(x, fmt, rounding="stochastic", seed=seed, saturate=saturate)).astype(np.float64)
    for i, (xi, gi) in enumerate(zip(x.tolist(), got.tolist(), strict=True)):
        assert same(gi, py_stochastic(xi, i, seed, fmt, saturate)), (fmt, i, xi, gi)


@pytest.mark.parametrize("fmt", list(ALL))
def test_stochastic_is_a_neighbour_reproducible_and_seeded(fmt: str) -> None:
    rng = np.random.default_rng(1)
    v = all_finite_values(fmt)
    x = (rng.standard_normal(4000) * np.exp2(rng.uniform(np.log2(v[1]) - 2, np.log2(v[-1]), 4000)))
    x = np.clip(x, -v[-1], v[-1]).astype(np.float32)
    a = quantize(x, fmt, rounding="stochastic", seed=3)
    assert np.array_equal(bits_of(a), bits_of(quantize(x, fmt, rounding="stochastic", seed=3)))
    assert not np.array_equal(bits_of(a), bits_of(quantize(x, fmt, rounding="stochastic", seed=4)))
    ax, ag = np.abs(x.astype(np.float64)), np.abs(dequantize(a).astype(np.float64))
    lo = v[np.searchsorted(v, ax, side="right") - 1]
    hi = v[np.minimum(np.searchsorted(v, ax, side="left"), len(v) - 1)]
    assert ((ag == lo) | (ag == hi)).all()
    nz = ag != 0
    assert (np.signbit(dequantize(a)) == np.signbit(x)).all() and nz.any()


@pytest.mark.parametrize(("fmt", "x"), [
    ("e5m2", 1.1), ("e5m2", -0.3), ("e5m2", 3.0e-5), ("e5m2", 5.0e-6), ("e5m2", 50000.0),
    ("e4m3", 0.003), ("e4m3", 300.0), ("e4m3", -1.7),
    ("fp16", 1.0001), ("fp16", 1e-7), ("fp16", 60000.3),
])
def test_stochastic_is_unbiased(fmt: str, x: float) -> None:
    n = 200_000
    x32 = float(np.float32(x))
    q = dequantize(quantize(np.full(n, x32, np.float32), fmt, rounding="stochastic", seed=2024))
    vals = np.unique(q)
    assert len(vals) == 2  # a non-representable value: both neighbours occur
    lo, hi = sorted(np.abs(vals.astype(np.float64)))
    p = (abs(x32) - lo) / (hi - lo)
    se = (hi - lo) * math.sqrt(p * (1 - p) / n)
    assert abs(q.astype(np.float64).mean() - x32) < 5 * se


@pytest.mark.parametrize(("fmt", "x", "m", "ovf"), [
    ("e5m2", 60000.0, 57344.0, math.inf), ("e4m3", 450.0, 448.0, math.nan),
    ("fp16", 65510.0, 65504.0, math.inf),
])
def test_stochastic_overflow_both_ways(fmt: str, x: float, m: float, ovf: float) -> None:
    n = 20_000
    xs = np.concatenate([np.full(n, x), np.full(n, -x), [np.inf, -np.inf, np.nan]]).astype(np.float32)
    unsat = dequantize(quantize(xs, fmt, rounding="stochastic", seed=11)).astype(np.float64)
    sat = dequantize(quantize(xs, fmt, rounding="stochastic", seed=11, saturate=True)).astype(np.float64)
    pos = unsat[:n]
    over = np.isnan(pos) if math.isnan(ovf) else np.isinf(pos)
    assert 0 < over.sum() < n and (pos[~over] == m).all()  # rounds down to max or up past it
    if not math.isnan(ovf):
        assert (unsat[n:2 * n][np.isinf(unsat[n:2 * n])] == -math.inf).all()
        assert unsat[-3] == math.inf and unsat[-2] == -math.inf
    else:
        assert np.isnan(unsat[-3:-1]).all()
    assert (sat[:n] == m).all() and (sat[n:2 * n] == -m).all()
    assert sat[-3] == m and sat[-2] == -m and np.isnan(sat[-1]) and np.isnan(unsat[-1])


def test_stochastic_zero_sign_and_shape() -> None:
    x = np.array([[0.0, -0.0], [-1e-30, 1e-30]], np.float32)
    q = dequantize(quantize(x, "e5m2", rounding="stochastic", seed=0))
    assert q.shape == (2, 2) and (q == 0).all()
    assert np.signbit(q).tolist() == [[False, True], [True, False]]


@pytest.mark.parametrize("fmt", list(ALL))
def test_dequantize_is_the_exact_cast(fmt: str) -> None:
    codes = np.arange(2**16 if fmt == "fp16" else 256, dtype=np.uint16 if fmt == "fp16" else np.uint8)
    q = codes.view(ALL[fmt]).reshape(-1, 4)
    got, want = dequantize(q), q.astype(np.float32)
    assert got.dtype == np.float32 and got.shape == q.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_size_limit_and_input_conversion() -> None:
    with pytest.raises(ValueError, match="2\\*\\*32"):
        random_bits(2**32, 0)
    # float64 and Python scalars are converted to float32 first (the spec is defined on fp32 values)
    x64 = np.array([1.1, -3e-6, 70000.0])
    assert np.array_equal(bits_of(quantize(x64, "e5m2")), bits_of(quantize(x64.astype(np.float32), "e5m2")))
    s = quantize(1.1, "e4m3", rounding="stochastic", seed=1)
    assert s.shape == () and float(s) in (1.0, 1.125)
