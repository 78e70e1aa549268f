"""Short-K path of the NEON bit-serial GEMM (Cortex-A53): the whole K of a register tile as one
straight-line, list-scheduled block.

When K is short (ResNet-18 C2 lowered to a dense GEMM: K = 576 bits), a K loop, its remainder
and per-window flushes cost more than the products. K is known at emit time, so here every
(chunk, plane pair, row, column) product of a tile is emitted once: AND/EOR + CNT + ADD into
8-bit counters that hold the whole K (at most 31 chunks of 8 counts per byte lane), then one
reduction per tile: ADDP .16b levels while the lanes cannot overflow, UADDLP to 32 bits, one
store per row and group of 4 columns. Chunks are 128 bits (Q forms) plus a 64-bit D-form tail
when the layout has an odd number of 64-bit blocks (``vector_bits=64``: K = 576 is 4 Q + 1 D,
no padding to 640). Plane pairs are grouped by weight 2^(i+j) (each group's counters are reduced
once, then shifted and added), so no multiply is needed. All ops go through
:mod:`bitsearch.asm.aarch64.neon_sched` (register allocation and in-order list scheduling).

Example:
    >>> import bitsearch as bs
    >>> from bitsearch.space.schedule import NeonSchedule
    >>> wl = bs.Dense(3136, 64, 576)
    >>> plan = ShortKPlan.of(wl, NeonSchedule(mr=4, nr=4, vector_bits=64))
    >>> [q for _, q in plan.chunks], plan.groups
    ([True, True, True, True, False], ((0, ((0, 0),)),))
"""

from __future__ import annotations

from dataclasses import dataclass

from bitsearch.asm.aarch64.neon_sched import Op, access, allocate, schedule
from bitsearch.numerics.packing import PackedLayout
from bitsearch.space.schedule import NeonSchedule
from bitsearch.workloads import Dense

SHORT_K_MAX_CHUNKS = 31  # 8-bit counters: 31 chunks * 8 counts = 248 < 256
SHORT_K_MAX_PRODUCTS = 64  # chunks * plane pairs per output: bounds the straight-line code size
MIN_TEMPORARIES = 4  # scratch vectors beyond the live operands: AND->CNT->ADD chains in flight


@dataclass(frozen=True)
class ShortKPlan:
    """What one short-K tile computes: K chunks (byte offset within a plane, Q form?) and plane
    pair groups (weight exponent, pairs) whose counters share one reduction."""

    chunks: tuple[tuple[int, bool], ...]
    groups: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]

    @classmethod
    def of(cls, workload: Dense, schedule: NeonSchedule) -> ShortKPlan:
        lay = PackedLayout(planes=workload.abits, k=workload.k, block_bits=schedule.vector_bits)
        plane_bytes = lay.blocks * lay.block_bytes
        chunks = tuple((off, off + 16 <= plane_bytes) for off in range(0, plane_bytes, 16))
        per_group = max(1, 255 // (8 * len(chunks)))  # pairs whose counts share 8-bit lanes
        groups = []
        for e in range(workload.abits + workload.wbits - 1):
            pairs = [(i, e - i) for i in range(workload.abits) if 0 <= e - i < workload.wbits]
            for g in range(0, len(pairs), per_group):
                groups.append((e, tuple(pairs[g: g + per_group])))
        return cls(chunks=chunks, groups=tuple(groups))

    @property
    def products_per_output(self) -> int:
        return len(self.chunks) * sum(len(p) for _, p in self.groups)

    def fits(self) -> bool:
        return len(self.chunks) <= SHORT_K_MAX_CHUNKS and self.products_per_output <= SHORT_K_MAX_PRODUCTS


def vector_plan(schedule: NeonSchedule, plan: ShortKPlan) -> tuple[list[str], list[str], list[str]]:
    """(byte counters mr*nr, 32-bit sums (only with several groups), scratch pool)."""
    regs = [f"v{i}" for i in range(32)]
    tile = schedule.mr * schedule.nr
    acc, regs = regs[:tile], regs[tile:]
    n_sums = schedule.mr * -(-schedule.nr // 4) if len(plan.groups) > 1 else 0
    sums, pool = regs[:n_sums], regs[n_sums:]
    return acc, sums, pool


def short_k_applies(workload: Dense, schedule: NeonSchedule) -> bool:
    """The short-K path is taken when the whole K fits the 8-bit counters, the code stays small
    and the scratch vectors left beside the counters and sums hold the operands live at once
    (the smaller tile side, plus one) and ``MIN_TEMPORARIES`` chains in flight."""
    if not schedule.short_k:
        return False
    plan = ShortKPlan.of(workload, schedule)
    live = min(schedule.mr, schedule.nr) + 1
    return plan.fits() and len(vector_plan(schedule, plan)[2]) >= live + MIN_TEMPORARIES


class ShortKTile:
    """Emits short-K tiles for one GEMM. ``xrow``: general registers holding each x row of the
    tile (set up once per row block); ``wt``/``yt``: w and y tile bases; ``rsrow``: rowsum of
    the first row (unipolar); ``gamma``: a w register holding gamma (bipolar)."""

    def __init__(self, *, workload: Dense, schedule: NeonSchedule, x: PackedLayout, w: PackedLayout,
                 xrow: list[str], wt: str, yt: str, rsrow: str, gamma: str, gpr_pool: list[str],
                 op: str, alpha: int, beta: int) -> None:
        self.wl, self.s, self.x, self.w = workload, schedule, x, w
        self.plan = ShortKPlan.of(workload, schedule)
        self.acc, self.sums, self.pool = vector_plan(schedule, self.plan)
        self.xrow, self.wt, self.yt, self.rsrow, self.gamma = xrow, wt, yt, rsrow, gamma
        self.gpr_pool, self.op, self.alpha, self.beta = gpr_pool, op, alpha, beta
        self._n = 0

    def _v(self, stem: str) -> str:
        self._n += 1
        return f"%{stem}{self._n}"

    def _access(self, ops: list[Op], insn: str, base: str, off: int, size: int, reg: str, *,
                load: bool) -> None:
        access(ops, insn, base, off, size, reg, load=load, new_gpr=lambda: self._v("x"))

    # -- one tile ------------------------------------------------------------------------------
    def emit(self, asm, rows: int, cols: int) -> None:
        ops: list[Op] = []
        nr = self.s.nr
        groups = -(-cols // 4)
        multi = len(self.plan.groups) > 1
        finals: dict[tuple[int, int], str] = {}
        for gi, (e, pairs) in enumerate(self.plan.groups):
            self._products(ops, rows, cols, pairs)
            bound = 8 * len(self.plan.chunks) * len(pairs)
            for r in range(rows):
                for g in range(groups):
                    regs = [self.acc[r * nr + c] for c in range(4 * g, min(cols, 4 * g + 4))]
                    if not multi:
                        dst = regs[0]
                    elif gi == 0:
                        dst = self.sums[r * -(-nr // 4) + g]
                    else:
                        dst = self._v("v")
                    self._reduce(ops, regs, bound, dst)
                    if multi and gi > 0:
                        s = self.sums[r * -(-nr // 4) + g]
                        if e:
                            ops.append(Op(f"shl {{d}}.4s, {{d}}.4s, #{e}", reads={"d": dst},
                                          writes={"d": dst}))
                        ops.append(Op("add {d}.4s, {d}.4s, {s}.4s", reads={"d": s, "s": dst},
                                      writes={"d": s}))
                    if gi == 0:
                        finals[r, g] = dst
        self._epilogue(ops, rows, cols, finals)
        ops = allocate(allocate(ops, self.pool, "%v"), self.gpr_pool, "%x")
        for op in schedule(ops):
            asm(op.render())

    def _products(self, ops: list[Op], rows: int, cols: int, pairs) -> None:
        first = True
        loaded: set[tuple] = set()
        names: dict[tuple, str] = {}
        for off, q in self.plan.chunks:
            size = 16 if q else 8
            arr = "16b" if q else "8b"
            # x rows stay live over a chunk while w rows stream, unless that leaves too few
            # temporaries: then the other way round (short_k_applies checks one order fits).
            order = ([(r, c) for c in range(cols) for r in range(rows)]
                     if len(self.pool) >= rows + 1 + MIN_TEMPORARIES
                     else [(r, c) for r in range(rows) for c in range(cols)])
            for i, j in pairs:
                for r, c in order:
                    xk, wk = ("x", i, r, off), ("w", j, c, off)
                    for key in (xk, wk):
                        if key not in loaded:
                            loaded.add(key)
                            names[key] = self._v("v")
                            if key[0] == "x":
                                base, o = self.xrow[key[2]], i * self.x.plane_stride + off
                            else:
                                base, o = self.wt, c * self.w.row_bytes + j * self.w.plane_stride + off
                            self._access(ops, f"ldr {'q' if q else 'd'}{{d_n}},", base, o, size,
                                         names[key], load=True)
                    t = self._v("v")
                    acc = self.acc[r * self.s.nr + c]
                    ops.append(Op(f"{self.op} {{t}}.{arr}, {{a}}.{arr}, {{b}}.{arr}",
                                  reads={"a": names[xk], "b": names[wk]}, writes={"t": t}))
                    if first:  # the first chunk's CNT starts the counters (D form zeroes the top)
                        ops.append(Op(f"cnt {{d}}.{arr}, {{t}}.{arr}", reads={"t": t}, writes={"d": acc}))
                        continue
                    ops.append(Op(f"cnt {{t}}.{arr}, {{t}}.{arr}", reads={"t": t}, writes={"t": t}))
                    ops.append(Op("add {d}.16b, {d}.16b, {t}.16b", reads={"d": acc, "t": t},
                                  writes={"d": acc}))
                first = False

    def _reduce(self, ops: list[Op], regs: list[str], bound: int, dst: str) -> None:
        """Byte counters of up to 4 outputs of one row -> one .4s vector in ``dst``."""
        level = list(regs) + [regs[-1]] * (4 - len(regs))  # duplicates fill missing columns
        width = 8
        arrs = {8: "16b", 16: "8h", 32: "4s", 64: "2d"}
        start = len(ops)
        while len(level) > 1:
            if 2 * bound >= 1 << width:  # widen first: the pairwise sums would overflow
                for reg in dict.fromkeys(level):
                    ops.append(Op(f"uaddlp {{d}}.{arrs[2 * width]}, {{s}}.{arrs[width]}",
                                  reads={"s": reg}, writes={"d": reg}))
                width *= 2
                continue
            nxt = []
            for i in range(0, len(level), 2):
                a, b = level[i], level[i + 1]
                if i and (a, b) == (level[i - 2], level[i - 1]):  # a padded duplicate: same sum
                    nxt.append(nxt[-1])
                    continue
                ops.append(Op(f"addp {{d}}.{arrs[width]}, {{a}}.{arrs[width]}, {{b}}.{arrs[width]}",
                              reads={"a": a, "b": b}, writes={"d": a}))
                nxt.append(a)
            level, bound = nxt, 2 * bound
        while width < 32:
            ops.append(Op(f"uaddlp {{d}}.{arrs[2 * width]}, {{s}}.{arrs[width]}",
                          reads={"s": level[0]}, writes={"d": level[0]}))
            width, bound = 2 * width, 2 * bound
        last = ops[-1]
        if len(ops) > start and dst != level[0]:
            key = next(iter(last.writes))
            ops[-1] = Op(last.template, reads=last.reads, writes={key: dst}, kind=last.kind)

    def _epilogue(self, ops: list[Op], rows: int, cols: int, finals: dict[tuple[int, int], str]) -> None:
        n = self.wl.n
        const = None
        if self.beta == 0 and self.alpha != 1:  # bipolar: y = gamma - 2S
            const = self._v("v")
            ops.append(Op(f"dup {{d}}.4s, {self.gamma}", writes={"d": const}))
        for r in range(rows):
            if self.beta:  # unipolar: y = 2S - wmax * rowsum[r]
                g, const = self._v("x"), self._v("v")
                ops.append(Op(f"ldr w{{g_n}}, [{self.rsrow}, #{4 * r}]", writes={"g": g}, kind="load"))
                ops.append(Op(f"sub w{{g_n}}, w{{g_n}}, w{{g_n}}, lsl #{self.wl.wbits}", reads={"g": g},
                              writes={"g": g}, kind="int"))
                ops.append(Op("dup {d}.4s, w{g_n}", reads={"g": g}, writes={"d": const}))
            for gi in range(-(-cols // 4)):
                v = finals[r, gi]
                if self.alpha != 1:
                    ops.append(Op("shl {d}.4s, {d}.4s, #1", reads={"d": v}, writes={"d": v}))
                if self.beta:
                    ops.append(Op("add {d}.4s, {d}.4s, {c}.4s", reads={"d": v, "c": const}, writes={"d": v}))
                elif const is not None:
                    ops.append(Op("sub {d}.4s, {c}.4s, {d}.4s", reads={"d": v, "c": const}, writes={"d": v}))
                count = min(4, cols - 4 * gi)
                off = 4 * (r * n + 4 * gi)
                if count == 4:
                    self._access(ops, "str q{d_n},", self.yt, off, 16, v, load=False)
                    continue
                if count >= 2:
                    self._access(ops, "str d{d_n},", self.yt, off, 8, v, load=False)
                if count != 2:
                    lane = count - 1
                    src = v
                    if lane:
                        src = self._v("v")
                        ops.append(Op(f"ins {{d}}.s[0], {{s}}.s[{lane}]", reads={"s": v}, writes={"d": src}))
                    self._access(ops, "str s{d_n},", self.yt, off + 4 * lane, 4, src, load=False)


__all__ = ["SHORT_K_MAX_CHUNKS", "ShortKPlan", "ShortKTile", "short_k_applies"]
