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
    NEG,
    POPCNT,
    RETURN,
    SHL,
    SHLX,
    SUB,
    VINSERTI128,
    VMOVD,
    VMOVDQA,
    VMOVDQU,
    VMOVDQU64,
    VMOVQ,
    VPADDB,
    VPADDD,
    VPADDQ,
    VPADDW,
    VPAND,
    VPANDQ,
    VPBROADCASTD,
    VPINSRQ,
    VPMADDUBSW,
    VPMADDWD,
    VPOPCNTQ,
    VPOR,
    VPSADBW,
    VPSHUFB,
    VPSLLD,
    VPSRLW,
    VPSUBD,
    VPXOR,
    VPXORQ,
    XOR,
    Function,
    Label,
    LocalVariable,
    dword,
    r8,
    r9,
    r10,
    r11,
    r12,
    r13,
    r14,
    r15,
    rax,
    rbx,
    rcx,
    rdi,
    rdx,
    rsi,
    uarch,
)
from peachpy.x86_64.registers import YMMRegister, ZMMRegister

from bitsearch.asm.x86_64.common import (
    ZEN4,
    Labels,
    gemm_arguments,
    horizontal_sums,
    imul_const,
    label_name,
    load_partial,
    qword_horizontal_sums,
    store_partial,
)
from bitsearch.asm.x86_64.dense_pack import Geometry, emit_pack
from bitsearch.records import LoopCount
from bitsearch.space.schedule import Schedule
from bitsearch.workloads import Dense

LUT_WINDOW = 31  # byte counters gain at most 8 per block: 31 * 8 = 248 < 256
NIBBLE_POPCOUNT = bytes(bin(i).count("1") for i in range(16))



def epilogue_constants(workload: Dense) -> tuple[int, int, int]:
    """(alpha, beta, gamma) of y = alpha*S + beta*rowsum + gamma for the workload's mode."""
    if workload.mode == "and":
        return 1, 0, 0
    if workload.mode == "unipolar":
        return 2, -workload.wmax, 0
    return -2, 0, workload.k * workload.amax * workload.wmax


# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------
# Pointer registers live through the whole loop nest; everything rarer lives on the stack.
XT, WT, YT, XQ, WQ, KC = r8, r9, r10, r11, r12, r13  # tile and plane pointers, K counter
TMP = rax
SCALAR_ACCS = (rbx, rcx, rdx, rsi, rdi, r14)
SCALAR_TMP = r15


class GemmEmitter:
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
        fn.bitsearch_loops = tuple(self.loops)  # read by build._encode into MachineCode.loops
        return fn

    # -- constants -----------------------------------------------------------------------------
    def _load_constants(self) -> None:
        regs = [YMMRegister(i) for i in range(16)]
        if self.zmm:  # no constants: accumulators, x rows, temporaries
            tile = self.s.mr * self.s.nr
            self.lut = self.mask = self.ones8 = self.ones16 = self.zero = None
            self.acc_regs, self.ones_regs = regs[:tile], []
            self.x_regs, self.temps = regs[tile : tile + self.s.mr], regs[tile + self.s.mr :]
            return
        top = regs[::-1]
        self.lut, self.mask = top[0], top[1]
        extra = top[2:]
        self.ones8 = self.ones16 = self.zero = None
        if self.s.acc_bits in (16, 32):
            self.ones8 = extra.pop(0)
        if self.s.acc_bits == 32:
            self.ones16 = extra.pop(0)
        if self.s.acc_bits == 64:
            self.zero = extra.pop(0)
        lo = int.from_bytes(NIBBLE_POPCOUNT[:8], "little")
        hi = int.from_bytes(NIBBLE_POPCOUNT[8:], "little")
        MOV(TMP, lo)
        VMOVQ(self.lut.as_xmm, TMP)
        MOV(TMP, hi)
        VPINSRQ(self.lut.as_xmm, self.lut.as_xmm, TMP, 1)
        VINSERTI128(self.lut, self.lut, self.lut.as_xmm, 1)
        self._broadcast_dword(self.mask, 0x0F0F0F0F)
        if self.ones8 is not None:
            self._broadcast_dword(self.ones8, 0x01010101)
        if self.ones16 is not None:
            self._broadcast_dword(self.ones16, 0x00010001)
        if self.zero is not None:
            VPXOR(self.zero, self.zero, self.zero)
        # Accumulators from the bottom, then x rows, then two temporaries.
        n_const = 16 - len(extra)
        free = regs[: 16 - n_const]
        tile = self.s.mr * self.s.nr
        per_output = 2 if self.s.popcount == "csa" else 1
        self.acc_regs = free[:tile]
        self.ones_regs = free[tile : 2 * tile] if per_output == 2 else []
        rest = free[per_output * tile :]
        if self.s.popcount == "lut":
            n_x = self.s.mr * (2 if self.s.nibble_split else 1)
            self.x_regs, rest = rest[:n_x], rest[n_x:]
        else:
            self.x_regs = []
        self.temps = rest

    @staticmethod
    def _broadcast_dword(reg: YMMRegister, value: int) -> None:
        MOV(TMP.as_dword, value)
        VMOVD(reg.as_xmm, TMP.as_dword)
        VPBROADCASTD(reg, reg.as_xmm)

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

    # -- vector strategies ---------------------------------------------------------------------
    def _x_addr(self, r: int, u: int) -> object:
        return [XQ + r * self.geo.x.row_bytes + u * self.geo.x.block_stride]

    def _w_addr(self, c: int, u: int) -> object:
        return [WQ + c * self.geo.w.row_bytes + u * self.geo.w.block_stride]

    def _popcount_add(self, acc: YMMRegister, t: YMMRegister, h: YMMRegister, first: bool = False) -> None:
        """acc += popcount(t) per lane of width acc_bits; clobbers t and h."""
        VPSRLW(h, t, 4)
        VPAND(t, t, self.mask)
        VPAND(h, h, self.mask)
        self._lookup_add(acc, t, h, first)

    def _lookup_add(self, acc: YMMRegister, t: YMMRegister, h: YMMRegister, first: bool = False) -> None:
        """acc += LUT[t] + LUT[h] (t, h hold nibbles) per lane of width acc_bits.
        ``first``: acc = ..., so accumulators need no zeroing."""
        VPSHUFB(t, self.lut, t)
        VPSHUFB(h, self.lut, h)
        bits = self.s.acc_bits
        if bits == 8:
            if first:
                VPADDB(acc, t, h)
            else:
                VPADDB(acc, acc, t)
                VPADDB(acc, acc, h)
            return
        VPADDB(t, t, h)
        dst = acc if first else t
        if bits == 64:
            VPSADBW(dst, t, self.zero)
        elif bits == 16:
            VPMADDUBSW(dst, t, self.ones8)
        else:
            VPMADDUBSW(t, t, self.ones8)
            VPMADDWD(dst, t, self.ones16)
        if not first:
            {64: VPADDQ, 16: VPADDW, 32: VPADDD}[bits](acc, acc, t)

    def _lut_block(self, rows: int, cols: int, u: int, accs: list[list[YMMRegister]],
                   first: bool = False) -> None:
        t, h = self.temps[0], self.temps[1]
        if self.s.nibble_split:
            # Operands arrive split into nibbles: AND/XOR of nibbles is already a table index.
            half = self.geo.x.block_bytes
            for r in range(rows):
                VMOVDQU(self.x_regs[2 * r], self._x_addr(r, u))
                VMOVDQU(self.x_regs[2 * r + 1], [self._x_addr(r, u)[0] + half])
            for c in range(cols):
                for r in range(rows):
                    self.combine(t, self.x_regs[2 * r], self._w_addr(c, u))
                    self.combine(h, self.x_regs[2 * r + 1], [self._w_addr(c, u)[0] + half])
                    self._lookup_add(accs[r][c], t, h, first)
            return
        for r in range(rows):
            VMOVDQU(self.x_regs[r], self._x_addr(r, u))
        for c in range(cols):
            for r in range(rows):
                self.combine(t, self.x_regs[r], self._w_addr(c, u))
                self._popcount_add(accs[r][c], t, h, first)

    def _vpopcnt_block(self, rows: int, cols: int, u: int, accs: list[list[YMMRegister]],
                       first: bool = False) -> None:
        """acc (zmm, 8 x 64-bit lanes) += VPOPCNTQ(x AND/XOR w) for one 512-bit block."""
        t = ZMMRegister(self.temps[0].physical_id)
        xs = [ZMMRegister(reg.physical_id) for reg in self.x_regs]
        for r in range(rows):
            VMOVDQU64(xs[r], self._x_addr(r, u))
        for c in range(cols):
            for r in range(rows):
                acc = ZMMRegister(accs[r][c].physical_id)
                self.combine_zmm(t, xs[r], self._w_addr(c, u))
                if first:
                    VPOPCNTQ(acc, t)
                else:
                    VPOPCNTQ(t, t)
                    VPADDQ(acc, acc, t)

    def _csa_pair(self, rows: int, cols: int, u: int, accs, ones, *, single: bool) -> None:
        """Harley-Seal step: (ones, carry) = ones + a + b; acc += popcount(carry) (weight 2)."""
        a, b, v = self.temps[0], self.temps[1], self.temps[2]
        for c in range(cols):
            for r in range(rows):
                o = ones[r][c]
                VMOVDQU(a, self._x_addr(r, u))
                self.combine(a, a, self._w_addr(c, u))
                if single:  # half adder: carry = ones & a, ones ^= a
                    VPAND(v, o, a)
                    VPXOR(o, o, a)
                    self._popcount_add(accs[r][c], v, a)
                    continue
                VMOVDQU(b, self._x_addr(r, u + 1))
                self.combine(b, b, self._w_addr(c, u + 1))
                VPXOR(v, o, a)  # u = ones ^ a
                VPAND(a, o, a)  # ones & a
                VPXOR(o, v, b)  # ones' = u ^ b
                VPAND(v, v, b)  # u & b
                VPOR(a, a, v)  # carry
                self._popcount_add(accs[r][c], a, v)

    def _vector_kloop(self, rows: int, cols: int) -> list[list[YMMRegister]]:
        s = self.s
        blocks = self.geo.x.blocks
        accs = [[self.acc_regs[r * cols + c] for c in range(cols)] for r in range(rows)]
        csa = s.popcount == "csa"
        ones = [[self.ones_regs[r * cols + c] for c in range(cols)] for r in range(rows)] if csa else []
        step_blocks = 2 if csa else 1  # one CSA step consumes two blocks

        def run(nblocks: int) -> None:
            if csa:
                pairs, odd = divmod(nblocks, 2)
                self._k_run(pairs, lambda u: self._csa_pair(rows, cols, u, accs, ones, single=False),
                            blocks_per_step=2)
                if odd:
                    self._csa_pair(rows, cols, 0, accs, ones, single=True)
                    ADD(XQ, self.geo.x.block_stride)
                    ADD(WQ, self.geo.w.block_stride)
            else:  # the first block initialises the accumulators
                block = self._vpopcnt_block if self.zmm else self._lut_block
                block(rows, cols, 0, accs, first=True)
                ADD(XQ, self.geo.x.block_stride)
                ADD(WQ, self.geo.w.block_stride)
                self._k_run(nblocks - 1, lambda u: block(rows, cols, u, accs))

        def zero_accs() -> None:
            if not csa:
                return
            for row in accs:
                for acc in row:
                    VPXOR(acc, acc, acc)

        zero_accs()
        for row in ones:
            for o in row:
                VPXOR(o, o, o)
        window = LUT_WINDOW * step_blocks if self.byte_counters else blocks
        if blocks <= window:
            run(blocks)
            self._to_dwords(accs, ones)
            return accs
        # Byte counters would overflow: widen each window into the scratch (dword lanes).
        u = s.k_unroll * step_blocks
        window = max(u, window // u * u)
        full, rest = divmod(blocks, window)
        tmp = self.temps[0]
        VPXOR(tmp, tmp, tmp)
        for i in range(rows * cols):
            VMOVDQA(self._scratch(i), tmp)
        if full:
            count = self.local["wcount"]
            MOV(count, full)
            top = self.label("window")
            LABEL(top)
            self._push_loop(top, full)
            zero_accs()
            run(window)
            self._widen_to_scratch(accs)
            DEC(count)
            JNZ(top)
            self._pop_loop()
        if rest:
            zero_accs()
            run(rest)
            self._widen_to_scratch(accs)
        # The CSA 'ones' state is counted once, at the end, from registers.
        self._to_dwords([], ones, count_only=True)
        for r, row in enumerate(accs):
            for c, acc in enumerate(row):
                VMOVDQA(acc, self._scratch(r * cols + c))
                if ones:
                    VPADDD(acc, acc, ones[r][c])
        return accs

    def _scratch(self, i: int) -> LocalVariable:
        return self.scratch[i]

    def _to_dwords(self, accs, ones, *, count_only: bool = False) -> None:
        """Turn accumulators into dword lanes (CSA: acc = 2*acc + popcount(ones))."""
        z, h = self.temps[0], self.temps[1]
        if self.zmm:  # qword lanes: qword_horizontal_sums takes them as they are
            return
        bits = self.s.acc_bits
        if bits in (8,) or ones:
            VPXOR(z, z, z)
        for row in accs:
            for acc in row:
                if bits == 8:
                    VPSADBW(acc, acc, z)
                elif bits == 16:
                    self._broadcast_dword(h, 0x00010001)
                    VPMADDWD(acc, acc, h)
                if ones:
                    VPADDD(acc, acc, acc)
        if not ones:
            return
        # popcount(ones) per dword lane, added with weight 1.
        for r, row in enumerate(ones):
            for c, o in enumerate(row):
                t, v = self.temps[1], self.temps[2]
                VPSRLW(v, o, 4)
                VPAND(t, o, self.mask)
                VPAND(v, v, self.mask)
                VPSHUFB(t, self.lut, t)
                VPSHUFB(v, self.lut, v)
                VPADDB(t, t, v)
                VPSADBW(o, t, z)
                if not count_only:
                    VPADDD(accs[r][c], accs[r][c], o)

    def _widen_to_scratch(self, accs) -> None:
        z = self.temps[0]
        VPXOR(z, z, z)
        cols = len(accs[0])
        for r, row in enumerate(accs):
            for c, acc in enumerate(row):
                VPSADBW(acc, acc, z)
                if self.s.popcount == "csa":
                    VPADDD(acc, acc, acc)
                VPADDD(acc, acc, self._scratch(r * cols + c))
                VMOVDQA(self._scratch(r * cols + c), acc)

    def _vector_reduce(self, rows: int, cols: int, accs, *, final: bool) -> None:
        """Horizontal sums of each accumulator, 4 columns per xmm; weight, add into y."""
        shift = self.temps[1].as_xmm
        if not final and self.pairs > 1:
            self._shift_amount()
            VMOVD(shift, TMP.as_dword)
        for r in range(rows):
            for g in range(0, cols, 4):
                n = min(4, cols - g)
                t = self.temps[0].as_xmm
                if self.qword_sums:
                    v = qword_horizontal_sums(accs[r][g : g + 4], self.temps[0], zmm=self.zmm)
                else:
                    v = horizontal_sums(accs[r][g : g + 4], t)
                addr = YT + 4 * (r * self.wl.n + g)
                if final:
                    self._transform_vector(v, r)
                else:
                    VPSLLD(v, v, shift)
                    load_partial(t, addr, n)
                    VPADDD(v, v, t)
                store_partial(v, addr, n)

    def _transform_vector(self, v, r: int) -> None:
        t = self.temps[2].as_xmm if len(self.temps) > 2 else self.temps[0].as_xmm
        if self.alpha == 1 and not self.beta and not self.gamma:
            return
        VPSLLD(v, v, 1)  # |alpha| == 2
        if self.beta:
            MOV(TMP, self.local["rs_row"])
            MOV(TMP.as_dword, [TMP + 4 * r])
            imul_const(TMP.as_dword, TMP.as_dword, -self.beta)
            VMOVD(t, TMP.as_dword)
            VPBROADCASTD(t, t)
            VPSUBD(v, v, t)
        if self.gamma:
            MOV(TMP.as_dword, self.gamma)
            VMOVD(t, TMP.as_dword)
            VPBROADCASTD(t, t)
            VPSUBD(v, t, v)

    def _zero_y(self, rows: int, cols: int) -> None:
        for r in range(rows):
            for c in range(cols):
                MOV(dword[YT + 4 * (r * self.wl.n + c)], 0)

    def _post_epilogue(self, rows: int, cols: int) -> None:
        """After all plane pairs: y = alpha*y + beta*rowsum + gamma, in place."""
        if not self.vector:
            for r in range(rows):
                for c in range(cols):
                    acc = SCALAR_ACCS[0]
                    MOV(acc.as_dword, dword[YT + 4 * (r * self.wl.n + c)])
                    self._transform_scalar(acc, r)
                    MOV(dword[YT + 4 * (r * self.wl.n + c)], acc.as_dword)
            return
        for r in range(rows):
            for g in range(0, cols, 4):
                n = min(4, cols - g)
                v = self.temps[1].as_xmm
                addr = YT + 4 * (r * self.wl.n + g)
                load_partial(v, addr, n)
                self._transform_vector(v, r)
                store_partial(v, addr, n)

    # -- scalar POPCNT strategy ------------------------------------------------------------------
    def _scalar_kloop(self, rows: int, cols: int) -> list[list[object]]:
        accs = [[SCALAR_ACCS[r * cols + c] for c in range(cols)] for r in range(rows)]
        for row in accs:
            for acc in row:
                XOR(acc.as_dword, acc.as_dword)
        t = SCALAR_TMP

        def body(u: int) -> None:
            for r in range(rows):
                for c in range(cols):
                    MOV(t, self._x_addr(r, u))
                    self.combine_gpr(t, self._w_addr(c, u))
                    POPCNT(t, t)
                    ADD(accs[r][c], t)

        self._whole_k(body)
        return accs

    def _whole_k(self, body: Callable[[int], None]) -> None:
        """Run ``body`` over every K block of the tile (a convolution walks its taps instead)."""
        self._k_run(self.geo.x.blocks, body)

    def _scalar_reduce(self, rows: int, cols: int, accs, *, final: bool) -> None:
        if not final:
            self._shift_amount()
        for r in range(rows):
            for c in range(cols):
                acc = accs[r][c]
                addr = dword[YT + 4 * (r * self.wl.n + c)]
                if final:
                    self._transform_scalar(acc, r)
                    MOV(addr, acc.as_dword)
                else:
                    SHLX(acc, acc, TMP)
                    ADD(addr, acc.as_dword)

    def _transform_scalar(self, acc, r: int) -> None:
        if self.alpha == 1 and not self.beta and not self.gamma:
            return
        SHL(acc.as_dword, 1)
        if self.beta:
            MOV(SCALAR_TMP, self.local["rs_row"])
            MOV(SCALAR_TMP.as_dword, [SCALAR_TMP + 4 * r])
            imul_const(SCALAR_TMP.as_dword, SCALAR_TMP.as_dword, -self.beta)
            SUB(acc.as_dword, SCALAR_TMP.as_dword)
        if self.gamma:
            NEG(acc.as_dword)
            ADD(acc.as_dword, self.gamma)


def emit_dense(workload: Dense, schedule: Schedule) -> tuple[Function, Function]:
    """PeachPy functions ``(pack, gemm)`` for ``workload`` under a checked ``schedule``."""
    pack = emit_pack(workload, schedule, "bitsearch_pack")
    gemm = GemmEmitter(workload, schedule).emit("bitsearch_gemm")
    return pack, gemm


__all__ = ["GemmEmitter", "emit_dense", "epilogue_constants"]
