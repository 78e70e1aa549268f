"""Schedules of the convolutions: ``ConvSchedule`` (bit-serial) and ``IntConvSchedule`` (int16).

A bit-serial convolution is lowered to the dense bit-serial GEMM (:mod:`bitsearch.asm.x86_64.dense`)
in one of two ways, the ``lowering`` knob:

``im2col``
    Activations are bit-packed once per pixel along the channels (64-bit granules), then the
    kh*kw packed pixel vectors of every output position are gathered into one GEMM row (a copy of
    packed words, 1/8 of a byte im2col per bit plane), then the dense GEMM runs on those rows.
``implicit``
    No copy: the GEMM's K loop walks the taps through pointer offsets into the packed (and
    zero-bordered) activation image. Each tap is padded to whole popcount blocks (256 bits for the
    VPSHUFB strategies), so layers with few channels waste part of every block; the register tile
    covers ``mr`` consecutive output columns of one output row (the spatial tile) by ``nr``
    output channels. ``loop_order="nm"`` sweeps blocks of ``row_block`` output rows per tile of
    channels (whose weights then stay in L1); ``"mn"`` all channel tiles per spatial tile.

Every other knob is the dense GEMM's (see :class:`bitsearch.space.Schedule`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Literal

from bitsearch.numerics.int_packing import round_up
from bitsearch.numerics.packing import PackedLayout
from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.space.schedule import (
    KnobRecord,
    Schedule,
    check_knob,
    check_x86_extents,
    default_schedule,
    is_knob_value,
)
from bitsearch.targets import TargetDef, get_target
from bitsearch.workloads import Conv2d, Dense, IntConv2d, IntDense

Lowering = Literal["im2col", "implicit"]
LOWERINGS: tuple[str, ...] = ("im2col", "implicit")
ROW_BLOCKS: tuple[int, ...] = (1, 2, 4, 8)
LUT_WINDOW = 31  # byte counters: blocks before a widening (see asm/x86_64/dense_tile.py)
DENSE_FIELDS = tuple(f.name for f in dataclasses.fields(Schedule))
CONV_DIMS: tuple[str, ...] = ("batch", "h", "w", "cin", "cout")  # the dimensions a limit can name


@dataclass(frozen=True, kw_only=True)
class ConvSchedule(KnobRecord):
    """How to compute a :class:`~bitsearch.workloads.Conv2d` on x86-64.

    Attributes:
        lowering: ``im2col`` (gather packed pixels into GEMM rows) or ``implicit`` (the GEMM reads
            the packed image through per-tap offsets).
        mr, nr, k_unroll, popcount, acc_bits, layout, nibble_split, loop_order, nc: the dense
            GEMM's knobs (:class:`bitsearch.space.Schedule`); with ``implicit``, ``mr`` counts
            consecutive output columns, ``nc`` does not apply and ``loop_order`` orders spatial
            tiles (``mn``: all channel tiles per spatial tile) against channel tiles (``nm``).
        row_block: implicit with loop_order ``nm``: output rows swept per channel tile.

    Example:
        >>> s = ConvSchedule(lowering="implicit", mr=3, nr=2)
        >>> ConvSchedule.from_json(s.to_json()) == s, s.dense().mr
        (True, 3)
    """

    lowering: Lowering = "im2col"
    mr: int = 2
    nr: int = 4
    k_unroll: int = 1
    popcount: str = "lut"
    acc_bits: int = 8
    layout: str = "plane_major"
    nibble_split: bool = False
    loop_order: str = "mn"
    nc: int = 0
    row_block: int = 1

    KIND = "conv schedule"

    def dense(self) -> Schedule:
        """The GEMM's part of this schedule."""
        return Schedule(**{name: getattr(self, name) for name in DENSE_FIELDS})

    @property
    def block_bits(self) -> int:
        return self.dense().block_bits

    def normalized(self) -> ConvSchedule:
        changes = {name: getattr(self.dense().normalized(), name) for name in DENSE_FIELDS}
        if self.lowering == "implicit":
            changes.update(nc=0, loop_order=self.loop_order)  # its own loop nest
        if self.lowering != "implicit" or self.loop_order != "nm":
            changes["row_block"] = 1
        return dataclasses.replace(self, **changes)

    def check(self, workload: Conv2d, target: str | TargetDef = "x86_64-avx2") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload``."""
        if not isinstance(workload, Conv2d):
            raise ValueError(f"a ConvSchedule computes a Conv2d workload, not {type(workload).__name__}")
        check_knob("lowering", self.lowering, LOWERINGS)
        check_knob("row_block", self.row_block, ROW_BLOCKS)
        self.dense().check_knobs()  # before gemm_view reads them
        check_x86_extents(workload, self.conv_extents, CONV_DIMS)  # naming the convolution's dims
        self.dense().check(gemm_view(workload, self), target)
        if self.lowering == "implicit":
            if self.popcount == "csa":
                raise ValueError("lowering=implicit does not support popcount='csa' (its carry-save "
                                 "pairs of blocks would straddle taps); use lut, scalar or vpopcnt")
            blocks = round_up(workload.cin, self.block_bits) // self.block_bits
            if self.popcount == "lut" and self.acc_bits == 8 and blocks > LUT_WINDOW:
                raise ValueError(f"lowering=implicit with 8-bit counters needs cin <= "
                                 f"{LUT_WINDOW * self.block_bits}, got {workload.cin}")

    def conv_extents(self, workload: Conv2d) -> list[tuple[str, int]]:
        """Byte extents the x86-64 emitters (bitsearch.asm.x86_64.conv, the dense GEMM) encode as
        immediates or displacements: the buffers of :class:`ConvLayout`'s own check (the
        zero-bordered packed image, raw x, the im2col rows, the packed weights, y), the register
        tiles of the GEMM."""
        lay = functools.partial(PackedLayout, block_bits=self.block_bits, layout=self.layout,
                                nibble_split=self.nibble_split)
        if self.lowering == "im2col":
            pix_bytes = PackedLayout(planes=workload.abits, k=workload.cin, block_bits=64).row_bytes
            k = gemm_k(workload, self)
            x_row = lay(planes=workload.abits, k=k).row_bytes
            w_row = lay(planes=workload.wbits, k=k).row_bytes
        else:
            pix_bytes, x_row = lay(planes=workload.abits, k=workload.cin).row_bytes, 0
            w_row = workload.taps * lay(planes=workload.wbits, k=workload.cin).row_bytes
        return [*_image_extents(workload, pix_bytes, element_bytes=1),
                ("the im2col rows (batch * out_h * out_w * row bytes)", workload.gemm_m * max(x_row, 1)),
                ("a register tile of GEMM rows (mr * row bytes)", self.mr * x_row),
                ("the packed weights (cout * row bytes)", workload.cout * w_row),
                ("a register tile of weight rows (nr * row bytes)", self.nr * w_row),
                ("a register tile of y rows (4 * mr * cout bytes)", 4 * self.mr * workload.cout)]


def _image_extents(workload: Conv2d | IntConv2d, pix_bytes: int, element_bytes: int) -> list[tuple[str, int]]:
    """The image, raw x and y buffers of a convolution (``ConvLayout.check_displacements``)."""
    pt, pb, pl, pr = workload.pads
    wl = workload
    image = wl.batch * (wl.h + pt + pb) * (wl.w + pl + pr) * pix_bytes
    lead = 32 if element_bytes == 1 and wl.cin < 32 else 0  # the pixel packer's 32-byte loads
    return [("the zero-bordered packed image", image),
            ("x (batch * h * w * cin elements)", lead + wl.batch * wl.h * wl.w * wl.cin * element_bytes),
            ("y (4 * batch * out_h * out_w * cout bytes)", 4 * wl.gemm_m * wl.cout)]


def gemm_k(workload: Conv2d, schedule: ConvSchedule) -> int:
    """K of the GEMM a schedule lowers to: taps of whole 64-bit granules (im2col) or of whole
    popcount blocks (implicit)."""
    granule = 64 if schedule.lowering == "im2col" else schedule.block_bits
    return workload.taps * round_up(workload.cin, granule)


def gemm_view(workload: Conv2d, schedule: ConvSchedule) -> Dense:
    """The dense GEMM a schedule runs: [batch*out_h*out_w, K'] x [cout, K']."""
    return Dense(workload.gemm_m, workload.cout, gemm_k(workload, schedule), abits=workload.abits,
                 wbits=workload.wbits, mode=workload.mode)


def default_conv_schedule(workload: Conv2d, target: str | TargetDef = "x86_64-avx2") -> ConvSchedule:
    """The dense default GEMM schedule behind an im2col lowering (packs taps densely)."""
    dense = default_schedule(Dense(1, 1, 1), target)
    return ConvSchedule(lowering="im2col", **dataclasses.asdict(dense))


@dataclass(frozen=True)
class IntConvSchedule(IntSchedule):
    """The int16 baseline convolution: im2col (a generated copy loop into int16 GEMM rows) and the
    int16 GEMM of :mod:`bitsearch.asm.x86_64.intgemm` under the :class:`IntSchedule` knobs
    (``kc`` must be 0: the im2col rows are written whole).

    Example:
        >>> IntConvSchedule.from_json(IntConvSchedule(mr=2, nr=2).to_json()).mr
        2
    """

    KIND = "int conv schedule"

    def check(self, workload: IntConv2d, target: str | TargetDef = "x86_64-avx2") -> None:  # type: ignore[override]
        if not isinstance(workload, IntConv2d):
            raise ValueError(f"an IntConvSchedule computes an IntConv2d, not {type(workload).__name__}")
        if not is_knob_value(self.kc, (0,)):
            raise ValueError(f"schedule.kc must be 0 for a convolution, got {self.kc!r}")
        if get_target(target).arch == "aarch64":
            super().check(int_gemm_view(workload), target)
            return
        self._check_x86(int_gemm_view(workload))
        check_x86_extents(workload, self.conv_extents, CONV_DIMS)  # naming the convolution's dims
        super().check(int_gemm_view(workload), target)

    def conv_extents(self, workload: IntConv2d) -> list[tuple[str, int]]:
        """The image, x and y buffers of the int16 convolution (int16 pixels) and the extents of
        its int16 GEMM (:meth:`IntSchedule.gemm_extents`: the im2col rows and the weights)."""
        return [*_image_extents(workload, 2 * workload.cin, element_bytes=2),
                *self.gemm_extents(int_gemm_view(workload))]


def int_gemm_view(workload: IntConv2d) -> IntDense:
    return IntDense(workload.gemm_m, workload.cout, workload.gemm_k, dtype=workload.dtype)


def default_int_conv_schedule(workload: IntConv2d,
                              target: str | TargetDef = "x86_64-avx2") -> IntConvSchedule:
    base = default_int_schedule(int_gemm_view(workload), target)
    return IntConvSchedule(**{**dataclasses.asdict(base), "kc": 0})


__all__ = ["LOWERINGS", "ConvSchedule", "IntConvSchedule", "default_conv_schedule",
           "default_int_conv_schedule", "gemm_view", "int_gemm_view"]
