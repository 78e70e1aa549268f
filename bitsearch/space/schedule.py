"""``Schedule``: one point of the schedule space, and the static checks that make it valid.

A schedule says *how* a workload is computed; it is frozen, hashable and round-trips through JSON.
The space module (Optuna suggestion) builds on it; emitters only read it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Self, TypeVar

from bitsearch.numerics.packing import LAYOUTS, Layout, PackedLayout
from bitsearch.targets import TargetDef, get_target
from bitsearch.workloads import Dense

W = TypeVar("W")
Popcount = Literal["scalar", "lut", "csa"]
LoopOrder = Literal["mn", "nm"]
POPCOUNTS: tuple[str, ...] = ("scalar", "lut", "csa", "vpopcnt")
LOOP_ORDERS: tuple[str, ...] = ("mn", "nm")
ACC_BITS: tuple[int, ...] = (8, 16, 32, 64)
K_UNROLLS: tuple[int, ...] = (1, 2, 4, 8)

# x86-64 register files the emitters may use (rsp and rbp are never allocated).
YMM_REGISTERS = 16
GPR_FOR_ACCUMULATORS = 7  # 14 usable GPRs minus 7 loop/pointer registers (see emitter)
ANY_COUNT = range(0, sys.maxsize)  # a non-negative integer knob without a limit of its own


def is_knob_value(value: object, allowed: Iterable[object]) -> bool:
    """Whether ``value`` is one of ``allowed`` *with its exact type*: 16.0 == 16 and True == 1, but
    neither is a knob value (an emitter would crash on the float; a bool is no count, an int no
    flag). A ``range`` allows exactly its ints, in O(1)."""
    if isinstance(allowed, range):
        return type(value) is int and value in allowed
    return any(type(value) is type(v) and value == v for v in allowed)


def check_knob(name: str, value: object, allowed: Iterable[object], what: str | None = None) -> None:
    """``ValueError`` naming knob ``name`` unless :func:`is_knob_value`; ``what`` describes the
    allowed values (default: ``one of <allowed>``; ranges: ``an integer in low..high``)."""
    if is_knob_value(value, allowed):
        return
    if what is None:
        what = (f"an integer in {allowed.start}..{allowed.stop - 1}" if isinstance(allowed, range)
                else f"one of {tuple(allowed)}")
    raise ValueError(f"schedule.{name} must be {what}, got {value!r}")


# x86-64 immediates and displacements are signed 32-bit (the CPU sign-extends them to 64 bits;
# PeachPy even encodes IMUL r64, r64, imm of 2^31..2^32-1 without complaint, which then multiplies
# by a negative number). The x86-64 emitters therefore keep every byte offset, stride and buffer
# they address through an immediate below this; the NEON emitters materialise 64-bit constants.
X86_IMMEDIATE_LIMIT = 2**31 - 1
GEMM_DIMS: tuple[str, ...] = ("m", "n", "k")


def check_x86_extents(workload: W, extents: Callable[[W], Iterable[tuple[str, int]]],
                      dims: tuple[str, ...] = GEMM_DIMS) -> None:
    """Raise ``ValueError`` naming a workload dimension if one of ``extents(workload)`` -- the
    (what, bytes) an x86-64 emitter encodes as immediates or displacements -- exceeds
    :data:`X86_IMMEDIATE_LIMIT`. The dimension named is the largest of ``dims`` that could bring
    every extent within the limit on its own, with the largest value that does (a bisection:
    extents grow with every dimension)."""

    def excess(wl: W) -> tuple[str, int] | None:
        return next(((what, size) for what, size in extents(wl) if size > X86_IMMEDIATE_LIMIT), None)

    def fits(name: str, value: int) -> bool:
        try:
            return excess(dataclasses.replace(workload, **{name: value})) is None
        except ValueError:  # not a valid workload at this value
            return False

    over = excess(workload)
    if over is None:
        return
    what, size = over
    reason = (f"{what} would take {size} bytes, and x86-64 addresses it through signed 32-bit "
              f"immediates and displacements (at most {X86_IMMEDIATE_LIMIT})")
    for name in sorted(dims, key=lambda d: -getattr(workload, d)):  # stable: dims order breaks ties
        value = getattr(workload, name)
        if value > 1 and fits(name, 1):
            low, high = 1, value  # fits(low), not fits(high)
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if fits(name, mid) else (low, mid)
            raise ValueError(f"{name}={value} exceeds the largest supported {name} ({low}) of this "
                             f"shape and schedule: {reason}")
    shape = ", ".join(f"{d}={getattr(workload, d)}" for d in dims)
    raise ValueError(f"{shape} is too large for this schedule: {reason}")


class KnobRecord:
    """JSON round trip of a frozen dataclass of knobs (the schedule records of every operator)."""

    KIND = "schedule"  # names the record in error messages

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Self:
        """The record of a dict of knobs (missing knobs take their defaults); ``ValueError`` for
        anything but a dict and for unknown knobs. Values are checked by ``check()``."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.KIND} must be a JSON object of knobs, got {_given(data)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [str(key) for key in data if key not in names]  # keys of any type, JSON's are str
        if unknown:
            raise ValueError(f"unknown {cls.KIND} knobs: {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """The record of a JSON object of knobs; ``ValueError`` (``json.JSONDecodeError`` for
        malformed text) naming the record otherwise."""
        if not isinstance(text, str | bytes | bytearray):
            raise ValueError(f"{cls.KIND} must be JSON text, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise json.JSONDecodeError(f"{cls.KIND} is not valid JSON: {exc.msg}", exc.doc, exc.pos) from None
        except UnicodeDecodeError as exc:  # bytes that are not UTF-8/16/32
            raise ValueError(f"{cls.KIND} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _given(value: object, limit: int = 60) -> str:
    """``type: repr`` of a rejected value, the repr cut to ``limit`` characters."""
    text = repr(value)
    return f"{type(value).__name__}: {text if len(text) <= limit else text[:limit - 3] + '...'}"


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

    def check_knobs(self) -> None:
        """Raise ``ValueError`` naming the first knob that is not one of its values (of its type)."""
        check_knob("mr", self.mr, range(1, 9))
        check_knob("nr", self.nr, range(1, 17))
        check_knob("k_unroll", self.k_unroll, K_UNROLLS)
        check_knob("popcount", self.popcount, POPCOUNTS)
        check_knob("acc_bits", self.acc_bits, ACC_BITS)
        check_knob("layout", self.layout, LAYOUTS)
        check_knob("loop_order", self.loop_order, LOOP_ORDERS)
        check_knob("nibble_split", self.nibble_split, (False, True), "true or false")
        check_knob("nc", self.nc, ANY_COUNT, "a non-negative integer")

    def gemm_extents(self, workload: Dense) -> list[tuple[str, int]]:
        """Byte extents the x86-64 emitter (bitsearch.asm.x86_64.dense) encodes as immediates or
        displacements: the strides of a register tile of packed rows (operand offsets inside a
        tile are below them), the y rows of a tile, and the raw x row the packing code reads."""
        x, w = (PackedLayout(planes=planes, k=workload.k, block_bits=self.block_bits,
                             layout=self.layout, nibble_split=self.nibble_split)
                for planes in (workload.abits, workload.wbits))
        return [("a register tile of packed x rows (mr * x row bytes)", self.mr * x.row_bytes),
                ("a register tile of packed w rows (nr * w row bytes)", self.nr * w.row_bytes),
                ("a register tile of y rows (4 * mr * n bytes)", 4 * self.mr * workload.n),
                ("a row of x (k bytes)", max(workload.k, 32))]

    def check(self, workload: Dense, target: str | TargetDef = "x86_64-avx2") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload`` on
        ``target``."""
        self.check_knobs()
        allowed = target_popcounts(target)
        if self.popcount not in allowed:
            raise ValueError(f"popcount={self.popcount} is not available on target {str(target)!r} "
                             f"(there: {', '.join(allowed) or 'nothing'})")
        if self.nibble_split and self.popcount != "lut":
            raise ValueError(f"schedule.nibble_split needs popcount='lut', not {self.popcount!r}")
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
        check_x86_extents(workload, self.gemm_extents)


def target_popcounts(target: str | TargetDef) -> tuple[str, ...]:
    """The popcount strategies ``target``'s instruction set allows (VPOPCNTQ needs AVX-512
    VPOPCNTDQ: Ice Lake, Zen 4); none off x86-64."""
    t = get_target(target)
    if t.arch != "x86_64":
        return ()
    return ("scalar", "lut", "csa") + (("vpopcnt",) if t.has("avx512_vpopcntdq") else ())


def default_schedule(workload: Dense, target: str | TargetDef = "x86_64-avx2") -> Schedule:
    """A sound, fast starting point, not the simplest one.

    AVX2: a 2x4 register tile of VPSHUFB look-ups on nibble-split operands (6 vector ops per 256
    bit-MACs, all 16 ymm registers in use) with byte counters widened by VPSADBW only when they
    could overflow: about 125 bit-MAC/cycle on 1024^3 on this project's machine. AVX-512: a 3x3
    tile of VPOPCNTQ on 512-bit blocks (3 ops per 512 bit-MACs).
    """
    del workload  # one shape-independent default; the tuner specialises
    if "vpopcnt" in target_popcounts(target):
        return Schedule(mr=3, nr=3, popcount="vpopcnt")
    return Schedule(mr=2, nr=4, k_unroll=2, nibble_split=True)


# ---------------------------------------------------------------------------------------------
# AArch64 Cortex-A53 (NEON): its own knobs, see bitsearch.asm.aarch64.neon_dense
# ---------------------------------------------------------------------------------------------
NEON_REGISTERS = 32
NEON_VECTOR_BITS: tuple[int, ...] = (64, 128)
NEON_REDUCTIONS: tuple[str, ...] = ("addp", "uadalp", "uaddlv")
NEON_K_UNROLLS: tuple[int, ...] = (1, 2, 4, 8)
NEON_CHAINS: tuple[int, ...] = (1, 2, 4, 6, 8)
NEON_GPRS = 28  # x0-x17 and x19-x28 (x18 is the platform register)
NEON_FIXED_GPRS = 16  # arguments, loop counters, tile and plane pointers, temporaries (see emitter)
CNT_WINDOW = 31  # CNT adds at most 8 per byte lane: 31 * 8 = 248 < 256
UADALP_MAX_BLOCKS = 4095  # 16-bit lanes gain <= 2 * 8 per block: 4095 * 16 < 65536


@dataclass(frozen=True)
class NeonSchedule(KnobRecord):
    """How to compute a bit-serial dense layer with NEON on the in-order Cortex-A53.

    Per K block of ``vector_bits`` bits and output: AND (EOR for bipolar) + CNT + ADD into a byte
    counter; byte counters are flushed into 32-bit sums every <= 31 blocks (before 8 bits can
    overflow) by the ``reduction`` path.

    Attributes:
        mr, nr: register tile (rows of x by rows of w).
        vector_bits: 128 = Q forms (one op per 128 bit-MACs, but a Q op occupies the A53's
            64-bit SIMD datapath twice), 64 = D forms.
        reduction: ``addp``: per window UADDLP + an ADDP tree over 4 columns, then one MLA;
            ``uadalp``: per window one UADALP into 16-bit lanes per output (twice the
            registers), the tree once per plane pair (needs <= 4095 blocks);
            ``uaddlv``: per window one UADDLV per output + INS into the column vector.
        k_unroll: K blocks per inner-loop iteration (a window's remaining blocks, or one
            iteration, run before its loop: their first block's CNT starts the counters).
        chains: temporaries of the software-pipelined AND->CNT->ADD stream: product s's CNT is
            issued chains/2 products after its AND (the A53 issues in order, so only that
            distance hides the SIMD latency); 1 = no pipelining.
        short_k: when the whole K fits the 8-bit counters (<= 31 chunks of 128 bits, see
            :mod:`bitsearch.asm.aarch64.neon_shortk`), emit each tile as one straight-line,
            list-scheduled block (no K loop, one reduction per tile; ``k_unroll`` and ``chains``
            are then unused). False keeps the windowed loop (for comparison).

    Example:
        >>> s = NeonSchedule(mr=2, nr=4, vector_bits=128)
        >>> NeonSchedule.from_json(s.to_json()) == s
        True
    """

    mr: int = 2
    nr: int = 4
    vector_bits: int = 128
    reduction: str = "addp"
    k_unroll: int = 2
    chains: int = 4
    short_k: bool = True

    KIND = "neon schedule"

    @property
    def block_bits(self) -> int:
        return self.vector_bits

    def normalized(self) -> NeonSchedule:
        """The canonical form: at most as many chains as products in one inner-loop iteration."""
        chains = max(c for c in NEON_CHAINS if c <= min(self.chains, self.mr * self.nr * self.k_unroll))
        return dataclasses.replace(self, chains=chains)

    def vector_registers(self, pairs: int = 2) -> int:
        """NEON registers the K loop needs: byte counters (and 16-bit ones for ``uadalp``),
        x and w operands, chain temporaries."""
        tile = self.mr * self.nr
        wide = tile if self.reduction == "uadalp" else 0
        del pairs  # the plane-pair weight borrows a chain temporary while flushing
        # (the 32-bit column sums, mr*ceil(nr/4) registers, move to the stack if they do not fit)
        return tile + wide + self.mr + self.nr + self.chains

    def register_problem(self, pairs: int = 2) -> str | None:
        need = self.vector_registers(pairs)
        if need > NEON_REGISTERS:
            return (f"register tile {self.mr}x{self.nr} with reduction={self.reduction} and "
                    f"chains={self.chains} needs {need} NEON registers; AArch64 has {NEON_REGISTERS}")
        if NEON_FIXED_GPRS + self.mr + self.nr > NEON_GPRS:
            return f"register tile {self.mr}x{self.nr} needs more than {NEON_GPRS} general registers"
        return None

    def check(self, workload: Dense, target: str | TargetDef = "aarch64-cortex-a53") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload``."""
        if get_target(target).arch != "aarch64":
            raise ValueError(f"a NeonSchedule targets AArch64, not {str(target)!r}")
        check_knob("mr", self.mr, range(1, 9))
        check_knob("nr", self.nr, range(1, 9))
        check_knob("vector_bits", self.vector_bits, NEON_VECTOR_BITS)
        check_knob("reduction", self.reduction, NEON_REDUCTIONS)
        check_knob("k_unroll", self.k_unroll, NEON_K_UNROLLS)
        check_knob("chains", self.chains, NEON_CHAINS)
        check_knob("short_k", self.short_k, (False, True), "a bool")
        problem = self.register_problem(workload.abits * workload.wbits)
        if problem:
            raise ValueError(problem)
        blocks = -(-workload.k // self.vector_bits)
        if self.reduction == "uadalp" and blocks > UADALP_MAX_BLOCKS:
            raise ValueError(
                f"reduction='uadalp' keeps 16-bit lanes, which overflow beyond {UADALP_MAX_BLOCKS} "
                f"blocks of {self.vector_bits} bits; k={workload.k} needs {blocks}")
