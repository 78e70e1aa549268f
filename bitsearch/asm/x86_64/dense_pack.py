"""The activation packing function of the bit-serial dense operator on x86-64, and the byte
geometry of both packed operands (:class:`Geometry`, shared with the GEMM and the numpy side).

``pack(x, xp, rowsum, row_begin, row_end) -> uint32``
    Activation bit-packing for rows [row_begin, row_end): VPSLLW moves bit p of every byte to
    bit 7 and VPMOVMSKB gathers 32 of them per instruction. For ``unipolar`` it also writes
    rowsum[r] = sum_k x[r, k] (POPCNT of the packed words, shared by every output of the row).
    Returns the OR of all bytes read, so the caller can reject out-of-range values.
"""

from __future__ import annotations

from dataclasses import dataclass

from peachpy import Argument, const_uint8_t, int32_t, ptr, uint8_t, uint32_t, uint64_t
from peachpy.x86_64 import (
    ADD,
    CMP,
    DEC,
    INC,
    JAE,
    JMP,
    JNZ,
    LABEL,
    LOAD,
    MOV,
    POPCNT,
    SHL,
    SHR,
    VMOVD,
    VMOVDQU,
    VPAND,
    VPBROADCASTD,
    VPMOVMSKB,
    VPOR,
    VPSLLW,
    VPSRLW,
    VPXOR,
    XOR,
    Function,
    dword,
    r8,
    r9,
    r10,
    r11,
    r12,
    r13,
    rax,
    rcx,
    rdi,
    rdx,
    rsi,
    uarch,
    ymm0,
    ymm1,
    ymm14,
    ymm15,
)

from bitsearch.asm.x86_64.common import Labels, imul_const, label_name, return_or_of_bytes
from bitsearch.numerics.packing import PackedLayout
from bitsearch.records import LoopCount
from bitsearch.space.schedule import Schedule
from bitsearch.workloads import Dense


@dataclass(frozen=True)
class Geometry:
    """Byte offsets of the packed operands, derived once from workload and schedule."""

    x: PackedLayout
    w: PackedLayout
    x_row_stride: int  # bytes between rows of the raw uint8 activations (>= 32)

    @classmethod
    def of(cls, workload: Dense, schedule: Schedule) -> Geometry:
        bb = schedule.block_bits
        split = schedule.nibble_split
        return cls(
            x=PackedLayout(planes=workload.abits, k=workload.k, block_bits=bb, layout=schedule.layout,
                           nibble_split=split),
            w=PackedLayout(planes=workload.wbits, k=workload.k, block_bits=bb, layout=schedule.layout,
                           nibble_split=split),
            x_row_stride=max(workload.k, 32),
        )


def emit_pack(workload: Dense, schedule: Schedule, name: str) -> Function:
    """The PeachPy function ``pack`` (see the module docstring), named ``name``."""
    geo = Geometry.of(workload, schedule)
    lay = geo.x
    labels = Labels()
    src, dst, row, row_end, rs, racc = rsi, rdi, r8, r9, r10, r11
    v, t, orv = ymm0, ymm1, ymm15
    unipolar = workload.mode == "unipolar"
    k_pack = max(workload.k, 32)  # rows shorter than a chunk arrive zero-padded to 32 bytes
    bits = lay.block_bits
    chunks_per_block = bits // 32
    full_blocks, tail_bits = divmod(k_pack, bits)
    args = (
        Argument(ptr(const_uint8_t), name="x"),
        Argument(ptr(uint8_t), name="xp"),
        Argument(ptr(int32_t), name="rowsum"),
        Argument(uint64_t, name="row_begin"),
        Argument(uint64_t, name="row_end"),
    )
    split = lay.nibble_split
    mask = ymm14

    def split_block() -> None:
        """Rewrite the block just packed at [dst] as (low nibbles, high nibbles)."""
        for p in range(lay.planes):
            at = dst + p * lay.plane_stride
            VMOVDQU(v, [at])
            VPSRLW(t, v, 4)
            VPAND(v, v, mask)
            VPAND(t, t, mask)
            VMOVDQU([at], v)
            VMOVDQU([at + lay.block_bytes], t)

    with Function(name, args, uint32_t, target=uarch.zen) as fn:
        x_base, xp_base = r12, r13
        LOAD.ARGUMENT(x_base, args[0])
        LOAD.ARGUMENT(xp_base, args[1])
        LOAD.ARGUMENT(rs, args[2])
        LOAD.ARGUMENT(row_end, args[4])  # before row: row_end arrives in r8
        LOAD.ARGUMENT(row, args[3])
        VPXOR(orv, orv, orv)
        if split:
            MOV(rax.as_dword, 0x0F0F0F0F)
            VMOVD(mask.as_xmm, rax.as_dword)
            VPBROADCASTD(mask, mask.as_xmm)

        def chunk(src_disp: int, slot: int, tail: int = 0) -> None:
            VMOVDQU(v, [src + src_disp])
            VPOR(orv, orv, v)
            for p in range(lay.planes):
                if p == 7:
                    VPMOVMSKB(rax.as_dword, v)
                else:
                    VPSLLW(t, v, 7 - p)
                    VPMOVMSKB(rax.as_dword, t)
                if tail:
                    SHR(rax.as_dword, 32 - tail)
                MOV([dst + p * lay.plane_stride + 4 * slot], rax.as_dword)
                if unipolar:
                    POPCNT(rdx.as_dword, rax.as_dword)
                    if p:
                        SHL(rdx.as_dword, p)
                    ADD(racc, rdx)

        top, done = labels("pack_row"), labels("pack_done")
        LABEL(top)
        CMP(row, row_end)
        JAE(done)
        MOV(src, row)
        imul_const(src, src, geo.x_row_stride)
        ADD(src, x_base)
        MOV(dst, row)
        imul_const(dst, dst, lay.row_bytes)
        ADD(dst, xp_base)
        XOR(racc.as_dword, racc.as_dword)
        if full_blocks:
            MOV(rcx, full_blocks)
            blk = labels("pack_block")
            LABEL(blk)
            for slot in range(chunks_per_block):
                chunk(32 * slot, slot)
            if split:
                split_block()
            ADD(src, bits)  # one byte of x per element
            ADD(dst, lay.block_stride)
            DEC(rcx)
            JNZ(blk)
        if tail_bits:
            whole, tail = divmod(tail_bits, 32)
            for slot in range(whole):
                chunk(32 * slot, slot)
            if tail:
                chunk(tail_bits - 32, whole, tail)  # the 32 bytes that end the row
            for slot in range(whole + (1 if tail else 0), chunks_per_block):
                for p in range(lay.planes):
                    MOV(dword[dst + p * lay.plane_stride + 4 * slot], 0)
            if split:
                split_block()
        if unipolar:
            MOV([rs + row * 4], racc.as_dword)
        INC(row)
        JMP(top)
        LABEL(done)
        return_or_of_bytes(orv)
    # MachineCode.loops over rows [0, m): the row loop, and the block loop inside it.
    fn.bitsearch_loops = (LoopCount(label_name(top), workload.m),) + (
        (LoopCount(label_name(blk), workload.m * full_blocks),) if full_blocks else ())
    return fn


__all__ = ["Geometry", "emit_pack"]
