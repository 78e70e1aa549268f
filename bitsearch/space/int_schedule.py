"""``IntSchedule``: one point of the schedule space of the int16 / int8 GEMM baselines.

Two formulations of y = x @ w.T on AVX2 (see :mod:`bitsearch.asm.x86_64.intgemm`):

``broadcast`` (the BLAS way)
    w is packed in panels of ``8 * nr`` columns, K-pairs (int16) or K-quads (int8) of a column
    in one dword; a dword of x (the same K-pair/quad of one row) is broadcast to all lanes and
    multiplied with ``nr`` panel vectors. Every lane of an accumulator is one output: no
    horizontal reduction.
``dot``
    ``mr`` rows of x and ``nr`` rows of w are walked in 32-byte chunks of K; every accumulator is
    the partial dot product of one (row, column), summed horizontally once at the end.

Like :class:`bitsearch.space.Schedule` it is frozen, hashable and round-trips through JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bitsearch.space.schedule import (
    ANY_COUNT,
    YMM_REGISTERS,
    KnobRecord,
    check_knob,
    check_x86_extents,
    is_knob_value,
)
from bitsearch.targets import TargetDef, get_target
from bitsearch.workloads import IntDense

Formulation = Literal["broadcast", "dot"]
FORMULATIONS: tuple[str, ...] = ("broadcast", "dot")
INT_LOOP_ORDERS: tuple[str, ...] = ("mn", "nm")
INT_K_UNROLLS: tuple[int, ...] = (1, 2, 4, 8)
KC_GRANULE = 32  # K elements; keeps every K block a whole number of 32-byte chunks and of dwords
ROW_GRANULE = 32  # bytes: x rows (and w rows of ``dot``) are padded to whole ymm chunks


@dataclass(frozen=True)
class IntSchedule(KnobRecord):
    """How to compute an :class:`~bitsearch.workloads.IntDense` layer on x86-64 AVX2.

    Attributes:
        formulation: ``broadcast`` (w in column panels, x dwords broadcast, no horizontal sums)
            or ``dot`` (row-by-row dot products, one horizontal sum per output).
        mr: rows of x per register tile.
        nr: ``broadcast``: ymm vectors of 8 output columns per tile (8*nr columns, the w panel
            width); ``dot``: rows of w (output columns) per tile.
        k_unroll: K steps per iteration of the innermost loop (a step is one dword of K per row
            for ``broadcast``, 32 bytes for ``dot``).
        loop_order: ``mn`` walks column tiles innermost (x tile stays in L1, w streams),
            ``nm`` row tiles innermost (the w panel stays in L1, x streams).
        kc: K cache block in elements (0 = none; a multiple of 32). Every block makes a full
            pass over the tiles, the first storing y and the others adding to it.

    Example:
        >>> s = IntSchedule(mr=4, nr=2)
        >>> IntSchedule.from_json(s.to_json()) == s
        True
    """

    formulation: Formulation = "broadcast"
    mr: int = 4
    nr: int = 2
    k_unroll: int = 2
    loop_order: str = "nm"
    kc: int = 0

    KIND = "int schedule"

    # ---- derived properties ----------------------------------------------------------------
    def normalized(self) -> IntSchedule:
        """The canonical form (every knob has an effect in both formulations: nothing to reset)."""
        return self

    def ymm_registers(self, dtype: str) -> int:
        """Vector registers the emitter allocates: accumulators, operand registers, one
        temporary, and for int8 the constant of 16-bit ones that widens VPMADDUBSW's pairs."""
        tile = self.mr * self.nr
        ones = 1 if dtype == "int8" else 0
        if self.formulation == "broadcast":
            return tile + self.nr + 1 + 1 + ones  # accs + w vectors + broadcast x + temporary
        return tile + self.mr + 1 + 1 + ones  # accs + x rows + w row + temporary

    # ---- static validity ---------------------------------------------------------------------
    def check(self, workload: IntDense, target: str | TargetDef = "x86_64-avx2") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload``
        (every x86-64 target runs these AVX2 kernels)."""
        if not isinstance(workload, IntDense):
            raise ValueError(f"an IntSchedule computes an IntDense workload, not {type(workload).__name__}")
        if get_target(target).arch == "aarch64":
            self._check_neon(workload)
            return
        self._check_x86(workload)
        check_x86_extents(workload, self.gemm_extents)

    def _check_x86(self, workload: IntDense) -> None:
        """Knobs and registers of the AVX2 kernels."""
        check_knob("formulation", self.formulation, FORMULATIONS)
        check_knob("mr", self.mr, range(1, 15))
        check_knob("nr", self.nr, range(1, 15))
        check_knob("k_unroll", self.k_unroll, INT_K_UNROLLS)
        check_knob("loop_order", self.loop_order, INT_LOOP_ORDERS)
        check_knob("kc", self.kc, ANY_COUNT[::KC_GRANULE], f"0 or a positive multiple of {KC_GRANULE}")
        need = self.ymm_registers(workload.dtype)
        if need > YMM_REGISTERS:
            raise ValueError(
                f"register tile {self.mr}x{self.nr} ({self.formulation}, {workload.dtype}) needs "
                f"{need} ymm registers; AVX2 has {YMM_REGISTERS}"
            )

    def gemm_extents(self, workload: IntDense) -> list[tuple[str, int]]:
        """Byte extents the x86-64 emitter (bitsearch.asm.x86_64.intgemm) encodes as immediates
        or displacements (its own check at emission): x rows padded to 32 bytes, w in rows
        (``dot``) or in column panels of 8*nr, K padded to dwords, the last panel to 8 columns
        (``broadcast``)."""
        es, n = workload.element_bytes, workload.n
        x_row = -(-workload.k * es // ROW_GRANULE) * ROW_GRANULE
        if self.formulation == "broadcast":
            panel, steps = 8 * self.nr, -(-workload.k * es // 4)
            total = steps * 4 * (n // panel * panel + -(-(n % panel) // 8) * 8)
            w_buffer = n * -(-total // n)
        else:
            w_buffer = n * x_row
        return [("a register tile of x rows (mr * x row bytes)", self.mr * x_row),
                ("a register tile of y rows (4 * mr * n bytes)", 4 * self.mr * n),
                ("the packed x buffer (m * x row bytes)", workload.m * x_row),
                ("the packed w buffer", w_buffer)]

    # NEON (Cortex-A53): the ``dot`` formulation with SMLAL/SMLAL2 (int16 only), see
    # bitsearch.asm.aarch64.neon_int. Accumulators mr*nr + x rows mr + w rows nr <= 32 registers.
    def neon_registers(self) -> int:
        return self.mr * self.nr + self.mr + self.nr

    def _check_neon(self, workload: IntDense) -> None:
        if workload.dtype != "int16":
            raise ValueError(f"aarch64-cortex-a53 has an int16 baseline only, not dtype={workload.dtype!r}")
        if not is_knob_value(self.formulation, ("dot",)):
            raise ValueError(f"aarch64-cortex-a53 computes formulation='dot' only, got {self.formulation!r}")
        check_knob("mr", self.mr, range(1, 9))
        check_knob("nr", self.nr, range(1, 9))
        check_knob("k_unroll", self.k_unroll, INT_K_UNROLLS)
        if not (is_knob_value(self.loop_order, ("mn",)) and is_knob_value(self.kc, (0,))):
            raise ValueError("aarch64-cortex-a53 walks loop_order='mn' without K blocking (kc=0), "
                             f"got loop_order={self.loop_order!r}, kc={self.kc!r}")
        if self.neon_registers() > 32 or self.mr + self.nr > 12:
            raise ValueError(f"register tile {self.mr}x{self.nr} needs {self.neon_registers()} NEON "
                             f"registers (32) and {self.mr + self.nr} row pointers (12)")


def default_int_schedule(workload: IntDense, target: str | TargetDef = "x86_64-avx2") -> IntSchedule:
    """A sound, fast starting point: the broadcast formulation (no horizontal sums) with a large
    register tile of 16 output columns -- int16 6x2 (all 16 ymm registers), int8 5x2 (the
    constant of ones takes one) -- and no K blocking. On the project's machine (2-core AMD EPYC
    at about 3.6 GHz) at 1024^3, one thread: int16 about 22 MAC/cycle (the VPMADDWD + VPADDD pair
    itself peaks near 27 there: the adds share the multiply pipes), int8 about 31 (ceiling 32:
    two multiply-pipe ops per 32 MACs); the other good tiles are within noise of these."""
    if get_target(target).arch == "aarch64":  # 4x5 SMLAL tile: about 3 MAC/cycle in llvm-mca's A53 model
        return IntSchedule(formulation="dot", mr=4, nr=5, k_unroll=4, loop_order="mn")
    if workload.dtype == "int16":
        return IntSchedule(formulation="broadcast", mr=6, nr=2, k_unroll=4, loop_order="mn")
    return IntSchedule(formulation="broadcast", mr=5, nr=2, k_unroll=2, loop_order="nm")


__all__ = ["FORMULATIONS", "IntSchedule", "default_int_schedule"]
