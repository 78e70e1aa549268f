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


@dataclass(frozen=True)
class Dense:
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
    def macs(self) -> int:
        return self.m * self.n * self.k

    @property
    def bit_macs(self) -> int:
        """Binary products a bit-serial kernel performs: abits*wbits per MAC."""
        return self.macs * self.abits * self.wbits

    @property
    def x_shape(self) -> tuple[int, int]:
        return (self.m, self.k)

    @property
    def w_shape(self) -> tuple[int, int]:
        return (self.n, self.k)

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


def reference(workload: Dense, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The exact result (int64 arithmetic inside, int32 out) of ``workload`` on ``x`` and ``w``."""
    x = workload.check_x(x).astype(np.int64)
    w = workload.check_w(w).astype(np.int64)
    if workload.mode in ("unipolar", "bipolar"):
        w = 2 * w - workload.wmax
    if workload.mode == "bipolar":
        x = 2 * x - workload.amax
    return (x @ w.T).astype(np.int32)
