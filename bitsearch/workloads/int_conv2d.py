"""``IntConv2d``: the int16 baseline convolution (NHWC), exact modulo 2^32 like ``IntDense``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsearch.workloads.base import check_operand
from bitsearch.workloads.conv import ConvGeometry


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

    OP = "int_conv2d"

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
        return check_operand("x", x, self.x_shape, self.x_dtype, None)

    def check_w(self, w: np.ndarray) -> np.ndarray:
        return check_operand("w", w, self.w_shape, self.w_dtype, None)

    def check_packed(self, seen: int) -> None:
        """Every int16 value is valid."""

    def to_dict(self) -> dict[str, object]:
        return {"op": self.OP, **self._geometry_dict(), "dtype": self.dtype}

    def __str__(self) -> str:
        return f"int_conv2d {self._geometry_str()} {self.dtype}"

    def operand_ranges(self) -> tuple[tuple[int, int], tuple[int, int], np.dtype]:
        return self.x_range, self.w_range, np.dtype(np.int16)

    def study_name(self, target: str) -> str:
        return f"int-conv2d-{self.dtype}-{self._study_geometry()}-{target}"


__all__ = ["IntConv2d"]
