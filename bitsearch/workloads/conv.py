"""Convolution geometry shared by :class:`~bitsearch.workloads.conv2d.Conv2d` and
:class:`~bitsearch.workloads.int_conv2d.IntConv2d` (NHWC, TensorFlow padding): shapes, im2col, the
exact reference and the verification inputs."""

from __future__ import annotations

import functools

import numpy as np

from bitsearch.workloads.base import FLOAT64_EXACT, Case, Operator, check_positive_int

PADDINGS: tuple[str, ...] = ("SAME", "VALID")


def _pair(name: str, value: object) -> tuple[int, int]:
    """An int or a pair of ints as a pair of positive ints, or ``ValueError`` naming ``name``."""
    items = list(value) if isinstance(value, list | tuple) else [value, value]
    if len(items) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    for item in items:
        check_positive_int(name, item)
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


class ConvGeometry(Operator):
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
            check_positive_int(name, getattr(self, name))
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

    def values(self, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x and w in the value domain (int64), from checked operands."""
        return self.check_x(x).astype(np.int64), self.check_w(w).astype(np.int64)

    def reference(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Exact int32 [batch, out_h, out_w, cout] (modulo 2^32), zero padding in the value
        domain: float64 BLAS while every partial sum is below 2^53, else int64."""
        xv, wv = self.values(x, w)
        cols = im2col(self, xv)
        wmat = wv.reshape(self.cout, -1)
        bound = self.gemm_k * int(np.abs(cols).max(initial=0)) * int(np.abs(wmat).max(initial=0))
        if bound < FLOAT64_EXACT:
            exact = np.rint(cols.astype(np.float64) @ wmat.astype(np.float64).T).astype(np.int64)
        else:
            exact = cols @ wmat.T
        y = (exact & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        return y.reshape(self.y_shape)

    def operand_ranges(self) -> tuple[tuple[int, int], tuple[int, int], np.dtype]:
        """(x range, w range, element dtype) of the operands."""
        raise NotImplementedError

    def verification_inputs(self, seed: int = 0) -> list[Case]:
        """Random operands first (also the timed ones), all-maximal ones, the two that make padded
        taps matter most (x minimal / w maximal: bipolar's zero bits mean -A, so border outputs
        are wrong without their correction; x maximal / w minimal: unipolar's -W weights against
        the rowsum), and a checkerboard over rows, columns and channels."""
        rng = np.random.default_rng(seed)
        (xlo, xhi), (wlo, whi), dt = self.operand_ranges()
        _, h, w, c = self.x_shape
        parity = (np.arange(h)[:, None, None] + np.arange(w)[None, :, None] + np.arange(c)) % 2
        board_x = np.broadcast_to(np.where(parity == 1, xhi, xlo), self.x_shape).astype(dt)
        every_third = np.arange(np.prod(self.w_shape)).reshape(self.w_shape) % 3 == 0
        board_w = np.where(every_third, whi, wlo).astype(dt)
        cases = [
            ("random", rng.integers(xlo, xhi + 1, self.x_shape).astype(dt),
             rng.integers(wlo, whi + 1, self.w_shape).astype(dt)),
            ("all-maximal", np.full(self.x_shape, xhi, dt), np.full(self.w_shape, whi, dt)),
            ("x-minimal-w-maximal", np.full(self.x_shape, xlo, dt), np.full(self.w_shape, whi, dt)),
            ("x-maximal-w-minimal", np.full(self.x_shape, xhi, dt), np.full(self.w_shape, wlo, dt)),
            ("checkerboard", board_x, board_w),
        ]
        if xlo < 0:
            cases.append(("all-minimal", np.full(self.x_shape, xlo, dt), np.full(self.w_shape, wlo, dt)))
        return cases

    def _study_geometry(self) -> str:
        return "-".join(str(v).replace(" ", "") for v in (
            self.batch, self.h, self.w, self.cin, self.cout, self.kernel, self.stride, self.padding))

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


__all__ = ["PADDINGS", "ConvGeometry", "im2col"]
