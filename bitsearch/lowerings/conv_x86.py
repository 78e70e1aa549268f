"""Convolutions on x86-64: the bit-serial conv2d (im2col of packed words or implicit GEMM) and the
int16 baseline (im2col + the int16 GEMM), both from :mod:`bitsearch.asm.x86_64.conv`.

A call runs ``pack`` over the image rows (the padded, bit-packed image; its OR rejects values out
of range), then per block of GEMM rows ``gather`` (im2col rows, or the implicit GEMM's unipolar
row sums), ``gemm`` and ``fix`` (the bipolar border correction), those the schedule needs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np

from bitsearch.asm.kernel import Begin, BufferSpec, CallPlan, End, Kernel, Operands, Phase, Step
from bitsearch.asm.x86_64.conv import emit_conv, emit_int_conv
from bitsearch.asm.x86_64.conv_layout import ConvLayout, border_classes, border_corrections
from bitsearch.asm.x86_64.encode import encode
from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.dense_x86 import DENSE_CONSTRAINTS, DENSE_EXPERTS, dense_knobs
from bitsearch.lowerings.int_x86 import int_space
from bitsearch.space.conv_schedule import (
    LOWERINGS,
    ROW_BLOCKS,
    ConvSchedule,
    IntConvSchedule,
    default_conv_schedule,
    default_int_conv_schedule,
)
from bitsearch.space.knobs import Knob, SpaceDef
from bitsearch.targets import TargetDef
from bitsearch.workloads import Conv2d, IntConv2d


@dataclasses.dataclass(frozen=True)
class ConvOperands(Operands):
    """x flattened after ``layout.lead`` zero bytes; w as GEMM rows (``wp``) plus the bipolar
    border corrections (``corr``, int32 [classes, cout]; one zero row when nothing is corrected)."""

    workload: Conv2d | IntConv2d
    layout: ConvLayout
    class_sets: tuple[frozenset[tuple[int, int]], ...]  # padded taps of each border class
    corrects: bool  # whether the kernel has a ``fix`` function

    @functools.cached_property  # compared on every call
    def key(self) -> str:
        return json.dumps({"workload": self.workload.to_dict(), "lowering": self.layout.lowering,
                           "w": repr(self.layout.gemm_w)}, sort_keys=True)

    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        x = self.workload.check_x(x, check_range=False)
        flat = x.reshape(-1).view(np.uint8)
        if not self.layout.lead:
            return flat
        out = np.zeros(self.layout.lead + flat.size, np.uint8)
        out[self.layout.lead :] = flat
        return out

    def pack_w(self, w: np.ndarray) -> dict[str, np.ndarray]:
        if self.corrects:
            corr = border_corrections(self.workload, w, list(self.class_sets))
        else:
            corr = np.zeros((1, self.workload.cout), np.int32)
        return {"wp": self.layout.pack_w_rows(w), "corr": corr}


def conv_kernel(conv: Conv2d | IntConv2d, schedule: Any, target: TargetDef, functions: dict[str, Any],
                lay: ConvLayout, *, pixel_sums: bool) -> Kernel:
    """Encode the emitted functions of a checked schedule and the plan that calls them
    (``pixel_sums``: the pack function writes per-pixel sums, which unipolar GEMM rows need)."""
    functions = {name: encode(fn) for name, fn in functions.items()}
    implicit = lay.lowering == "implicit"
    corrects = "fix" in functions
    cls, sets = border_classes(conv) if corrects else (np.zeros(conv.gemm_m, np.int32), [frozenset()])
    gathers = "gather" in functions
    gemm_rows = conv.batch * conv.out_h if implicit else conv.gemm_m
    y_bytes = 4 * int(np.prod(conv.y_shape))
    buffers = (
        BufferSpec("x", lay.x_bytes, "x", "X_LEAD zero bytes, then x (NHWC)"),
        BufferSpec("img", lay.image_bytes, "scratch", "packed, zero-bordered image"),
        BufferSpec("pixsum", 4 * lay.image_rows * lay.wp if pixel_sums else 4, "scratch", "per-pixel sums"),
        BufferSpec("xp", conv.gemm_m * lay.x_row_bytes if gathers and lay.x_row_bytes else 4, "scratch",
                   "im2col GEMM rows"),
        BufferSpec("rowsum", 4 * conv.gemm_m, "scratch", "per-position sums"),
        BufferSpec("wp", conv.cout * lay.w_row_bytes, "w", "packed weights (Kernel.pack_weights)"),
        BufferSpec("y", y_bytes, "y", "int32 [batch][out_h][out_w][cout]"),
        BufferSpec("corr", 4 * len(sets) * conv.cout, "w", "border corrections [classes][cout]"),
        BufferSpec("cls", 4 * conv.gemm_m, "const", "border class of each output position"),
    )
    scale = conv.out_w if implicit else 1  # output positions per GEMM row
    steps = [Step("gemm", ("img" if implicit else "xp", "wp", "y", "rowsum", Begin(), End()))]
    if gathers:
        steps.insert(0, Step("gather", ("img", "xp", "pixsum", "rowsum", Begin(scale), End(scale))))
    if corrects:
        steps.append(Step("fix", ("y", "corr", "cls", Begin(scale), End(scale))))
    plan = CallPlan(
        buffers=buffers,
        phases=(Phase((Step("pack", ("x", "img", "pixsum", Begin(), End())),), lay.image_rows,
                      checks_input=True),
                Phase(tuple(steps), gemm_rows, 1 if implicit else schedule.mr)),
        out_dtype="int32", out_shape=conv.y_shape, constants={"cls": cls},
        macros=(("IMAGE_ROWS", lay.image_rows, "pack rows: batch * padded height"),
                ("X_LEAD", lay.lead, "zero bytes before x"), ("POSITIONS", conv.gemm_m, ""),
                ("GEMM_ROWS", gemm_rows, ""), ("BORDER_CLASSES", len(sets), "rows of corr")))
    operands = ConvOperands(conv, lay, tuple(sets), corrects)
    return Kernel(workload=conv, schedule=schedule, target=target.name, functions=functions, plan=plan,
                  operands=operands)


class Conv2dBitserialX86(Lowering):
    operator = Conv2d
    arch = "x86_64"
    arithmetic = "bitserial"
    schedule_type = ConvSchedule

    def space(self, workload: Conv2d, target: TargetDef) -> SpaceDef:
        """The lowering, then the knobs of the dense GEMM it lowers to."""
        lowering = Knob("lowering", LOWERINGS, "im2col: gather packed pixels into GEMM rows (taps "
                        "packed densely in 64-bit granules); implicit: the GEMM walks the taps through "
                        "offsets into the packed image, no copy, each tap padded to whole popcount blocks")
        row_block = Knob("row_block", ROW_BLOCKS, "output rows swept per tile of channels",
                         when=lambda p: p["lowering"] == "implicit" and p["loop_order"] == "nm",
                         when_doc="lowering == implicit and loop_order == nm",
                         depends=("lowering", "loop_order"))
        return SpaceDef(
            (lowering, *dense_knobs(target), row_block),
            experts=tuple({**e, "lowering": low} for low in LOWERINGS for e in DENSE_EXPERTS),
            constraints=(*DENSE_CONSTRAINTS, "implicit: popcount csa unsupported; with it mr counts "
                         "consecutive output columns and loop_order/nc do not apply"))

    def default(self, workload: Conv2d, target: TargetDef) -> ConvSchedule:
        return default_conv_schedule(workload, target)

    def emit(self, workload: Conv2d, schedule: ConvSchedule, target: TargetDef) -> Kernel:
        return conv_kernel(workload, schedule, target, emit_conv(workload, schedule),
                           ConvLayout.of(workload, schedule), pixel_sums=workload.mode == "unipolar")


class IntConv2dX86(Lowering):
    operator = IntConv2d
    arch = "x86_64"
    arithmetic = "int"
    schedule_type = IntConvSchedule

    def space(self, workload: IntConv2d, target: TargetDef) -> SpaceDef:
        return int_space(workload.dtype, kc=False)

    def default(self, workload: IntConv2d, target: TargetDef) -> IntConvSchedule:
        return default_int_conv_schedule(workload, target)

    def emit(self, workload: IntConv2d, schedule: IntConvSchedule, target: TargetDef) -> Kernel:
        return conv_kernel(workload, schedule, target, emit_int_conv(workload, schedule),
                           ConvLayout.of_int(workload, schedule), pixel_sums=False)


__all__ = ["Conv2dBitserialX86", "ConvOperands", "IntConv2dX86", "conv_kernel"]
