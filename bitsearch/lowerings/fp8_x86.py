"""FP8 GEMM on x86-64: FP8 decoded to FP32 (in the inner loop or while packing), FMA with FP32
accumulation (:mod:`bitsearch.asm.x86_64.fp8_gemm`)."""

from __future__ import annotations

from bitsearch.asm.kernel import Kernel
from bitsearch.asm.x86_64.encode import encode
from bitsearch.asm.x86_64.fp8_gemm import emit_fp8_dense
from bitsearch.asm.x86_64.fp8_layout import Fp8Geometry
from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.int_x86 import drop_whole_k_block
from bitsearch.lowerings.plans import gemm_kernel
from bitsearch.space.fp8_schedule import (
    FP8_DECODES,
    FP8_K_UNROLLS,
    FP8_LOOP_ORDERS,
    Fp8Schedule,
    default_fp8_schedule,
    vector_registers,
)
from bitsearch.space.knobs import Knob, Params, SpaceDef, tile_grid
from bitsearch.targets import TargetDef
from bitsearch.workloads import Fp8Dense


class Fp8DenseX86(Lowering):
    operator = Fp8Dense
    arch = "x86_64"
    arithmetic = "fp32"
    schedule_type = Fp8Schedule

    def space(self, workload: Fp8Dense, target: TargetDef) -> SpaceDef:
        """Where the weights are decoded, then a register tile that fits with it."""
        def tiles(params: Params) -> tuple[str, ...]:
            def fits(tile: str) -> bool:
                mr, nr = map(int, tile.split("x"))
                probe = Fp8Schedule(decode=params["decode"], mr=mr, nr=nr)
                return (probe.ymm_registers(workload.wfmt) <= vector_registers(target, nr)
                        and mr <= workload.m)
            return tuple(t for t in tile_grid(8, 8) if fits(t)) or ("1x1",)

        knobs = (
            Knob("decode", FP8_DECODES, "kernel: weight panels hold FP8 bytes, decoded in the inner "
                 "loop; pack: decoded to FP32 panels when the weights are packed"),
            Knob("tile", tile_grid(8, 8), "register tile MRxNR (NR vectors of 8 output columns)",
                 domain=tiles, condition=lambda p: p["decode"]),
            Knob("k_unroll", FP8_K_UNROLLS, "K steps per inner-loop iteration"),
            Knob("loop_order", FP8_LOOP_ORDERS, "mn: column panels innermost; nm: row tiles innermost"),
            Knob("kc", (0, 128, 256, 512), "K cache block in elements (0 = none)"),
        )
        m4 = min(4, workload.m)
        return SpaceDef(
            knobs,
            experts=({"decode": "kernel", "tile": "1x7" if workload.wfmt == "e5m2" else "1x6",
                      "k_unroll": 4, "loop_order": "mn", "kc": 0},
                     {"decode": "pack", "tile": f"{m4}x3", "k_unroll": 4, "loop_order": "nm", "kc": 256},
                     {"decode": "kernel", "tile": f"{m4}x2", "k_unroll": 2, "loop_order": "nm", "kc": 256}),
            constraints=("register tile within 16 ymm (x86_64-avx512 with nr >= 2: 32 zmm): "
                         "mr*nr + nr + 1, plus 1 (E5M2) or 3 (E4M3) with decode=kernel; mr <= m",))

    def default(self, workload: Fp8Dense, target: TargetDef) -> Fp8Schedule:
        return default_fp8_schedule(workload, target)

    def normalize(self, schedule: Fp8Schedule, workload: Fp8Dense) -> Fp8Schedule:
        return drop_whole_k_block(schedule.normalized(), workload.k)

    def emit(self, workload: Fp8Dense, schedule: Fp8Schedule, target: TargetDef) -> Kernel:
        pack, gemm = emit_fp8_dense(workload, schedule, target.name)
        return gemm_kernel(workload, schedule, target, {"pack": encode(pack), "gemm": encode(gemm)},
                           Fp8Geometry.of(workload, schedule, target.name), out_dtype="float32",
                           rowsum=False, fused=True)


__all__ = ["Fp8DenseX86"]
