"""Bit-serial dense on x86-64: AND/XOR + popcount over bit planes (:mod:`bitsearch.asm.x86_64.dense`)."""

from __future__ import annotations

from typing import Any

from bitsearch.asm.kernel import Kernel
from bitsearch.asm.x86_64.dense import emit_dense
from bitsearch.asm.x86_64.dense_pack import Geometry
from bitsearch.asm.x86_64.encode import encode
from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.plans import gemm_kernel
from bitsearch.space.knobs import Knob, Params, SpaceDef
from bitsearch.space.schedule import (
    ACC_BITS,
    K_UNROLLS,
    LOOP_ORDERS,
    Schedule,
    default_schedule,
    target_popcounts,
)
from bitsearch.targets import TargetDef
from bitsearch.workloads import Dense


def _tile_fits(params: Params, mr: int, nr: int) -> bool:
    probe = Schedule(mr=mr, nr=nr, popcount=params["popcount"], acc_bits=params.get("acc_bits", 8),
                     nibble_split=params.get("nibble_split", False))
    return probe.register_problem() is None


def _tile_rows(params: Params) -> tuple[int, ...]:
    return tuple(mr for mr in range(1, 7) if any(_tile_fits(params, mr, nr) for nr in range(1, 12)))


def _tile_cols(params: Params) -> tuple[int, ...]:
    return tuple(nr for nr in range(1, 12) if _tile_fits(params, params["mr"], nr))


def _tile_condition(params: Params) -> str:
    parts = [params["popcount"]]
    if params.get("nibble_split"):
        parts.append("split")
    if params["popcount"] != "scalar" and params.get("acc_bits", 8) != 8:
        parts.append(f"acc{params['acc_bits']}")
    return ",".join(parts)


def dense_knobs(target: TargetDef) -> tuple[Knob, ...]:
    """The bit-serial GEMM's knobs on ``target`` (the convolutions add theirs around them)."""
    return (
        Knob("popcount", target_popcounts(target), "popcount strategy: VPSHUFB nibble look-up, "
             "Harley-Seal CSA, POPCNT (and VPOPCNTQ with AVX-512 VPOPCNTDQ)"),
        Knob("acc_bits", ACC_BITS, "vector lane width of the accumulators (8 = widened by VPSADBW)",
             when=lambda p: p["popcount"] in ("lut", "csa"), when_doc="popcount in (lut, csa)",
             depends=("popcount",)),
        Knob("nibble_split", (True, False), "operands packed as split nibbles",
             when=lambda p: p["popcount"] == "lut", when_doc="popcount == lut", depends=("popcount",)),
        # The register tile as two ordered integers per strategy (mr, then the nr that fit with it),
        # so TPE can model neighbourhoods: measured on the 320-schedule subspace, it reached 5 % of
        # the optimum in a median of 15 trials this way and 34 with one categorical "MRxNR" knob.
        Knob("mr", tuple(range(1, 7)), "register tile rows (rows of x), those that fit the register "
             "file of the strategy", domain=_tile_rows, condition=_tile_condition),
        Knob("nr", tuple(range(1, 12)), "register tile columns (rows of w) that fit with mr",
             domain=_tile_cols, condition=lambda p: f"{_tile_condition(p)},mr={p['mr']}"),
        Knob("k_unroll", K_UNROLLS, "K blocks per inner-loop iteration"),
        Knob("layout", ("plane_major", "interleaved"), "bit-plane layout of the packed operands"),
        Knob("loop_order", LOOP_ORDERS, "mn: column tiles innermost; nm: row tiles innermost"),
        Knob("nc", (0, 4, 8, 16, 32), "column cache block in tiles (0 = none)",
             when=lambda p: p["loop_order"] == "mn", when_doc="loop_order == mn", depends=("loop_order",)),
    )


# Hand-written starting points, enqueued before the sampler takes over.
DENSE_EXPERTS: tuple[dict[str, Any], ...] = (
    {"popcount": "lut", "mr": 2, "nr": 4, "k_unroll": 1, "acc_bits": 8, "nibble_split": False},
    {"popcount": "lut", "mr": 2, "nr": 3, "k_unroll": 4, "acc_bits": 8, "nibble_split": True},
    {"popcount": "csa", "mr": 1, "nr": 4, "k_unroll": 2, "acc_bits": 8},
    {"popcount": "scalar", "mr": 2, "nr": 3, "k_unroll": 4},
)
DENSE_CONSTRAINTS: tuple[str, ...] = (
    "register tile within 16 ymm: lut mr*nr + mr*(2 if nibble_split else 1) + 4 (+1/2 for "
    "acc_bits 16/32/64); csa 2*mr*nr + 5; scalar mr*nr <= 6 GPR accumulators",
    "acc_bits 16/32/64 only where K*(2^a-1)*(2^w-1) fits the lanes; 8 is widened by VPSADBW "
    "before it can overflow",
    "nibble_split only with popcount=lut; nc only with loop_order=mn",
)


class DenseBitserialX86(Lowering):
    operator = Dense
    arch = "x86_64"
    arithmetic = "bitserial"
    schedule_type = Schedule

    def space(self, workload: Dense, target: TargetDef) -> SpaceDef:
        return SpaceDef(dense_knobs(target), DENSE_EXPERTS, DENSE_CONSTRAINTS)

    def default(self, workload: Dense, target: TargetDef) -> Schedule:
        return default_schedule(workload, target)

    def emit(self, workload: Dense, schedule: Schedule, target: TargetDef) -> Kernel:
        pack, gemm = emit_dense(workload, schedule)
        return gemm_kernel(workload, schedule, target, {"pack": encode(pack), "gemm": encode(gemm)},
                           Geometry.of(workload, schedule))


__all__ = ["DenseBitserialX86", "dense_knobs"]
