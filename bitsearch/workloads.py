"""Workloads (what to compute) and their exact numpy references.

A workload fixes shapes, bit widths and the value semantics; a schedule (how to compute it) is
chosen separately. Value semantics, with A = 2^abits - 1 and W = 2^wbits - 1:

- ``and``:      y = x @ w.T
- ``unipolar``: y = x @ (2w - W).T          (odd, symmetric weight levels)
- ``bipolar``:  y = (2x - A) @ (2w - W).T   (1-bit x 1-bit is XNOR-popcount)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

Mode = Literal["and", "unipolar", "bipolar"]
MODES: tuple[str, ...] = ("and", "unipolar", "bipolar")
INT32_MAX = 2**31 - 1


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_bits(name: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or not 1 <= value <= 8:
        raise ValueError(f"{name} must be an integer in 1..8, got {value!r}")


class GemmShape:
    """x [m, k] times w [n, k] transposed: the shapes and MAC count every dense workload shares."""

    m: int
    n: int
    k: int

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k

    @property
    def x_shape(self) -> tuple[int, int]:
        return (self.m, self.k)

    @property
    def w_shape(self) -> tuple[int, int]:
        return (self.n, self.k)


@dataclass(frozen=True)
class Dense(GemmShape):
    """A bit-serial dense layer: x uint8 [m, k] times w uint8 [n, k] transposed -> int32 [m, n].

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> wl = bs.Dense(4, 3, 70, abits=2, wbits=1, mode="unipolar")
        >>> x = np.full((4, 70), 3, np.uint8); w = np.ones((3, 70), np.uint8)
        >>> int(bs.reference(wl, x, w)[0, 0])
        210
    """

    m: int
    n: int
    k: int
    abits: int = 1
    wbits: int = 1
    mode: Mode = "and"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            _check_positive_int(name, getattr(self, name))
        _check_bits("abits", self.abits)
        _check_bits("wbits", self.wbits)
        for name in ("m", "n", "k", "abits", "wbits"):  # numpy integers would wrap around
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_abs_output > INT32_MAX:
            raise ValueError(
                f"k={self.k} at {self.abits}x{self.wbits} bits can reach {self.max_abs_output}, "
                "which does not fit the int32 output"
            )

    @property
    def amax(self) -> int:
        return (1 << self.abits) - 1

    @property
    def wmax(self) -> int:
        return (1 << self.wbits) - 1

    @property
    def max_abs_output(self) -> int:
        """The accumulator bound K*(2^a-1)*(2^w-1): the largest |y| any input can produce."""
        return self.k * self.amax * self.wmax

    @property
    def bit_macs(self) -> int:
        """Binary products a bit-serial kernel performs: abits*wbits per MAC."""
        return self.macs * self.abits * self.wbits

    def check_x(self, x: np.ndarray, *, check_range: bool = True) -> np.ndarray:
        """x as a contiguous uint8 of ``x_shape``, or ``ValueError`` naming what is wrong with it."""
        return _check_operand("x", x, self.x_shape, self.abits, check_range=check_range)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return _check_operand("w", w, self.w_shape, self.wbits)

    def check_packed(self, seen: int) -> None:
        """Reject activations from the OR of all their bytes (returned by the packing code)."""
        if seen >> self.abits:
            raise ValueError(
                f"x holds values out of range for {self.abits}-bit activations "
                f"(0..{self.amax}); bits seen: {seen:#04x}"
            )

    def to_dict(self) -> dict[str, object]:
        return {"op": "dense", "m": self.m, "n": self.n, "k": self.k,
                "abits": self.abits, "wbits": self.wbits, "mode": self.mode}

    def __str__(self) -> str:
        return f"dense {self.m}x{self.n}x{self.k} A{self.abits}W{self.wbits} {self.mode}"


def _check_operand(
    name: str, array: np.ndarray, shape: tuple[int, int], bits: int, *, check_range: bool = True
) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if check_range and array.size and int(array.max()) >> bits:
        raise ValueError(
            f"{name} holds {int(array.max())}, out of range for {bits}-bit values (0..{(1 << bits) - 1})"
        )
    return np.ascontiguousarray(array)


INT_DTYPES: tuple[str, ...] = ("int16", "int8")
INT8_X_MAX = 127  # 7-bit activations: VPMADDUBSW's pair sums (<= 2*127*128 = 32512) never saturate
FLOAT64_EXACT = 2**53  # integers below this are exact in float64, so are sums bounded by it


@dataclass(frozen=True)
class IntDense(GemmShape):
    """An integer dense layer, the baselines of the bit-serial kernels: y = x @ w.T as int32 [m, n].

    ``dtype="int16"``: x int16 [m, k], w int16 [n, k]; y is the exact sum *modulo 2^32* (as int32,
    two's complement). That is what VPMADDWD + VPADDD compute: every product fits int32 and the
    only pair sum that does not, (-32768)^2 * 2 = 2^31, wraps to -2^31 -- the same wrap-around
    as the final modular sum, so the kernel is exact modulo 2^32 for any K.

    ``dtype="int8"``: x uint8 in 0..127 (7-bit activations) [m, k], w int8 [n, k]; y exact. The
    7-bit bound is what keeps VPMADDUBSW (u8 x s8, pairs summed to saturated s16) exact:
    2*127*128 = 32512 <= 32767. K must keep K*127*128 within int32.

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> wl = IntDense(2, 3, 5, dtype="int8")
        >>> x = np.full((2, 5), 127, np.uint8); w = np.full((3, 5), -128, np.int8)
        >>> int(reference(wl, x, w)[0, 0])
        -81280
    """

    m: int
    n: int
    k: int
    dtype: str = "int16"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            _check_positive_int(name, getattr(self, name))
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.dtype not in INT_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(INT_DTYPES)}, got {self.dtype!r}")
        if self.dtype == "int8" and self.max_abs_output > INT32_MAX:
            raise ValueError(
                f"k={self.k} at int8 can reach {self.max_abs_output} (k*127*128), "
                "which does not fit the int32 output"
            )

    @property
    def x_dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.dtype == "int16" else np.uint8)

    @property
    def w_dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.dtype == "int16" else np.int8)

    @property
    def element_bytes(self) -> int:
        return 2 if self.dtype == "int16" else 1

    @property
    def x_range(self) -> tuple[int, int]:
        return (-(2**15), 2**15 - 1) if self.dtype == "int16" else (0, INT8_X_MAX)

    @property
    def w_range(self) -> tuple[int, int]:
        return (-(2**15), 2**15 - 1) if self.dtype == "int16" else (-128, 127)

    @property
    def max_abs_output(self) -> int:
        """The largest |x @ w.T| any input can produce, before int16's modulo-2^32 wrap-around."""
        if self.dtype == "int16":
            return self.k * 2**30
        return self.k * INT8_X_MAX * 128

    def check_x(self, x: np.ndarray, *, check_range: bool = True) -> np.ndarray:
        """x as a contiguous [m, k] array of ``x_dtype``, or ``ValueError`` naming the problem."""
        return _check_int_operand("x", x, self.x_shape, self.x_dtype,
                                  self.x_range if check_range else None)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return _check_int_operand("w", w, self.w_shape, self.w_dtype, self.w_range)

    def check_packed(self, seen: int) -> None:
        """Reject activations from the OR of all bytes the packing code read: an int8 workload's
        x must leave bit 7 clear (0..127); every int16 value is valid."""
        if self.dtype == "int8" and seen & 0x80:
            raise ValueError(
                f"x holds values out of range for int8 activations (0..{INT8_X_MAX}, 7-bit); "
                f"bits seen: {seen:#04x}"
            )

    def to_dict(self) -> dict[str, object]:
        return {"op": "int_dense", "m": self.m, "n": self.n, "k": self.k, "dtype": self.dtype}

    def __str__(self) -> str:
        return f"int_dense {self.m}x{self.n}x{self.k} {self.dtype}"


def _check_int_operand(
    name: str, array: np.ndarray, shape: tuple[int, int], dtype: np.dtype,
    value_range: tuple[int, int] | None,
) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if value_range is not None and array.size:
        low, high = value_range
        lo, hi = int(array.min()), int(array.max())
        if lo < low or hi > high:
            bad = hi if hi > high else lo
            raise ValueError(f"{name} holds {bad}, out of range {low}..{high}")
    return np.ascontiguousarray(array)


def _int_reference(workload: IntDense, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x = workload.check_x(x)
    w = workload.check_w(w)
    bound = workload.k * max(abs(v) for v in workload.x_range) * max(abs(v) for v in workload.w_range)
    if bound < FLOAT64_EXACT:
        # Every product and every partial sum, in any order, is an integer below 2^53: exact.
        exact = (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
    else:
        exact = x.astype(np.int64) @ w.astype(np.int64).T
    # Two's complement wrap-around modulo 2^32 (only int16 can get there).
    return (exact & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


FP8_FORMATS: tuple[str, ...] = ("e5m2", "e4m3")


def fp8_dtype(fmt: str) -> np.dtype:
    """The ml_dtypes dtype of an FP8 format name ("e5m2" | "e4m3"; E4M3 is ``float8_e4m3fn``)."""
    import ml_dtypes

    if fmt == "e5m2":
        return np.dtype(ml_dtypes.float8_e5m2)
    if fmt == "e4m3":
        return np.dtype(ml_dtypes.float8_e4m3fn)
    raise ValueError(f"FP8 format must be one of {', '.join(FP8_FORMATS)}, got {fmt!r}")


@dataclass(frozen=True)
class Fp8Dense(GemmShape):
    """An FP8 dense layer: y = a @ b.T as float32 [m, n], a FP8 [m, k] (``afmt``), b FP8 [n, k]
    (``wfmt``), as ml_dtypes arrays (``float8_e5m2`` / ``float8_e4m3fn``); products exact, sums
    accumulated in FP32 (FMA).

    FP32 accumulation is not exact, so kernels are checked against the float64 :func:`reference`
    within :func:`fp8_tolerance`: ``|y - ref| <= (K * 2**-23 + 2**-40) * sum_k |a_k b_k|``.
    Why: every product of two FP8 values is exact in FP32 (at most 4+4 significant bits; nonzero
    magnitudes within [2**-32, 2**32), and every partial sum is 0 or a multiple of the smallest
    product, so never subnormal), so the only errors are the at most K + (K blocks) <= 2K roundings of
    the running sum, each at most 2**-24 relative to a partial sum bounded by sum_k |a_k b_k|; the
    classical bound gamma_2K = 2K u / (1 - 2K u) <= K * 2**-23 * (1 + tiny) for K < 2**20, and
    2**-40 covers the float64 reference's own rounding. A sum of only exact zeros must be 0.
    Non-finite inputs (E5M2 inf/NaN, E4M3 NaN) follow IEEE: where the reference is NaN or +-inf
    the kernel must give exactly that class.

    Example:
        >>> import numpy as np, ml_dtypes, bitsearch as bs
        >>> wl = bs.Fp8Dense(2, 3, 5, afmt="e5m2", wfmt="e4m3")
        >>> a = np.full((2, 5), 1.5, ml_dtypes.float8_e5m2); b = np.full((3, 5), -2, ml_dtypes.float8_e4m3fn)
        >>> float(bs.reference(wl, a, b)[1, 2])
        -15.0
    """

    m: int
    n: int
    k: int
    afmt: str = "e5m2"
    wfmt: str = "e5m2"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            _check_positive_int(name, getattr(self, name))
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("afmt", "wfmt"):
            if getattr(self, name) not in FP8_FORMATS:
                raise ValueError(
                    f"{name} must be one of {', '.join(FP8_FORMATS)}, got {getattr(self, name)!r}")

    @property
    def x_dtype(self) -> np.dtype:
        return fp8_dtype(self.afmt)

    @property
    def w_dtype(self) -> np.dtype:
        return fp8_dtype(self.wfmt)

    def check_x(self, x: np.ndarray, *, check_range: bool = True) -> np.ndarray:
        """a as a contiguous FP8 [m, k] array of ``x_dtype``, or ``ValueError`` naming the problem."""
        return _check_int_operand("a", x, self.x_shape, self.x_dtype, None)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return _check_int_operand("b", w, self.w_shape, self.w_dtype, None)

    def check_packed(self, seen: int) -> None:
        """Every FP8 byte is a valid value: nothing to reject."""

    def to_dict(self) -> dict[str, object]:
        return {"op": "fp8_dense", "m": self.m, "n": self.n, "k": self.k,
                "afmt": self.afmt, "wfmt": self.wfmt}

    def __str__(self) -> str:
        return f"fp8_dense {self.m}x{self.n}x{self.k} {self.afmt}x{self.wfmt}"


def _fp8_reference(workload: Fp8Dense, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = workload.check_x(a).astype(np.float64)
    b = workload.check_w(b).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 0 * inf: NaN as in IEEE
        return a @ b.T


def fp8_tolerance(workload: Fp8Dense, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The allowed |y - reference| of an FP32-accumulating kernel, float64 [m, n] (derivation in
    :class:`Fp8Dense`): ``(K * 2**-23 + 2**-40) * (|a| @ |b|.T)``.

    Example:
        >>> import numpy as np, ml_dtypes
        >>> wl = Fp8Dense(1, 1, 4)
        >>> a = np.ones((1, 4), ml_dtypes.float8_e5m2)
        >>> float(fp8_tolerance(wl, a, a)[0, 0]) == (4 * 2**-23 + 2**-40) * 4
        True
    """
    a = np.abs(workload.check_x(a).astype(np.float64))
    b = np.abs(workload.check_w(b).astype(np.float64))
    with np.errstate(invalid="ignore", over="ignore"):
        return (workload.k * 2.0**-23 + 2.0**-40) * (a @ b.T)


def fp8_mismatch(workload: Fp8Dense, a: np.ndarray, b: np.ndarray, got: np.ndarray,
                 want: np.ndarray | None = None) -> str | None:
    """None if ``got`` (float32 [m, n]) is within :func:`fp8_tolerance` of the reference (and
    equal in class where the reference is NaN or +-inf), else a message naming the first bad
    output."""
    want = _fp8_reference(workload, a, b) if want is None else want
    got64 = np.asarray(got, np.float64)
    finite = np.isfinite(want)
    with np.errstate(invalid="ignore"):
        ok = np.where(finite, np.abs(got64 - want) <= fp8_tolerance(workload, a, b),
                      (np.isnan(want) & np.isnan(got64)) | (want == got64))
    if ok.all():
        return None
    bad = np.argwhere(~ok)
    r, c = (int(v) for v in bad[0])
    return (f"{len(bad)} outputs out of tolerance, first y[{r},{c}] = {float(got64[r, c])!r}, "
            f"expected {float(want[r, c])!r}")


def fp8_verification_inputs(workload: Fp8Dense, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random finite operands first (every finite FP8 code equally likely: the timed case), then
    adversarial ones: all maximal magnitudes (the largest sums), alternating signs of the maximal
    magnitude (sums cancel to exactly 0), subnormals, +0/-0, and non-finite codes (E5M2 inf and
    NaN, E4M3 NaN) in a few rows and columns (they must propagate as in IEEE)."""
    rng = np.random.default_rng(seed)
    wl = workload
    out = []
    for operand, (shape, fmt) in enumerate(((wl.x_shape, wl.afmt), (wl.w_shape, wl.wfmt))):
        dt = fp8_dtype(fmt)
        codes = np.arange(256, dtype=np.uint8)
        values = codes.view(dt).astype(np.float32)
        finite = codes[np.isfinite(values)]
        fmax = float(np.abs(values[np.isfinite(values)]).max())
        rows, cols = np.indices(shape)
        # a's sign alternates along K, b's per column: every dot product alternates (cancels).
        sign = np.where((rows + (cols if operand == 0 else 0)) % 2 == 1, -1.0, 1.0)
        sub = codes[(codes & 0x7F) < (4 if fmt == "e5m2" else 8)]  # exponent field 0: zeros, subnormals
        special = rng.choice(finite, shape)
        special[::3, ::2] = 0x7F  # NaN (E4M3) / NaN (E5M2, 0x7F is a NaN code too)
        if fmt == "e5m2":
            special[1::4, 1::3] = 0x7C  # +inf
            special[2::5, ::4] = 0xFC  # -inf
        out.append({
            "random": rng.choice(finite, shape).view(dt),
            "all-maximal": np.full(shape, fmax, np.float32).astype(dt),
            "alternating-maximal": (sign * fmax).astype(np.float32).astype(dt),
            "subnormal": rng.choice(sub, shape).view(dt),
            "zeros": np.where(sign > 0, 0.0, -0.0).astype(np.float32).astype(dt),
            "non-finite": special.view(dt),
        })
    return [(name, out[0][name], out[1][name]) for name in out[0]]


def reference(workload: Dense | IntDense | Fp8Dense, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The exact result (int32 out) of ``workload`` on ``x`` and ``w``. Computed with float64 BLAS
    while every partial sum stays below 2^53 -- integers that small are exact in float64, in any
    summation order -- which always holds for :class:`Dense` (|y| < 2^31); int64 otherwise; then
    int16's modulo-2^32 wrap-around for :class:`IntDense`. For :class:`Fp8Dense`: float64 [m, n],
    the operands decoded by ml_dtypes and summed in float64 (compare within :func:`fp8_tolerance`)."""
    if isinstance(workload, Conv2d | IntConv2d):  # NHWC convolutions: y [batch, out_h, out_w, cout]
        return _conv_reference(workload, x, w)
    if isinstance(workload, IntDense):
        return _int_reference(workload, x, w)
    if isinstance(workload, Fp8Dense):
        return _fp8_reference(workload, x, w)  # float64 [m, n]: see fp8_tolerance
    if not isinstance(workload, Dense):
        raise ValueError(f"no reference for workload type {type(workload).__name__}")
    x = workload.check_x(x).astype(np.float64)
    w = workload.check_w(w).astype(np.float64)
    if workload.mode in ("unipolar", "bipolar"):
        w = 2 * w - workload.wmax
    if workload.mode == "bipolar":
        x = 2 * x - workload.amax
    return np.rint(x @ w.T).astype(np.int32)  # max_abs_output < 2^31: exact


# ---------------------------------------------------------------------------------------------
# Convolutions (NHWC): x [batch, h, w, cin], weights [cout, kh, kw, cin], y int32 [batch, oh, ow, cout]
# ---------------------------------------------------------------------------------------------
PADDINGS: tuple[str, ...] = ("SAME", "VALID")


def _pair(name: str, value: object) -> tuple[int, int]:
    """An int or a pair of ints as a pair of positive ints, or ``ValueError`` naming ``name``."""
    items = list(value) if isinstance(value, list | tuple) else [value, value]
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    for item in items:
        _check_positive_int(name, item)
    return int(items[0]), int(items[1])


def _normalize_padding(padding: object) -> str | int | tuple[int, int, int, int]:
    if isinstance(padding, str):
        if padding.upper() not in PADDINGS:
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or per-side pads, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int | np.integer) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        return int(padding)
    if isinstance(padding, list | tuple):
        flat: list[object] = []
        for item in padding:  # ((top, bottom), (left, right)) or (top, bottom, left, right)
            flat.extend(item if isinstance(item, list | tuple) else [item])
        if len(flat) == 4 and all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0
                                  for v in flat):
            return tuple(int(v) for v in flat)  # type: ignore[return-value]
    raise ValueError(f"padding must be 'SAME', 'VALID', a non-negative int or per-side pads "
                     f"((top, bottom), (left, right)), got {padding!r}")


class ConvGeometry:
    """Shape arithmetic shared by :class:`Conv2d` and :class:`IntConv2d` (NHWC, TensorFlow padding)."""

    h: int
    w: int
    cin: int
    cout: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int]
    padding: str | int | tuple[int, int, int, int]
    batch: int

    def _check_geometry(self) -> None:
        for name in ("h", "w", "cin", "cout", "batch"):
            _check_positive_int(name, getattr(self, name))
            object.__setattr__(self, name, int(getattr(self, name)))
        kh, kw = _pair("kernel", self.kernel)
        sh, sw = _pair("stride", self.stride)
        object.__setattr__(self, "kernel", kh if kh == kw else (kh, kw))
        object.__setattr__(self, "stride", sh if sh == sw else (sh, sw))
        object.__setattr__(self, "padding", _normalize_padding(self.padding))
        pt, pb, pl, pr = self.pads
        if self.h + pt + pb < kh or self.w + pl + pr < kw:
            raise ValueError(f"kernel {kh}x{kw} does not fit the padded {self.h}x{self.w} input "
                             f"(padding {self.padding!r})")

    @functools.cached_property  # read on every call: computed once
    def kh(self) -> int:
        return _pair("kernel", self.kernel)[0]

    @functools.cached_property  # read on every call: computed once
    def kw(self) -> int:
        return _pair("kernel", self.kernel)[1]

    @functools.cached_property  # read on every call: computed once
    def strides(self) -> tuple[int, int]:
        return _pair("stride", self.stride)

    @functools.cached_property  # read on every call: computed once
    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right). SAME is TensorFlow's: total = max((ceil(H/s)-1)*s + k - H, 0),
        floor(total/2) before and the rest after (so 3x3 stride 2 on even H pads 0 before, 1 after)."""
        p = self.padding
        if p == "VALID":
            return (0, 0, 0, 0)
        if isinstance(p, int):
            return (p, p, p, p)
        if isinstance(p, tuple):
            return p
        out = []
        for size, k, s in ((self.h, self.kh, self.strides[0]), (self.w, self.kw, self.strides[1])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)  # type: ignore[return-value]

    @functools.cached_property  # read on every call: computed once
    def out_h(self) -> int:
        pt, pb, _, _ = self.pads
        return (self.h + pt + pb - self.kh) // self.strides[0] + 1

    @functools.cached_property  # read on every call: computed once
    def out_w(self) -> int:
        _, _, pl, pr = self.pads
        return (self.w + pl + pr - self.kw) // self.strides[1] + 1

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def gemm_m(self) -> int:
        """Output positions (batch * out_h * out_w): the rows of the equivalent GEMM."""
        return self.batch * self.out_h * self.out_w

    @property
    def gemm_n(self) -> int:
        return self.cout

    @property
    def gemm_k(self) -> int:
        return self.taps * self.cin

    @property
    def macs(self) -> int:
        return self.gemm_m * self.gemm_n * self.gemm_k

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.h, self.w, self.cin)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.kh, self.kw, self.cin)

    @functools.cached_property  # read on every call: computed once
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_h, self.out_w, self.cout)

    def _geometry_dict(self) -> dict[str, object]:
        pad = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        return {"h": self.h, "w": self.w, "cin": self.cin, "cout": self.cout,
                "kernel": list(self.kernel) if isinstance(self.kernel, tuple) else self.kernel,
                "stride": list(self.stride) if isinstance(self.stride, tuple) else self.stride,
                "padding": pad, "batch": self.batch}

    def _geometry_str(self) -> str:
        s = self.strides
        return (f"{self.batch}x{self.h}x{self.w}x{self.cin} -> {self.cout}, {self.kh}x{self.kw}/"
                f"{s[0] if s[0] == s[1] else s} {self.padding}")


@dataclass(frozen=True, kw_only=True)
class Conv2d(ConvGeometry):
    """A bit-serial 2-D convolution, NHWC: x uint8 [batch, h, w, cin], w uint8 [cout, kh, kw, cin]
    -> int32 [batch, out_h, out_w, cout], with the value semantics of :class:`Dense` per tap.
    Padding adds nothing to a sum in any mode (zero in the value domain).

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> cv = bs.Conv2d(h=5, w=5, cin=3, cout=2, kernel=3, padding="SAME", mode="bipolar")
        >>> x = np.ones(cv.x_shape, np.uint8); w = np.ones(cv.w_shape, np.uint8)
        >>> y = bs.reference(cv, x, w)
        >>> int(y[0, 0, 0, 0]), int(y[0, 2, 2, 0]), cv.macs
        (12, 27, 1350)
    """

    h: int = 56
    w: int = 56
    cin: int = 64
    cout: int = 64
    kernel: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: str | int | tuple[int, int, int, int] = "SAME"
    abits: int = 1
    wbits: int = 1
    mode: Mode = "and"
    batch: int = 1

    def __post_init__(self) -> None:
        self._check_geometry()
        _check_bits("abits", self.abits)
        _check_bits("wbits", self.wbits)
        object.__setattr__(self, "abits", int(self.abits))
        object.__setattr__(self, "wbits", int(self.wbits))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_abs_output > INT32_MAX:
            raise ValueError(f"kh*kw*cin={self.gemm_k} at {self.abits}x{self.wbits} bits can reach "
                             f"{self.max_abs_output}, which does not fit the int32 output")

    amax = Dense.amax
    wmax = Dense.wmax

    @property
    def max_abs_output(self) -> int:
        return self.gemm_k * self.amax * self.wmax

    # Shape-generic: they read x_shape / w_shape, [batch, h, w, cin] and [cout, kh, kw, cin] here.
    bit_macs = Dense.bit_macs
    check_x = Dense.check_x
    check_w = Dense.check_w
    check_packed = Dense.check_packed

    def to_dict(self) -> dict[str, object]:
        return {"op": "conv2d", **self._geometry_dict(), "abits": self.abits, "wbits": self.wbits,
                "mode": self.mode}

    def __str__(self) -> str:
        return f"conv2d {self._geometry_str()} A{self.abits}W{self.wbits} {self.mode}"


@dataclass(frozen=True, kw_only=True)
class IntConv2d(ConvGeometry):
    """The integer baseline convolution (``dtype="int16"``): x int16 [batch, h, w, cin],
    w int16 [cout, kh, kw, cin] -> int32 modulo 2^32 like :class:`IntDense`; zero padding.

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> cv = bs.IntConv2d(h=3, w=3, cin=2, cout=1, kernel=3, padding=1)
        >>> x = np.full(cv.x_shape, -32768, np.int16); w = np.full(cv.w_shape, 32767, np.int16)
        >>> int(bs.reference(cv, x, w)[0, 1, 1, 0])
        -2146893824
    """

    h: int = 56
    w: int = 56
    cin: int = 64
    cout: int = 64
    kernel: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: str | int | tuple[int, int, int, int] = "SAME"
    dtype: str = "int16"
    batch: int = 1

    def __post_init__(self) -> None:
        self._check_geometry()
        if self.dtype != "int16":
            raise ValueError(f"IntConv2d dtype must be 'int16', got {self.dtype!r}")

    x_dtype = property(lambda self: np.dtype(np.int16))
    w_dtype = property(lambda self: np.dtype(np.int16))
    x_range = property(lambda self: (-(2**15), 2**15 - 1))
    w_range = property(lambda self: (-(2**15), 2**15 - 1))
    element_bytes = 2

    def check_x(self, x: np.ndarray, *, check_range: bool = True) -> np.ndarray:
        return _check_int_operand("x", x, self.x_shape, self.x_dtype, None)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return _check_int_operand("w", w, self.w_shape, self.w_dtype, None)

    def check_packed(self, seen: int) -> None:
        """Every int16 value is valid."""

    def to_dict(self) -> dict[str, object]:
        return {"op": "int_conv2d", **self._geometry_dict(), "dtype": self.dtype}

    def __str__(self) -> str:
        return f"int_conv2d {self._geometry_str()} {self.dtype}"


def im2col(workload: ConvGeometry, values: np.ndarray) -> np.ndarray:
    """[batch, h, w, cin] values -> [batch*out_h*out_w, kh*kw*cin] rows (taps in (dy, dx) order,
    zero where a tap falls into the padding), in the dtype of ``values``."""
    pt, pb, pl, pr = workload.pads
    padded = np.pad(values, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    sh, sw = workload.strides
    windows = np.lib.stride_tricks.sliding_window_view(padded, (workload.kh, workload.kw), axis=(1, 2))
    windows = windows[:, : (workload.out_h - 1) * sh + 1 : sh, : (workload.out_w - 1) * sw + 1 : sw]
    # [b, oh, ow, cin, kh, kw] -> [b, oh, ow, kh, kw, cin]
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(workload.gemm_m, -1)


def _conv_reference(workload: Conv2d | IntConv2d, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    x = workload.check_x(x)
    w = workload.check_w(w)
    if isinstance(workload, IntConv2d):
        xv, wv = x.astype(np.int64), w.astype(np.int64)
    else:
        xv, wv = x.astype(np.int64), w.astype(np.int64)
        if workload.mode in ("unipolar", "bipolar"):
            wv = 2 * wv - workload.wmax
        if workload.mode == "bipolar":
            xv = 2 * xv - workload.amax
    cols = im2col(workload, xv)  # zero padding in the value domain
    wmat = wv.reshape(workload.cout, -1)
    bound = workload.gemm_k * int(np.abs(cols).max(initial=0)) * int(np.abs(wmat).max(initial=0))
    if bound < FLOAT64_EXACT:
        exact = np.rint(cols.astype(np.float64) @ wmat.astype(np.float64).T).astype(np.int64)
    else:
        exact = cols @ wmat.T
    y = (exact & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    return y.reshape(workload.y_shape)


# ResNet-18 layers C2..C12 of the seed paper (Cowan et al. 2018, arXiv 1810.11066), batch 1, NHWC,
# TensorFlow SAME padding: (in_hw, c_in, c_out, k, stride, padding, out_hw, gemm_m, gemm_n, gemm_k, macs).
RESNET18_LAYERS: dict[str, dict[str, object]] = {
    name: dict(zip(("in_hw", "c_in", "c_out", "k", "stride", "padding", "out_hw", "gemm_m", "gemm_n",
                    "gemm_k", "macs"), row, strict=True))
    for name, row in (
        ("C2", (56, 64, 64, 3, 1, "SAME", 56, 3136, 64, 576, 115605504)),
        ("C3", (56, 64, 64, 1, 1, "SAME", 56, 3136, 64, 64, 12845056)),
        ("C4", (56, 64, 128, 3, 2, "SAME", 28, 784, 128, 576, 57802752)),
        ("C5", (56, 64, 128, 1, 2, "SAME", 28, 784, 128, 64, 6422528)),
        ("C6", (28, 128, 128, 3, 1, "SAME", 28, 784, 128, 1152, 115605504)),
        ("C7", (28, 128, 256, 3, 2, "SAME", 14, 196, 256, 1152, 57802752)),
        ("C8", (28, 128, 256, 1, 2, "SAME", 14, 196, 256, 128, 6422528)),
        ("C9", (14, 256, 256, 3, 1, "SAME", 14, 196, 256, 2304, 115605504)),
        ("C10", (14, 256, 512, 3, 2, "SAME", 7, 49, 512, 2304, 57802752)),
        ("C11", (14, 256, 512, 1, 2, "SAME", 7, 49, 512, 256, 6422528)),
        ("C12", (7, 512, 512, 3, 1, "SAME", 7, 49, 512, 4608, 115605504)),
    )
}


def resnet18_layer(
    name: str, *, abits: int = 1, wbits: int = 1, mode: Mode = "and", batch: int = 1,
    dtype: str | None = None,
) -> Conv2d | IntConv2d:
    """ResNet-18 layer ``name`` (C2..C12) as a :class:`Conv2d`, or with ``dtype="int16"`` as the
    :class:`IntConv2d` baseline.

    Example:
        >>> cv = resnet18_layer("C4", abits=2, wbits=1)
        >>> (cv.out_h, cv.gemm_m, cv.gemm_k, cv.pads)
        (28, 784, 576, (0, 1, 0, 1))
    """
    if name not in RESNET18_LAYERS:
        raise ValueError(f"unknown ResNet-18 layer {name!r}; valid: {', '.join(RESNET18_LAYERS)}")
    row = RESNET18_LAYERS[name]
    geometry = {"h": row["in_hw"], "w": row["in_hw"], "cin": row["c_in"], "cout": row["c_out"],
                "kernel": row["k"], "stride": row["stride"], "padding": row["padding"], "batch": batch}
    if dtype is not None:
        return IntConv2d(**geometry, dtype=dtype)
    return Conv2d(**geometry, abits=abits, wbits=wbits, mode=mode)
