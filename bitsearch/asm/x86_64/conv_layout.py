"""The buffers of one convolution and schedule (:class:`ConvLayout`: padded image, pixel layout,
GEMM operand layouts, the weights' GEMM rows) and the bipolar border classes and corrections."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from bitsearch.asm.x86_64.intgemm import IntGeometry
from bitsearch.numerics.int_packing import round_up
from bitsearch.numerics.packing import PackedLayout
from bitsearch.space.conv_schedule import ConvSchedule, IntConvSchedule, gemm_view, int_gemm_view
from bitsearch.workloads import Conv2d, IntConv2d

IMM32 = 2**31  # displacements and immediates are signed 32-bit


@dataclass(frozen=True)
class ConvLayout:
    """Buffers of one (convolution, schedule): the padded image, its pixels, the GEMM rows.

    ``pix`` packs one pixel's channels (a row of ``cin``); the image is batch*Hp*Wp such pixels,
    zero at the border. ``gemm_x``/``gemm_w`` are the GEMM operands' layouts (im2col: K' = taps
    of 64-bit granules; implicit: ``gemm_w`` = taps x ``pix``). ``lead`` zero bytes precede x when
    cin < 32, so the pixel packer's 32-byte loads never reach before the buffer.
    """

    conv: Conv2d | IntConv2d
    lowering: str
    pix: PackedLayout | None  # None: int16 (pixels are raw int16 channels)
    pix_bytes: int
    gemm_x: object  # PackedLayout (bit-serial im2col) | IntRowLayout (int16) | None (implicit)
    gemm_w: object
    lead: int

    @classmethod
    def of_int(cls, conv: IntConv2d, schedule: IntConvSchedule) -> ConvLayout:
        """The int16 baseline: raw int16 pixels, im2col into the int16 GEMM's rows."""
        geo = IntGeometry.of(int_gemm_view(conv), schedule)
        return cls(conv, "im2col", None, 2 * conv.cin, geo.x, geo.w, 0)

    @classmethod
    def of(cls, conv: Conv2d, schedule: ConvSchedule) -> ConvLayout:
        """The bit-serial convolution, im2col or implicit."""
        lead = 32 if conv.cin < 32 else 0
        if schedule.lowering == "im2col":
            pix = PackedLayout(planes=conv.abits, k=conv.cin, block_bits=64)
            view = gemm_view(conv, schedule)
            gx = PackedLayout(planes=conv.abits, k=view.k, block_bits=schedule.block_bits,
                              layout=schedule.layout, nibble_split=schedule.nibble_split)
            gw = PackedLayout(planes=conv.wbits, k=view.k, block_bits=schedule.block_bits,
                              layout=schedule.layout, nibble_split=schedule.nibble_split)
            return cls(conv, "im2col", pix, pix.row_bytes, gx, gw, lead)
        pix = PackedLayout(planes=conv.abits, k=conv.cin, block_bits=schedule.block_bits,
                           layout=schedule.layout, nibble_split=schedule.nibble_split)
        wpix = PackedLayout(planes=conv.wbits, k=conv.cin, block_bits=schedule.block_bits,
                            layout=schedule.layout, nibble_split=schedule.nibble_split)
        return cls(conv, "implicit", pix, pix.row_bytes, None, wpix, lead)

    # -- image ---------------------------------------------------------------------------------
    @property
    def hp(self) -> int:
        pt, pb, _, _ = self.conv.pads
        return self.conv.h + pt + pb

    @property
    def wp(self) -> int:
        _, _, pl, pr = self.conv.pads
        return self.conv.w + pl + pr

    @property
    def image_rows(self) -> int:
        return self.conv.batch * self.hp

    @property
    def image_bytes(self) -> int:
        return self.image_rows * self.wp * self.pix_bytes

    @property
    def x_bytes(self) -> int:
        """Bytes of the raw x buffer the pack function reads (after ``lead`` zero bytes)."""
        c = self.conv
        return self.lead + c.batch * c.h * c.w * c.cin * (1 if self.pix is not None else 2)

    def tap_offset(self, dy: int, dx: int, element: int) -> int:
        """Offset of tap (dy, dx) from the window's top-left pixel, for elements of ``element`` bytes."""
        return (dy * self.wp + dx) * element

    @property
    def taps(self) -> list[tuple[int, int]]:
        return [(dy, dx) for dy in range(self.conv.kh) for dx in range(self.conv.kw)]

    # -- GEMM rows -----------------------------------------------------------------------------
    @property
    def x_row_bytes(self) -> int:
        return self.gemm_x.row_bytes if self.gemm_x is not None else 0

    @property
    def w_row_bytes(self) -> int:
        if self.lowering == "implicit":
            return self.conv.taps * self.gemm_w.row_bytes
        return self.gemm_w.row_bytes

    def pack_w_rows(self, w: np.ndarray) -> np.ndarray:
        """Weights [cout, kh, kw, cin] -> uint8 [cout, w_row_bytes] in the GEMM's layout (numpy)."""
        c = self.conv
        if self.pix is None:
            return self.gemm_w.pack(w.reshape(c.cout, -1))
        if self.lowering == "implicit":
            return self.gemm_w.pack(w.reshape(c.cout * c.taps, c.cin)).reshape(c.cout, -1)
        padded = np.zeros((c.cout, c.taps, round_up(c.cin, 64)), np.uint8)
        padded[:, :, : c.cin] = w.reshape(c.cout, c.taps, c.cin)
        return self.gemm_w.pack(padded.reshape(c.cout, -1))

    def check_displacements(self) -> None:
        for what, value in (("image", self.image_bytes), ("x", self.x_bytes),
                            ("GEMM rows", self.conv.gemm_m * max(self.x_row_bytes, 1)),
                            ("weights", self.conv.cout * self.w_row_bytes),
                            ("y", 4 * self.conv.gemm_m * self.conv.cout)):
            if value >= IMM32:
                raise ValueError(f"{what} buffer of {value} bytes does not fit 32-bit displacements")


def border_classes(conv: Conv2d) -> tuple[np.ndarray, list[frozenset[tuple[int, int]]]]:
    """(cls int32 [batch*out_h*out_w], padded-tap sets per class); class 0 = no padded tap."""
    pt, _, pl, _ = conv.pads
    sh, sw = conv.strides

    def patterns(size: int, pad: int, k: int, s: int, out: int) -> tuple[list[int], list[frozenset[int]]]:
        pats: list[frozenset[int]] = [frozenset()]
        index = []
        for o in range(out):
            pat = frozenset(d for d in range(k) if not 0 <= o * s + d - pad < size)
            if pat not in pats:
                pats.append(pat)
            index.append(pats.index(pat))
        return index, pats

    ri, rp = patterns(conv.h, pt, conv.kh, sh, conv.out_h)
    ci, cp = patterns(conv.w, pl, conv.kw, sw, conv.out_w)
    cls = (np.array(ri)[:, None] * len(cp) + np.array(ci)[None, :]).astype(np.int32)
    sets = [frozenset((dy, dx) for dy in range(conv.kh) for dx in range(conv.kw) if dy in r or dx in c)
            for r, c in itertools.product(rp, cp)]
    return np.tile(cls.reshape(-1), conv.batch), sets


def border_corrections(conv: Conv2d, w: np.ndarray, sets: list[frozenset[tuple[int, int]]]) -> np.ndarray:
    """int32 [classes, cout]: A * sum over the class's padded taps of sum_c (2w - W)."""
    wv = (2 * w.astype(np.int64) - conv.wmax).sum(axis=3)  # [cout, kh, kw]
    corr = np.zeros((len(sets), conv.cout), np.int64)
    for i, taps in enumerate(sets):
        for dy, dx in taps:
            corr[i] += wv[:, dy, dx]
    return (conv.amax * corr).astype(np.int32)


__all__ = ["ConvLayout", "border_classes", "border_corrections"]
