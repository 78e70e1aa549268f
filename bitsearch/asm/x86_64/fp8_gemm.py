"""PeachPy emitters of the FP8 GEMM on x86-64 AVX2 + FMA + F16C: the activation packer and the
GEMM. For ``x86_64-avx512`` the GEMM runs on zmm vectors of 16 lanes (same 16 registers, half the
instructions; decoding 16 values at once). Layouts: :mod:`bitsearch.asm.x86_64.fp8_layout`; the
fp32 -> FP8 quantize kernel: :mod:`bitsearch.asm.x86_64.fp8_quantize`.

FP8 -> FP32 decoding (exact), on 16-bit words ``w = byte << 8`` (VPUNPCKLBW with a zero):

* E5M2 is the upper byte of an IEEE half: ``w`` *is* the fp16, VCVTPH2PS decodes it, including
  subnormals, infinities and NaN.
* E4M3 (``float8_e4m3fn``: bias 7, no infinities, NaN = S.1111.111): ``VPSRAW w, 1`` moves
  exponent and mantissa to the fp16 positions (bits 13..7) and keeps the sign in bit 15; clearing
  bit 14 (a copy of the sign) gives the fp16 ``2**-8 * value`` -- normals and subnormals alike,
  since an E4M3 subnormal (exponent field 0) lands on an fp16 subnormal of the same mantissa. The
  NaN codes would become the finite 1.875: the activation packer detects them (``w + w ==
  0xFE00``) and ORs them to 0xFFFF (an fp16 NaN); weight panels decoded in the GEMM instead carry a
  per-column NaN mask added to the accumulators (3 instructions fewer in the inner loop). The
  factor 2**-8 is undone where it is exact: activations are multiplied by 256 while packing;
  weights decoded in the GEMM keep it and the accumulators are multiplied by 256 before they are
  stored (a power-of-two scale is exact: no partial sum ever gets near the FP32 subnormal or
  overflow range, see :class:`~bitsearch.workloads.Fp8Dense`). Pairs of E4M3 weight vectors are
  decoded from one ymm of words (VPMOVSXBW, << 7, clear bit 14).

GEMM, two position-independent functions with the signatures of the other dense kernels (so
:class:`~bitsearch.asm.x86_64.fp8_kernel.Fp8Kernel` runs, threads, times and exports them alike):

``pack(x, xp, rowsum, row_begin, row_end) -> 0``
    Decodes FP8 rows [row_begin, row_end) of x (zero-padded to ``16*ceil(k/16)`` bytes) into FP32
    rows of xp. ``rowsum`` is not touched.
``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    y = a @ b.T for those rows, FP32 FMA accumulation; weights in the column panels of
    :class:`~bitsearch.asm.x86_64.fp8_layout.Fp8PanelLayout` (FP8 bytes or FP32 values, see
    :class:`~bitsearch.space.Fp8Schedule`).

Both declare how often each loop body runs over rows [0, m) (``MachineCode.loops``, for the
static cost model :mod:`bitsearch.cost.mca`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from peachpy import Argument, const_uint8_t, float_, int32_t, ptr, uint32_t, uint64_t
from peachpy.x86_64 import (
    ADD,
    CMP,
    DEC,
    JA,
    JAE,
    JMP,
    JNZ,
    LABEL,
    LEA,
    LOAD,
    MOV,
    RETURN,
    SHL,
    VADDPS,
    VBROADCASTSS,
    VCVTPH2PS,
    VEXTRACTF64X4,
    VEXTRACTF128,
    VFMADD231PS,
    VMOVAPS,
    VMOVD,
    VMOVDQU,
    VMOVUPS,
    VMULPS,
    VPADDW,
    VPAND,
    VPBROADCASTD,
    VPCMPEQW,
    VPOR,
    VPSRAW,
    VPUNPCKHBW,
    VPUNPCKLBW,
    VPXOR,
    Function,
    Label,
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
)
from peachpy.x86_64.registers import YMMRegister, ZMMRegister

from bitsearch.asm.x86_64.common import (
    ZEN4,
    Labels,
    gemm_arguments,
    imul_const,
    label_name,
    load_partial,
    store_partial,
)
from bitsearch.asm.x86_64.fp8_layout import A_GRANULE, IMM32, Fp8Geometry, Fp8RowLayout, vector_lanes
from bitsearch.records import LoopCount
from bitsearch.space.fp8_schedule import Fp8Schedule, vector_registers
from bitsearch.workloads import Fp8Dense


# ---------------------------------------------------------------------------------------------
# Decoding helpers (machine code)
# ---------------------------------------------------------------------------------------------
def _broadcast_const(reg: YMMRegister, value: int) -> None:
    """reg = the dword ``value`` in every lane (no constant section: position independent)."""
    MOV(rax.as_dword, value)
    VMOVD(reg.as_xmm, rax.as_dword)
    VPBROADCASTD(reg, reg.as_xmm)


@dataclass
class _Decoder:
    """Registers of the FP8 -> FP32 decoding: ``zero``; for E4M3 also a temporary and the
    constants 0xBFFF (clears bit 14) and 0xFE00 (w + w of a NaN code) in every word."""

    fmt: str
    zero: YMMRegister
    t: YMMRegister | None = None
    keep: YMMRegister | None = None
    nan: YMMRegister | None = None  # None: NaN codes decode to a finite value (see nan_mask)

    def init(self) -> None:
        VPXOR(self.zero, self.zero, self.zero)
        if self.fmt == "e4m3":
            _broadcast_const(self.keep, 0xBFFFBFFF)
            if self.nan is not None:
                _broadcast_const(self.nan, 0xFE00FE00)

    def fix_words(self, h) -> None:
        """xmm ``h`` holds 8 words ``byte << 8``: make them fp16 (E4M3: 2**-8 * value)."""
        if self.fmt != "e4m3":
            return
        if self.nan is None:
            VPSRAW(h, h, 1)
            VPAND(h, h, self.keep.as_xmm)
            return
        t = self.t.as_xmm
        VPADDW(t, h, h)
        VPCMPEQW(t, t, self.nan.as_xmm)
        VPSRAW(h, h, 1)
        VPAND(h, h, self.keep.as_xmm)
        VPOR(h, h, t)

    def load16(self, dst0: YMMRegister, dst1: YMMRegister, addr) -> None:
        """dst0, dst1 = 16 FP32 from the 16 E4M3 bytes at ``addr``, in one ymm of words (NaN codes
        stay finite: only with the panels' NaN masks). VPMOVSXBW gives s..s b6..b0 per word;
        << 7 puts b6..b0 at the fp16 positions, the sign at 15 (and 14, cleared): 3 integer ops
        per 16 values where two ``load8`` take 6."""
        from peachpy.x86_64 import VEXTRACTI128, VPMOVSXBW, VPSLLW

        VPMOVSXBW(self.t, [addr])
        VPSLLW(self.t, self.t, 7)
        VPAND(self.t, self.t, self.keep)
        VCVTPH2PS(dst0, self.t.as_xmm)
        VEXTRACTI128(dst1.as_xmm, self.t, 1)
        VCVTPH2PS(dst1, dst1.as_xmm)

    def load_zmm(self, dst, addr) -> None:
        """zmm dst = 16 FP32 from the 16 FP8 bytes at ``addr`` (AVX-512): words widened into
        dst's ymm (E5M2: zero-extended, << 8; E4M3: sign-extended, << 7, bit 14 cleared; its NaN
        codes via the panels' NaN masks), one VCVTPH2PS zmm."""
        from peachpy.x86_64 import VPMOVSXBW, VPMOVZXBW, VPSLLW

        h = dst.as_ymm
        if self.fmt == "e5m2":
            VPMOVZXBW(h, [addr])
            VPSLLW(h, h, 8)
        else:
            VPMOVSXBW(h, [addr])
            VPSLLW(h, h, 7)
            VPAND(h, h, self.keep)
        VCVTPH2PS(dst, h)

    def load8(self, dst: YMMRegister, addr) -> None:
        """dst = 8 FP32 from the 8 FP8 bytes at ``addr`` (reads 16 bytes)."""
        VPUNPCKLBW(dst.as_xmm, self.zero.as_xmm, [addr])
        self.fix_words(dst.as_xmm)
        VCVTPH2PS(dst, dst.as_xmm)


# ---------------------------------------------------------------------------------------------
# Activation packing: FP8 rows -> FP32 rows
# ---------------------------------------------------------------------------------------------
def _emit_pack(workload: Fp8Dense, name: str) -> Function:
    lay = Fp8RowLayout(rows=workload.m, k=workload.k)
    ka = lay.row_elements
    labels = Labels("p")
    src, dst, count, row_end, row = r10, r11, rcx, r9, r8
    regs = [YMMRegister(i) for i in range(16)]
    dec = _Decoder(workload.afmt, zero=regs[15], t=regs[14], keep=regs[13], nan=regs[12])
    scale = regs[11]
    v, lo, hi = regs[0], regs[1], regs[2]
    args = (
        Argument(ptr(const_uint8_t), name="x"),
        Argument(ptr(float_), name="xp"),
        Argument(ptr(int32_t), name="rowsum"),
        Argument(uint64_t, name="row_begin"),
        Argument(uint64_t, name="row_end"),
    )
    with Function(name, args, uint32_t, target=uarch.zen) as fn:
        LOAD.ARGUMENT(src, args[0])
        LOAD.ARGUMENT(dst, args[1])
        LOAD.ARGUMENT(row_end, args[4])
        LOAD.ARGUMENT(row, args[3])
        dec.init()
        e4m3 = workload.afmt == "e4m3"
        if e4m3:
            _broadcast_const(scale, 0x43800000)  # 256.0f
        # x rows are ka bytes apart, xp rows row_bytes (4*ka, plus 64 against cache aliasing).
        MOV(rax, row)
        imul_const(rax, rax, ka)
        ADD(src, rax)
        MOV(rax, row)
        imul_const(rax, rax, lay.row_bytes)
        ADD(dst, rax)
        rows_top, top, done = labels("row"), labels("chunk"), labels("done")
        LABEL(rows_top)
        CMP(row, row_end)
        JAE(done)
        MOV(count, ka // A_GRANULE)
        LABEL(top)
        VMOVDQU(v.as_xmm, [src])
        VPUNPCKLBW(lo.as_xmm, dec.zero.as_xmm, v.as_xmm)
        VPUNPCKHBW(hi.as_xmm, dec.zero.as_xmm, v.as_xmm)
        for i, h in enumerate((lo, hi)):
            dec.fix_words(h.as_xmm)
            VCVTPH2PS(h, h.as_xmm)
            if e4m3:
                VMULPS(h, h, scale)
            VMOVUPS([dst + 32 * i], h)
        ADD(src, A_GRANULE)
        ADD(dst, 4 * A_GRANULE)
        DEC(count)
        JNZ(top)
        if lay.row_bytes != 4 * ka:
            ADD(dst, lay.row_bytes - 4 * ka)
        ADD(row, 1)
        JMP(rows_top)
        LABEL(done)
        MOV(rax.as_dword, 0)
        RETURN(rax.as_dword)
    # MachineCode.loops over rows [0, m): the row loop, and the loop over its 16-byte chunks.
    fn.bitsearch_loops = (LoopCount(label_name(rows_top), workload.m),
                          LoopCount(label_name(top), workload.m * (ka // A_GRANULE)))
    return fn


# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------
TMP, ROW, KC, COLC, XQ, WQ, XT, WT, YT, ROW_END = rax, rbx, rcx, rdx, rsi, rdi, r8, r9, r10, r11


@dataclass(frozen=True)
class _Block:
    """One kind of K block: ``k0=None`` means the runtime loop over the middle blocks (k0 on the
    stack)."""

    k0: int | None
    klen: int
    add: bool


_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _vector_register_limit(count: int) -> Iterator[None]:
    """PeachPy checks every function against 16 live xmm/ymm/zmm registers, also for AVX-512
    targets; raise that limit to ``count`` (32: zmm16-31) while one function is emitted. The
    registers here are all physical, so the check guards nothing else."""
    if count <= 16:
        yield
        return
    from peachpy.x86_64.function import Function as PeachFunction
    from peachpy.x86_64.registers import XMMRegister

    original = PeachFunction._check_live_registers

    def check(self) -> None:
        for instruction in self._instructions:
            live = sum(reg.kind == XMMRegister._kind for reg in instruction.live_registers)
            if live > count:
                raise RuntimeError(f"{live} live vector registers exceed {count} at {instruction}")

    with _PATCH_LOCK:
        PeachFunction._check_live_registers = check
        try:
            yield
        finally:
            PeachFunction._check_live_registers = original


class _Fp8Gemm:
    def __init__(self, workload: Fp8Dense, schedule: Fp8Schedule, target: str = "x86_64-avx2") -> None:
        self.wl, self.s = workload, schedule
        self.geo = Fp8Geometry.of(workload, schedule, target)
        self.VW = vector_lanes(target)
        self.target = target
        self.label = Labels("g")
        # MachineCode.loops for static cost models: each loop's body executions over one full
        # call (rows [0, m)); ``mult`` is how often the code being emitted now runs.
        self.loops: list[LoopCount] = []
        self.mult = 1
        self._mults: list[int] = []
        self.in_kernel = schedule.decode == "kernel"
        self.scale = self.in_kernel and workload.wfmt == "e4m3"
        self.es = self.geo.w.element_bytes
        self.P = self.VW * schedule.nr
        self.xs = self.geo.x.row_bytes
        k = workload.k
        kc = schedule.kc if 0 < schedule.kc < k else k
        nblocks = -(-k // kc)
        last = k - (nblocks - 1) * kc
        self.kc, self.nblocks = kc, nblocks
        self.blocks = [_Block(0, kc if nblocks > 1 else k, add=False)]
        if nblocks > 2:
            self.blocks.append(_Block(None, kc, add=True))
        if nblocks > 1:
            self.blocks.append(_Block((nblocks - 1) * kc, last, add=True))
        for what, value in (("row tile stride", schedule.mr * self.xs),
                            ("y tile stride", 4 * schedule.mr * workload.n),
                            ("x buffer", workload.m * self.xs),
                            ("w buffer", self.geo.w.total_bytes)):
            if value >= IMM32:
                raise ValueError(f"{what} of {value} bytes does not fit a 32-bit displacement")

    def _ymm(self) -> None:
        # Weights, broadcast and decoding temporaries in registers 0-15 (VEX-encoded helpers
        # reach them; with AVX-512 as zmm, the temporaries as ymm), accumulators in the rest,
        # with AVX-512 and nr >= 2 also in zmm16-31 (see vector_registers).
        s = self.s
        count = vector_registers(self.target, s.nr) if self.VW == 16 else 16
        regs = [ZMMRegister(i) if self.VW == 16 else YMMRegister(i) for i in range(count)]
        self.wv, rest = regs[: s.nr], regs[s.nr:]
        self.xb, rest = rest[0], rest[1:]
        extra = 0 if not self.in_kernel else 1 if self.wl.wfmt == "e5m2" else 3
        temps, rest = rest[:extra], rest[extra:]
        self.accs_flat = rest[: s.mr * s.nr]
        self.dec = None
        if self.in_kernel:
            ymm = [YMMRegister(r.physical_id) for r in temps]
            if self.wl.wfmt == "e4m3":  # NaN codes: the panels' NaN masks
                self.dec = _Decoder("e4m3", zero=ymm[0], keep=ymm[1], t=ymm[2])
            else:
                self.dec = _Decoder("e5m2", zero=ymm[0])

    def emit(self, name: str) -> Function:
        args = gemm_arguments(float_)
        count = vector_registers(self.target, self.s.nr) if self.VW == 16 else 16
        with _vector_register_limit(count), \
                Function(name, args, None, target=ZEN4 if self.VW == 16 else uarch.zen) as fn:
            self.local = {key: LocalVariable(8) for key in (
                "xp", "wp", "y", "row_begin", "ycol", "k0", "kbcount")}
            for arg in args:
                if arg.name == "rowsum":
                    continue
                LOAD.ARGUMENT(TMP, arg)
                if arg.name == "row_end":
                    MOV(ROW_END, TMP)
                else:
                    MOV(self.local[arg.name], TMP)
            self._ymm()
            if self.dec is not None:
                self.dec.init()
            for block in self.blocks:
                if block.k0 is not None:
                    self._nest(block)
                    continue
                MOV(self.local["k0"], self.kc)
                MOV(self.local["kbcount"], self.nblocks - 2)
                top = self.label("kblock")
                LABEL(top)
                self._push_loop(top, self.nblocks - 2)
                self._nest(block)
                ADD(self.local["k0"], self.kc)
                DEC(self.local["kbcount"])
                JNZ(top)
                self._pop_loop()
            RETURN()
        fn.bitsearch_loops = tuple(self.loops)  # read by encode() into MachineCode.loops
        return fn

    def _push_loop(self, top: Label, trips: int) -> None:
        """The body of the loop headed by ``top`` runs ``trips`` times per entry."""
        self.loops.append(LoopCount(label_name(top), self.mult * trips))
        self._mults.append(self.mult)
        self.mult *= trips

    def _pop_loop(self) -> None:
        self.mult = self._mults.pop()

    # -- loops -----------------------------------------------------------------------------------
    def _nest(self, block: _Block) -> None:
        n_full, edge = divmod(self.wl.n, self.P)
        lay = self.geo.w
        loc = self.local
        if self.s.loop_order == "nm":
            MOV(WT, loc["wp"])
            MOV(loc["ycol"], 0)
            if n_full:
                MOV(COLC, n_full)
                top = self.label("col")
                LABEL(top)
                self._push_loop(top, n_full)
                self._rows(lambda rows: self._tile(rows, self.P, self.P, block), inner=True)
                ADD(WT, lay.panel_bytes)
                ADD(loc["ycol"], 4 * self.P)
                DEC(COLC)
                JNZ(top)
                self._pop_loop()
            if edge:
                self._rows(lambda rows: self._tile(rows, edge, lay.edge_width, block), inner=True)
            return

        def panels(rows: int) -> None:
            if n_full:
                MOV(COLC, n_full)
                top = self.label("col")
                LABEL(top)
                self._push_loop(top, n_full)
                self._tile(rows, self.P, self.P, block)
                ADD(WT, lay.panel_bytes)
                ADD(YT, 4 * self.P)
                DEC(COLC)
                JNZ(top)
                self._pop_loop()
            if edge:
                self._tile(rows, edge, lay.edge_width, block)

        self._rows(panels, inner=False)

    def _y_row(self) -> None:
        """YT = y + 4 * ROW * n."""
        MOV(YT, ROW)
        imul_const(YT, YT, self.wl.n)
        SHL(YT, 2)
        ADD(YT, self.local["y"])

    def _rows(self, body: Callable[[int], None], *, inner: bool) -> None:
        mr = self.s.mr
        m_edge = self.wl.m % mr
        loc = self.local
        MOV(ROW, loc["row_begin"])
        MOV(XT, ROW)
        imul_const(XT, XT, self.xs)
        ADD(XT, loc["xp"])
        if inner:
            self._y_row()
            ADD(YT, loc["ycol"])
        top, edge, done = self.label("row"), self.label("row_edge"), self.label("row_done")
        LABEL(top)
        self._push_loop(top, self.wl.m // mr)  # full row tiles; the m_edge rows follow once
        LEA(TMP, [ROW + mr])
        CMP(TMP, ROW_END)
        JA(edge)
        if not inner:
            self._y_row()
            MOV(WT, loc["wp"])
        body(mr)
        ADD(ROW, mr)
        ADD(XT, mr * self.xs)
        if inner:
            ADD(YT, 4 * mr * self.wl.n)
        JMP(top)
        self._pop_loop()
        LABEL(edge)
        if m_edge:
            CMP(ROW, ROW_END)
            JAE(done)
            if not inner:
                self._y_row()
                MOV(WT, loc["wp"])
            body(m_edge)
        LABEL(done)

    # -- one register tile -------------------------------------------------------------------------
    def _tile(self, rows: int, cols: int, width: int, block: _Block) -> None:
        """``rows`` x ``cols`` outputs from a panel ``width`` columns wide, over one K block."""
        vecs = -(-cols // self.VW)
        wstep = width * self.es  # panel bytes per K step
        if block.k0 is None:
            MOV(XQ, self.local["k0"])
            MOV(WQ, XQ)
            SHL(XQ, 2)
            ADD(XQ, XT)
            imul_const(WQ, WQ, wstep)
            ADD(WQ, WT)
        elif block.k0:
            if block.k0 * wstep >= IMM32:
                raise ValueError("K block offset does not fit a 32-bit displacement")
            LEA(XQ, [XT + 4 * block.k0])
            LEA(WQ, [WT + block.k0 * wstep])
        else:
            MOV(XQ, XT)
            MOV(WQ, WT)
        accs = [[self.accs_flat[r * vecs + j] for j in range(vecs)] for r in range(rows)]

        def step(u: int, first: bool = False) -> None:
            j = 0
            while j < vecs:
                addr = WQ + u * wstep + self.VW * j * self.es
                if self.dec is None:
                    VMOVUPS(self.wv[j], [addr])
                elif self.VW == 16:
                    self.dec.load_zmm(self.wv[j], addr)
                elif self.dec.fmt == "e4m3" and self.dec.nan is None and j + 1 < vecs:
                    self.dec.load16(self.wv[j], self.wv[j + 1], addr)
                    j += 1
                else:
                    self.dec.load8(self.wv[j], addr)
                j += 1
            for r in range(rows):
                VBROADCASTSS(self.xb, [XQ + r * self.xs + 4 * u])
                for j in range(vecs):
                    if first:
                        VMULPS(accs[r][j], self.xb, self.wv[j])
                    else:
                        VFMADD231PS(accs[r][j], self.xb, self.wv[j])

        step(0, first=True)
        u = self.s.k_unroll
        iters, rest = divmod(block.klen - 1, u)
        if iters:
            if iters > 1:
                MOV(KC, iters)
                top = self.label("k")
                LABEL(top)
                self._push_loop(top, iters)
            for i in range(u):
                step(1 + i)
            ADD(XQ, 4 * u)
            ADD(WQ, u * wstep)
            if iters > 1:
                DEC(KC)
                JNZ(top)
                self._pop_loop()
        for i in range(rest):
            step(1 + i)
        self._store(rows, cols, width, accs, block.add)

    def _store(self, rows: int, cols: int, width: int, accs, add: bool) -> None:
        n, vw = self.wl.n, self.VW
        vecs = len(accs[0])
        last = cols - vw * (vecs - 1)
        tmp = self.wv[0]
        scratch = self.dec.t.as_xmm if self.scale else self.xb.as_xmm
        if self.scale:
            _broadcast_const(self.xb, 0x43800000)  # 256.0f: undo the E4M3 decode's 2**-8
        mask = WT + self.wl.k * width * self.es  # the panel's NaN mask (nan_mask layouts)

        def store4(v, addr, count: int) -> None:
            if add:
                if count == 4:
                    VADDPS(v, v, [addr])
                else:
                    load_partial(scratch, addr, count)
                    VADDPS(v, v, scratch)
            store_partial(v, addr, count)

        def store_full(v, addr) -> None:
            if add:
                VADDPS(v, v, [addr])
            VMOVUPS([addr], v)

        def store_ymm(v, addr, lanes: int, hi) -> None:
            """The low ``lanes`` (1..8) of ymm ``v``; xmm ``hi`` is clobbered."""
            if lanes == 8:
                store_full(v, addr)
                return
            if lanes > 4:
                VEXTRACTF128(hi, v, 1)  # before an xmm write zeroes v's upper half
            store4(v.as_xmm, addr, min(lanes, 4))
            if lanes > 4:
                store4(hi, addr + 16, lanes - 4)

        for r in range(rows):
            for j in range(vecs):
                acc = accs[r][j]
                if self.scale:
                    VMULPS(acc, acc, self.xb)
                if self.geo.w.nan_mask and not add:
                    VADDPS(acc, acc, [mask + 4 * vw * j])
                addr = YT + 4 * (r * n + vw * j)
                lanes = vw if j < vecs - 1 else last
                if lanes == vw:
                    store_full(acc, addr)
                    continue
                if acc.physical_id >= 16:  # VEX partial stores: a copy in a low register
                    VMOVAPS(self.wv[1], acc)
                    acc = self.wv[1]
                if vw == 8:
                    store_ymm(acc, addr, lanes, tmp.as_xmm)
                elif lanes <= 8:
                    store_ymm(acc.as_ymm, addr, lanes, tmp.as_xmm)
                else:  # 9..15 of 16: the upper half out first, the lower 8 whole, then the rest
                    VEXTRACTF64X4(tmp.as_ymm, acc, 1)
                    store_full(acc.as_ymm, addr)
                    store_ymm(tmp.as_ymm, addr + 32, lanes - 8, acc.as_xmm)


def emit_fp8_dense(workload: Fp8Dense, schedule: Fp8Schedule,
                   target: str = "x86_64-avx2") -> tuple[Function, Function]:
    """PeachPy functions ``(pack, gemm)`` for ``workload`` under a checked ``schedule``
    (``x86_64-avx512``: the GEMM on zmm vectors of 16 lanes; the packing code is AVX2)."""
    return (_emit_pack(workload, "bitsearch_fp8_pack"),
            _Fp8Gemm(workload, schedule, target).emit("bitsearch_fp8_gemm"))


__all__ = ["emit_fp8_dense"]
