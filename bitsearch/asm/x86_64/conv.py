"""PeachPy emitters of the convolutions on x86-64 (bit-serial, and the int16 baseline).

A convolution call runs up to four position-independent functions, each over a row range so that
threads can split them (all share the 5/6-argument integer ABI of the dense kernels):

``pack(x, img, pixsum, prow_begin, prow_end) -> uint32``
    Rows [prow_begin, prow_end) of the *padded* image (batch*Hp rows of Wp pixels): border pixels
    are written as zeros, the others packed from x. Bit-serial: every pixel's ``cin`` channels
    become ``abits`` bit planes (VPSLLW + VPMOVMSKB, 32 channels per instruction) in the pixel
    layout, and ``pixsum`` (unipolar) gets the pixel's sum of x. int16: a copy. Returns the OR of
    every byte read (range check).
``gather(img, xp, pixsum, rowsum, pos_begin, pos_end)``
    im2col of packed words: output position p's kh*kw packed pixels (64-bit granules per plane)
    become GEMM row p in the GEMM's packed layout (unipolar: rowsum[p] = sum of the taps'
    pixsums). With the implicit lowering only the rowsums are gathered (unipolar only).
    int16: a copy of the taps' channels into zero-padded int16 rows.
``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    The dense bit-serial GEMM of :mod:`bitsearch.asm.x86_64.dense` (im2col), or its subclass in
    :mod:`bitsearch.asm.x86_64.conv_gemm` whose K loop walks the taps through offsets into the
    packed image (implicit; rows are then output rows b*out_h + oy), or the int16 GEMM of
    :mod:`bitsearch.asm.x86_64.intgemm`.
``fix(y, corr, cls, pos_begin, pos_end)``
    Bipolar only: padding is zero in the value domain, but a zero bit means -A there, so outputs
    whose window crosses the border get y[p] += corr[cls[p]]: A * sum over their padded taps of
    sum_c (2w - W), one row per border class, computed when the weights are packed.

Padded taps read zero pixels from the border of the image, so ``and`` and ``unipolar`` (where the
x-side rowsum excludes them too) need no correction.
"""

from __future__ import annotations

import numpy as np
from peachpy import Argument, const_int32_t, const_uint8_t, int32_t, ptr, uint8_t, uint32_t, uint64_t
from peachpy.x86_64 import (
    ADD,
    AND,
    CMP,
    DEC,
    DIV,
    INC,
    JAE,
    JB,
    JE,
    JMP,
    JNZ,
    LABEL,
    LOAD,
    MOV,
    POPCNT,
    RETURN,
    SHL,
    SHR,
    SUB,
    VMOVD,
    VMOVDQU,
    VMOVQ,
    VPADDD,
    VPAND,
    VPBROADCASTD,
    VPMOVMSKB,
    VPOR,
    VPSLLW,
    VPSRLW,
    VPXOR,
    XOR,
    Function,
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
    word,
    xmm0,
    ymm0,
    ymm1,
    ymm2,
    ymm14,
    ymm15,
)
from peachpy.x86_64.registers import YMMRegister

from bitsearch.asm.x86_64.common import (
    Labels,
    LoopCounts,
    imul_const,
    load_partial,
    return_or_of_bytes,
    store_partial,
)
from bitsearch.asm.x86_64.conv_gemm import Im2colGemm, ImplicitGemm
from bitsearch.asm.x86_64.conv_layout import ConvLayout, border_classes
from bitsearch.asm.x86_64.intgemm import IntGemmEmitter
from bitsearch.numerics.packing import PackedLayout
from bitsearch.space.conv_schedule import ConvSchedule, IntConvSchedule, int_gemm_view
from bitsearch.workloads import Conv2d, IntConv2d


# ---------------------------------------------------------------------------------------------
# Geometry: every layout and offset the emitters and the numpy side agree on
# ---------------------------------------------------------------------------------------------
def unit_offset(lay: PackedLayout, plane: int, bit: int) -> int:
    """Byte offset of K bit ``bit`` (a multiple of 32) of ``plane`` in a row packed as ``lay``."""
    block, within = divmod(bit, lay.block_bits)
    if lay.layout == "plane_major":
        return plane * lay.plane_stride + block * lay.unit_bytes + within // 8
    return block * lay.planes * lay.unit_bytes + plane * lay.unit_bytes + within // 8


# ---------------------------------------------------------------------------------------------
# Small emitting helpers
# ---------------------------------------------------------------------------------------------
def _zero_bytes(dst, nbytes: int, zero: YMMRegister, counter, labels: Labels, counts: LoopCounts) -> None:
    """Store ``nbytes`` (a multiple of 2) zero bytes at [dst], dst unchanged: a loop of 128-byte
    steps (through ``counter``, counting in rax) when long, then the rest unrolled."""
    big = nbytes // 128
    if big <= 2:
        _zero_static(dst, 0, nbytes, zero)
        return
    MOV(counter, dst)
    MOV(rax, big)
    top = labels("zero")
    LABEL(top)
    with counts.loop(top, big):
        for i in range(4):
            VMOVDQU([counter + 32 * i], zero)
        ADD(counter, 128)
        DEC(rax)
        JNZ(top)
    _zero_static(counter, 0, nbytes - 128 * big, zero)


def _zero_static(base, offset: int, nbytes: int, zero: YMMRegister) -> None:
    at = offset
    end = offset + nbytes
    while end - at >= 32:
        VMOVDQU([base + at], zero)
        at += 32
    while end - at >= 8:
        VMOVQ([base + at], zero.as_xmm)
        at += 8
    while end - at >= 4:
        VMOVD([base + at], zero.as_xmm)
        at += 4
    while end - at >= 2:
        XOR(rax.as_dword, rax.as_dword)
        MOV(word[base + at], rax.as_word)
        at += 2


def _copy_static(src, src_off: int, dst, dst_off: int, nbytes: int, v: YMMRegister, orv=None) -> None:
    """Copy ``nbytes`` (a multiple of 2) from [src + src_off] to [dst + dst_off] (int16 data)."""
    at = 0
    while nbytes - at >= 32:
        VMOVDQU(v, [src + src_off + at])
        if orv is not None:
            VPOR(orv, orv, v)
        VMOVDQU([dst + dst_off + at], v)
        at += 32
    for size, load, store in ((16, VMOVDQU, VMOVDQU), (8, VMOVQ, VMOVQ), (4, VMOVD, VMOVD)):
        while nbytes - at >= size:
            load(v.as_xmm, [src + src_off + at])
            store([dst + dst_off + at], v.as_xmm)
            at += size
    while nbytes - at >= 2:
        MOV(rax.as_word, word[src + src_off + at])
        MOV(word[dst + dst_off + at], rax.as_word)
        at += 2


def _divmod_row(value_reg, divisor: int, quotient, remainder) -> None:
    """quotient, remainder = divmod(value_reg, divisor) (clobbers rax, rdx)."""
    MOV(rax, value_reg)
    XOR(rdx.as_dword, rdx.as_dword)
    MOV(remainder, divisor)
    DIV(remainder)
    MOV(quotient, rax)
    MOV(remainder, rdx)


# ---------------------------------------------------------------------------------------------
# pack: padded image rows
# ---------------------------------------------------------------------------------------------
def emit_pack(lay: ConvLayout, name: str = "bitsearch_conv_pack") -> Function:
    """The padded-image function ``pack`` (see the module docstring)."""
    conv = lay.conv
    pt, _, pl, pr = conv.pads
    labels = Labels("cp")
    counts = LoopCounts()  # MachineCode.loops over the image rows [0, batch*Hp)
    bit = lay.pix is not None
    unipolar = bit and conv.mode == "unipolar"
    row_px = lay.wp * lay.pix_bytes
    in_row_bytes = conv.w * conv.cin * (1 if bit else 2)
    args = (
        Argument(ptr(const_uint8_t), name="x"),
        Argument(ptr(uint8_t), name="img"),
        Argument(ptr(int32_t), name="pixsum"),
        Argument(uint64_t, name="prow_begin"),
        Argument(uint64_t, name="prow_end"),
    )
    x_base, img, ps_base, row, row_end = r12, r13, r14, r15, rbx
    b, py, src, dst, ps = r8, r9, r10, r11, rsi
    racc = rdi
    zero, v, t, orv, nmask = ymm0, ymm1, ymm2, ymm15, ymm14
    with Function(name, args, uint32_t, target=uarch.zen) as fn:
        LOAD.ARGUMENT(x_base, args[0])
        LOAD.ARGUMENT(img, args[1])
        LOAD.ARGUMENT(ps_base, args[2])
        LOAD.ARGUMENT(row_end, args[4])
        LOAD.ARGUMENT(row, args[3])
        if lay.lead:
            ADD(x_base, lay.lead)
        VPXOR(zero, zero, zero)
        VPXOR(orv, orv, orv)
        if bit and lay.pix.nibble_split:
            MOV(rax.as_dword, 0x0F0F0F0F)
            VMOVD(nmask.as_xmm, rax.as_dword)
            VPBROADCASTD(nmask, nmask.as_xmm)
        _divmod_row(row, lay.hp, b, py)
        top, done, border, next_row = labels("row"), labels("done"), labels("border"), labels("next")
        # Of the batch*Hp image rows, batch*H hold x; the others are border (zero) rows.
        x_rows, border_rows = conv.batch * conv.h, lay.image_rows - conv.batch * conv.h
        LABEL(top)
        with counts.loop(top, lay.image_rows):
            CMP(row, row_end)
            JAE(done)
            MOV(dst, row)
            imul_const(dst, dst, row_px)
            ADD(dst, img)
            if unipolar:
                MOV(ps, row)
                imul_const(ps, ps, 4 * lay.wp)
                ADD(ps, ps_base)
            CMP(py, pt)
            JB(border)
            CMP(py, pt + conv.h)
            JAE(border)
            with counts.running(x_rows):
                # An image row: src = x + ((b*H + py - pt) * W * cin) elements.
                MOV(src, b)
                imul_const(src, src, conv.h)
                ADD(src, py)
                if pt:
                    SUB(src, pt)
                imul_const(src, src, in_row_bytes)
                ADD(src, x_base)
                if pl:
                    _zero_bytes(dst, pl * lay.pix_bytes, zero, rcx, labels, counts)
                    ADD(dst, pl * lay.pix_bytes)
                    if unipolar:
                        _zero_static(ps, 0, 4 * pl, zero)
                        ADD(ps, 4 * pl)
                if bit:
                    _pack_pixels(lay, src, dst, ps, racc, v, t, orv, nmask, labels, counts)
                else:
                    _copy_row(src, dst, in_row_bytes, v, orv, labels, counts)
                if pr:
                    _zero_bytes(dst, pr * lay.pix_bytes, zero, rcx, labels, counts)
                    if unipolar:
                        _zero_static(ps, 0, 4 * pr, zero)
                JMP(next_row)
            LABEL(border)
            with counts.running(border_rows):
                _zero_bytes(dst, row_px, zero, rcx, labels, counts)
                if unipolar:
                    _zero_bytes(ps, 4 * lay.wp, zero, rcx, labels, counts)
            LABEL(next_row)
            INC(row)
            INC(py)
            CMP(py, lay.hp)
            skip = labels("same_image")
            JB(skip)
            XOR(py.as_dword, py.as_dword)
            INC(b)
            LABEL(skip)
            JMP(top)
        LABEL(done)
        return_or_of_bytes(orv)
    return counts.attach(fn)


def _copy_row(src, dst, nbytes: int, v: YMMRegister, orv: YMMRegister, labels: Labels,
              counts: LoopCounts) -> None:
    """int16: copy one image row (W*cin*2 contiguous bytes); advances dst past it."""
    chunks, rest = divmod(nbytes, 128)
    if chunks:
        MOV(rcx, chunks)
        top = labels("copy")
        LABEL(top)
        with counts.loop(top, chunks):
            _copy_static(src, 0, dst, 0, 128, v, orv)
            ADD(src, 128)
            ADD(dst, 128)
            DEC(rcx)
            JNZ(top)
    _copy_static(src, 0, dst, 0, rest, v, orv)
    if rest:
        ADD(dst, rest)


def _pack_pixels(lay: ConvLayout, src, dst, ps, racc, v, t, orv, nmask, labels: Labels,
                 counts: LoopCounts) -> None:
    """Bit-pack W pixels from [src] (cin bytes each) to [dst] (pix_bytes each); advances both."""
    conv, pix = lay.conv, lay.pix
    unipolar = conv.mode == "unipolar"
    split = pix.nibble_split
    half = pix.block_bytes
    full, tail = divmod(conv.cin, 32)
    chunks = full + (1 if tail else 0)
    padded_chunks = pix.blocks * pix.block_bits // 32
    MOV(rcx, conv.w)
    top = labels("pixel")
    LABEL(top)
    with counts.loop(top, conv.w):
        if unipolar:
            XOR(racc.as_dword, racc.as_dword)
        for c in range(chunks):
            is_tail = tail and c == full
            VMOVDQU(v, [src + (conv.cin - 32 if is_tail else 32 * c)])
            VPOR(orv, orv, v)
            for p in range(pix.planes):
                if p == 7:
                    VPMOVMSKB(rax.as_dword, v)
                else:
                    VPSLLW(t, v, 7 - p)
                    VPMOVMSKB(rax.as_dword, t)
                if is_tail:
                    SHR(rax.as_dword, 32 - tail)
                off = unit_offset(pix, p, 32 * c)
                if unipolar:
                    POPCNT(rdx.as_dword, rax.as_dword)
                    if p:
                        SHL(rdx.as_dword, p)
                    ADD(racc.as_dword, rdx.as_dword)
                if split:
                    MOV(rdx.as_dword, rax.as_dword)
                    AND(rax.as_dword, 0x0F0F0F0F)
                    SHR(rdx.as_dword, 4)
                    AND(rdx.as_dword, 0x0F0F0F0F)
                    MOV([dst + off], rax.as_dword)
                    MOV([dst + off + half], rdx.as_dword)
                else:
                    MOV([dst + off], rax.as_dword)
        for c in range(chunks, padded_chunks):
            for p in range(pix.planes):
                off = unit_offset(pix, p, 32 * c)
                MOV(rax.as_dword, 0)
                MOV([dst + off], rax.as_dword)
                if split:
                    MOV([dst + off + half], rax.as_dword)
        if unipolar:
            MOV([ps], racc.as_dword)
            ADD(ps, 4)
        ADD(src, conv.cin)
        ADD(dst, lay.pix_bytes)
        DEC(rcx)
        JNZ(top)


# ---------------------------------------------------------------------------------------------
# gather: im2col of packed words (or of int16 channels), rowsums
# ---------------------------------------------------------------------------------------------
def emit_gather(lay: ConvLayout, *, copy: bool = True, name: str = "bitsearch_conv_gather") -> Function:
    """The function ``gather`` (see the module docstring); ``copy=False`` gathers rowsums only."""
    conv = lay.conv
    sh, sw = conv.strides
    labels = Labels("cg")
    counts = LoopCounts()  # MachineCode.loops over positions [0, batch*out_h*out_w)
    bit = lay.pix is not None
    sums = bit and conv.mode == "unipolar"
    args = (
        Argument(ptr(const_uint8_t), name="img"),
        Argument(ptr(uint8_t), name="xp"),
        Argument(ptr(const_int32_t), name="pixsum"),
        Argument(ptr(int32_t), name="rowsum"),
        Argument(uint64_t, name="pos_begin"),
        Argument(uint64_t, name="pos_end"),
    )
    img, xp_base, ps_base, rs_base, pos, pos_end = r12, r13, r14, r15, rbx, rdi
    b, oy, ox, src, dst, psrc = r8, r9, r10, r11, rsi, rcx
    v, mask = ymm1, ymm14
    with Function(name, args, None, target=uarch.zen) as fn:
        LOAD.ARGUMENT(img, args[0])
        LOAD.ARGUMENT(xp_base, args[1])
        LOAD.ARGUMENT(ps_base, args[2])
        LOAD.ARGUMENT(rs_base, args[3])
        LOAD.ARGUMENT(pos, args[4])
        LOAD.ARGUMENT(pos_end, args[5])
        if bit and copy and lay.gemm_x.nibble_split:
            MOV(rax.as_dword, 0x0F0F0F0F)
            VMOVD(mask.as_xmm, rax.as_dword)
            VPBROADCASTD(mask, mask.as_xmm)
        if copy and not bit:
            VPXOR(ymm0, ymm0, ymm0)
        # (b, oy, ox) of the first position; then the window's top-left pixel.
        _divmod_row(pos, conv.out_w, oy, ox)
        _divmod_row(oy, conv.out_h, b, oy)
        top, done, origin = labels("pos"), labels("done"), labels("origin")
        LABEL(origin)
        # One output row of positions per iteration (the exit check sits in the row's first one).
        with counts.loop(origin, conv.batch * conv.out_h):
            # pixel index = (b*Hp + oy*sh) * Wp + ox*sw
            MOV(src, b)
            imul_const(src, src, lay.hp)
            MOV(rax, oy)
            imul_const(rax, rax, sh)
            ADD(src, rax)
            imul_const(src, src, lay.wp)
            MOV(rax, ox)
            imul_const(rax, rax, sw)
            ADD(src, rax)
            if sums:
                MOV(psrc, src)
                SHL(psrc, 2)
                ADD(psrc, ps_base)
            imul_const(src, src, lay.pix_bytes)
            ADD(src, img)
            LABEL(top)
            with counts.loop(top, conv.out_w):
                CMP(pos, pos_end)
                JAE(done)
                if copy:
                    MOV(dst, pos)
                    imul_const(dst, dst, lay.x_row_bytes)
                    ADD(dst, xp_base)
                    if bit:
                        _gather_bits(lay, src, dst, v, mask)
                    else:
                        _gather_int(lay, src, dst, v)
                if sums:
                    MOV(rax.as_dword, [psrc])
                    for dy, dx in lay.taps[1:]:
                        ADD(rax.as_dword, [psrc + lay.tap_offset(dy, dx, 4)])
                    MOV([rs_base + pos * 4], rax.as_dword)
                INC(pos)
                INC(ox)
                ADD(src, sw * lay.pix_bytes)
                if sums:
                    ADD(psrc, sw * 4)
                CMP(ox, conv.out_w)
                JB(top)
            XOR(ox.as_dword, ox.as_dword)
            INC(oy)
            CMP(oy, conv.out_h)
            JB(origin)
            XOR(oy.as_dword, oy.as_dword)
            INC(b)
            JMP(origin)
        LABEL(done)
        RETURN()
    return counts.attach(fn)


def _gather_bits(lay: ConvLayout, src, dst, v: YMMRegister, mask: YMMRegister) -> None:
    """One GEMM row from the taps' packed pixels: qword moves, merged into 32-byte moves where
    four consecutive qwords stay consecutive (plane-major without nibble split)."""
    conv, pix, gx = lay.conv, lay.pix, lay.gemm_x
    qc = pix.blocks  # 64-bit granules per tap and plane
    split = gx.nibble_split
    half = gx.block_bytes
    moves = []  # (src offset, dst offset) per qword
    for t, (dy, dx) in enumerate(lay.taps):
        for p in range(pix.planes):
            for j in range(qc):
                s_off = lay.tap_offset(dy, dx, lay.pix_bytes) + p * pix.plane_stride + 8 * j
                moves.append((s_off, unit_offset(gx, p, 64 * (t * qc + j))))
    tail = [unit_offset(gx, p, 64 * g) for p in range(gx.planes)
            for g in range(conv.taps * qc, gx.blocks * gx.block_bits // 64)]
    moves.sort(key=lambda m: m[1])
    i = 0
    while i < len(moves):
        run = moves[i : i + 4]
        wide = len(run) == 4 and all(run[k][0] == run[0][0] + 8 * k and run[k][1] == run[0][1] + 8 * k
                                     for k in range(4))
        if split:  # the 32 bytes must stay within one block's low-nibble half
            wide = wide and run[0][1] % gx.unit_bytes + 32 <= gx.block_bytes
        reg = v if wide else v.as_xmm
        load = VMOVDQU if wide else VMOVQ
        load(reg, [src + run[0][0]])
        if split:
            other = (ymm2 if wide else ymm2.as_xmm)
            VPSRLW(other, reg, 4)
            VPAND(reg, reg, mask if wide else mask.as_xmm)
            VPAND(other, other, mask if wide else mask.as_xmm)
            load([dst + run[0][1] + half], other)
        load([dst + run[0][1]], reg)
        i += 4 if wide else 1
    if tail:
        VPXOR(xmm0, xmm0, xmm0)
        for off in tail:
            VMOVQ([dst + off], xmm0)
            if split:
                VMOVQ([dst + off + half], xmm0)


def _gather_int(lay: ConvLayout, src, dst, v: YMMRegister) -> None:
    conv = lay.conv
    tap_bytes = 2 * conv.cin
    for t, (dy, dx) in enumerate(lay.taps):
        _copy_static(src, lay.tap_offset(dy, dx, lay.pix_bytes), dst, t * tap_bytes, tap_bytes, v)
    used = conv.taps * tap_bytes
    if lay.x_row_bytes > used:
        _zero_static(dst, used, lay.x_row_bytes - used, ymm0)


# ---------------------------------------------------------------------------------------------
# fix: bipolar border correction
# ---------------------------------------------------------------------------------------------
def emit_fix(conv: Conv2d, name: str = "bitsearch_conv_fix") -> Function:
    """y[p, :] += corr[cls[p], :] for positions p with cls[p] != 0."""
    labels = Labels("cf")
    counts = LoopCounts()  # MachineCode.loops over positions [0, batch*out_h*out_w)
    border = int(np.count_nonzero(border_classes(conv)[0]))  # positions whose window crosses the border
    n = conv.cout
    args = (
        Argument(ptr(int32_t), name="y"),
        Argument(ptr(const_int32_t), name="corr"),
        Argument(ptr(const_int32_t), name="cls"),
        Argument(uint64_t, name="pos_begin"),
        Argument(uint64_t, name="pos_end"),
    )
    y, corr, cls, pos, pos_end, c, dst, cnt = r9, r10, r11, r12, rbx, rax, rdi, rcx
    with Function(name, args, None, target=uarch.zen) as fn:
        LOAD.ARGUMENT(pos_end, args[4])  # r8 first: nothing below writes it, but be explicit
        LOAD.ARGUMENT(y, args[0])
        LOAD.ARGUMENT(corr, args[1])
        LOAD.ARGUMENT(cls, args[2])
        LOAD.ARGUMENT(pos, args[3])
        top, done, skip = labels("pos"), labels("done"), labels("skip")
        LABEL(top)
        with counts.loop(top, conv.gemm_m):
            CMP(pos, pos_end)
            JAE(done)
            MOV(c.as_dword, [cls + pos * 4])
            CMP(c.as_dword, 0)
            JE(skip)
            imul_const(c, c, 4 * n)
            ADD(c, corr)
            MOV(dst, pos)
            imul_const(dst, dst, 4 * n)
            ADD(dst, y)
            full, rest = divmod(n, 8)
            if full:
                MOV(cnt, full)
                loop = labels("vec")
                LABEL(loop)
                with counts.running(border), counts.loop(loop, full):
                    VMOVDQU(ymm0, [dst])
                    VPADDD(ymm0, ymm0, [c])
                    VMOVDQU([dst], ymm0)
                    ADD(dst, 32)
                    ADD(c, 32)
                    DEC(cnt)
                    JNZ(loop)
            at = 0
            while rest - at > 0:
                k = min(4, rest - at)
                load_partial(xmm0, dst + 4 * at, k)
                load_partial(ymm1.as_xmm, c + 4 * at, k)
                VPADDD(xmm0, xmm0, ymm1.as_xmm)
                store_partial(xmm0, dst + 4 * at, k)
                at += k
            LABEL(skip)
            INC(pos)
            JMP(top)
        LABEL(done)
        RETURN()
    return counts.attach(fn)


def emit_int_conv(conv: IntConv2d, schedule: IntConvSchedule) -> dict[str, Function]:
    """PeachPy functions of a checked int16 schedule, in call order: ``pack`` (a copy into the
    image), ``gather`` (im2col into int16 rows) and the int16 ``gemm``."""
    lay = ConvLayout.of_int(conv, schedule)
    lay.check_displacements()
    return {"pack": emit_pack(lay), "gather": emit_gather(lay),
            "gemm": IntGemmEmitter(int_gemm_view(conv), schedule).emit("bitsearch_conv_gemm")}


def emit_conv(conv: Conv2d, schedule: ConvSchedule) -> dict[str, Function]:
    """PeachPy functions of a checked bit-serial schedule: ``pack``, then ``gather`` (im2col, or
    implicit unipolar rowsums), ``gemm``, and ``fix`` (bipolar with padding), in call order."""
    lay = ConvLayout.of(conv, schedule)
    lay.check_displacements()
    out = {"pack": emit_pack(lay)}
    if schedule.lowering == "im2col":
        out["gather"] = emit_gather(lay)
        out["gemm"] = Im2colGemm(conv, schedule).emit("bitsearch_conv_gemm")
    else:
        if conv.mode == "unipolar":
            out["gather"] = emit_gather(lay, copy=False)
        out["gemm"] = ImplicitGemm(conv, schedule, lay).emit("bitsearch_conv_gemm")
    if conv.mode == "bipolar" and any(conv.pads):
        out["fix"] = emit_fix(conv)
    return out


__all__ = ["emit_conv", "emit_fix", "emit_gather", "emit_int_conv", "emit_pack"]
