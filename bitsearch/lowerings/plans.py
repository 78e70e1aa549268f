"""Call plans shared by lowerings: a GEMM's pack-then-multiply over rows of x."""

from __future__ import annotations

from typing import Any

import numpy as np

from bitsearch.asm.kernel import Begin, BufferSpec, CallPlan, End, Kernel, Phase, RowOperands, Step
from bitsearch.records import MachineCode
from bitsearch.targets import TargetDef


def gemm_kernel(
    workload: Any,
    schedule: Any,
    target: TargetDef,
    functions: dict[str, MachineCode],
    geometry: Any,
    *,
    out_dtype: str = "int32",
    rowsum: bool = True,
    fused: bool = False,
) -> Kernel:
    """``pack(x, xp, rowsum, row_begin, row_end)`` then ``gemm(xp, wp, y, rowsum, row_begin,
    row_end)`` over the rows of x, in blocks of whole register tiles (``schedule.mr`` rows).

    ``geometry`` has ``x`` and ``w`` (packed layouts) and ``x_row_stride``. Unless ``fused``, all
    of x is packed first and the OR of the bytes read is checked (values out of range are
    rejected before the GEMM runs); ``fused`` runs pack and GEMM per block (the pack returns 0).
    ``rowsum=False``: the functions get a null rowsum."""
    m, n = workload.m, workload.n
    itemsize = np.dtype(out_dtype).itemsize
    sums = "rowsum" if rowsum else 0
    buffers = (
        BufferSpec("x", m * geometry.x_row_stride, "x", "rows of x, each padded to X_ROW_STRIDE bytes"),
        BufferSpec("xp", m * geometry.x.row_bytes, "scratch", "packed x"),
        *((BufferSpec("rowsum", 4 * m, "scratch", "per-row sums of x"),) if rowsum else ()),
        BufferSpec("wp", n * geometry.w.row_bytes, "w", "packed w (Kernel.pack_weights)"),
        BufferSpec("y", m * n * itemsize, "y", f"{out_dtype} [M][N]"),
    )
    pack = Step("pack", ("x", "xp", sums, Begin(), End()))
    gemm = Step("gemm", ("xp", "wp", "y", sums, Begin(), End()))
    grain = schedule.mr
    phases = ((Phase((pack, gemm), m, grain),) if fused else
              (Phase((pack,), m, grain, checks_input=True), Phase((gemm,), m, grain)))
    plan = CallPlan(
        buffers=buffers, phases=phases, out_dtype=out_dtype, out_shape=(m, n),
        macros=(("M", m, ""), ("N", n, ""), ("K", workload.k, ""),
                ("X_ROW_STRIDE", geometry.x_row_stride, "bytes per x row"),
                ("XP_ROW_BYTES", geometry.x.row_bytes, ""), ("WP_ROW_BYTES", geometry.w.row_bytes, "")))
    operands = RowOperands(workload, geometry.x, geometry.w, geometry.x_row_stride)
    return Kernel(workload=workload, schedule=schedule, target=target.name, functions=functions,
                  plan=plan, operands=operands)


__all__ = ["gemm_kernel"]
