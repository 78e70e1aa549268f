"""``IntDense``: the int16 / int8 dense baselines of the bit-serial kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsearch.workloads.base import (
    FLOAT64_EXACT,
    INT32_MAX,
    Case,
    GemmShape,
    Operator,
    check_operand,
    check_positive_int,
    gemm_cases,
)

INT_DTYPES: tuple[str, ...] = ("int16", "int8")
INT8_X_MAX = 127  # 7-bit activations: VPMADDUBSW's pair sums (<= 2*127*128 = 32512) never saturate


@dataclass(frozen=True)
class IntDense(GemmShape, Operator):
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
        >>> int(wl.reference(x, w)[0, 0])
        -81280
    """

    m: int
    n: int
    k: int
    dtype: str = "int16"

    OP = "int_dense"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            check_positive_int(name, getattr(self, name))
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
        return check_operand("x", x, self.x_shape, self.x_dtype,
                                  self.x_range if check_range else None)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return check_operand("w", w, self.w_shape, self.w_dtype, self.w_range)

    def check_packed(self, seen: int) -> None:
        """Reject activations from the OR of all bytes the packing code read: an int8 workload's
        x must leave bit 7 clear (0..127); every int16 value is valid."""
        if self.dtype == "int8" and seen & 0x80:
            raise ValueError(
                f"x holds values out of range for int8 activations (0..{INT8_X_MAX}, 7-bit); "
                f"bits seen: {seen:#04x}"
            )

    def to_dict(self) -> dict[str, object]:
        return {"op": self.OP, "m": self.m, "n": self.n, "k": self.k, "dtype": self.dtype}

    def __str__(self) -> str:
        return f"int_dense {self.m}x{self.n}x{self.k} {self.dtype}"

    def reference(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Exact int32 [m, n] (float64 BLAS while every partial sum is below 2^53, else int64),
        modulo 2^32 (two's complement wrap-around; only int16 can get there)."""
        x = self.check_x(x)
        w = self.check_w(w)
        bound = self.k * max(abs(v) for v in self.x_range) * max(abs(v) for v in self.w_range)
        if bound < FLOAT64_EXACT:
            exact = (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
        else:
            exact = x.astype(np.int64) @ w.astype(np.int64).T
        return (exact & 0xFFFFFFFF).astype(np.uint32).view(np.int32)

    def verification_inputs(self, seed: int = 0) -> list[Case]:
        return gemm_cases(self, self.x_range, self.w_range, self.x_dtype, self.w_dtype, seed)

    def study_name(self, target: str) -> str:
        return f"int-dense-{self.m}x{self.n}x{self.k}-{self.dtype}-{target}"


__all__ = ["INT8_X_MAX", "INT_DTYPES", "IntDense"]
