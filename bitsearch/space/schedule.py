"""``Schedule``: one point of the schedule space, and the static checks that make it valid.

A schedule says *how* a workload is computed; it is frozen, hashable and round-trips through JSON.
The space module (Optuna suggestion) builds on it; emitters only read it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal, Self

from bitsearch.numerics.packing import LAYOUTS, Layout
from bitsearch.workloads import Dense

Popcount = Literal["scalar", "lut", "csa"]
LoopOrder = Literal["mn", "nm"]
POPCOUNTS: tuple[str, ...] = ("scalar", "lut", "csa", "vpopcnt")
# Targets and the popcount strategies their instruction sets allow.
TARGET_POPCOUNTS: dict[str, tuple[str, ...]] = {
    "x86_64-avx2": ("scalar", "lut", "csa"),
    "x86_64-avx512": ("scalar", "lut", "csa", "vpopcnt"),  # + AVX-512 VPOPCNTDQ (Ice Lake, Zen 4)
}
LOOP_ORDERS: tuple[str, ...] = ("mn", "nm")
ACC_BITS: tuple[int, ...] = (8, 16, 32, 64)
K_UNROLLS: tuple[int, ...] = (1, 2, 4, 8)

# x86-64 register files the emitters may use (rsp and rbp are never allocated).
YMM_REGISTERS = 16
GPR_FOR_ACCUMULATORS = 7  # 14 usable GPRs minus 7 loop/pointer registers (see emitter)


class KnobRecord:
    """JSON round trip of a frozen dataclass of knobs (the schedule records of every operator)."""

    KIND = "schedule"  # names the record in error messages

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Self:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.KIND} knobs: {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Schedule(KnobRecord):
    """How to compute a bit-serial dense layer on x86-64 AVX2.

    Attributes:
        mr, nr: register tile (rows of x by rows of w) computed together.
        k_unroll: K blocks per iteration of the innermost loop.
        popcount: ``lut`` (AVX2 nibble look-up with VPSHUFB), ``scalar`` (POPCNT on 64-bit words)
            or ``csa`` (Harley-Seal carry-save adder in front of the look-up).
        acc_bits: lane width of the vector accumulators; 8 = byte counters widened with VPSADBW
            before they can overflow, 16/32/64 = widened on every step (ignored by ``scalar``).
        layout: packed bit-plane layout (see :class:`bitsearch.numerics.PackedLayout`).
        nibble_split: store every block as its low and high nibbles (``lut`` only): the look-up
            then needs no shift or mask per product, 6 vector ops per 256 bit-MACs instead of 8,
            at twice the packed size.
        loop_order: ``mn`` walks column tiles innermost, ``nm`` row tiles innermost.
        nc: cache block of the column loop, in tiles (0 = no blocking; ``mn`` order only).

    Example:
        >>> s = Schedule(mr=2, nr=4)
        >>> Schedule.from_json(s.to_json()) == s
        True
    """

    mr: int = 2
    nr: int = 4
    k_unroll: int = 1
    popcount: Popcount = "lut"
    acc_bits: int = 8
    layout: Layout = "plane_major"
    nibble_split: bool = False
    loop_order: LoopOrder = "mn"
    nc: int = 0

    # ---- derived properties ----------------------------------------------------------------
    @property
    def block_bits(self) -> int:
        """K granule of the packed operands: a 64-bit word for POPCNT, a 512-bit zmm for
        VPOPCNTQ, a 256-bit ymm otherwise."""
        return {"scalar": 64, "vpopcnt": 512}.get(self.popcount, 256)

    def normalized(self) -> Schedule:
        """The canonical form: knobs that have no effect are set to their defaults."""
        changes: dict[str, object] = {}
        if self.popcount in ("scalar", "vpopcnt"):
            changes["acc_bits"] = 64  # POPCNT/VPOPCNTQ count into 64-bit lanes
        if self.loop_order == "nm":
            changes["nc"] = 0
        if self.popcount != "lut":
            changes["nibble_split"] = False
        return dataclasses.replace(self, **changes)

    # ---- static validity ---------------------------------------------------------------------
    def ymm_registers(self) -> int:
        """Vector registers the emitter allocates for this schedule."""
        tile = self.mr * self.nr
        constants = {8: 0, 16: 1, 32: 2, 64: 1}[self.acc_bits]
        if self.popcount == "lut":
            # accumulators + x rows (two halves each when split) + 2 temporaries + LUT + mask
            return tile + self.mr * (2 if self.nibble_split else 1) + 2 + 2 + constants
        if self.popcount == "csa":
            # per output: accumulator + 'ones' state; 3 temporaries + LUT + mask
            return 2 * tile + 3 + 2 + constants
        if self.popcount == "vpopcnt":
            # zmm0-15 (the emitter keeps to the registers that have ymm/xmm views): accumulators +
            # one x row each + 2 temporaries
            return tile + self.mr + 2
        return 0

    def register_problem(self) -> str | None:
        """Why the register tile does not fit the register file, or None."""
        if self.popcount == "scalar":
            if self.mr * self.nr > GPR_FOR_ACCUMULATORS - 1:
                return (f"register tile {self.mr}x{self.nr} needs {self.mr * self.nr} accumulator GPRs "
                        f"plus a temporary; only {GPR_FOR_ACCUMULATORS} are free")
            return None
        need = self.ymm_registers()
        if need > YMM_REGISTERS:
            return (f"register tile {self.mr}x{self.nr} with popcount={self.popcount} and "
                    f"acc_bits={self.acc_bits} needs {need} ymm registers; AVX2 has {YMM_REGISTERS}")
        return None

    def check(self, workload: Dense, target: str = "x86_64-avx2") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload`` on
        ``target``."""
        for name, value, low, high in (("mr", self.mr, 1, 8), ("nr", self.nr, 1, 16)):
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"schedule.{name} must be an integer in {low}..{high}, got {value!r}")
        for name, value, allowed in (
            ("k_unroll", self.k_unroll, K_UNROLLS), ("popcount", self.popcount, POPCOUNTS),
            ("acc_bits", self.acc_bits, ACC_BITS), ("layout", self.layout, LAYOUTS),
            ("loop_order", self.loop_order, LOOP_ORDERS),
        ):
            # exact types: 16.0 == 16 and True == 1, but neither is a knob value
            if not any(type(value) is type(v) and value == v for v in allowed):
                raise ValueError(f"schedule.{name} must be one of {allowed}, got {value!r}")
        allowed = TARGET_POPCOUNTS.get(target, ())
        if self.popcount not in allowed:
            raise ValueError(f"popcount={self.popcount} is not available on target {target!r} "
                             f"(there: {', '.join(allowed) or 'nothing'})")
        if type(self.nibble_split) is not bool:
            raise ValueError(f"schedule.nibble_split must be true or false, got {self.nibble_split!r}")
        if self.nibble_split and self.popcount != "lut":
            raise ValueError(f"schedule.nibble_split needs popcount='lut', not {self.popcount!r}")
        if type(self.nc) is not int or self.nc < 0:
            raise ValueError(f"schedule.nc must be a non-negative integer, got {self.nc!r}")
        problem = self.register_problem()
        if problem:
            raise ValueError(problem)
        narrow = self.acc_bits != 8 and workload.max_abs_output >= 1 << self.acc_bits
        if self.popcount in ("lut", "csa") and narrow:
            raise ValueError(
                f"acc_bits={self.acc_bits} is too narrow: K*(2^a-1)*(2^w-1) = "
                f"{workload.k}*{workload.amax}*{workload.wmax} = {workload.max_abs_output} "
                f"does not fit {self.acc_bits}-bit lanes"
            )


def default_schedule(workload: Dense, target: str = "x86_64-avx2") -> Schedule:
    """A sound, fast starting point, not the simplest one.

    AVX2: a 2x4 register tile of VPSHUFB look-ups on nibble-split operands (6 vector ops per 256
    bit-MACs, all 16 ymm registers in use) with byte counters widened by VPSADBW only when they
    could overflow: about 125 bit-MAC/cycle on 1024^3 on this project's machine. AVX-512: a 3x3
    tile of VPOPCNTQ on 512-bit blocks (3 ops per 512 bit-MACs).
    """
    del workload  # one shape-independent default; the tuner specialises
    if target == "x86_64-avx512":
        return Schedule(mr=3, nr=3, popcount="vpopcnt")
    return Schedule(mr=2, nr=4, k_unroll=2, nibble_split=True)
