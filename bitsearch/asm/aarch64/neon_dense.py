"""NEON emitters (GNU text) for the bit-serial dense operator on the Cortex-A53 (AAPCS64).

Same two functions and C signatures as the x86-64 kernels (``C_PROTOTYPES`` in
:mod:`bitsearch.asm.kernel`), and the same output formula (see
:mod:`bitsearch.asm.x86_64.dense`): y = alpha*S + beta*rowsum + gamma with
S = sum_{i,j} 2^(i+j) popcount(x_i OP w_j), OP = AND (``and``, ``unipolar``) or EOR (``bipolar``).

``pack(x, xp, rowsum, row_begin, row_end) -> uint32``
    Bit planes of x in ``PackedLayout`` order, rowsum for ``unipolar``, the OR of all bytes read:
    see :mod:`bitsearch.asm.aarch64.neon_pack`.

``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    Register tile mr x nr; per K block and output AND/EOR + CNT + ADD into a byte counter, the
    products of ``k_unroll`` blocks software-pipelined over ``chains`` temporaries. Byte counters
    are flushed at least every 31 blocks (31 * 8 < 256) through the schedule's ``reduction`` into
    32-bit column vectors (4 outputs of a row per register, or a stack slot when the registers
    are all taken) weighted by 2^(i+j) (MLA) per plane pair; the epilogue applies
    alpha/beta/gamma. Loop labels carry their execution counts (``MachineCode.loops``) and a
    ``// LOOP:`` mark in the listing. Short K (``schedule.short_k`` and the whole K fits the byte
    counters): each tile is one straight-line scheduled block, see
    :mod:`bitsearch.asm.aarch64.neon_shortk`.

Example (on a non-Arm host the call runs under ``qemu-aarch64 -cpu cortex-a53``):
    >>> import numpy as np, bitsearch as bs
    >>> wl = bs.Dense(3, 5, 200, abits=2, wbits=1, mode="bipolar")
    >>> kern = bs.build(wl, target="aarch64-cortex-a53")
    >>> x = np.full((3, 200), 3, np.uint8); w = np.zeros((5, 200), np.uint8)
    >>> int(kern(x, kern.pack_weights(w))[2, 4])
    -600
    >>> kern.functions["gemm"].loops[0].label in kern.listing
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bitsearch.asm.aarch64.neon_common import FRAME_BYTES, GEMM_SIGNATURE, Asm, spill_slot
from bitsearch.asm.aarch64.neon_pack import BYTE_WEIGHTS, emit_pack  # noqa: F401 (re-export)
from bitsearch.asm.aarch64.neon_shortk import ShortKTile, short_k_applies
from bitsearch.numerics.packing import PackedLayout
from bitsearch.space.schedule import CNT_WINDOW, NeonSchedule
from bitsearch.workloads import Dense


@dataclass(frozen=True)
class NeonGeometry:
    """Packed operand layouts and the raw x row stride (whole blocks, zero-padded)."""

    x: PackedLayout
    w: PackedLayout
    x_row_stride: int

    @classmethod
    def of(cls, workload: Dense, schedule: NeonSchedule) -> NeonGeometry:
        bb = schedule.vector_bits
        x = PackedLayout(planes=workload.abits, k=workload.k, block_bits=bb)
        w = PackedLayout(planes=workload.wbits, k=workload.k, block_bits=bb)
        return cls(x=x, w=w, x_row_stride=x.blocks * bb)


def _epilogue_constants(workload: Dense) -> tuple[int, int, int]:
    if workload.mode == "and":
        return 1, 0, 0
    if workload.mode == "unipolar":
        return 2, -workload.wmax, 0
    return -2, 0, workload.k * workload.amax * workload.wmax


# General registers of the GEMM (x18 untouched; x19-x28 saved in the prologue).
ROW, ROW_END = "x6", "x5"
COLC, WIN, KC, PI, PJ = "x7", "x11", "x12", "x13", "x14"
XT, WT, YT, XPL, WPL = "x8", "x9", "x10", "x19", "x20"
WEIGHT, WI = "x15", "x21"
T0, T1 = "x16", "x17"


def emit_row_tiles(a: Asm, m: int, mr: int, row_body: Callable[[int, int], None]) -> None:
    """The row loop of a GEMM over rows [ROW, ROW_END): full tiles of ``mr`` rows, then the
    ``m % mr`` edge rows once; ``row_body(rows, executions)`` emits one tile's work."""
    tiles_m, m_edge = divmod(m, mr)
    top, edge, done = a.new_label("row"), a.new_label("row_edge"), a.new_label("done")
    a.label(top, loop_executions=tiles_m)
    a(f"add {T0}, {ROW}, #{mr}")
    a(f"cmp {T0}, {ROW_END}")
    a(f"b.hi {edge}")
    row_body(mr, tiles_m)
    a(f"add {ROW}, {ROW}, #{mr}")
    a(f"b {top}")
    a.label(edge)
    if m_edge:
        a(f"cmp {ROW}, {ROW_END}")
        a(f"b.hs {done}")
        row_body(m_edge, 1)
    a.label(done)
POINTER_POOL = ("x0", "x1", "x2", "x3", "x4", "x22", "x23", "x24", "x25", "x26", "x27", "x28")
SLOT_XP, SLOT_WP, SLOT_Y, SLOT_RS = 0, 1, 2, 3


def _w(x: str) -> str:
    return "w" + x[1:]


class _GemmEmitter:
    def __init__(self, workload: Dense, schedule: NeonSchedule) -> None:
        self.wl, self.s = workload, schedule
        self.geo = NeonGeometry.of(workload, schedule)
        self.alpha, self.beta, self.gamma = _epilogue_constants(workload)
        self.pairs = workload.abits * workload.wbits
        self.q = schedule.vector_bits == 128
        self.op = "eor" if workload.mode == "bipolar" else "and"
        self.a = Asm("bitsearch_gemm", GEMM_SIGNATURE)
        s = schedule
        regs = [f"v{i}" for i in range(32)]
        # Low registers first for the per-block working set; v8-v15 are saved anyway.
        mr, nr = s.mr, s.nr
        self.xv, regs = regs[:mr], regs[mr:]
        self.wv, regs = regs[:nr], regs[nr:]
        self.tv, regs = regs[: s.chains], regs[s.chains:]
        self.acc8, regs = regs[: mr * nr], regs[mr * nr:]
        if s.reduction == "uadalp":
            self.acc16, regs = regs[: mr * nr], regs[mr * nr:]
        groups = -(-nr // 4)
        # 32-bit column sums: in registers when they fit, else in a stack scratch (touched once
        # per window, so it costs little and frees registers for chains and larger tiles).
        self.sums_in_registers = len(regs) >= mr * groups
        if self.sums_in_registers:
            self.acc32, regs = regs[: mr * groups], regs[mr * groups:]
        # The 2^(i+j) weight lives in a GPR; a chain temporary (free while flushing) takes it.
        self.wvec = self.tv[0] if self.pairs > 1 else None
        self.xp = POINTER_POOL[:mr]
        self.wp = POINTER_POOL[mr: mr + nr]
        self.blocks = self.geo.x.blocks
        self.window = CNT_WINDOW  # any k_unroll: a window's remainder of blocks runs before its loop
        # Short K (the whole K fits the byte counters): one straight-line, scheduled block per tile.
        self.short: ShortKTile | None = None
        if short_k_applies(workload, schedule):
            self.short = ShortKTile(
                workload=workload, schedule=schedule, x=self.geo.x, w=self.geo.w,
                xrow=list(POINTER_POOL[:mr]), wt=WT, yt=YT, rsrow=XPL, gamma=_w(WPL),
                gpr_pool=list(POINTER_POOL[mr:]), op=self.op, alpha=self.alpha, beta=self.beta)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def b(self) -> str:  # byte arrangement of a block
        return "16b" if self.q else "8b"

    def _acc8(self, r: int, c: int) -> str:
        return self.acc8[r * self.s.nr + c]

    def _acc32(self, r: int, g: int) -> str:
        return self.acc32[r * (-(-self.s.nr // 4)) + g]

    def _sum_slot(self, r: int, g: int) -> str:
        return f"[sp, #{FRAME_BYTES + 16 * (r * (-(-self.s.nr // 4)) + g)}]"

    def _load_sum(self, r: int, g: int) -> str:
        """The register holding column sums (r, g); from the stack into x row 0's register
        (free outside the K loop) when they live there."""
        if self._direct is not None:
            return self._direct[r, g]
        if self.sums_in_registers:
            return self._acc32(r, g)
        v = self.xv[0]
        self.a(f"ldr q{v[1:]}, {self._sum_slot(r, g)}")
        return v

    # -- entry -------------------------------------------------------------------------------
    def emit(self) -> Asm:
        a, s, wl = self.a, self.s, self.wl
        a.save_callee_saved(0 if self.sums_in_registers else 16 * s.mr * -(-s.nr // 4))
        for slot, reg in ((SLOT_XP, "x0"), (SLOT_WP, "x1"), (SLOT_Y, "x2"), (SLOT_RS, "x3")):
            a(f"str {reg}, {spill_slot(slot)}")
        a(f"mov {ROW}, x4")
        if self.short is not None and self.gamma:
            a.mov_imm(WPL, self.gamma)
        emit_row_tiles(a, wl.m, s.mr, self._row_body)
        a.restore_callee_saved()
        a("ret")
        return a

    def _row_body(self, rows: int, mult: int) -> None:
        a, wl, geo, s = self.a, self.wl, self.geo, self.s
        a(f"ldr {XT}, {spill_slot(SLOT_XP)}")
        a.mov_imm(T0, geo.x.row_bytes)
        a(f"madd {XT}, {ROW}, {T0}, {XT}")
        a(f"ldr {YT}, {spill_slot(SLOT_Y)}")
        a.mov_imm(T0, 4 * wl.n)
        a(f"madd {YT}, {ROW}, {T0}, {YT}")
        a(f"ldr {WT}, {spill_slot(SLOT_WP)}")
        if self.short is not None:  # x row pointers and the rowsum of the first row, per row block
            for r, ptr in enumerate(self.short.xrow[:rows]):
                a.add_imm(ptr, XT, r * geo.x.row_bytes, T0)
            if self.beta:
                a(f"ldr {T1}, {spill_slot(SLOT_RS)}")
                a(f"add {XPL}, {T1}, {ROW}, lsl #2")
        tiles_n, n_edge = divmod(wl.n, s.nr)
        if tiles_n:
            top = a.new_label("col")
            a.mov_imm(COLC, tiles_n)
            a.label(top, loop_executions=mult * tiles_n)
            self._tile(rows, s.nr, mult * tiles_n)
            a.add_imm(WT, WT, s.nr * geo.w.row_bytes, T0)
            a(f"add {YT}, {YT}, #{4 * s.nr}")
            a(f"subs {COLC}, {COLC}, #1")
            a(f"b.ne {top}")
        if n_edge:
            self._tile(rows, n_edge, mult)

    # -- one register tile ---------------------------------------------------------------------
    def _tile(self, rows: int, cols: int, mult: int) -> None:
        a, wl, geo = self.a, self.wl, self.geo
        groups = -(-cols // 4)
        a.comment(f"tile {rows}x{cols}")
        if self.short is not None:
            self.short.emit(a, rows, cols)
            return
        # One plane pair flushed once: the flushed vectors are the sums (nothing to add to).
        self._direct: dict[tuple[int, int], str] | None = None
        if self.pairs == 1 and (self.s.reduction == "uadalp" or self.blocks <= self.window):
            self._direct = {}
        for r in range(rows):
            for g in range(groups):
                if self._direct is not None:
                    continue
                if self.sums_in_registers:
                    a(f"movi {self._acc32(r, g)}.2d, #0")
                else:
                    if r == g == 0:
                        a(f"movi {self.xv[0]}.2d, #0")
                    a(f"str q{self.xv[0][1:]}, {self._sum_slot(r, g)}")
        if self.pairs == 1:
            self._plane_pair(rows, cols, XT, WT, mult)
        else:
            a(f"mov {XPL}, {XT}")
            a(f"mov {WI}, #1")
            loops = []
            if wl.abits > 1:
                a(f"mov {PI}, #{wl.abits}")
                top = a.new_label("plane_i")
                a.label(top, loop_executions=mult * wl.abits)
                loops.append(top)
            a(f"mov {WPL}, {WT}")
            a(f"mov {WEIGHT}, {WI}")
            if wl.wbits > 1:
                a(f"mov {PJ}, #{wl.wbits}")
                top = a.new_label("plane_j")
                a.label(top, loop_executions=mult * self.pairs)
                loops.append(top)
            self._plane_pair(rows, cols, XPL, WPL, mult * self.pairs)
            if wl.wbits > 1:
                a.add_imm(WPL, WPL, geo.w.plane_stride, T0)
                a(f"add {WEIGHT}, {WEIGHT}, {WEIGHT}")
                a(f"subs {PJ}, {PJ}, #1")
                a(f"b.ne {loops[-1]}")
            if wl.abits > 1:
                a.add_imm(XPL, XPL, geo.x.plane_stride, T0)
                a(f"add {WI}, {WI}, {WI}")
                a(f"subs {PI}, {PI}, #1")
                a(f"b.ne {loops[0]}")
        self._epilogue(rows, cols)

    def _plane_pair(self, rows: int, cols: int, xbase: str, wbase: str, mult: int) -> None:
        a, geo = self.a, self.geo
        for ptrs, base, stride, count in ((self.xp, xbase, geo.x.row_bytes, rows),
                                          (self.wp, wbase, geo.w.row_bytes, cols)):
            a(f"mov {ptrs[0]}, {base}")
            for i in range(1, count):
                a.add_imm(ptrs[i], ptrs[i - 1], stride, T0)
        if self.s.reduction == "uadalp":
            for r in range(rows):
                for c in range(cols):
                    a(f"movi {self.acc16[r * self.s.nr + c]}.2d, #0")
        full, rest = divmod(self.blocks, self.window)
        if full == 1 and not rest:
            self._window(rows, cols, self.window, mult)
        elif full:
            top = a.new_label("window")
            a.mov_imm(WIN, full)
            a.label(top, loop_executions=mult * full)
            self._window(rows, cols, self.window, mult * full)
            a(f"subs {WIN}, {WIN}, #1")
            a(f"b.ne {top}")
        if rest:
            self._window(rows, cols, rest, mult)
        if self.s.reduction == "uadalp":
            self._reduce_groups(rows, cols, self.acc16, wide=True)

    def _window(self, rows: int, cols: int, nblocks: int, mult: int) -> None:
        """One window of byte counting. Its first run of blocks (the remainder of nblocks / u,
        or one whole iteration) is emitted before the loop so that its first block's CNT can
        write the byte counters directly: no zeroing, no ADD."""
        a, u = self.a, self.s.k_unroll
        iters, tail = divmod(nblocks, u)
        head = nblocks if iters <= 1 else (tail or u)
        self._blocks(rows, cols, head, first=True)
        iters = (nblocks - head) // u
        if iters == 1:
            self._blocks(rows, cols, u)
        elif iters:
            top = a.new_label("kloop")
            a.mov_imm(KC, iters)
            a.label(top, loop_executions=mult * iters)
            self._blocks(rows, cols, u)
            a(f"subs {KC}, {KC}, #1")
            a(f"b.ne {top}")
        self._flush(rows, cols)

    def _blocks(self, rows: int, cols: int, nblocks: int, *, first: bool = False) -> None:
        """``nblocks`` K blocks of the tile as one software-pipelined stream of products.

        With T = ``chains`` temporaries and depth d = T/2, step s issues ADD of product s-2d,
        CNT of product s-d, then AND/EOR of product s (whose temporary product s-2d's ADD has
        just read): the in-order A53 then finds each operand d steps (3d ops) old. Operands are
        loaded just before their first use, and reloaded for the next block right after their
        last use in this one (so the load overlaps the remaining products). ``first``: block 0
        starts the byte counters (CNT writes them)."""
        a, b, op = self.a, self.b, self.op
        step = 16 if self.q else 8
        products = [(k, r, c) for k in range(nblocks) for c in range(cols) for r in range(rows)]
        chains = self.s.chains
        loaded: dict[str, int] = {}

        def load(reg: str, ptr: str, block: int) -> None:
            # Offset loads, pointers advanced once per run: LLVM's A53 model gives writeback
            # (post-index) loads two micro-ops that stall the in-order pipe for twice as long.
            if loaded.get(reg, -1) < block:
                loaded[reg] = block
                a(f"ldr {'q' if self.q else 'd'}{reg[1:]}, [{ptr}, #{block * step}]")

        def and_(j: int) -> None:
            k, r, c = products[j]
            load(self.xv[r], self.xp[r], k)
            load(self.wv[c], self.wp[c], k)
            a(f"{op} {self.tv[j % chains]}.{b}, {self.xv[r]}.{b}, {self.wv[c]}.{b}")
            if k + 1 < nblocks:  # last uses in block k: fetch block k+1 now
                if c == cols - 1:
                    load(self.xv[r], self.xp[r], k + 1)
                if r == rows - 1:
                    load(self.wv[c], self.wp[c], k + 1)

        def cnt(j: int) -> None:
            k, r, c = products[j]
            t = self.tv[j % chains]
            a(f"cnt {self._acc8(r, c) if first and k == 0 else t}.{b}, {t}.{b}")

        def add(j: int) -> None:
            k, r, c = products[j]
            if first and k == 0:
                return
            acc = self._acc8(r, c)
            a(f"add {acc}.{b}, {acc}.{b}, {self.tv[j % chains]}.{b}")

        if chains == 1:
            for j in range(len(products)):
                and_(j)
                cnt(j)
                add(j)
        else:
            d = chains // 2
            for s in range(len(products) + 2 * d):
                if 0 <= s - 2 * d < len(products):
                    add(s - 2 * d)
                if 0 <= s - d < len(products):
                    cnt(s - d)
                if s < len(products):
                    and_(s)
        for ptr in (*self.xp[:rows], *self.wp[:cols]):
            a(f"add {ptr}, {ptr}, #{nblocks * step}")

    # -- flushing byte counters ----------------------------------------------------------------
    def _flush(self, rows: int, cols: int) -> None:
        a, b = self.a, self.b
        red = self.s.reduction
        if self.wvec is not None and red != "uadalp":
            a(f"dup {self.wvec}.4s, {_w(WEIGHT)}")
        if red == "uadalp":
            h = "8h" if self.q else "4h"
            for r in range(rows):
                for c in range(cols):
                    a(f"uadalp {self.acc16[r * self.s.nr + c]}.{h}, {self._acc8(r, c)}.{b}")
            return
        if red == "uaddlv":
            for r in range(rows):
                for g in range(0, cols, 4):
                    regs = [self._acc8(r, c) for c in range(g, min(cols, g + 4))]
                    for reg in regs:
                        a(f"uaddlv h{reg[1:]}, {reg}.{b}")  # zeroes the rest of the register
                    for i, reg in enumerate(regs[1:], 1):
                        a(f"ins {regs[0]}.s[{i}], {reg}.s[0]")
                    self._accumulate(r, g // 4, regs[0])
            return
        self._reduce_groups(rows, cols, self.acc8, wide=False)

    def _reduce_groups(self, rows: int, cols: int, source: list[str], *, wide: bool) -> None:
        """ADDP trees: up to 4 registers of one row -> one .4s vector of their sums, added
        (weighted) into the row's 32-bit column vector. ``wide``: 16-bit lanes (uadalp)."""
        a = self.a
        if wide and self.wvec is not None:
            a(f"dup {self.wvec}.4s, {_w(WEIGHT)}")
        for r in range(rows):
            for g in range(0, cols, 4):
                regs = [source[r * self.s.nr + c] for c in range(g, min(cols, g + 4))]
                if wide:  # 16-bit lanes (upper half zero in D form) -> 4 x 32-bit
                    for reg in regs:
                        a(f"uaddlp {reg}.4s, {reg}.8h")
                    arr, lanes = "4s", 4
                else:
                    b = self.b
                    arr = "8h" if self.q else "4h"
                    lanes = 8 if self.q else 4
                    for reg in regs:
                        a(f"uaddlp {reg}.{arr}, {reg}.{b}")
                level = regs
                while len(level) > 1:
                    nxt = []
                    for i in range(0, len(level), 2):
                        x = level[i]
                        y = level[i + 1] if i + 1 < len(level) else level[i]
                        a(f"addp {x}.{arr}, {x}.{arr}, {y}.{arr}")
                        nxt.append(x)
                    level = nxt
                    lanes //= 2
                while lanes > 1:
                    x = level[0]
                    a(f"addp {x}.{arr}, {x}.{arr}, {x}.{arr}")
                    lanes //= 2
                if not wide:
                    a(f"ushll {level[0]}.4s, {level[0]}.4h, #0")
                self._accumulate(r, g // 4, level[0])

    def _accumulate(self, r: int, g: int, v: str) -> None:
        if self._direct is not None:
            self._direct[r, g] = v
            return
        acc = self._load_sum(r, g)
        if self.wvec is None:
            self.a(f"add {acc}.4s, {acc}.4s, {v}.4s")
        else:
            self.a(f"mla {acc}.4s, {v}.4s, {self.wvec}.4s")
        if not self.sums_in_registers:
            self.a(f"str q{acc[1:]}, {self._sum_slot(r, g)}")

    # -- y = alpha*S + beta*rowsum + gamma ------------------------------------------------------
    def _epilogue(self, rows: int, cols: int) -> None:
        a, wl = self.a, self.wl
        const = self.wv[0]  # -beta*rowsum[r] or gamma in every lane (the w rows are dead here)
        tmp = self.xp[0]  # so are the row pointers
        if self.beta:
            a(f"ldr {T1}, {spill_slot(SLOT_RS)}")
            a(f"lsl {T0}, {ROW}, #2")
            a(f"add {T1}, {T1}, {T0}")
        elif self.gamma:
            a.mov_imm(T0, self.gamma)
            a(f"dup {const}.4s, {_w(T0)}")
        for r in range(rows):
            if self.beta:
                a(f"ldr {_w(T0)}, [{T1}, #{4 * r}]")
                a.mov_imm(tmp, -self.beta)
                a(f"mul {_w(T0)}, {_w(T0)}, {_w(tmp)}")
                a(f"dup {const}.4s, {_w(T0)}")
            for g in range(0, cols, 4):
                v = self._load_sum(r, g // 4)
                if self.alpha != 1:
                    a(f"shl {v}.4s, {v}.4s, #1")
                if self.beta:
                    a(f"sub {v}.4s, {v}.4s, {const}.4s")
                if self.gamma:
                    a(f"sub {v}.4s, {const}.4s, {v}.4s")
                n = min(4, cols - g)
                a.add_imm(T0, YT, 4 * (r * wl.n + g), tmp)
                a.store_words(v, T0, n, tmp)


def emit_neon_dense(workload: Dense, schedule: NeonSchedule) -> tuple[Asm, Asm]:
    """GNU-text functions ``(pack, gemm)`` for ``workload`` under a checked ``schedule``."""
    return emit_pack(workload, schedule), _GemmEmitter(workload, schedule).emit()


__all__ = ["NeonGeometry", "emit_neon_dense"]
