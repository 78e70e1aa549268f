"""``Dense``: a bit-serial dense layer at a-bit activations x w-bit weights.

Value semantics, with A = 2^abits - 1 and W = 2^wbits - 1:

- ``and``:      y = x @ w.T
- ``unipolar``: y = x @ (2w - W).T          (odd, symmetric weight levels)
- ``bipolar``:  y = (2x - A) @ (2w - W).T   (1-bit x 1-bit is XNOR-popcount)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsearch.workloads.base import (
    INT32_MAX,
    MODES,
    Case,
    GemmShape,
    Mode,
    Operator,
    check_bit_operand,
    check_bits,
    check_positive_int,
    gemm_cases,
)


@dataclass(frozen=True)
class Dense(GemmShape, Operator):
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

    OP = "dense"

    def __post_init__(self) -> None:
        for name in ("m", "n", "k"):
            check_positive_int(name, getattr(self, name))
        check_bits("abits", self.abits)
        check_bits("wbits", self.wbits)
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
        return check_bit_operand("x", x, self.x_shape, self.abits, check_range=check_range)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return check_bit_operand("w", w, self.w_shape, self.wbits)

    def check_packed(self, seen: int) -> None:
        """Reject activations from the OR of all their bytes (returned by the packing code)."""
        if seen >> self.abits:
            raise ValueError(
                f"x holds values out of range for {self.abits}-bit activations "
                f"(0..{self.amax}); bits seen: {seen:#04x}"
            )

    def to_dict(self) -> dict[str, object]:
        return {"op": self.OP, "m": self.m, "n": self.n, "k": self.k,
                "abits": self.abits, "wbits": self.wbits, "mode": self.mode}

    def __str__(self) -> str:
        return f"dense {self.m}x{self.n}x{self.k} A{self.abits}W{self.wbits} {self.mode}"

    def reference(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Exact int32 [m, n], through float64 BLAS: every partial sum is an integer below
        max_abs_output < 2^31 < 2^53, exact in float64 in any summation order."""
        xv = self.check_x(x).astype(np.float64)
        wv = self.check_w(w).astype(np.float64)
        if self.mode in ("unipolar", "bipolar"):
            wv = 2 * wv - self.wmax
        if self.mode == "bipolar":
            xv = 2 * xv - self.amax
        return np.rint(xv @ wv.T).astype(np.int32)

    def verification_inputs(self, seed: int = 0) -> list[Case]:
        u8 = np.dtype(np.uint8)
        return gemm_cases(self, (0, self.amax), (0, self.wmax), u8, u8, seed)

    def study_name(self, target: str) -> str:
        return f"dense-{self.m}x{self.n}x{self.k}-a{self.abits}w{self.wbits}-{self.mode}-{target}"


__all__ = ["Dense"]
