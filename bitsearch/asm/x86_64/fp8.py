"""PeachPy emitters of the FP8 kernels on x86-64 AVX2 + FMA + F16C: the FP8 GEMM and the
fp32 -> FP8 quantize kernel (stochastic and nearest rounding). For ``x86_64-avx512`` the GEMM runs
on zmm vectors of 16 lanes (same 16 registers, half the instructions; decoding 16 values at once).

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
:class:`Fp8Kernel` runs, threads, times and exports them alike):

``pack(x, xp, rowsum, row_begin, row_end) -> 0``
    Decodes FP8 rows [row_begin, row_end) of x (zero-padded to ``16*ceil(k/16)`` bytes) into FP32
    rows of xp. ``rowsum`` is not touched.
``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    y = a @ b.T for those rows, FP32 FMA accumulation; weights in the column panels of
    :class:`Fp8PanelLayout` (FP8 bytes or FP32 values, see :class:`~bitsearch.space.Fp8Schedule`).

Quantize: ``quant(x, q, count, table)`` rounds ``count`` (a multiple of 8) fp32 values to FP8
bytes following the stochastic-rounding specification of :mod:`bitsearch.numerics.fp8` bit for
bit (the table from :func:`quantize_table` holds ``key = fmix32(seed)`` and the counters
``index0 + lane`` of the first 8 elements), or to nearest even (ml_dtypes' cast), see
:func:`emit_quantize`; :func:`bitsearch.ops.quantize_fp8` is the numpy-facing call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
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
    SHR,
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

from bitsearch.asm.kernel import Kernel
from bitsearch.asm.x86_64.common import ZEN4, Labels, gemm_arguments, imul_const, load_partial, store_partial
from bitsearch.space.fp8_schedule import Fp8Schedule, vector_registers
from bitsearch.workloads import Fp8Dense, fp8_dtype

A_GRANULE = 16  # activation rows are padded to this many FP8 bytes (16 -> 2 ymm of FP32)
PANEL_PAD = 32  # bytes after the weight panels: VPUNPCKLBW reads 16 bytes to decode 8
IMM32 = 2**31
E4M3_SCALE = 256.0  # the E4M3 decode yields value * 2**-8


def vector_lanes(target: str) -> int:
    """FP32 lanes of the GEMM's vectors: ``x86_64-avx512`` uses zmm (16), AVX2 ymm (8)."""
    return 16 if target == "x86_64-avx512" else 8


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def decode_table(fmt: str) -> np.ndarray:
    """float32 [256]: the value of every FP8 byte (ml_dtypes' exact decoding)."""
    return np.arange(256, dtype=np.uint8).view(fp8_dtype(fmt)).astype(np.float32)


_TABLES: dict[str, np.ndarray] = {}


def _table(fmt: str) -> np.ndarray:
    if fmt not in _TABLES:
        _TABLES[fmt] = decode_table(fmt)
    return _TABLES[fmt]


# ---------------------------------------------------------------------------------------------
# Layouts (numpy side)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fp8RowLayout:
    """Activations decoded to FP32: ``rows`` rows of ``k`` values padded to a multiple of 16.

    Example:
        >>> Fp8RowLayout(rows=2, k=20).row_bytes, Fp8RowLayout(rows=2, k=128).row_bytes
        (128, 576)
    """

    rows: int
    k: int

    @property
    def row_elements(self) -> int:
        """FP8 bytes per raw row (what the packing code reads)."""
        return _round_up(self.k, A_GRANULE)

    @property
    def padded_elements(self) -> int:
        """FP32 values per decoded row: a row stride of a multiple of 512 bytes would put the
        rows of a register tile into the same few L1 sets, so such rows get 16 more."""
        elems = self.row_elements
        return elems + A_GRANULE if (4 * elems) % 512 == 0 else elems

    @property
    def row_bytes(self) -> int:
        return 4 * self.padded_elements


@dataclass(frozen=True)
class Fp8PanelLayout:
    """Weights b [n, k] in column panels of ``panel`` columns: panel j holds, K step after K step,
    that step's value of each of its columns (``[k][panel]``). Full panels follow each other; the
    last, narrower panel (n not a multiple of ``panel``) is ``edge_width`` wide (its columns
    rounded up to 8, one ymm, with zero columns). Elements are the FP8 bytes (``decode="kernel"``)
    or their FP32 values (``decode="pack"``: decoded while packing, exactly, with ml_dtypes' table).
    The flat buffer (plus 32 zero bytes) is viewed as [n, row_bytes], the shape of packed weights.

    Example:
        >>> import ml_dtypes
        >>> lay = Fp8PanelLayout(n=20, k=3, fmt="e5m2", decode="pack", panel=16)
        >>> lay.edge_width, lay.total_bytes, lay.pack(np.ones((20, 3), ml_dtypes.float8_e5m2)).shape
        (8, 320, (20, 16))
    """

    n: int
    k: int
    fmt: str
    decode: str
    panel: int
    vector: int = 8  # lanes of one vector: 8 (ymm) or 16 (zmm, x86_64-avx512)

    @property
    def element_bytes(self) -> int:
        return 1 if self.decode == "kernel" else 4

    @property
    def full_panels(self) -> int:
        return self.n // self.panel

    @property
    def edge_columns(self) -> int:
        return self.n % self.panel

    @property
    def edge_width(self) -> int:
        return _round_up(self.edge_columns, self.vector)

    @property
    def nan_mask(self) -> bool:
        """E4M3 bytes decoded in the kernel: each panel ends with one float per column, NaN if
        that column holds a NaN code (0x7F / 0xFF) and 0 otherwise, added to the accumulators
        (the in-loop decoding maps the NaN codes to a finite value, 3 instructions cheaper)."""
        return self.decode == "kernel" and self.fmt == "e4m3"

    def region_bytes(self, width: int) -> int:
        """Bytes of a panel ``width`` columns wide: the values, then the NaN mask if any."""
        return self.k * width * self.element_bytes + (4 * width if self.nan_mask else 0)

    @property
    def panel_bytes(self) -> int:
        return self.region_bytes(self.panel)

    @property
    def total_bytes(self) -> int:
        return (self.full_panels * self.panel_bytes
                + (self.region_bytes(self.edge_width) if self.edge_width else 0) + PANEL_PAD)

    @property
    def row_bytes(self) -> int:
        return -(-self.total_bytes // self.n)

    def pack(self, values: np.ndarray) -> np.ndarray:
        """FP8 [n, k] (ml_dtypes) -> uint8 [n, row_bytes] (a flat panel buffer)."""
        n, k = self.n, self.k
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, k)
        full = self.full_panels * self.panel
        cols = full + self.edge_width
        if self.edge_width:
            raw = np.concatenate([raw, np.zeros((cols - n, k), np.uint8)])  # 0x00 is +0.0
        flat = np.zeros(n * self.row_bytes, np.uint8)
        if self.nan_mask:
            nan_cols = ((raw & 0x7F) == 0x7F).any(axis=1)
            masks = np.where(nan_cols, np.float32(np.nan), np.float32(0)).view(np.uint8).reshape(cols, 4)
        pos = 0
        for start, width, count in ((0, self.panel, self.full_panels), (full, self.edge_width, 1)):
            if not width or not count:
                continue
            cols_here = raw[start : start + width * count]
            block = cols_here.reshape(count, width, k).transpose(0, 2, 1).reshape(count, k * width)
            if self.decode == "pack":
                block = _table(self.fmt)[block].view(np.uint8)
            if self.nan_mask:
                mask = masks[start : start + width * count].reshape(count, 4 * width)
                block = np.concatenate([block, mask], axis=1)
            flat[pos : pos + block.size] = block.reshape(-1)
            pos += block.size
        return flat.reshape(n, self.row_bytes)


@dataclass(frozen=True)
class Fp8Geometry:
    x: Fp8RowLayout
    w: Fp8PanelLayout
    x_row_stride: int  # bytes per row of raw (FP8) a as the packing code reads it

    @classmethod
    def of(cls, workload: Fp8Dense, schedule: Fp8Schedule, target: str = "x86_64-avx2") -> Fp8Geometry:
        x = Fp8RowLayout(rows=workload.m, k=workload.k)
        vector = vector_lanes(target)
        w = Fp8PanelLayout(n=workload.n, k=workload.k, fmt=workload.wfmt, decode=schedule.decode,
                           panel=vector * schedule.nr, vector=vector)
        return cls(x=x, w=w, x_row_stride=x.row_elements)


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
                self._nest(block)
                ADD(self.local["k0"], self.kc)
                DEC(self.local["kbcount"])
                JNZ(top)
            RETURN()
        return fn

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
                self._rows(lambda rows: self._tile(rows, self.P, self.P, block), inner=True)
                ADD(WT, lay.panel_bytes)
                ADD(loc["ycol"], 4 * self.P)
                DEC(COLC)
                JNZ(top)
            if edge:
                self._rows(lambda rows: self._tile(rows, edge, lay.edge_width, block), inner=True)
            return

        def panels(rows: int) -> None:
            if n_full:
                MOV(COLC, n_full)
                top = self.label("col")
                LABEL(top)
                self._tile(rows, self.P, self.P, block)
                ADD(WT, lay.panel_bytes)
                ADD(YT, 4 * self.P)
                DEC(COLC)
                JNZ(top)
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
            for i in range(u):
                step(1 + i)
            ADD(XQ, 4 * u)
            ADD(WQ, u * wstep)
            if iters > 1:
                DEC(KC)
                JNZ(top)
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


def build_fp8(workload: Fp8Dense, schedule: Fp8Schedule | None, target: str) -> Fp8Kernel:
    """Check, emit, encode and wrap (what :func:`bitsearch.build` does for an Fp8Dense)."""
    from bitsearch.build import _encode
    from bitsearch.space.fp8_schedule import default_fp8_schedule

    if schedule is None:
        schedule = default_fp8_schedule(workload, target)
    if not isinstance(schedule, Fp8Schedule):
        raise ValueError(f"an Fp8Dense workload needs a bitsearch Fp8Schedule, got {type(schedule).__name__}")
    schedule.check(workload, target)
    geo = Fp8Geometry.of(workload, schedule, target)
    pack, gemm = emit_fp8_dense(workload, schedule, target)
    return Fp8Kernel(workload=workload, schedule=schedule, target=target, pack=_encode(pack),
                     gemm=_encode(gemm), x_layout=geo.x, w_layout=geo.w, x_row_stride=geo.x_row_stride)


def emit_fp8_dense(workload: Fp8Dense, schedule: Fp8Schedule,
                   target: str = "x86_64-avx2") -> tuple[Function, Function]:
    """PeachPy functions ``(pack, gemm)`` for ``workload`` under a checked ``schedule``
    (``x86_64-avx512``: the GEMM on zmm vectors of 16 lanes; the packing code is AVX2)."""
    return (_emit_pack(workload, "bitsearch_fp8_pack"),
            _Fp8Gemm(workload, schedule, target).emit("bitsearch_fp8_gemm"))


# ---------------------------------------------------------------------------------------------
# The kernel object: float32 outputs
# ---------------------------------------------------------------------------------------------
@dataclass
class Fp8Kernel(Kernel):
    """A built FP8 GEMM: ``y = kernel(a, b)`` with float32 y [m, n] (a, b ml_dtypes FP8 arrays).

    The machine code computes y with FP32 FMA accumulation; results are within
    :func:`bitsearch.workloads.fp8_tolerance` of the float64 reference, and NaN / inf inputs
    propagate as in IEEE arithmetic.

    Example:
        >>> import numpy as np, ml_dtypes, bitsearch as bs
        >>> wl = bs.Fp8Dense(3, 10, 7, afmt="e4m3", wfmt="e5m2")
        >>> kern = bs.build(wl)
        >>> a = np.full((3, 7), 0.5, ml_dtypes.float8_e4m3fn); b = np.full((10, 7), 3, ml_dtypes.float8_e5m2)
        >>> float(kern(a, kern.pack_weights(b))[2, 9])
        10.5
    """

    def __call__(self, x: np.ndarray, w: np.ndarray, *, threads: int = 1,
                 out: np.ndarray | None = None) -> np.ndarray:
        """y = a @ b.T as float32 [m, n]; ``w`` raw FP8 [n, k] or from :meth:`pack_weights`;
        ``threads`` splits the rows; ``out`` (C-contiguous float32 [m, n]) receives y."""
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        wl = self.workload
        wp = self._weights(w)
        x = self.prepare_x(x)
        xp = np.empty((wl.m, self.x_layout.row_bytes), np.uint8)
        if out is None:
            y = np.empty((wl.m, wl.n), np.float32)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (wl.m, wl.n)
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous float32 array of shape {(wl.m, wl.n)}")
        else:
            y = out
        pack, gemm = self._functions()
        px, pxp, pwp, py = (a.ctypes.data for a in (x, xp, wp, y))

        def run(block: tuple[int, int]) -> None:
            pack(px, pxp, 0, *block)
            gemm(pxp, pwp, py, 0, *block)

        blocks = self.row_blocks(threads)
        if len(blocks) == 1:
            run(blocks[0])
        else:
            from bitsearch.asm.kernel import _thread_pool

            list(_thread_pool(len(blocks)).map(run, blocks))
        return y

    def output_from(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, np.float32).reshape(self.workload.m, self.workload.n)

    def header(self, prefix: str = "bitsearch") -> str:
        """C declarations of the exported functions (FP8 in, float out; weights packed by
        :meth:`pack_weights`)."""
        wl, s, up = self.workload, self.schedule, prefix.upper()
        return "\n".join([
            f"/* Generated by bitsearch: {wl} ({self.target}) */",
            "/* schedule: " + s.to_json() + " */",
            "#pragma once",
            "#include <stdint.h>",
            f"#define {up}_M {wl.m}",
            f"#define {up}_N {wl.n}",
            f"#define {up}_K {wl.k}",
            f"#define {up}_X_ROW_STRIDE {self.x_row_stride} /* FP8 bytes per row of a (zero-padded) */",
            f"#define {up}_XP_ROW_BYTES {self.x_layout.row_bytes} /* FP32 scratch per row */",
            f"#define {up}_WP_ROW_BYTES {self.w_layout.row_bytes}",
            f"/* Decodes FP8 ({wl.afmt}) rows [row_begin, row_end) of a into xp; returns 0. */",
            f"uint32_t {prefix}_pack(const uint8_t *a, float *xp, int32_t *unused, uint64_t row_begin, "
            "uint64_t row_end);",
            f"/* y = a @ b.T (float) for rows [row_begin, row_end); row_begin a multiple of {s.mr}. */",
            f"void {prefix}_gemm(const float *xp, const uint8_t *wp, float *y, const int32_t *unused, "
            "uint64_t row_begin, uint64_t row_end);",
            "",
        ])


# ---------------------------------------------------------------------------------------------
# Quantize: fp32 -> FP8, stochastic (the shared specification) or nearest-even rounding
# ---------------------------------------------------------------------------------------------
QUANT_FORMATS: dict[str, tuple[int, int, float]] = {"e5m2": (2, -14, 57344.0), "e4m3": (3, -6, 448.0)}
# Rows of the constant table (8 dwords each) the quantize kernel reads as memory operands:
# position-independent code has no constant section, so the caller passes one.
(Q_IDX, Q_KEY, Q_STEP, Q_C1, Q_C2, Q_ABS, Q_ONE, Q_EMINB, Q_D0, Q_32, Q_33, Q_64, Q_SIGN, Q_23, Q_M,
 Q_FMAX, Q_NAN, Q_SCALE, Q_W7FFF, Q_INF) = range(20)
Q_ROWS = 20


def _f32_bits(value: float) -> int:
    return int(np.array(value, np.float32).view(np.uint32))


_QUANT_TABLES: dict[str, np.ndarray] = {}


def quantize_table(fmt: str, key: int, index0: int) -> np.ndarray:
    """uint32 [20, 8]: the constants of the quantize kernel for ``fmt``, with the counters of the
    first 8 elements (``index0 + lane``, mod 2**32) and ``key = fmix32(seed)`` in every lane."""
    base = _QUANT_TABLES.get(fmt)
    if base is None:
        m, emin, fmax = QUANT_FORMATS[fmt]
        rows = {
            Q_STEP: 8, Q_C1: 0x85EBCA6B, Q_C2: 0xC2B2AE35, Q_ABS: 0x7FFFFFFF, Q_ONE: 1,
            Q_EMINB: emin + 127, Q_D0: 23 - m, Q_32: 32, Q_33: 33, Q_64: 64, Q_SIGN: 0x80000000,
            Q_23: 23, Q_M: m, Q_FMAX: _f32_bits(fmax),
            # NaN: E5M2's canonical quiet NaN; for E4M3 the value 480 (= S.1111.111 = NaN once encoded).
            Q_NAN: 0x7FC00000 if fmt == "e5m2" else _f32_bits(480.0),
            Q_SCALE: _f32_bits(2.0**-8), Q_W7FFF: 0x7FFF7FFF, Q_INF: 0x7F800000,
        }
        base = np.zeros((Q_ROWS, 8), np.uint32)
        for row, value in rows.items():
            base[row] = value
        _QUANT_TABLES[fmt] = base
    table = base.copy()
    table[Q_IDX] = (np.arange(8, dtype=np.uint64) + index0) & 0xFFFFFFFF
    table[Q_KEY] = key
    return table


def emit_quantize(fmt: str, rounding: str, saturate: bool, name: str = "bitsearch_fp8_quant") -> Function:
    """``quant(x, q, count, table)``: round ``count`` (a positive multiple of 8) float32 ``x`` to
    FP8 bytes ``q``, 8 per iteration, all in integer SIMD on the fp32 bits.

    Per element (see :mod:`bitsearch.numerics.fp8` for the specification it follows bit for bit):
    ``a = |bits|``, biased exponent ``E`` (``Eb = max(E, 1)``: fp32 subnormals as 2**-126 scale),
    24-bit significand ``S = a - (Eb - 1) << 23``, ulp exponent ``ex = max(Eb, emin + 127)``, dropped
    bits ``d = 23 - m + ex - Eb`` and ``S_low = S mod 2**d``. Stochastic: round up iff ``r <
    ceil(S_low * 2**(32 - d))`` (unsigned), i.e. ``S_low << (32 - d)`` for ``d <= 32`` and
    ``(S_low >> (d - 32)) + (any dropped bit)`` beyond; ``r = fmix32(i ^ key)``. Nearest: up iff the
    32-bit fraction exceeds one half, or equals it and ``k = S >> d`` is odd (ties to even).
    The rounded magnitude ``a & ~(2**d - 1)`` (0 when ``d > 23``) plus the ulp ``(ex - m) << 23`` is
    exact in fp32; overflow (saturate: min with max; E4M3: NaN), NaN and the sign are applied in
    fp32, then VCVTPS2PH makes the fp16 that holds the FP8 byte (E5M2: its upper byte; E4M3: the
    value times 2**-8, whose bits 15 and 13..7 are the byte)."""
    from peachpy.x86_64 import (
        VBLENDVPS,
        VCMPPS,
        VCVTPS2PH,
        VMINPS,
        VMOVQ,
        VORPS,
        VPACKUSWB,
        VPADDD,
        VPANDN,
        VPCMPEQD,
        VPCMPGTD,
        VPMAXSD,
        VPMULLD,
        VPSLLD,
        VPSLLVD,
        VPSRLD,
        VPSRLVD,
        VPSRLW,
        VPSUBD,
    )
    from peachpy.x86_64.registers import GeneralPurposeRegister64, XMMRegister

    if fmt not in QUANT_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(QUANT_FORMATS)}, got {fmt!r}")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    e4m3 = fmt == "e4m3"
    args = (
        Argument(ptr(const_uint8_t), name="x"),
        Argument(ptr(const_uint8_t), name="q"),
        Argument(uint64_t, name="count"),
        Argument(ptr(const_uint8_t), name="table"),
    )
    with Function(name, args, None, target=uarch.zen) as fn:
        xp, qp, n, tb = (GeneralPurposeRegister64() for _ in range(4))
        for reg, arg in zip((xp, qp, n, tb), args, strict=True):
            LOAD.ARGUMENT(reg, arg)

        def c(row: int):
            return [tb + 32 * row]

        def y():
            return YMMRegister()

        SHR(n, 3)
        idx, zero = y(), y()
        VMOVDQU(idx, c(Q_IDX))
        VPXOR(zero, zero, zero)
        top = Label("quant")
        LABEL(top)
        # r = fmix32(i ^ key)
        h, t = y(), y()
        VPXOR(h, idx, c(Q_KEY))
        for mul, shift in ((Q_C1, 16), (Q_C2, 13)):
            VPSRLD(t, h, shift)
            VPXOR(h, h, t)
            VPMULLD(h, h, c(mul))
        VPSRLD(t, h, 16)
        VPXOR(h, h, t)
        VPADDD(idx, idx, c(Q_STEP))
        bits, a, eb, ex, d = y(), y(), y(), y(), y()
        VMOVDQU(bits, [xp])
        VPAND(a, bits, c(Q_ABS))
        VPSRLD(eb, a, 23)
        VPMAXSD(eb, eb, c(Q_ONE))
        VPMAXSD(ex, eb, c(Q_EMINB))
        VPSUBD(d, ex, eb)
        VPADDD(d, d, c(Q_D0))
        sig, ml, slow = y(), y(), y()
        VPSUBD(t, eb, c(Q_ONE))
        VPSLLD(t, t, 23)
        VPSUBD(sig, a, t)
        VMOVDQU(ml, c(Q_ONE))
        VPSLLVD(ml, ml, d)
        VPSUBD(ml, ml, c(Q_ONE))  # 2**d - 1; all ones for d >= 32
        VPAND(slow, sig, ml)
        cl, t1 = y(), y()
        VMOVDQU(cl, c(Q_32))
        VPSUBD(cl, cl, d)  # 32 - d: negative counts shift everything out
        VPSLLVD(t1, slow, cl)
        up = y()
        if rounding == "stochastic":
            t2, c3 = y(), y()
            VPSUBD(t2, d, c(Q_33))
            VPSRLVD(t2, slow, t2)
            VPSRLD(t2, t2, 1)  # S_low >> (d - 32) for d >= 33, else 0
            VMOVDQU(c3, c(Q_64))
            VPSUBD(c3, c3, d)
            VPMAXSD(c3, c3, zero)
            VPSLLVD(c3, slow, c3)
            VPCMPEQD(c3, c3, zero)  # -1 if no dropped bit below 2**(d-32) is set
            VPADDD(t1, t1, t2)
            VPADDD(t1, t1, c(Q_ONE))
            VPADDD(t1, t1, c3)  # T = ceil(S_low * 2**(32 - d))
            VPXOR(t1, t1, c(Q_SIGN))
            VPXOR(h, h, c(Q_SIGN))
            VPCMPGTD(up, t1, h)  # r < T, unsigned
        else:
            eq, kb = y(), y()
            VPCMPEQD(eq, t1, c(Q_SIGN))
            VPXOR(t1, t1, c(Q_SIGN))
            VPCMPGTD(up, t1, zero)  # fraction > 1/2
            VPSRLVD(kb, sig, d)
            VPAND(kb, kb, c(Q_ONE))
            VPCMPEQD(kb, kb, c(Q_ONE))
            VPAND(eq, eq, kb)
            VPOR(up, up, eq)  # or exactly 1/2 and k odd
        big, r = y(), y()
        VPCMPGTD(big, d, c(Q_23))
        VPOR(ml, ml, big)
        VPANDN(r, ml, a)  # k * ulp
        VPSUBD(t, ex, c(Q_M))
        VPSLLD(t, t, 23)
        VPAND(t, t, up)
        VADDPS(r, r, t)  # (k + up) * ulp, exact
        if saturate:
            VMINPS(r, r, c(Q_FMAX))
        bad = y()
        VPCMPGTD(bad, a, c(Q_INF))  # NaN input
        if e4m3 and not saturate:
            VCMPPS(t, r, c(Q_FMAX), 0x1E)  # > 448 (GT_OQ): no infinity in E4M3, NaN
            VPOR(bad, bad, t)
        VBLENDVPS(r, r, c(Q_NAN), bad)
        VPAND(t, bits, c(Q_SIGN))
        VORPS(r, r, t)
        if e4m3:
            VMULPS(r, r, c(Q_SCALE))
        w = XMMRegister()
        VCVTPS2PH(w, r, 0)
        if e4m3:  # s 0 eeee mmm 0000000 -> s eeee mmm 00000000
            wt = XMMRegister()
            VPAND(wt, w, c(Q_W7FFF))
            VPADDW(w, w, wt)
        VPSRLW(w, w, 8)
        VPACKUSWB(w, w, w)
        VMOVQ([qp], w)
        ADD(xp, 32)
        ADD(qp, 8)
        DEC(n)
        JNZ(top)
        RETURN()
    return fn


__all__ = [
    "Fp8Geometry",
    "Fp8Kernel",
    "Fp8PanelLayout",
    "Fp8RowLayout",
    "decode_table",
    "emit_fp8_dense",
    "emit_quantize",
    "quantize_table",
]

