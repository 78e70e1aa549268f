"""The fp32 -> FP8 quantize kernel on x86-64 AVX2, stochastic and nearest rounding.

``quant(x, q, count, table)`` rounds ``count`` (a multiple of 8) fp32 values to FP8 bytes
following the stochastic-rounding specification of :mod:`bitsearch.numerics.fp8` bit for bit (the
table from :func:`quantize_table` holds ``key = fmix32(seed)`` and the counters ``index0 + lane``
of the first 8 elements), or to nearest even (ml_dtypes' cast), see :func:`emit_quantize`;
:func:`bitsearch.ops.quantize_fp8` is the numpy-facing call.
"""

from __future__ import annotations

import numpy as np
from peachpy import Argument, const_uint8_t, ptr, uint64_t
from peachpy.x86_64 import (
    ADD,
    DEC,
    JNZ,
    LABEL,
    LOAD,
    RETURN,
    SHR,
    VADDPS,
    VMOVDQU,
    VMULPS,
    VPADDW,
    VPAND,
    VPOR,
    VPXOR,
    Function,
    Label,
    uarch,
)
from peachpy.x86_64.registers import YMMRegister

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


__all__ = ["QUANT_FORMATS", "emit_quantize", "quantize_table"]
