"""Workloads (what to compute) and their exact numpy references.

A workload fixes shapes, bit widths and the value semantics; a schedule (how to compute it) is
chosen separately. Value semantics, with A = 2^abits - 1 and W = 2^wbits - 1:

- ``and``:      y = x @ w.T
- ``unipolar``: y = x @ (2w - W).T          (odd, symmetric weight levels)
- ``bipolar``:  y = (2x - A) @ (2w - W).T   (1-bit x 1-bit is XNOR-popcount)
"""

from __future__ import annotations

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
        """x as a contiguous uint8 [m, k], or ``ValueError`` naming what is wrong with it."""
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


def reference(workload: Dense | IntDense, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The exact result (int32 out) of ``workload`` on ``x`` and ``w``. Computed with float64 BLAS
    while every partial sum stays below 2^53 -- integers that small are exact in float64, in any
    summation order -- which always holds for :class:`Dense` (|y| < 2^31); int64 otherwise; then
    int16's modulo-2^32 wrap-around for :class:`IntDense`."""
    if isinstance(workload, IntDense):
        return _int_reference(workload, x, w)
    if not isinstance(workload, Dense):
        raise ValueError(f"no reference for workload type {type(workload).__name__}")
    x = workload.check_x(x).astype(np.float64)
    w = workload.check_w(w).astype(np.float64)
    if workload.mode in ("unipolar", "bipolar"):
        w = 2 * w - workload.wmax
    if workload.mode == "bipolar":
        x = 2 * x - workload.amax
    return np.rint(x @ w.T).astype(np.int32)  # max_abs_output < 2^31: exact
