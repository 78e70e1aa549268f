"""The Cortex-A53 (AArch64 NEON) lowerings: bit-serial dense (AND/EOR + CNT) and the int16
baseline (SMLAL); GNU text from :mod:`bitsearch.asm.aarch64`, encoded by the project's assembler."""

from __future__ import annotations

from bitsearch.asm.aarch64.neon_common import to_machine_code
from bitsearch.asm.aarch64.neon_dense import NeonGeometry, emit_neon_dense
from bitsearch.asm.aarch64.neon_int import NeonIntGeometry, emit_neon_int
from bitsearch.asm.aarch64.neon_shortk import short_k_applies
from bitsearch.asm.kernel import Kernel
from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.int_x86 import INT_TILES
from bitsearch.lowerings.plans import gemm_kernel
from bitsearch.space.int_schedule import INT_K_UNROLLS, IntSchedule, default_int_schedule
from bitsearch.space.knobs import Knob, Params, SpaceDef, tile_grid
from bitsearch.space.schedule import (
    NEON_CHAINS,
    NEON_K_UNROLLS,
    NEON_REDUCTIONS,
    NEON_VECTOR_BITS,
    NeonSchedule,
)
from bitsearch.targets import TargetDef
from bitsearch.workloads import Dense, IntDense


def _tile_fits(params: Params, mr: int, nr: int) -> bool:
    probe = NeonSchedule(mr=mr, nr=nr, reduction=params["reduction"], chains=params["chains"])
    return probe.register_problem() is None


def _condition(params: Params) -> str:
    return f"{params['reduction']},chains={params['chains']}"


def default_neon_schedule(workload: Dense) -> NeonSchedule:
    """A sound, fast A53 starting point: a 4x4 tile of Q-form AND/CNT/ADD products, 8 blocks per
    iteration software-pipelined over 8 temporaries (all 32 registers; the column sums go to the
    stack), byte counters flushed through ADDP trees. llvm-mca -mcpu=cortex-a53 models its A1W1
    inner loop at about 34 bit-MAC/cycle (3.6 instructions per 128 bit-MACs) and a whole
    256x256x1024 (x4608) GEMM at about 27 (29); see experiments/neon_a53_model.py.

    Short K (the whole K fits the 8-bit counters, e.g. ResNet-18 C2 as a GEMM, K = 576): the
    straight-line ``short_k`` path, on a 5x4 tile when its registers allow (one plane-pair
    group, as A1W1), else 4x4; modeled at about 30 bit-MAC/cycle per tile (GEMM only)."""
    wide = NeonSchedule(mr=5, nr=4, vector_bits=128, reduction="addp", k_unroll=8, chains=2)
    if short_k_applies(workload, wide):
        return wide
    return NeonSchedule(mr=4, nr=4, vector_bits=128, reduction="addp", k_unroll=8, chains=8)


class DenseBitserialNeon(Lowering):
    operator = Dense
    arch = "aarch64"
    arithmetic = "bitserial"
    schedule_type = NeonSchedule

    def space(self, workload: Dense, target: TargetDef) -> SpaceDef:
        knobs = (
            Knob("vector_bits", NEON_VECTOR_BITS, "64 = D forms, 128 = Q forms (one op per 128 bit-MACs)"),
            Knob("reduction", NEON_REDUCTIONS, "how byte counters are flushed every <= 31 blocks: ADDP "
                 "tree, UADALP into 16-bit lanes, or UADDLV per output"),
            Knob("chains", NEON_CHAINS, "temporaries of the software-pipelined AND->CNT->ADD stream"),
            Knob("mr", tuple(range(1, 9)), "register tile rows that fit 32 NEON registers",
                 domain=lambda p: tuple(mr for mr in range(1, 9)
                                        if any(_tile_fits(p, mr, nr) for nr in range(1, 9))),
                 condition=_condition),
            Knob("nr", tuple(range(1, 9)), "register tile columns that fit with mr",
                 domain=lambda p: tuple(nr for nr in range(1, 9) if _tile_fits(p, p["mr"], nr)),
                 condition=lambda p: f"{_condition(p)},mr={p['mr']}"),
            Knob("k_unroll", NEON_K_UNROLLS, "K blocks per inner-loop iteration (one pipelined stream)"),
            Knob("short_k", (True, False), "whole K as one straight-line scheduled block per tile when "
                 "it fits the 8-bit counters (<= 31 chunks of 128 bits); False: the windowed K loop"),
        )
        return SpaceDef(
            knobs,
            experts=({"vector_bits": 128, "reduction": "addp", "chains": 8, "mr": 3, "nr": 4,
                      "k_unroll": 8, "short_k": True},
                     {"vector_bits": 128, "reduction": "uaddlv", "chains": 4, "mr": 2, "nr": 4,
                      "k_unroll": 4, "short_k": True}),
            constraints=("NEON registers: mr*nr byte counters (+ mr*nr 16-bit for uadalp) + mr + nr + "
                         "chains <= 32 (32-bit column sums go to the stack when they do not fit); "
                         "mr + nr <= 12 row pointers",
                         "uadalp only while K needs <= 4095 blocks (16-bit lanes)"))

    def default(self, workload: Dense, target: TargetDef) -> NeonSchedule:
        return default_neon_schedule(workload)

    def emit(self, workload: Dense, schedule: NeonSchedule, target: TargetDef) -> Kernel:
        pack, gemm = emit_neon_dense(workload, schedule)
        return gemm_kernel(workload, schedule, target,
                           {"pack": to_machine_code(pack), "gemm": to_machine_code(gemm)},
                           NeonGeometry.of(workload, schedule))


class IntDenseNeon(Lowering):
    operator = IntDense
    arch = "aarch64"
    arithmetic = "int"
    schedule_type = IntSchedule

    def supports(self, workload: IntDense, target: TargetDef) -> str | None:
        if workload.dtype != "int16":
            return f"{target.name} has an int16 baseline only, not dtype={workload.dtype!r}"
        return None

    def space(self, workload: IntDense, target: TargetDef) -> SpaceDef:
        def tiles(params: Params) -> tuple[str, ...]:
            del params
            return tuple(t for t in tile_grid(8, 8) if IntSchedule(
                formulation="dot", mr=int(t.split("x")[0]), nr=int(t.split("x")[1])).neon_registers() <= 32
                and sum(map(int, t.split("x"))) <= 12)

        knobs = (
            Knob("formulation", ("dot",), "SMLAL/SMLAL2 dot products (the only A53 formulation)"),
            Knob("tile", INT_TILES, "register tile MRxNR of .4s accumulators", domain=tiles),
            Knob("k_unroll", INT_K_UNROLLS, "K steps of 8 int16 per inner-loop iteration"),
            Knob("loop_order", ("mn",), "column tiles innermost"),
        )
        expert = {"formulation": "dot", "tile": "2x4", "k_unroll": 2, "loop_order": "mn"}
        return SpaceDef(knobs, experts=(expert,),
                        constraints=("NEON registers: mr*nr + mr + nr <= 32; int16 only",))

    def default(self, workload: IntDense, target: TargetDef) -> IntSchedule:
        return default_int_schedule(workload, target)

    def emit(self, workload: IntDense, schedule: IntSchedule, target: TargetDef) -> Kernel:
        pack, gemm = emit_neon_int(workload, schedule)
        return gemm_kernel(workload, schedule, target,
                           {"pack": to_machine_code(pack), "gemm": to_machine_code(gemm)},
                           NeonIntGeometry.of(workload))


__all__ = ["DenseBitserialNeon", "IntDenseNeon", "default_neon_schedule"]
