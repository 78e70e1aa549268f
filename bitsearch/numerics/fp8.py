"""FP8 (E5M2, E4M3) and FP16 quantization: round-to-nearest-even and counter-based stochastic rounding.

This module is the *reference of the stochastic-rounding specification* shared with the AVX2 quantize
kernel (``bitsearch/asm/x86_64/fp8_quantize.py``); the two must agree bit for bit.

Specification (stochastic rounding)
-----------------------------------
- Random bits are counter-based, so any element can be rounded independently and in any order: for the
  element at flat C-order index ``i`` (uint32; arrays of ``>= 2**32`` elements are a ValueError) and a
  seed ``s`` (an int in ``[0, 2**32)``; ``seed=None`` draws one from OS entropy, not reproducible),
  ``r_i = fmix32(i ^ fmix32(s))``, with MurmurHash3's finalizer on uint32 (all mod ``2**32``):
  ``h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16``.
- For a finite fp32 input ``x`` and a format with ``m`` mantissa bits and minimum normal exponent
  ``emin`` (E5M2: m=2, emin=-14; E4M3: m=3, emin=-6; FP16: m=10, emin=-14): ``e = floor(log2|x|)``,
  ``ulp = 2**(max(e, emin) - m)``, ``q = |x| / ulp``, ``k = floor(q)``, ``f = q - k`` (exact in
  float64). Round up (magnitude ``(k+1)*ulp``) iff ``r_i < f * 2**32`` as real numbers, else ``k*ulp``.
  The sign is kept (a negative value rounding to zero gives -0); ``x == 0`` keeps its signed zero.
  ``P(up) = ceil(f*2**32) / 2**32``: unbiased to ``2**-32`` of an ulp.
- Overflow: if the rounded magnitude exceeds the largest finite value (E5M2 57344, E4M3 448,
  FP16 65504) or ``x`` is +-inf, ``saturate=True`` gives +-max; ``saturate=False`` gives +-inf for
  E5M2/FP16 and NaN for E4M3 (``float8_e4m3fn`` has no infinities). NaN stays NaN.
  NaN results carry x's sign bit with the cast's canonical payload, exactly as the nearest cast gives
  them: E5M2 0x7E/0xFE, E4M3 0x7F/0xFF, FP16 0x7E00/0xFE00.
- ``rounding="nearest"`` is exactly ml_dtypes' (numpy's for FP16) cast from float32; ``saturate=True``
  first clips finite values to +-max.

Inputs are converted to float32 first (the spec is defined on fp32 values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import ml_dtypes
import numpy as np

__all__ = [
    "FORMATS",
    "FloatFormat",
    "dequantize",
    "fmix32",
    "format_info",
    "quantize",
    "random_bits",
]

Rounding = Literal["nearest", "stochastic"]


@dataclass(frozen=True, kw_only=True)
class FloatFormat:
    """A small binary floating-point format (what ``quantize`` rounds to).

    >>> f = format_info("e5m2")
    >>> (f.mantissa_bits, f.emin, f.max, f.min_normal, f.min_subnormal)
    (2, -14, 57344.0, 6.103515625e-05, 1.52587890625e-05)
    """

    name: str
    dtype: type
    mantissa_bits: int
    exponent_bits: int
    emin: int  # exponent of the smallest normal number
    max: float  # largest finite value
    has_inf: bool  # False: overflow without saturation gives NaN

    @property
    def min_normal(self) -> float:
        return float(2.0**self.emin)

    @property
    def min_subnormal(self) -> float:
        return float(2.0 ** (self.emin - self.mantissa_bits))


FORMATS: dict[str, FloatFormat] = {
    "e5m2": FloatFormat(name="e5m2", dtype=ml_dtypes.float8_e5m2, mantissa_bits=2, exponent_bits=5,
                        emin=-14, max=57344.0, has_inf=True),
    "e4m3": FloatFormat(name="e4m3", dtype=ml_dtypes.float8_e4m3fn, mantissa_bits=3, exponent_bits=4,
                        emin=-6, max=448.0, has_inf=False),
    "fp16": FloatFormat(name="fp16", dtype=np.float16, mantissa_bits=10, exponent_bits=5,
                        emin=-14, max=65504.0, has_inf=True),
}


def format_info(fmt: str | FloatFormat) -> FloatFormat:
    """The ``FloatFormat`` record of ``fmt`` ("e5m2" | "e4m3" | "fp16").

    >>> format_info("e4m3").max
    448.0
    """
    if isinstance(fmt, FloatFormat):
        return fmt
    try:
        return FORMATS[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"fmt={fmt!r}: expected one of {sorted(FORMATS)}") from None


_M32 = 0xFFFFFFFF


def fmix32(h: int | np.ndarray) -> int | np.ndarray:
    """MurmurHash3's 32-bit finalizer, on a Python int or a uint32 array (arithmetic mod 2**32).

    >>> hex(fmix32(1))
    '0x514e28b7'
    """
    if isinstance(h, np.ndarray):
        if h.dtype != np.uint32:
            raise ValueError(f"fmix32: array dtype must be uint32, got {h.dtype}")
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)  # uint32 array products wrap mod 2**32
        h ^= h >> np.uint32(13)
        h = h * np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
        return h
    h = int(h) & _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def check_seed(seed: int | None) -> int:
    if seed is None:
        return int.from_bytes(os.urandom(4), "little")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed={seed!r}: expected an int in [0, 2**32) or None")
    return int(seed)


def random_bits(size: int, seed: int) -> np.ndarray:
    """The spec's random words ``r_i = fmix32(i ^ fmix32(seed))`` for ``i in range(size)`` (uint32).

    >>> random_bits(3, 0).dtype
    dtype('uint32')
    """
    if not isinstance(size, int | np.integer) or not 0 <= int(size) < 2**32:
        raise ValueError(f"size={size!r}: stochastic rounding needs fewer than 2**32 elements")
    key = np.uint32(fmix32(check_seed(seed)))
    return fmix32(np.arange(int(size), dtype=np.uint32) ^ key)


def _stochastic_magnitude(u: np.ndarray, r: np.ndarray, f: FloatFormat) -> np.ndarray:
    """Rounded |x| (float32) from fp32 bit patterns ``u`` of finite values and random words ``r``.

    The spec in integer terms: |x| = S * 2**(E - 150) with 24-bit significand S (fp32 subnormals: E = 1,
    no implicit bit); d = ulp_exp - (E - 150) >= 13 bits are dropped, k = S >> d, S_low = S mod 2**d;
    up iff r < S_low << (32 - d) (d <= 32) or r < ceil(S_low / 2**(d - 32)) (d > 32).
    """
    a = u & np.uint32(0x7FFFFFFF)
    biased = (a >> np.uint32(23)).astype(np.int32)
    s = (a & np.uint32(0x7FFFFF)) | ((biased > 0).astype(np.uint32) << np.uint32(23))
    biased = np.maximum(biased, 1)  # value = S * 2**(biased - 150) for normals and subnormals alike
    ulp_exp = np.maximum(biased - 127, f.emin) - f.mantissa_bits
    d = ulp_exp - (biased - 150)  # >= 13
    k = s >> np.minimum(d, 31).astype(np.uint32)  # S < 2**24: any d >= 24 drops everything
    # d <= 32: (S << (32 - d)) mod 2**32 == S_low << (32 - d): the uint32 shift drops k's bits.
    thr = s << (32 - np.minimum(d, 32)).astype(np.uint32)
    big = d > 32
    if big.any():  # tiny inputs only: S_low == S; ceil(S / 2**sh), and sh >= 24 already gives S > 0
        sh = np.minimum(d[big] - 32, 31).astype(np.uint32)
        sb = s[big]
        thr[big] = (sb + ((np.uint32(1) << sh) - np.uint32(1))) >> sh
    up = r < thr
    with np.errstate(over="ignore"):  # 2**128 in float32 is inf: an overflow, handled by the caller
        return np.ldexp((k + up).astype(np.float32), ulp_exp)


def quantize(x: np.ndarray | float, fmt: str | FloatFormat, rounding: Rounding = "nearest",
             seed: int | None = None, saturate: bool = False) -> np.ndarray:
    """Round ``x`` (converted to float32) to ``fmt``; returns an ml_dtypes array (``np.float16`` for "fp16").

    ``rounding="nearest"`` is round-to-nearest-even (ml_dtypes' cast); ``"stochastic"`` follows the
    counter-based specification in this module's docstring (reproducible for a given ``seed``; ``None``
    draws one from OS entropy). ``saturate`` defaults to False so that an overflow becomes +-inf (NaN
    for E4M3) instead of silently clipping: the dynamic loss scaler detects the non-finite gradient,
    skips the step and halves the scale, whereas a saturated gradient would be a wrong but finite
    update. Pass ``saturate=True`` to clip to +-max instead (e.g. for E4M3 forward activations).

    >>> import numpy as np
    >>> quantize(np.array([1.0, 1.1, 1.2, 7e4], np.float32), "e5m2").astype(float).tolist()
    [1.0, 1.0, 1.25, inf]
    >>> quantize(np.array([7e4, -1e9], np.float32), "e5m2", saturate=True).astype(float).tolist()
    [57344.0, -57344.0]
    >>> q = quantize(np.full(4, 1.1, np.float32), "e5m2", rounding="stochastic", seed=7)
    >>> sorted(set(q.astype(float).tolist())) in ([1.0], [1.25], [1.0, 1.25])
    True
    """
    f = format_info(fmt)
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding={rounding!r}: expected 'nearest' or 'stochastic'")
    xa = np.asarray(x)
    if xa.dtype.kind not in "fiub" and xa.dtype not in (ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fn,
                                                        ml_dtypes.bfloat16):
        raise ValueError(f"x: expected a real numeric array, got dtype {xa.dtype}")
    x32 = np.asarray(xa, dtype=np.float32)  # no copy when already float32
    if rounding == "nearest":
        if saturate:
            x32 = np.clip(x32, -f.max, f.max)  # NaN passes through np.clip
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf/NaN is the documented result
            return x32.astype(f.dtype)
    if x32.size >= 2**32:
        raise ValueError(f"x has {x32.size} elements: stochastic rounding indexes them with uint32")
    flat = x32.reshape(-1)
    r = random_bits(flat.size, check_seed(seed))
    u = flat.view(np.uint32)
    finite = np.isfinite(flat)
    mag = _stochastic_magnitude(np.where(finite, u, np.uint32(0)), r, f)
    over = (mag > f.max) | np.isinf(flat)
    overflow_value = f.max if saturate else (np.inf if f.has_inf else np.nan)
    mag = np.where(over, np.float32(overflow_value), mag)
    mag = np.where(np.isnan(flat), np.float32(np.nan), mag)
    out = np.copysign(mag, flat)  # exact: every magnitude is a value of the format (or inf / NaN)
    with np.errstate(invalid="ignore", over="ignore"):
        return out.astype(f.dtype).reshape(x32.shape)


def dequantize(q: np.ndarray) -> np.ndarray:
    """Decode an FP8/FP16 array to float32 (exact).

    >>> dequantize(quantize(np.array([3.0], np.float32), "e4m3")).tolist()
    [3.0]
    """
    q = np.asarray(q)
    lut = _DECODE.get(q.dtype)
    if lut is not None:  # a 256-entry table: several times faster than ml_dtypes' cast, same values
        return lut[q.view(np.uint8)]
    return q.astype(np.float32)


_DECODE = {np.dtype(t): np.arange(256, dtype=np.uint8).view(t).astype(np.float32)
           for t in (ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fn)}
