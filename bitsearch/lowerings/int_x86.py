"""The int16 / int8 GEMM baselines on x86-64 (VPMADDWD, VPMADDUBSW; :mod:`bitsearch.asm.x86_64.intgemm`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bitsearch.asm.kernel import Kernel
from bitsearch.asm.x86_64.encode import encode
from bitsearch.asm.x86_64.intgemm import IntGeometry, emit_int_dense
from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.plans import gemm_kernel
from bitsearch.space.int_schedule import (
    FORMULATIONS,
    INT_K_UNROLLS,
    INT_LOOP_ORDERS,
    IntSchedule,
    default_int_schedule,
)
from bitsearch.space.knobs import Knob, Params, SpaceDef, tile_grid
from bitsearch.space.schedule import YMM_REGISTERS
from bitsearch.targets import TargetDef
from bitsearch.workloads import IntDense

INT_TILES = tile_grid(8, 8)


def _int_tiles(dtype: str) -> Callable[[Params], tuple[str, ...]]:
    def domain(params: Params) -> tuple[str, ...]:
        def fits(tile: str) -> bool:
            mr, nr = map(int, tile.split("x"))
            probe = IntSchedule(formulation=params["formulation"], mr=mr, nr=nr)
            return probe.ymm_registers(dtype) <= YMM_REGISTERS
        return tuple(t for t in INT_TILES if fits(t))
    return domain


def int_space(dtype: str, *, kc: bool = True) -> SpaceDef:
    """The knobs of the integer GEMM (``kc=False``: without K blocking, as the convolution)."""
    knobs = (
        Knob("formulation", FORMULATIONS, "broadcast: w in column panels, x broadcast, no horizontal "
             "sums; dot: row-by-row dot products with one horizontal sum per output"),
        Knob("tile", INT_TILES, "register tile MRxNR (broadcast: NR vectors of 8 columns)",
             domain=_int_tiles(dtype), condition=lambda p: p["formulation"]),
        Knob("k_unroll", INT_K_UNROLLS, "K steps per inner-loop iteration"),
        Knob("loop_order", INT_LOOP_ORDERS, "mn: column tiles innermost; nm: row tiles innermost"),
        *((Knob("kc", (0, 256, 512), "K cache block in elements (0 = none)"),) if kc else ()),
    )
    experts = ({"formulation": "broadcast", "tile": "4x2", "k_unroll": 2, "loop_order": "mn", "kc": 0},
               {"formulation": "dot", "tile": "2x4", "k_unroll": 1, "loop_order": "mn", "kc": 0})
    constraints = ("register tile within 16 ymm: broadcast mr*nr + nr + 2 (+1 for int8); "
                   "dot mr*nr + mr + 2 (+1 for int8)",)
    if not kc:
        experts = tuple({k: v for k, v in e.items() if k != "kc"} for e in experts)
        constraints += ("kc = 0: the im2col rows are written whole",)
    return SpaceDef(knobs, experts, constraints)


def drop_whole_k_block(schedule: Any, k: int) -> Any:
    """One K block as large as K is no blocking: the same kernel, measured once."""
    return dataclasses.replace(schedule, kc=0) if schedule.kc and schedule.kc >= k else schedule


class IntDenseX86(Lowering):
    operator = IntDense
    arch = "x86_64"
    arithmetic = "int"
    schedule_type = IntSchedule

    def space(self, workload: IntDense, target: TargetDef) -> SpaceDef:
        return int_space(workload.dtype)

    def default(self, workload: IntDense, target: TargetDef) -> IntSchedule:
        return default_int_schedule(workload, target)

    def normalize(self, schedule: IntSchedule, workload: IntDense) -> IntSchedule:
        return drop_whole_k_block(schedule.normalized(), workload.k)

    def emit(self, workload: IntDense, schedule: IntSchedule, target: TargetDef) -> Kernel:
        pack, gemm = emit_int_dense(workload, schedule)
        return gemm_kernel(workload, schedule, target, {"pack": encode(pack), "gemm": encode(gemm)},
                           IntGeometry.of(workload, schedule))


__all__ = ["IntDenseX86", "drop_whole_k_block", "int_space"]
