"""What every operator record shares: argument checks, the GEMM shape, exact comparison and the
verification inputs of integer GEMMs, and the interface measure, tune and the registry rely on."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal, Self

import numpy as np

Mode = Literal["and", "unipolar", "bipolar"]
MODES: tuple[str, ...] = ("and", "unipolar", "bipolar")
INT32_MAX = 2**31 - 1
FLOAT64_EXACT = 2**53  # integers below this are exact in float64, so are sums bounded by it
Case = tuple[str, np.ndarray, np.ndarray]


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_bits(name: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or not 1 <= value <= 8:
        raise ValueError(f"{name} must be an integer in 1..8, got {value!r}")


class Operator(abc.ABC):
    """An operator record (frozen dataclass): shapes and value semantics, its exact reference, the
    inputs a kernel is verified on, and how outputs are compared with the reference.

    ``OP`` names it in records and studies (``to_dict()["op"]``), ``from_dict`` reads it back."""

    OP: ClassVar[str]

    @abc.abstractmethod
    def to_dict(self) -> dict[str, object]: ...

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Self:
        """The record of ``to_dict()`` without its "op" key (JSON lists read back as tuples)."""
        return cls(**{k: v for k, v in spec.items() if k != "op"})

    @abc.abstractmethod
    def reference(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The exact result on checked operands."""

    @abc.abstractmethod
    def verification_inputs(self, seed: int = 0) -> list[Case]:
        """(name, x, w) cases: random operands first (also the timed ones), then adversarial ones."""

    def mismatch(self, x: np.ndarray, w: np.ndarray, got: np.ndarray, want: np.ndarray) -> str | None:
        """None if ``got`` equals the reference ``want`` exactly, else a message naming the first
        wrong output."""
        del x, w
        if np.array_equal(got, want):
            return None
        got2, want2 = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
        bad = np.argwhere(got2 != want2)
        r, c = (int(v) for v in bad[0])
        return (f"{len(bad)} wrong outputs, first y[{r},{c}] = {int(got2[r, c])}, "
                f"expected {int(want2[r, c])}")

    @abc.abstractmethod
    def study_name(self, target: str) -> str:
        """The default name of a study that tunes this workload on ``target``."""


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



def check_operand(
    name: str, array: np.ndarray, shape: tuple[int, ...], dtype: np.dtype,
    value_range: tuple[int, int] | None,
) -> np.ndarray:
    """``array`` as a contiguous array of ``dtype`` and ``shape`` whose values lie in
    ``value_range`` (None: any), or ``ValueError`` naming what is wrong with it."""
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


def check_bit_operand(
    name: str, array: np.ndarray, shape: tuple[int, ...], bits: int, *, check_range: bool = True
) -> np.ndarray:
    """``array`` as a contiguous uint8 array of ``shape`` holding ``bits``-bit values, or
    ``ValueError`` naming what is wrong with it."""
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


def gemm_cases(workload: GemmShape, x_range: tuple[int, int], w_range: tuple[int, int], x_dtype: np.dtype,
               w_dtype: np.dtype, seed: int) -> list[Case]:
    """Random operands first (also the timed ones), then adversarial ones.

    Extreme values reach the accumulator bound (K*(2^a-1)*(2^w-1) for bit-serial kernels; for
    int16, (-32768)^2 pairs wrap VPMADDWD); a checkerboard of extreme values catches swapped
    planes, rows or columns that uniform inputs cannot.
    """
    rng = np.random.default_rng(seed)
    wl = workload
    (xlo, xhi), (wlo, whi), xt, wt = x_range, w_range, x_dtype, w_dtype
    board_x = np.where(np.add.outer(np.arange(wl.m), np.arange(wl.k)) % 2 == 1, xhi, xlo).astype(xt)
    board_w = np.where(np.add.outer(np.arange(wl.n), np.arange(wl.k)) % 3 == 0, whi, wlo).astype(wt)
    cases = [
        ("random", rng.integers(xlo, xhi + 1, wl.x_shape).astype(xt),
         rng.integers(wlo, whi + 1, wl.w_shape).astype(wt)),
        ("all-maximal", np.full(wl.x_shape, xhi, xt), np.full(wl.w_shape, whi, wt)),
        ("checkerboard", board_x, board_w),
    ]
    if xlo < 0 or wlo < 0:
        cases.append(("all-minimal", np.full(wl.x_shape, xlo, xt), np.full(wl.w_shape, wlo, wt)))
    return cases


__all__ = ["FLOAT64_EXACT", "INT32_MAX", "MODES", "Case", "GemmShape", "Mode", "Operator",
           "check_bit_operand", "check_bits", "check_operand", "check_positive_int", "gemm_cases"]
