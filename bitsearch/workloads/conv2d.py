"""``Conv2d``: a bit-serial 2-D convolution (NHWC) with the value semantics of ``Dense`` per tap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsearch.workloads.base import INT32_MAX, MODES, Mode, check_bits
from bitsearch.workloads.conv import ConvGeometry
from bitsearch.workloads.dense import Dense


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

    OP = "conv2d"

    def __post_init__(self) -> None:
        self._check_geometry()
        check_bits("abits", self.abits)
        check_bits("wbits", self.wbits)
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
        return {"op": self.OP, **self._geometry_dict(), "abits": self.abits, "wbits": self.wbits,
                "mode": self.mode}

    def __str__(self) -> str:
        return f"conv2d {self._geometry_str()} A{self.abits}W{self.wbits} {self.mode}"

    def values(self, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xv, wv = super().values(x, w)
        if self.mode in ("unipolar", "bipolar"):
            wv = 2 * wv - self.wmax
        if self.mode == "bipolar":
            xv = 2 * xv - self.amax
        return xv, wv

    def operand_ranges(self) -> tuple[tuple[int, int], tuple[int, int], np.dtype]:
        return (0, self.amax), (0, self.wmax), np.dtype(np.uint8)

    def study_name(self, target: str) -> str:
        return f"conv2d-a{self.abits}w{self.wbits}-{self.mode}-{self._study_geometry()}-{target}"


__all__ = ["Conv2d"]
