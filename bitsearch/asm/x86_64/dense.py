"""PeachPy emitters for the bit-serial dense operator on x86-64 AVX2.

Two functions are emitted per (workload, schedule), both position-independent (no constant pool:
constants are materialised from immediates) so their bytes can run anywhere: ``pack`` (activation
bit-packing, :mod:`bitsearch.asm.x86_64.dense_pack`) and

``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    y[r, c] = alpha * S[r, c] + beta * rowsum[r] + gamma with
    S = sum_{i,j} 2^(i+j) popcount(x_i OP w_j) over the K blocks, OP = AND (``and``,
    ``unipolar``) or XOR (``bipolar``):
    ``and`` (1, 0, 0); ``unipolar`` (2, -(2^w-1), 0), from x*(2w-1) = 2 popc(x AND w) - popc(x);
    ``bipolar`` (-2, 0, K(2^a-1)(2^w-1)), from (2x-1)(2w-1) = 1 - 2 (x XOR w) summed over the
    *true* K: padding bits are zero in both operands, so their XOR adds nothing to S.

Row ranges passed to either function must start on a multiple of ``mr``; only the range that
ends at m may end off the tile grid (the edge tile is specialised for m % mr rows).

:class:`GemmEmitter` holds the loop nest (row and column tiles, column blocks, plane pairs, the K
loop); the register tile it runs, per popcount strategy, is in :mod:`bitsearch.asm.x86_64.dense_tile`.
"""

from __future__ import annotations

from collections.abc import Callable

from peachpy import int32_t
from peachpy.x86_64 import (
    ADD,
    AND,
    CMP,
    DEC,
    INC,
    JA,
    JAE,
    JB,
    JMP,
    JNZ,
    LABEL,
    LOAD,
    MOV,
    RETURN,
    SHL,
    VPAND,
    VPANDQ,
    VPXOR,
    VPXORQ,
    XOR,
    Function,
    Label,
    LocalVariable,
    uarch,
)

from bitsearch.asm.x86_64.common import ZEN4, Labels, gemm_arguments, imul_const, label_name
from bitsearch.asm.x86_64.dense_pack import Geometry, emit_pack
from bitsearch.asm.x86_64.dense_tile import KC, TMP, WQ, WT, XQ, XT, YT, RegisterTile
from bitsearch.records import LoopCount
from bitsearch.space.schedule import Schedule
from bitsearch.workloads import Dense


def epilogue_constants(workload: Dense) -> tuple[int, int, int]:
    """(alpha, beta, gamma) of y = alpha*S + beta*rowsum + gamma for the workload's mode."""
    if workload.mode == "and":
        return 1, 0, 0
    if workload.mode == "unipolar":
        return 2, -workload.wmax, 0
    return -2, 0, workload.k * workload.amax * workload.wmax


class GemmEmitter(RegisterTile):
    """The ``gemm`` function of one (workload, schedule); the convolutions subclass it."""

    def __init__(self, workload: Dense, schedule: Schedule) -> None:
        self.wl = workload
        self.s = schedule
        self.geo = Geometry.of(workload, schedule)
        self.label = Labels()
        self.alpha, self.beta, self.gamma = epilogue_constants(workload)
        self.pairs = workload.abits * workload.wbits
        self.vector = schedule.popcount != "scalar"
        self.zmm = schedule.popcount == "vpopcnt"  # AVX-512: VPOPCNTQ on zmm, 64-bit lanes
        self.byte_counters = schedule.popcount in ("lut", "csa") and schedule.acc_bits == 8
        # Accumulators end as qword lanes (VPSADBW, VPOPCNTQ, 64-bit adds) below 2^32: they are
        # summed without VPHADDD (16- and 32-bit lanes keep the VPHADDD tree).
        self.qword_sums = self.zmm or self.byte_counters or schedule.acc_bits == 64
        self.combine = VPXOR if workload.mode == "bipolar" else VPAND
        self.combine_zmm = VPXORQ if workload.mode == "bipolar" else VPANDQ
        self.combine_gpr = XOR if workload.mode == "bipolar" else AND
        # MachineCode.loops for static cost models: each loop's body executions over one full
        # call (rows [0, m)); ``mult`` is how often the code being emitted now runs.
        self.loops: list[LoopCount] = []
        self.mult = 1
        self._mults: list[int] = []

    def _push_loop(self, top: Label, trips: int) -> None:
        """The body of the loop headed by ``top`` runs ``trips`` times per entry."""
        self.loops.append(LoopCount(label_name(top), self.mult * trips))
        self._mults.append(self.mult)
        self.mult *= trips

    def _pop_loop(self) -> None:
        self.mult = self._mults.pop()

    # -- entry ---------------------------------------------------------------------------------
    def emit(self, name: str) -> Function:
        args = gemm_arguments(int32_t)
        with Function(name, args, None, target=ZEN4 if self.zmm else uarch.zen) as fn:
            self.local = {key: LocalVariable(8) for key in (
                "xp", "wp", "y", "rowsum", "row_begin", "row_end", "row", "col", "bcol",
                "rs_row", "pi", "pj", "ccount", "bcount", "wcount")}
            tile = self.s.mr * self.s.nr
            self.scratch = [LocalVariable(32) for _ in range(tile)] if self.vector else []
            for arg, key in zip(args, ("xp", "wp", "y", "rowsum", "row_begin", "row_end"), strict=True):
                LOAD.ARGUMENT(TMP, arg)
                MOV(self.local[key], TMP)
            if self.vector:
                self._load_constants()
            self._loop_nest()
            RETURN()
        fn.bitsearch_loops = tuple(self.loops)  # read by encode() into MachineCode.loops
        return fn

    # -- loops ---------------------------------------------------------------------------------
    def _loop_nest(self) -> None:
        s, wl = self.s, self.wl
        n_tiles, n_edge = divmod(wl.n, s.nr)
        tile = self._tile
        if s.loop_order == "nm":
            self._col_loop(0, n_tiles, n_edge, lambda cols: self._row_loop(
                lambda rows: tile(rows, cols), inner=True))
            return
        if s.nc == 0 or s.nc >= n_tiles:
            self._row_loop(lambda rows: self._col_loop(
                0, n_tiles, n_edge, lambda cols: tile(rows, cols), inner=True))
            return
        # Column blocks of nc tiles: the rows sweep one block of w (kept in cache) at a time.
        blocks, rest = divmod(n_tiles, s.nc)
        MOV(self.local["bcol"], 0)
        MOV(self.local["bcount"], blocks)
        top = self.label("block")
        LABEL(top)
        self._push_loop(top, blocks)
        self._row_loop(lambda rows: self._col_loop(
            "bcol", s.nc, 0, lambda cols: tile(rows, cols), inner=True))
        ADD(self.local["bcol"], s.nc * s.nr)
        DEC(self.local["bcount"])
        JNZ(top)
        self._pop_loop()
        if rest or n_edge:
            self._row_loop(lambda rows: self._col_loop(
                blocks * s.nc * s.nr, rest, n_edge, lambda cols: tile(rows, cols), inner=True))

    # The innermost loop computes the tile pointers once and then advances them tile by tile.
    def _row_loop(self, body: Callable[[int], None], *, inner: bool = False) -> None:
        mr = self.s.mr
        m_edge = self.wl.m % mr
        row, row_end = self.local["row"], self.local["row_end"]
        MOV(TMP, self.local["row_begin"])
        MOV(row, TMP)
        if inner:
            self._tile_setup()
        top, edge, done = self.label("row"), self.label("row_edge"), self.label("row_done")
        LABEL(top)
        self._push_loop(top, self.wl.m // mr)
        MOV(TMP, row)
        ADD(TMP, mr)
        CMP(TMP, row_end)
        JA(edge)
        body(mr)
        ADD(row, mr)
        if inner:
            ADD(XT, mr * self.geo.x.row_bytes)
            ADD(YT, mr * self.wl.n * 4)
            if self.beta:
                ADD(self.local["rs_row"], mr * 4)
        JMP(top)
        self._pop_loop()
        LABEL(edge)
        if m_edge:
            MOV(TMP, row)
            CMP(TMP, row_end)
            JAE(done)
            body(m_edge)
        LABEL(done)

    def _col_loop(
        self, start: int | str, tiles: int, edge: int, body: Callable[[int], None], *, inner: bool = False
    ) -> None:
        col = self.local["col"]
        if isinstance(start, str):
            MOV(TMP, self.local[start])
            MOV(col, TMP)
        else:
            MOV(col, start)
        if inner:
            self._tile_setup()
        if tiles:
            count = self.local["ccount"]
            MOV(count, tiles)
            top = self.label("col")
            LABEL(top)
            self._push_loop(top, tiles)
            body(self.s.nr)
            ADD(col, self.s.nr)
            if inner:
                ADD(WT, self.s.nr * self.geo.w.row_bytes)
                ADD(YT, self.s.nr * 4)
            DEC(count)
            JNZ(top)
            self._pop_loop()
        if edge:
            body(edge)

    def _tile_setup(self) -> None:
        geo, loc = self.geo, self.local
        MOV(XT, loc["row"])
        imul_const(XT, XT, geo.x.row_bytes)
        ADD(XT, loc["xp"])
        MOV(WT, loc["col"])
        imul_const(WT, WT, geo.w.row_bytes)
        ADD(WT, loc["wp"])
        MOV(YT, loc["row"])
        imul_const(YT, YT, self.wl.n)
        ADD(YT, loc["col"])
        SHL(YT, 2)
        ADD(YT, loc["y"])
        if self.beta:
            MOV(TMP, loc["row"])
            SHL(TMP, 2)
            ADD(TMP, loc["rowsum"])
            MOV(loc["rs_row"], TMP)

    # -- one register tile -----------------------------------------------------------------------
    def _tile(self, rows: int, cols: int) -> None:
        wl, loc = self.wl, self.local
        if self.pairs == 1:
            self._plane_pair(rows, cols, final=True)
            return
        self._zero_y(rows, cols)
        loops = []
        for key, count in (("pi", wl.abits), ("pj", wl.wbits)):
            if count > 1:
                MOV(loc[key], 0)
                top = self.label(key)
                LABEL(top)
                self._push_loop(top, count)
                loops.append((key, count, top))
        self._plane_pair(rows, cols, final=False)
        for key, count, top in reversed(loops):
            INC(loc[key])
            CMP(loc[key], count)
            JB(top)
            self._pop_loop()
        if self.alpha != 1 or self.beta or self.gamma:
            self._post_epilogue(rows, cols)

    def _plane_offsets(self) -> None:
        """XQ, WQ = first block of planes (pi, pj) of the tile; TMP = pi + pj (the shift)."""
        geo, loc, wl = self.geo, self.local, self.wl
        for q, t, key, planes, stride in ((XQ, XT, "pi", wl.abits, geo.x.plane_stride),
                                          (WQ, WT, "pj", wl.wbits, geo.w.plane_stride)):
            if planes > 1:
                MOV(q, loc[key])
                imul_const(q, q, stride)
                ADD(q, t)
            else:
                MOV(q, t)

    def _shift_amount(self) -> None:
        loc, wl = self.local, self.wl
        XOR(TMP.as_dword, TMP.as_dword)
        if wl.abits > 1:
            ADD(TMP, loc["pi"])
        if wl.wbits > 1:
            ADD(TMP, loc["pj"])

    def _plane_pair(self, rows: int, cols: int, *, final: bool) -> None:
        self._plane_offsets()
        if self.vector:
            accs = self._vector_kloop(rows, cols)
            self._vector_reduce(rows, cols, accs, final=final)
        else:
            accs = self._scalar_kloop(rows, cols)
            self._scalar_reduce(rows, cols, accs, final=final)

    # -- K loop: runtime loop of k_unroll blocks, then the remainder ------------------------------
    def _k_run(self, steps: int, body: Callable[[int], None], blocks_per_step: int = 1) -> None:
        """Emit ``steps`` calls of ``body(i)`` (i = the step's block offset within one unrolled
        iteration), k_unroll steps per loop iteration, advancing XQ/WQ past the blocks."""
        u = self.s.k_unroll
        iters, rest = divmod(steps, u)
        xs, ws = blocks_per_step * self.geo.x.block_stride, blocks_per_step * self.geo.w.block_stride

        def unrolled(count: int) -> None:
            for i in range(count):
                body(blocks_per_step * i)
            ADD(XQ, count * xs)
            ADD(WQ, count * ws)

        if iters == 1:
            unrolled(u)
        elif iters > 1:
            MOV(KC, iters)
            top = self.label("k")
            LABEL(top)
            self._push_loop(top, iters)
            unrolled(u)
            DEC(KC)
            JNZ(top)
            self._pop_loop()
        if rest:
            unrolled(rest)

    def _whole_k(self, body: Callable[[int], None]) -> None:
        """Run ``body`` over every K block of the tile (a convolution walks its taps instead)."""
        self._k_run(self.geo.x.blocks, body)


def emit_dense(workload: Dense, schedule: Schedule) -> tuple[Function, Function]:
    """PeachPy functions ``(pack, gemm)`` for ``workload`` under a checked ``schedule``."""
    pack = emit_pack(workload, schedule, "bitsearch_pack")
    gemm = GemmEmitter(workload, schedule).emit("bitsearch_gemm")
    return pack, gemm


__all__ = ["GemmEmitter", "emit_dense", "epilogue_constants"]
