"""The register tile of the bit-serial dense GEMM on x86-64 (:class:`RegisterTile`, the base of
:class:`~bitsearch.asm.x86_64.dense.GemmEmitter`, whose loop nest and K loop run it): the register
allocation, and per popcount strategy the K-block body of one mr x nr tile, the reduction of its
accumulators into y and the epilogue y = alpha*S + beta*rowsum + gamma.

``lut``      VPSHUFB nibble look-up into counters of ``acc_bits`` per lane (8-bit counters are
             widened by VPSADBW every :data:`LUT_WINDOW` blocks, before they can overflow)
``csa``      Harley-Seal carry-save adder over pairs of blocks; the carries counted by look-up
``vpopcnt``  VPOPCNTQ on zmm (AVX-512 VPOPCNTDQ), 64-bit lanes
``scalar``   POPCNT on general registers, one accumulator per output
"""

from __future__ import annotations

from peachpy.x86_64 import (
    ADD,
    DEC,
    JNZ,
    LABEL,
    MOV,
    NEG,
    POPCNT,
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
    XOR,
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
)
from peachpy.x86_64.registers import YMMRegister, ZMMRegister

from bitsearch.asm.x86_64.common import (
    horizontal_sums,
    imul_const,
    load_partial,
    qword_horizontal_sums,
    store_partial,
)

LUT_WINDOW = 31  # byte counters gain at most 8 per block: 31 * 8 = 248 < 256
NIBBLE_POPCOUNT = bytes(bin(i).count("1") for i in range(16))

# Pointer registers live through the whole loop nest; everything rarer lives on the stack.
XT, WT, YT, XQ, WQ, KC = r8, r9, r10, r11, r12, r13  # tile and plane pointers, K counter
TMP = rax
SCALAR_ACCS = (rbx, rcx, rdx, rsi, rdi, r14)
SCALAR_TMP = r15


class RegisterTile:
    """The register-tile half of :class:`~bitsearch.asm.x86_64.dense.GemmEmitter`: it reads what
    that class's ``__init__`` and ``emit`` set and calls its K loop (``_k_run``, ``_whole_k``,
    ``_shift_amount``) and loop bookkeeping (``label``, ``_push_loop``, ``_pop_loop``)."""

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


__all__ = ["KC", "LUT_WINDOW", "TMP", "WQ", "WT", "XQ", "XT", "YT", "RegisterTile"]
