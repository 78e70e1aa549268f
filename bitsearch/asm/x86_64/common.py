"""PeachPy helpers every x86-64 emitter shares, and workarounds for PeachPy's quirks."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

from peachpy import Argument, const_int32_t, const_uint8_t, ptr, uint64_t
from peachpy.x86_64 import (
    AND,
    IMUL,
    MOV,
    OR,
    RETURN,
    SHR,
    VEXTRACTI64X4,
    VEXTRACTI128,
    VMOVD,
    VMOVDQU,
    VMOVQ,
    VPADDD,
    VPADDQ,
    VPEXTRD,
    VPHADDD,
    VPINSRD,
    VPOR,
    VPORQ,
    VPSHUFD,
    VPSLLQ,
    VPUNPCKHQDQ,
    VPUNPCKLQDQ,
    Label,
    isa,
    rax,
    rdx,
    uarch,
    xmm0,
    xmm1,
)
from peachpy.x86_64.registers import YMMRegister, ZMMRegister

from bitsearch.records import LoopCount

# AVX-512 with VPOPCNTDQ (Ice Lake, Zen 4): PeachPy has the instructions but no such
# microarchitecture, and its listings cannot print zmm registers; both are filled in here.
ZEN4 = uarch.Microarchitecture(
    "Zen 4", (*uarch.zen.extensions, isa.avx512f, isa.avx512bw, isa.avx512dq, isa.avx512vl,
              isa.avx512vpopcntdq), alu_width=256, fpu_width=256, load_with=256, store_width=256)
if not hasattr(ZMMRegister, "format"):
    ZMMRegister.format = lambda self, assembly_format: ("%" if assembly_format == "gas" else "") + str(self)


def imul_const(dst, src, value: int) -> None:
    """dst = src * value. PeachPy encodes IMUL r, r, imm with 128 <= imm <= 255 as a sign-extended
    imm8 (so 128 becomes -128); multiply by 2*value and shift back instead."""
    if 128 <= value <= 255:
        IMUL(dst, src, 2 * value)
        SHR(dst, 1)
    else:
        IMUL(dst, src, value)


class Labels:
    """Unique label names (PeachPy's anonymous labels inspect the call stack: slow)."""

    def __init__(self, prefix: str = "L") -> None:
        self._count = itertools.count()
        self._prefix = prefix

    def __call__(self, hint: str) -> Label:
        return Label(f"{self._prefix}_{hint}_{next(self._count)}")


def label_name(label: Label) -> str:
    """A PeachPy label's name as its listing comment spells it."""
    return ".".join(str(part) for part in label.name)


class LoopCounts:
    """The loop execution counts of one function while it is emitted (``MachineCode.loops``).

    ``runs`` is how often the code being emitted now runs in one full call of the function (every
    row/position of the problem): 1 at the top. ``loop(label, trips)`` wraps the emission of a
    loop headed by ``label`` whose body runs ``trips`` times per run of the code around it;
    ``running(runs)`` wraps code that runs ``runs`` times per call in all (a path taken by some
    iterations only). :meth:`attach` stores the counts on the PeachPy function, where
    ``encode()`` reads them.

    Example:
        >>> counts = LoopCounts()
        >>> with counts.loop(Label("row"), 10):
        ...     with counts.loop(Label("k"), 3):
        ...         pass
        >>> [(c.label, c.executions) for c in counts.loops]
        [('row', 10), ('k', 30)]
    """

    def __init__(self) -> None:
        self.loops: list[LoopCount] = []
        self.runs = 1

    @contextlib.contextmanager
    def running(self, runs: int) -> Iterator[None]:
        outer, self.runs = self.runs, int(runs)
        try:
            yield
        finally:
            self.runs = outer

    @contextlib.contextmanager
    def loop(self, label: Label, trips: int) -> Iterator[None]:
        executions = self.runs * int(trips)
        self.loops.append(LoopCount(label_name(label), executions))
        with self.running(executions):
            yield

    def attach(self, function: object) -> object:
        function.bitsearch_loops = tuple(self.loops)  # read by encode() into MachineCode.loops
        return function


def load_partial(reg, addr, n: int) -> None:
    """The low ``n`` (1..4) dwords of an xmm from memory, reading no byte past them."""
    if n == 4:
        VMOVDQU(reg, [addr])
    elif n == 1:
        VMOVD(reg, [addr])
    else:
        VMOVQ(reg, [addr])
        if n == 3:
            VPINSRD(reg, reg, [addr + 8], 2)


def store_partial(reg, addr, n: int) -> None:
    """Store the low ``n`` (1..4) dwords of an xmm, writing no byte past them."""
    if n == 4:
        VMOVDQU([addr], reg)
    elif n == 1:
        VMOVD([addr], reg)
    else:
        VMOVQ([addr], reg)
        if n == 3:
            VPEXTRD([addr + 8], reg, 2)


def return_or_of_bytes(acc: YMMRegister) -> None:
    """Return (in eax) the OR of the 32 bytes of ``acc``: what the packing code read, so the
    caller can reject out-of-range values. Clobbers xmm0, xmm1, rdx."""
    VEXTRACTI128(xmm1, acc, 1)
    VPOR(xmm0, xmm1, acc.as_xmm)
    VPSHUFD(xmm1, xmm0, 0b1110)
    VPOR(xmm0, xmm0, xmm1)
    VPSHUFD(xmm1, xmm0, 0b0001)
    VPOR(xmm0, xmm0, xmm1)
    VMOVD(rax.as_dword, xmm0)
    MOV(rdx.as_dword, rax.as_dword)
    SHR(rdx.as_dword, 16)
    OR(rax.as_dword, rdx.as_dword)
    MOV(rdx.as_dword, rax.as_dword)
    SHR(rdx.as_dword, 8)
    OR(rax.as_dword, rdx.as_dword)
    AND(rax.as_dword, 0xFF)
    RETURN(rax.as_dword)


def horizontal_sums(accs: list[YMMRegister], t) -> object:
    """The sums of the 8 dword lanes of each of up to 4 accumulators, as the low ``len(accs)``
    dwords of the returned xmm (``accs[0]``'s): VPHADDD within 128-bit lanes, then the halves.
    Clobbers ``accs`` and the xmm ``t``."""
    a = accs
    if len(a) >= 3:
        VPHADDD(a[0], a[0], a[1])
        VPHADDD(a[2], a[2], a[3] if len(a) == 4 else a[2])
        VPHADDD(a[0], a[0], a[2])
    else:
        VPHADDD(a[0], a[0], a[1] if len(a) == 2 else a[0])
        VPHADDD(a[0], a[0], a[0])
    VEXTRACTI128(t, a[0], 1)
    VPADDD(a[0].as_xmm, a[0].as_xmm, t)
    return a[0].as_xmm


def qword_horizontal_sums(accs: list[YMMRegister], t: YMMRegister, *, zmm: bool = False) -> object:
    """Like :func:`horizontal_sums` for up to 4 accumulators of qword lanes (ymm, or zmm when
    ``zmm``) whose values are below 2^32: pairs of outputs are summed lane-wise after
    interleaving (VPUNPCK*QDQ), two pairs share one register as the low and high dwords of each
    qword, and only then is the vector folded down to 128 bits -- no VPHADDD, which is slow, and
    one fold for 4 outputs. Clobbers ``accs`` and ``t`` (named by their ymm views)."""
    regs = [ZMMRegister(a.physical_id) for a in accs] if zmm else list(accs)
    tr = ZMMRegister(t.physical_id) if zmm else t
    n = len(regs)
    # s01: per 128-bit lane [a0 q_even+q_odd, a1 q_even+q_odd] (a lone a0 pairs with itself)
    a1 = regs[1] if n >= 2 else regs[0]
    VPUNPCKHQDQ(tr, regs[0], a1)
    VPUNPCKLQDQ(regs[0], regs[0], a1)
    VPADDQ(regs[0], regs[0], tr)
    if n >= 3:  # s23 likewise, shifted into the high dwords of s01's qwords
        a3 = regs[3] if n == 4 else regs[2]
        VPUNPCKHQDQ(tr, regs[2], a3)
        VPUNPCKLQDQ(regs[2], regs[2], a3)
        VPADDQ(regs[2], regs[2], tr)
        VPSLLQ(regs[2], regs[2], 32)
        (VPORQ if zmm else VPOR)(regs[0], regs[0], regs[2])
    if zmm:
        VEXTRACTI64X4(t, regs[0], 1)
        VPADDD(accs[0], accs[0], t)
    VEXTRACTI128(t.as_xmm, accs[0], 1)
    v = accs[0].as_xmm
    VPADDD(v, v, t.as_xmm)
    if n >= 3:  # dwords [s0, s2, s1, s3] -> [s0, s1, s2, s3]
        VPSHUFD(v, v, 0b11_01_10_00)
    else:  # [s0, 0, s1, 0] -> [s0, s1, ...]
        VPSHUFD(v, v, 0b00_00_10_00)
    return v


def gemm_arguments(y_type: object) -> tuple:
    """The PeachPy arguments of every GEMM function: the C signature ``gemm`` of asm/kernel.py,
    ``(xp, wp, y, rowsum, row_begin, row_end)``, with ``y`` pointing at ``y_type``."""
    return (
        Argument(ptr(const_uint8_t), name="xp"),
        Argument(ptr(const_uint8_t), name="wp"),
        Argument(ptr(y_type), name="y"),
        Argument(ptr(const_int32_t), name="rowsum"),
        Argument(uint64_t, name="row_begin"),
        Argument(uint64_t, name="row_end"),
    )
