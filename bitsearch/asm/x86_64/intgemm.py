"""PeachPy emitters of the int16 / int8 GEMM baselines on x86-64 AVX2.

Two position-independent functions per (workload, schedule), with the signatures of the
bit-serial kernels (so :class:`bitsearch.asm.Kernel` runs, threads and exports them alike):

``pack(x, xp, rowsum, row_begin, row_end) -> uint32``
    Copies rows [row_begin, row_end) of x (rows already zero-padded to ``row_bytes`` by
    ``Kernel.prepare_x``) into xp, 32 bytes at a time, and returns the OR of every byte it read
    (int8: bit 7 set means an activation above 127). ``rowsum`` is not touched.

``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    y[r, c] = sum_k x[r, k] w[c, k] for rows [row_begin, row_end), modulo 2^32 (int16: VPMADDWD
    then VPADDD; the only VPMADDWD pair that overflows, 2 * (-32768)^2, wraps exactly like the
    sum does). int8: VPMADDUBSW (u8 x s8 pairs -> s16, never saturating for 7-bit x), then
    VPMADDWD with 16-bit ones (-> s32 quads), then VPADDD.

Formulations (see :class:`bitsearch.space.IntSchedule`):

``broadcast``: w packed in column panels (:class:`IntPanelLayout`); per K step (one dword: a
K-pair of int16 or K-quad of int8) the tile loads ``nr`` panel vectors and, per row, broadcasts
that row's dword of x with VPBROADCASTD: every lane accumulates one output, so results are stored
straight from the accumulators.

``dot``: x and w both in plain zero-padded rows (:class:`IntRowLayout`); per 32-byte K chunk
``mr`` x rows and one w row at a time are multiplied lane-wise; each accumulator is summed
horizontally (VPHADDD) once per K block.

K is zero-padded in both operands, so padding contributes nothing. Row ranges passed to ``gemm``
must start on a multiple of ``mr``; only the range that ends at m may end off the tile grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peachpy import Argument, const_uint8_t, int32_t, ptr, uint8_t, uint32_t, uint64_t
from peachpy.x86_64 import (
    ADD,
    AND,
    CMP,
    DEC,
    JA,
    JAE,
    JMP,
    JNZ,
    JZ,
    LABEL,
    LEA,
    LOAD,
    MOV,
    RETURN,
    SHL,
    SHR,
    SUB,
    VEXTRACTI128,
    VMOVD,
    VMOVDQU,
    VPADDD,
    VPBROADCASTD,
    VPMADDUBSW,
    VPMADDWD,
    VPOR,
    VPXOR,
    Function,
    LocalVariable,
    r8,
    r9,
    r10,
    r11,
    rax,
    rbx,
    rcx,
    rdi,
    rdx,
    rsi,
    uarch,
    ymm0,
    ymm1,
    ymm2,
    ymm3,
    ymm15,
)
from peachpy.x86_64.registers import YMMRegister

from bitsearch.asm.x86_64.common import (
    Labels,
    LoopCounts,
    gemm_arguments,
    horizontal_sums,
    imul_const,
    load_partial,
    return_or_of_bytes,
    store_partial,
)
from bitsearch.numerics.int_packing import CHUNK, STEP, IntPanelLayout, IntRowLayout, round_up
from bitsearch.space.int_schedule import IntSchedule
from bitsearch.workloads import IntDense

IMM32 = 2**31


@dataclass(frozen=True)
class IntGeometry:
    x: IntRowLayout
    w: IntRowLayout | IntPanelLayout
    x_row_stride: int  # bytes per row of raw x as the packing code reads it

    @classmethod
    def of(cls, workload: IntDense, schedule: IntSchedule) -> IntGeometry:
        es = workload.element_bytes
        kcb = schedule.kc * es
        x = IntRowLayout(rows=workload.m, k=workload.k, element_bytes=es, kc_bytes=kcb)
        if schedule.formulation == "broadcast":
            w: IntRowLayout | IntPanelLayout = IntPanelLayout(
                n=workload.n, k=workload.k, element_bytes=es, panel=8 * schedule.nr)
        else:
            w = IntRowLayout(rows=workload.n, k=workload.k, element_bytes=es, kc_bytes=kcb)
        return cls(x=x, w=w, x_row_stride=x.row_bytes)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------
TMP, ROW, KC, COLC, XQ, WQ, XT, WT, YT, ROW_END = rax, rbx, rcx, rdx, rsi, rdi, r8, r9, r10, r11


@dataclass(frozen=True)
class _Block:
    """One kind of K block as the loop nest sees it. ``index=None``: a block of the runtime loop
    over the middle blocks (its bases come from the stack)."""

    index: int | None
    steps: int  # K steps in this block
    x_stride: int  # bytes between x rows in this block
    w_stride: int  # bytes between w rows in this block (``dot``)
    add: bool  # add into y (every block but the first)


class IntGemmEmitter:
    def __init__(self, workload: IntDense, schedule: IntSchedule) -> None:
        self.wl, self.s = workload, schedule
        self.geo = IntGeometry.of(workload, schedule)
        self.int8 = workload.dtype == "int8"
        self.bcast = schedule.formulation == "broadcast"
        self.label = Labels("g")
        self.counts = LoopCounts()  # MachineCode.loops over rows [0, m)
        x = self.geo.x
        self.step_bytes = STEP if self.bcast else CHUNK
        self.col_unit = 8 * schedule.nr if self.bcast else schedule.nr
        # Bytes of real data per row (broadcast: whole dwords; dot: whole 32-byte chunks).
        used = round_up(workload.k * workload.element_bytes, self.step_bytes)
        self.block_steps = x.block_bytes // self.step_bytes
        self.nblocks = x.blocks
        self.last_steps = (used - (x.blocks - 1) * x.block_bytes) // self.step_bytes
        w_row = self.geo.w if not self.bcast else None
        self.blocks = [
            _Block(0, min(self.block_steps, self.last_steps) if x.blocks == 1 else self.block_steps,
                   x.block_row_bytes(0), w_row.block_row_bytes(0) if w_row else 0, add=False)
        ]
        if x.blocks > 2:
            self.blocks.append(_Block(None, self.block_steps, x.block_bytes,
                                      w_row.block_bytes if w_row else 0, add=True))
        if x.blocks > 1:
            b = x.blocks - 1
            self.blocks.append(_Block(b, self.last_steps, x.block_row_bytes(b),
                                      w_row.block_row_bytes(b) if w_row else 0, add=True))
        for what, value in (("row tile stride", schedule.mr * x.row_bytes),
                            ("y tile stride", 4 * schedule.mr * workload.n),
                            ("x buffer", workload.m * x.row_bytes),
                            ("w buffer", workload.n * self.geo.w.row_bytes)):
            if value >= IMM32:
                raise ValueError(f"{what} of {value} bytes does not fit a 32-bit displacement")

    # -- registers ---------------------------------------------------------------------------
    def _ymm(self) -> None:
        regs = [YMMRegister(i) for i in range(16)]
        s = self.s
        tile = s.mr * s.nr
        self.accs_flat = regs[:tile]
        rest = regs[tile:]
        if self.bcast:
            self.wv, rest = rest[: s.nr], rest[s.nr :]
            self.xb, self.t = rest[0], rest[1]
        else:
            self.xv, rest = rest[: s.mr], rest[s.mr :]
            self.wreg, self.t = rest[0], rest[1]
        rest = rest[2:]
        self.ones = rest[0] if self.int8 else None

    def _accs(self, rows: int, cols: int) -> list[list[YMMRegister]]:
        return [[self.accs_flat[r * cols + c] for c in range(cols)] for r in range(rows)]

    # -- entry ---------------------------------------------------------------------------------
    def emit(self, name: str) -> Function:
        args = gemm_arguments(int32_t)
        with Function(name, args, None, target=uarch.zen) as fn:
            self.local = {key: LocalVariable(8) for key in (
                "xp", "wp", "y", "row_begin", "ycol", "kstep", "kbcount", "xblk", "wblk")}
            # Through rax: LOAD.ARGUMENT into an argument register would clobber a later one.
            for arg in args:
                if arg.name == "rowsum":
                    continue
                LOAD.ARGUMENT(TMP, arg)
                if arg.name == "row_end":
                    MOV(ROW_END, TMP)
                else:
                    MOV(self.local[arg.name], TMP)
            self._ymm()
            if self.ones is not None:
                MOV(TMP.as_dword, 0x00010001)
                VMOVD(self.ones.as_xmm, TMP.as_dword)
                VPBROADCASTD(self.ones, self.ones.as_xmm)
            self._k_blocks()
            RETURN()
        return self.counts.attach(fn)

    # -- K blocks ------------------------------------------------------------------------------
    def _k_blocks(self) -> None:
        for block in self.blocks:
            if block.index is not None:
                self._nest(block)
                continue
            # Blocks 1 .. nblocks-2 in a runtime loop: their bases live on the stack.
            x, loc = self.geo.x, self.local
            MOV(loc["kstep"], self.block_steps)
            MOV(loc["kbcount"], self.nblocks - 2)
            for key, base, offset in (("xblk", "xp", x.block_offset(1)),
                                      ("wblk", "wp", 0 if self.bcast else self.geo.w.block_offset(1))):
                MOV(TMP, loc[base])
                ADD(TMP, offset)
                MOV(loc[key], TMP)
            top = self.label("kblock")
            LABEL(top)
            with self.counts.loop(top, self.nblocks - 2):
                self._nest(block)
                ADD(loc["kstep"], self.block_steps)
                ADD(loc["xblk"], x.block_offset(1))
                if not self.bcast:
                    ADD(loc["wblk"], self.geo.w.block_offset(1))
                DEC(loc["kbcount"])
                JNZ(top)

    def _base(self, block: _Block, reg, which: str) -> None:
        """reg = start of this K block in the x or w buffer (broadcast w: the panels' start)."""
        loc = self.local
        if block.index is None:
            MOV(reg, loc["xblk" if which == "x" else "wblk"])
            return
        MOV(reg, loc["xp" if which == "x" else "wp"])
        if which == "x":
            offset = self.geo.x.block_offset(block.index)
        else:
            offset = 0 if self.bcast else self.geo.w.block_offset(block.index)
        if offset:
            ADD(reg, offset)

    # -- tile loops ----------------------------------------------------------------------------
    def _nest(self, block: _Block) -> None:
        n_tiles, n_edge = divmod(self.wl.n, self.col_unit)

        def tile(rows: int, cols: int) -> None:
            self._tile(rows, cols, block)

        if self.s.loop_order == "mn":
            self._rows(block, lambda rows: self._cols(block, n_tiles, n_edge, lambda cols: tile(rows, cols)),
                       inner=False)
        else:
            MOV(self.local["ycol"], 0)
            self._base(block, WT, "w")
            self._cols(block, n_tiles, n_edge,
                       lambda cols: self._rows(block, lambda rows: tile(rows, cols), inner=True),
                       outer=True)

    def _y_row(self) -> None:
        """YT = y + 4 * ROW * n."""
        MOV(YT, ROW)
        imul_const(YT, YT, self.wl.n)
        SHL(YT, 2)
        ADD(YT, self.local["y"])

    def _rows(self, block: _Block, body: Callable[[int], None], *, inner: bool) -> None:
        mr = self.s.mr
        m_edge = self.wl.m % mr
        MOV(ROW, self.local["row_begin"])
        MOV(XT, ROW)
        imul_const(XT, XT, block.x_stride)
        self._base(block, TMP, "x")
        ADD(XT, TMP)
        if inner:
            self._y_row()
            ADD(YT, self.local["ycol"])
        top, edge, done = self.label("row"), self.label("row_edge"), self.label("row_done")
        LABEL(top)
        with self.counts.loop(top, self.wl.m // mr):  # full row tiles; the edge tile runs once
            LEA(TMP, [ROW + mr])
            CMP(TMP, ROW_END)
            JA(edge)
            if not inner:
                self._y_row()
                self._base(block, WT, "w")
            body(mr)
            ADD(ROW, mr)
            ADD(XT, mr * block.x_stride)
            if inner:
                ADD(YT, 4 * mr * self.wl.n)
            JMP(top)
        LABEL(edge)
        if m_edge:
            CMP(ROW, ROW_END)
            JAE(done)
            if not inner:
                self._y_row()
                self._base(block, WT, "w")
            body(m_edge)
        LABEL(done)

    def _cols(self, block: _Block, tiles: int, edge: int, body: Callable[[int], None], *,
              outer: bool = False) -> None:
        unit = self.col_unit
        if tiles:
            MOV(COLC, tiles)
            top = self.label("col")
            LABEL(top)
            with self.counts.loop(top, tiles):
                body(unit)
                ADD(WT, self.geo.w.panel_bytes if self.bcast else unit * block.w_stride)
                if outer:
                    ADD(self.local["ycol"], 4 * unit)
                else:
                    ADD(YT, 4 * unit)
                DEC(COLC)
                JNZ(top)
        if edge:
            body(edge)

    # -- one register tile -----------------------------------------------------------------------
    def _tile(self, rows: int, cols: int, block: _Block) -> None:
        """Tile of ``rows`` x ``cols`` outputs (cols in columns of y) over one K block."""
        if self.bcast:
            vecs = -(-cols // 8)
            wstep = STEP * 8 * vecs  # this panel's bytes per K step
            if block.index is None:
                MOV(WQ, self.local["kstep"])
                imul_const(WQ, WQ, wstep)
                ADD(WQ, WT)
            elif block.index:
                LEA(WQ, [WT + block.index * self.block_steps * wstep])
            else:
                MOV(WQ, WT)
        else:
            vecs = cols
            wstep = CHUNK
            MOV(WQ, WT)
        MOV(XQ, XT)
        xstep = self.step_bytes
        accs = self._accs(rows, vecs)

        def step(u: int, first: bool = False) -> None:
            if self.bcast:
                self._bcast_step(rows, vecs, accs, u, wstep, block, first=first)
            else:
                self._dot_step(rows, vecs, accs, u, block, first=first)

        # The first step initialises the accumulators; the rest run in a loop of k_unroll steps.
        step(0, first=True)
        u = self.s.k_unroll
        iters, rest = divmod(block.steps - 1, u)

        def unrolled() -> None:
            for i in range(u):
                step(1 + i)
            ADD(XQ, u * xstep)
            ADD(WQ, u * wstep)

        if iters == 1:
            unrolled()
        elif iters > 1:
            MOV(KC, iters)
            top = self.label("k")
            LABEL(top)
            with self.counts.loop(top, iters):
                unrolled()
                DEC(KC)
                JNZ(top)
        for i in range(rest):
            step(1 + i)
        if self.bcast:
            self._bcast_store(rows, cols, accs, block.add)
        else:
            self._dot_store(rows, cols, accs, block.add)

    def _madd(self, acc: YMMRegister, a, b, first: bool) -> None:
        """acc (+)= pairwise products of a (x: int16, or u8 for int8) and b (w) as dwords."""
        t = self.t
        if self.int8:
            VPMADDUBSW(t, a, b)
            if first:
                VPMADDWD(acc, t, self.ones)
            else:
                VPMADDWD(t, t, self.ones)
                VPADDD(acc, acc, t)
        elif first:
            VPMADDWD(acc, a, b)
        else:
            VPMADDWD(t, a, b)
            VPADDD(acc, acc, t)

    def _bcast_step(self, rows, vecs, accs, u: int, wstep: int, block: _Block, *,
                    first: bool = False) -> None:
        for j in range(vecs):
            VMOVDQU(self.wv[j], [WQ + u * wstep + CHUNK * j])
        for r in range(rows):
            VPBROADCASTD(self.xb, [XQ + r * block.x_stride + u * STEP])
            for j in range(vecs):
                self._madd(accs[r][j], self.xb, self.wv[j], first)

    def _dot_step(self, rows, cols, accs, u: int, block: _Block, *, first: bool = False) -> None:
        for r in range(rows):
            VMOVDQU(self.xv[r], [XQ + r * block.x_stride + u * CHUNK])
        for c in range(cols):
            VMOVDQU(self.wreg, [WQ + c * block.w_stride + u * CHUNK])
            for r in range(rows):
                self._madd(accs[r][c], self.xv[r], self.wreg, first)

    # -- results -------------------------------------------------------------------------------
    @staticmethod
    def _store4(v, addr, n: int, add: bool, scratch) -> None:
        """Store (add: add into) the low ``n`` dwords of xmm ``v`` at ``addr``."""
        if add:
            if n == 4:
                VPADDD(v, v, [addr])
            else:
                load_partial(scratch, addr, n)
                VPADDD(v, v, scratch)
        store_partial(v, addr, n)

    def _bcast_store(self, rows: int, cols: int, accs, add: bool) -> None:
        n = self.wl.n
        vecs = len(accs[0]) if accs else 0
        last = cols - 8 * (vecs - 1)
        hi, scratch = self.t.as_xmm, self.xb.as_xmm
        for r in range(rows):
            for j in range(vecs):
                acc = accs[r][j]
                addr = YT + 4 * (r * n + 8 * j)
                lanes = 8 if j < vecs - 1 else last
                if lanes == 8:
                    if add:
                        VPADDD(acc, acc, [addr])
                    VMOVDQU([addr], acc)
                    continue
                if lanes > 4:
                    VEXTRACTI128(hi, acc, 1)  # before any xmm write zeroes acc's upper half
                self._store4(acc.as_xmm, addr, min(lanes, 4), add, scratch)
                if lanes > 4:
                    self._store4(hi, addr + 16, lanes - 4, add, scratch)

    def _dot_store(self, rows: int, cols: int, accs, add: bool) -> None:
        """Horizontal sums, 4 columns per xmm (VPHADDD within 128-bit lanes, then the halves)."""
        n = self.wl.n
        t, scratch = self.t.as_xmm, self.wreg.as_xmm
        for r in range(rows):
            for g in range(0, cols, 4):
                cnt = min(4, cols - g)
                v = horizontal_sums(accs[r][g : g + 4], t)
                self._store4(v, YT + 4 * (r * n + g), cnt, add, scratch)


# ---------------------------------------------------------------------------------------------
# Activation "packing": a copy into the GEMM's buffer, OR of every byte read
# ---------------------------------------------------------------------------------------------
def _emit_pack(workload: IntDense, schedule: IntSchedule, name: str) -> Function:
    geo = IntGeometry.of(workload, schedule)
    lay = geo.x
    row_bytes = lay.row_bytes
    labels = Labels("p")
    counts = LoopCounts()  # MachineCode.loops over rows [0, m)
    src, dst, count, row_end, row, xp_base, rest = r10, r11, rcx, r9, r8, rsi, rdx
    orv = [ymm0, ymm1, ymm2, ymm3]
    v = [YMMRegister(i) for i in range(4, 8)]
    args = (
        Argument(ptr(const_uint8_t), name="x"),
        Argument(ptr(uint8_t), name="xp"),
        Argument(ptr(int32_t), name="rowsum"),
        Argument(uint64_t, name="row_begin"),
        Argument(uint64_t, name="row_end"),
    )

    def copy_loop(chunks_reg, tail_reg, chunks: int) -> None:
        """Copy chunks_reg 32-byte chunks [src] -> [dst] (advancing both); clobbers tail_reg.
        ``chunks``: the value of chunks_reg each time this code runs (for the loop counts)."""
        quad, single, tail, done = labels("quad"), labels("single"), labels("tail"), labels("done")
        MOV(tail_reg, chunks_reg)
        AND(tail_reg, 3)
        SHR(chunks_reg, 2)
        JZ(tail)
        LABEL(quad)
        with counts.loop(quad, chunks // 4):
            for i in range(4):
                VMOVDQU(v[i], [src + CHUNK * i])
            for i in range(4):
                VPOR(orv[i], orv[i], v[i])
                VMOVDQU([dst + CHUNK * i], v[i])
            ADD(src, 4 * CHUNK)
            ADD(dst, 4 * CHUNK)
            DEC(chunks_reg)
            JNZ(quad)
        LABEL(tail)
        CMP(tail_reg, 0)
        JZ(done)
        LABEL(single)
        with counts.loop(single, chunks % 4):
            VMOVDQU(v[0], [src])
            VPOR(orv[0], orv[0], v[0])
            VMOVDQU([dst], v[0])
            ADD(src, CHUNK)
            ADD(dst, CHUNK)
            DEC(tail_reg)
            JNZ(single)
        LABEL(done)

    def copy_fixed(nbytes: int) -> None:
        """Copy nbytes (a multiple of 32) [src] -> [dst], advancing both."""
        chunks = nbytes // CHUNK
        if chunks <= 8:
            for i in range(chunks):
                vi = v[i % 4]
                VMOVDQU(vi, [src + CHUNK * i])
                VPOR(orv[i % 4], orv[i % 4], vi)
                VMOVDQU([dst + CHUNK * i], vi)
            ADD(src, nbytes)
            ADD(dst, nbytes)
        else:
            MOV(count, chunks)
            copy_loop(count, rax, chunks)

    with Function(name, args, uint32_t, target=uarch.zen) as fn:
        # x, xp, rowsum, row_begin, row_end arrive in rdi, rsi, rdx, rcx, r8: load each before
        # its register is written (row_end from r8 first, then row_begin into r8).
        LOAD.ARGUMENT(src, args[0])
        LOAD.ARGUMENT(dst, args[1])
        LOAD.ARGUMENT(row_end, args[4])
        LOAD.ARGUMENT(row, args[3])
        for o in orv:
            VPXOR(o, o, o)
        if lay.blocks == 1:
            # x and xp rows are the same bytes: one linear copy of all rows.
            MOV(count, row_end)
            SUB(count, row)
            MOV(rax, row)
            imul_const(rax, rax, row_bytes)
            ADD(src, rax)
            ADD(dst, rax)
            imul_const(count, count, row_bytes // CHUNK)
            copy_loop(count, rest, workload.m * row_bytes // CHUNK)  # one run over all rows
        else:
            # Row by row: block b of row r goes to xp + b*m*kc + r*(block's row bytes).
            MOV(xp_base, dst)
            MOV(rax, row)
            imul_const(rax, rax, row_bytes)
            ADD(src, rax)
            top, finished = labels("row"), labels("rows_done")
            LABEL(top)
            with counts.loop(top, workload.m):
                CMP(row, row_end)
                JAE(finished)
                last = lay.blocks - 1
                for b in range(lay.blocks if lay.blocks <= 4 else 0):
                    MOV(dst, row)
                    imul_const(dst, dst, lay.block_row_bytes(b))
                    ADD(dst, xp_base)
                    if lay.block_offset(b):
                        ADD(dst, lay.block_offset(b))
                    copy_fixed(lay.block_row_bytes(b))
                if lay.blocks > 4:
                    # Full blocks in a loop (dst steps by a whole block of all rows), then the last.
                    MOV(dst, row)
                    imul_const(dst, dst, lay.block_bytes)
                    ADD(dst, xp_base)
                    MOV(rest, last)
                    blk = labels("block")
                    LABEL(blk)
                    with counts.loop(blk, last):
                        copy_fixed(lay.block_bytes)
                        ADD(dst, lay.block_offset(1) - lay.block_bytes)
                        DEC(rest)
                        JNZ(blk)
                    MOV(dst, row)
                    imul_const(dst, dst, lay.block_row_bytes(last))
                    ADD(dst, xp_base)
                    ADD(dst, lay.block_offset(last))
                    copy_fixed(lay.block_row_bytes(last))
                ADD(row, 1)
                JMP(top)
            LABEL(finished)
        VPOR(ymm0, ymm0, ymm1)
        VPOR(ymm2, ymm2, ymm3)
        VPOR(ymm15, ymm0, ymm2)
        return_or_of_bytes(ymm15)
    return counts.attach(fn)


def emit_int_dense(workload: IntDense, schedule: IntSchedule) -> tuple[Function, Function]:
    """PeachPy functions ``(pack, gemm)`` for ``workload`` under a checked ``schedule``."""
    pack = _emit_pack(workload, schedule, "bitsearch_int_pack")
    gemm = IntGemmEmitter(workload, schedule).emit("bitsearch_int_gemm")
    return pack, gemm


__all__ = ["IntGeometry", "IntPanelLayout", "IntRowLayout", "emit_int_dense"]
