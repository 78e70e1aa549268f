"""Instruction forms: the one table both the encoder and the decoder read.

A :class:`Form` is a mnemonic, a base word holding every fixed bit, and one :class:`Field` codec
per operand. A codec accepts operands of some kinds, encodes an operand into the bits it owns
(raising ValueError naming the operand and the allowed range) and decodes those bits back to
objdump's text. Forms are expanded per register width and per arrangement, so every codec is
simple and the fixed bits of a form are exactly the bits no codec owns; that gives the decoder a
mask/value pair per form, and the most specific match (aliases such as ``mov``, ``cmp``, ``uxtl``
fix more bits) is objdump's preferred spelling.

The instruction classes register their forms in the ``isa_*`` modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from bitsearch.asm.aarch64.operands import (
    ARR_INFO,
    GPR,
    FPReg,
    Imm,
    Label,
    Mem,
    Operand,
    Shift,
    VElem,
    VList,
    VReg,
)

MASK32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Context:
    """What a label codec needs: the instruction's address and the label addresses."""

    pc: int
    labels: dict[str, int]


class Field:
    """Codec of one operand. Subclasses set ``kinds`` and ``bits`` (the mask of owned bits)."""

    kinds: frozenset[str] = frozenset()
    bits: int = 0

    def encode(self, op: Operand, ctx: Context | None) -> int:
        raise NotImplementedError

    def decode(self, word: int, pc: int) -> str | None:
        """objdump text of the operand, or None when these bits are not a valid operand here."""
        raise NotImplementedError


def bit_field(word: int, pos: int, width: int) -> int:
    """Bits ``pos .. pos+width-1`` of ``word``, as an unsigned number."""
    return (word >> pos) & ((1 << width) - 1)


def _range_err(what: str, value: int, lo: int, hi: int, step: int = 1) -> ValueError:
    mult = f"not a multiple of {step} in" if step > 1 and value % step else "not in"
    return ValueError(f"{what} {value} {mult} {lo}..{hi}")


def signed64(delta: int) -> int:
    """A difference of 64-bit addresses as a signed number (objdump prints wrapped targets)."""
    delta &= (1 << 64) - 1
    return delta - (1 << 64) if delta >> 63 else delta


def check_imm(what: str, value: int, lo: int, hi: int, step: int = 1) -> int:
    """Return ``value`` if ``lo <= value <= hi`` and ``value % step == 0``, else raise ValueError."""
    if not lo <= value <= hi or value % step:
        raise _range_err(what, value, lo, hi, step)
    return value


# ---------------------------------------------------------------------------------------------
# Register codecs


class R(Field):
    """General register number at bit ``pos``. ``width`` 64/32; ``sp``: number 31 means SP, not ZR;
    ``sp_only``: accept SP alone (for the MOV-to/from-SP alias)."""

    def __init__(self, pos: int, width: int = 64, sp: bool = False, name: str = "register",
                 sp_only: bool = False) -> None:
        self.pos, self.width, self.sp, self.name = pos, width, sp, name
        base = "x" if width == 64 else "w"
        zr = ("sp" if width == 64 else "wsp") if sp else base + "zr"
        self.kinds = frozenset({zr} if sp_only else {base, zr})
        self.bits = 31 << pos

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, GPR)
        return op.num << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        n = bit_field(word, self.pos, 5)
        prefix = "x" if self.width == 64 else "w"
        if n == 31:
            return ("sp" if self.width == 64 else "wsp") if self.sp else prefix + "zr"
        return prefix + str(n)


class RNot31(R):
    """General register that must not be number 31 (e.g. LD1 post-index register)."""

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, GPR)
        if op.num == 31:
            raise ValueError(f"{self.name} {op} not allowed (x0..x30)")
        return op.num << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        return None if bit_field(word, self.pos, 5) == 31 else super().decode(word, pc)


class V(Field):
    """Vector register ``v{n}.{arr}`` with the number at ``pos`` (arrangement fixed by the form)."""

    def __init__(self, pos: int, arr: str, limit: int = 32) -> None:
        self.pos, self.arr, self.limit = pos, arr, limit
        self.kinds = frozenset({"v." + arr})
        self.bits = (limit - 1) << pos

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, VReg)
        if op.num >= self.limit:
            raise ValueError(f"register {op} not in v0..v{self.limit - 1}")
        return op.num << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        return f"v{bit_field(word, self.pos, 5) & (self.limit - 1)}.{self.arr}"


class F(Field):
    """Scalar SIMD&FP register ``{size}{n}`` with the number at ``pos``."""

    def __init__(self, pos: int, size: str) -> None:
        self.pos, self.size = pos, size
        self.kinds = frozenset({size})
        self.bits = 31 << pos

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, FPReg)
        return op.num << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        return f"{self.size}{bit_field(word, self.pos, 5)}"


class VL(Field):
    """Register list of ``count`` registers with arrangement ``arr``; the first number at ``pos``."""

    def __init__(self, count: int, arr: str, pos: int = 0) -> None:
        self.count, self.arr, self.pos = count, arr, pos
        self.kinds = frozenset({f"l{count}.{arr}"})
        self.bits = 31 << pos

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, VList)
        return op.first << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        return str(VList(bit_field(word, self.pos, 5), self.count, self.arr))


class VLane(Field):
    """Element list ``{v0.s, v1.s}[i]`` of single-structure loads/stores: Rt at bit 0 and the
    index in Q(30):S(12):size(11:10) (b: all four bits, h: three, s: two, d: Q alone)."""

    def __init__(self, count: int, esize: str) -> None:
        self.count, self.esize = count, esize
        self.size = "bhsd".index(esize)
        self.kinds = frozenset({f"le{count}.{esize}"})
        self.bits = 31 | 1 << 30 | {0: 7 << 10, 1: 3 << 11, 2: 1 << 12, 3: 0}[self.size]

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, VList) and op.index is not None
        i = check_imm(f"index of {op}", op.index, 0, (16 >> self.size) - 1)
        i <<= self.size  # the byte offset of the lane: Q:S:size
        return op.first | (i >> 3) << 30 | (i & 7) << 10

    def decode(self, word: int, pc: int) -> str | None:
        i = bit_field(word, 30, 1) << 3 | bit_field(word, 10, 3)
        return str(VList(word & 31, self.count, self.esize, i >> self.size))


class ElemImm5(Field):
    """Element ``v{n}.{T}[i]`` with the register at ``pos`` and T:index in imm5 (bits 16..20), as in
    DUP (element), UMOV, INS: imm5 = index << (size + 1) | 1 << size."""

    def __init__(self, pos: int, esize: str) -> None:
        self.pos, self.esize = pos, esize
        self.size = "bhsd".index(esize)
        self.kinds = frozenset({"e." + esize})
        self.bits = (31 << pos) | (((1 << (4 - self.size)) - 1) << (17 + self.size))

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, VElem)
        check_imm(f"index of {op}", op.index, 0, (16 >> self.size) - 1)
        return op.num << self.pos | op.index << (17 + self.size)

    def decode(self, word: int, pc: int) -> str | None:
        index = bit_field(word, 17 + self.size, 4 - self.size)
        return f"v{bit_field(word, self.pos, 5)}.{self.esize}[{index}]"


class ElemImm4(Field):
    """Source element of INS (element): register at bit 5, index << size in imm4 (bits 11..14)."""

    def __init__(self, esize: str) -> None:
        self.esize = esize
        self.size = "bhsd".index(esize)
        self.kinds = frozenset({"e." + esize})
        self.bits = (31 << 5) | (((1 << (4 - self.size)) - 1) << (11 + self.size))

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, VElem)
        check_imm(f"index of {op}", op.index, 0, (16 >> self.size) - 1)
        return op.num << 5 | op.index << (11 + self.size)

    def decode(self, word: int, pc: int) -> str | None:
        return f"v{bit_field(word, 5, 5)}.{self.esize}[{bit_field(word, 11 + self.size, 4 - self.size)}]"


class ElemHLM(Field):
    """By-element operand: for H elements Vm is 4 bits (16..19) and the index is H:L:M
    (bits 11, 21, 20); for S elements Vm is 5 bits and the index is H:L; for D elements
    (floating point) Vm is 5 bits and the index is H."""

    def __init__(self, esize: str) -> None:
        self.esize = esize
        self.kinds = frozenset({"e." + esize})
        self.bits = (15 << 16) | (1 << 11) | (1 << 20) | (0 if esize == "d" else 1 << 21)

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, VElem)
        i = op.index
        if self.esize == "h":
            if op.num > 15:
                raise ValueError(f"register of {op} not in v0..v15 (by-element .h)")
            check_imm(f"index of {op}", i, 0, 7)
            return op.num << 16 | (i >> 2) << 11 | ((i >> 1) & 1) << 21 | (i & 1) << 20
        if self.esize == "d":
            check_imm(f"index of {op}", i, 0, 1)
            return op.num << 16 | i << 11
        check_imm(f"index of {op}", i, 0, 3)
        return op.num << 16 | (i >> 1) << 11 | (i & 1) << 21

    def decode(self, word: int, pc: int) -> str | None:
        h, lo, m = bit_field(word, 11, 1), bit_field(word, 21, 1), bit_field(word, 20, 1)
        if self.esize == "h":
            return f"v{bit_field(word, 16, 4)}.h[{h << 2 | lo << 1 | m}]"
        if self.esize == "d":
            return f"v{bit_field(word, 16, 5)}.d[{h}]"
        return f"v{bit_field(word, 16, 5)}.s[{h << 1 | lo}]"


# ---------------------------------------------------------------------------------------------
# Immediate codecs


class UImm(Field):
    """Unsigned immediate ``value / scale`` in ``width`` bits at ``pos``; printed hex or decimal."""

    def __init__(self, pos: int, width: int, name: str = "immediate", *, scale: int = 1,
                 hexfmt: bool = True, offset: int = 0) -> None:
        self.pos, self.width, self.name, self.scale, self.hexfmt, self.offset = (
            pos, width, name, scale, hexfmt, offset)
        self.kinds = frozenset({"imm"})
        self.bits = ((1 << width) - 1) << pos

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        hi = ((1 << self.width) - 1 + self.offset) * self.scale
        v = check_imm(self.name, op.value, self.offset * self.scale, hi, self.scale)
        return (v // self.scale - self.offset) << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        v = (bit_field(word, self.pos, self.width) + self.offset) * self.scale
        return f"#{v:#x}" if self.hexfmt else f"#{v}"


class ShiftField(Field):
    """Shift modifier ``{op} #{amount}``; ``ops`` maps accepted shift names to their field codes,
    ``amounts`` maps the allowed amounts to the amount field (or None: the amount goes to
    ``apos``/``awidth`` directly, bounded by ``amax``)."""

    def __init__(self, ops: dict[str, int], opos: int, *, amounts: dict[int, int] | None = None,
                 apos: int = 0, awidth: int = 0, amax: int = 0, what: str = "shift") -> None:
        self.ops, self.opos, self.amounts, self.apos, self.awidth, self.amax, self.what = (
            ops, opos, amounts, apos, awidth, amax, what)
        self.kinds = frozenset(ops)
        obits = (max(ops.values()).bit_length() if len(ops) > 1 else 0)
        self.obits = obits
        self.bits = (((1 << obits) - 1) << opos) | (((1 << awidth) - 1) << apos)

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Shift)
        word = self.ops[op.op] << self.opos
        if self.amounts is not None:
            if op.amount not in self.amounts:
                allowed = ", ".join(str(a) for a in self.amounts)
                raise ValueError(f"{self.what} amount {op.amount} not one of {allowed}")
            return word | self.amounts[op.amount] << self.apos
        check_imm(f"{self.what} amount", op.amount, 0, self.amax)
        return word | op.amount << self.apos

    def decode(self, word: int, pc: int) -> str | None:
        code = bit_field(word, self.opos, self.obits) if self.obits else next(iter(self.ops.values()))
        names = [k for k, v in self.ops.items() if v == code]
        if not names:
            return None
        if self.amounts is not None:
            a = bit_field(word, self.apos, self.awidth)
            amt = [k for k, v in self.amounts.items() if v == a]
            if not amt:
                return None
            return f"{names[0]} #{amt[0]}"
        a = bit_field(word, self.apos, self.awidth)
        if a > self.amax:
            return None
        return f"{names[0]} #{a}"


class LabelField(Field):
    """PC-relative branch target: ``width``-bit signed word offset at ``pos`` (range checked)."""

    def __init__(self, pos: int, width: int) -> None:
        self.pos, self.width = pos, width
        self.kinds = frozenset({"label", "imm"})
        self.bits = ((1 << width) - 1) << pos

    def encode(self, op: Operand, ctx: Context | None) -> int:
        if isinstance(op, Imm):  # an absolute address as objdump prints it
            target = op.value
        else:
            assert isinstance(op, Label)
            if ctx is None or op.name not in ctx.labels:
                raise ValueError(f"undefined label {op.name!r}")
            target = ctx.labels[op.name]
        pc = 0 if ctx is None else ctx.pc
        delta = signed64(target - pc)
        lim = 1 << (self.width + 1)
        if delta % 4 or not -lim <= delta < lim:
            raise ValueError(f"branch target {op} at offset {delta} out of range "
                             f"{-lim}..{lim - 4} (multiple of 4)")
        return ((delta >> 2) & ((1 << self.width) - 1)) << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        v = bit_field(word, self.pos, self.width)
        if v >> (self.width - 1):
            v -= 1 << self.width
        return f"{(pc + 4 * v) & 0xFFFFFFFFFFFFFFFF:#x}"


# ---------------------------------------------------------------------------------------------
# Memory codecs


class MemUImm(Field):
    """``[xn|sp{, #imm}]``: base at bit 5, unsigned offset / ``scale`` in imm12 at bit 10."""

    kinds = frozenset({"mem"})
    bits = (31 << 5) | (0xFFF << 10)

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem)
        off = check_imm("offset", op.offset, 0, 4095 * self.scale, self.scale)  # type: ignore[arg-type]
        return op.base.num << 5 | (off // self.scale) << 10

    def decode(self, word: int, pc: int) -> str | None:
        base = R(5, sp=True).decode(word, pc)
        off = bit_field(word, 10, 12) * self.scale
        return f"[{base}, #{off}]" if off else f"[{base}]"


class MemBase(Field):
    """``[xn|sp]`` with no offset (LD1/ST1 and friends): base at bit 5."""

    kinds = frozenset({"mem"})
    bits = 31 << 5

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem)
        if op.offset != 0:
            raise ValueError(f"offset {op.offset} not allowed here (only [xn])")
        return op.base.num << 5

    def decode(self, word: int, pc: int) -> str | None:
        return f"[{R(5, sp=True).decode(word, pc)}]"


class MemIndexed(Field):
    """Pre- or post-index ``[xn, #imm]!`` / ``[xn], #imm`` (or ``unscaled``: LDUR's ``[xn, #imm]``):
    signed ``width``-bit offset / ``scale`` at ``pos`` (imm9 at 12 for LDR/STR, imm7 at 15 for LDP/STP)."""

    def __init__(self, mode: str, pos: int, width: int, scale: int) -> None:
        self.mode, self.pos, self.width, self.scale = mode, pos, width, scale
        self.kinds = frozenset({{"pre": "mem!", "post": "mem+imm"}.get(mode, "mem")})
        self.bits = (31 << 5) | (((1 << width) - 1) << pos)

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem) and isinstance(op.offset, int)
        h = 1 << (self.width - 1)
        off = check_imm("offset", op.offset, -h * self.scale, (h - 1) * self.scale, self.scale)
        return op.base.num << 5 | ((off // self.scale) & ((1 << self.width) - 1)) << self.pos

    def decode(self, word: int, pc: int) -> str | None:
        base = R(5, sp=True).decode(word, pc)
        v = bit_field(word, self.pos, self.width)
        if v >> (self.width - 1):
            v -= 1 << self.width
        v *= self.scale
        if self.mode == "pre":
            return f"[{base}, #{v}]!"
        if self.mode == "post":
            return f"[{base}], #{v}"
        return f"[{base}, #{v}]" if v else f"[{base}]"


class MemOffset7(Field):
    """LDP/STP signed offset ``[xn|sp{, #imm}]``: imm7 / scale at bit 15."""

    kinds = frozenset({"mem"})
    bits = (31 << 5) | (0x7F << 15)

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem) and isinstance(op.offset, int)
        off = check_imm("offset", op.offset, -64 * self.scale, 63 * self.scale, self.scale)
        return op.base.num << 5 | ((off // self.scale) & 0x7F) << 15

    def decode(self, word: int, pc: int) -> str | None:
        base = R(5, sp=True).decode(word, pc)
        v = bit_field(word, 15, 7)
        v = (v - 128 if v & 64 else v) * self.scale
        return f"[{base}, #{v}]" if v else f"[{base}]"


class MemRegOffset(Field):
    """``[xn|sp, xm{, lsl #s}]`` / ``[xn|sp, wm, uxtw|sxtw {#s}]`` / ``[xn|sp, xm, sxtx {#s}]``:
    Rm at 16, option at 13..15, S at 12; ``s`` is log2 of the access size. An explicit ``#0``
    sets S only for byte accesses (as GNU as does)."""

    kinds = frozenset({"mem,reg"})
    bits = (31 << 5) | (31 << 16) | (7 << 13) | (1 << 12)
    OPTIONS: ClassVar[dict[str, int]] = {"uxtw": 2, "lsl": 3, "sxtw": 6, "sxtx": 7}

    def __init__(self, size_log2: int) -> None:
        self.s = size_log2

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem) and isinstance(op.offset, GPR)
        rm, ext = op.offset, op.extend
        want = 32 if ext in ("uxtw", "sxtw") else 64
        if rm.width != want or rm.sp:
            regs = "w0..w30/wzr" if want == 32 else "x0..x30/xzr"
            raise ValueError(f"offset register {rm} not {regs} (with {ext})")
        sbit = 0
        if op.shift is not None:
            allowed = (0, self.s)
            if op.shift not in allowed:
                raise ValueError(f"offset shift {ext} #{op.shift} not one of {', '.join(map(str, allowed))}")
            sbit = 1 if (op.shift == self.s and self.s) or self.s == 0 else 0
        return op.base.num << 5 | rm.num << 16 | self.OPTIONS[ext] << 13 | sbit << 12

    def decode(self, word: int, pc: int) -> str | None:
        option = bit_field(word, 13, 3)
        names = [k for k, v in self.OPTIONS.items() if v == option]
        if not names:
            return None
        ext = names[0]
        base = R(5, sp=True).decode(word, pc)
        rm = R(16, 32 if ext in ("uxtw", "sxtw") else 64).decode(word, pc)
        if bit_field(word, 12, 1):
            return f"[{base}, {rm}, {ext} #{self.s}]"
        return f"[{base}, {rm}]" if ext == "lsl" else f"[{base}, {rm}, {ext}]"


class MemPostReg(Field):
    """LD1/ST1 post-index by register ``[xn|sp], xm``: Rm at 16 (31 means the immediate form)."""

    kinds = frozenset({"mem+reg"})
    bits = (31 << 5) | (31 << 16)

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem) and isinstance(op.offset, GPR)
        if op.offset.num == 31 or op.offset.width != 64:
            raise ValueError(f"post-index register {op.offset} not x0..x30")
        return op.base.num << 5 | op.offset.num << 16

    def decode(self, word: int, pc: int) -> str | None:
        rm = bit_field(word, 16, 5)
        if rm == 31:
            return None
        return f"[{R(5, sp=True).decode(word, pc)}], x{rm}"


class MemPostFixed(Field):
    """LD1/ST1 post-index by immediate: the immediate must equal the bytes transferred."""

    kinds = frozenset({"mem+imm"})
    bits = 31 << 5

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Mem)
        if op.offset != self.nbytes:
            raise ValueError(f"post-index offset {op.offset} must be {self.nbytes} (the bytes transferred)")
        return op.base.num << 5

    def decode(self, word: int, pc: int) -> str | None:
        return f"[{R(5, sp=True).decode(word, pc)}], #{self.nbytes}"


# ---------------------------------------------------------------------------------------------
# Forms and the table


@dataclass(frozen=True, slots=True, eq=False)
class Form:
    """One encodable shape: ``mnemonic``, fixed ``base`` bits, one codec per operand.

    ``alias``: preferred by the decoder over a non-alias form with the same mask; ``when``: extra
    decode-time condition on the word (e.g. MOV-to/from-SP needs Rd or Rn = 31); ``comment``:
    objdump's trailing comment for the decoded word.
    """

    mnemonic: str
    base: int
    fields: tuple[Field, ...]
    alias: bool = False
    when: Callable[[int], bool] | None = None
    comment: Callable[[int], str | None] | None = None
    encoder: Callable[[tuple[Operand, ...], Context | None], int] | None = None
    free: int = 0  # bits set by ``encoder`` that no printed operand owns (e.g. Rm of MOV = ORR)

    @property
    def mask(self) -> int:
        owned = self.free
        for f in self.fields:
            owned |= f.bits
        return ~owned & MASK32

    def encode(self, ops: tuple[Operand, ...], ctx: Context | None = None) -> int:
        if self.encoder is not None:  # whole-instruction encoder for operands that interact
            return self.base | self.encoder(ops, ctx)
        word = self.base
        for f, op in zip(self.fields, ops, strict=True):
            word |= f.encode(op, ctx)
        return word

    def decode(self, word: int, pc: int) -> str | None:
        if self.when is not None and not self.when(word):
            return None
        parts = []
        for f in self.fields:
            t = f.decode(word, pc)
            if t is None:
                return None
            parts.append(t)
        text = f"{self.mnemonic}\t{', '.join(parts)}" if parts else self.mnemonic
        if self.comment is not None:
            note = self.comment(word)
            if note:
                text += "\t// " + note
        return text


class Table:
    """All forms, indexed by (mnemonic, operand kinds) for encoding and by top bits for decoding."""

    def __init__(self) -> None:
        self.by_sig: dict[tuple[str, tuple[str, ...]], list[Form]] = {}
        self.by_mnemonic: dict[str, list[Form]] = {}
        self.forms: list[Form] = []
        self._decode_index: dict[int, list[Form]] | None = None

    def add(self, mnemonic: str, base: int, *fields: Field, **kw: object) -> Form:
        f = Form(mnemonic, base & MASK32, tuple(fields), **kw)  # type: ignore[arg-type]
        assert f.base & ~f.mask & MASK32 == 0, (mnemonic, hex(base))
        self.forms.append(f)
        self.by_mnemonic.setdefault(mnemonic, []).append(f)
        sigs: list[tuple[str, ...]] = [()]
        for fld in fields:
            sigs = [(*s, k) for s in sigs for k in sorted(fld.kinds)]
        for s in sigs:
            self.by_sig.setdefault((mnemonic, s), []).append(f)
        self._decode_index = None
        return f

    def encode(self, mnemonic: str, ops: tuple[Operand, ...], ctx: Context | None = None) -> int:
        """Encode ``mnemonic ops``; raises ValueError naming the mnemonic and the bad operand."""
        key = (mnemonic, tuple(op.kind for op in ops))
        forms = self.by_sig.get(key)
        if forms is None:
            if mnemonic not in self.by_mnemonic:
                raise ValueError(f"unknown or unsupported mnemonic {mnemonic!r}")
            got = ", ".join(f"{op} ({op.kind})" for op in ops) or "no operands"
            raise ValueError(f"{mnemonic.upper()}: no supported form takes {got}; "
                             f"closest operand kinds taken: {self._closest(mnemonic, key[1])}")
        first: ValueError | None = None
        for form in forms:
            try:
                return form.encode(ops, ctx)
            except ValueError as e:
                first = first or e
        assert first is not None
        raise ValueError(f"{mnemonic.upper()}: {first}") from None

    def _closest(self, mnemonic: str, kinds: tuple[str, ...]) -> str:
        """A few signatures of ``mnemonic``, those sharing the most operand kinds first."""
        def score(sig: tuple[str, ...]) -> tuple[int, int, tuple[str, ...]]:
            return (-sum(a == b for a, b in zip(sig, kinds, strict=False)), abs(len(sig) - len(kinds)), sig)

        sigs = sorted({s for (m, s) in self.by_sig if m == mnemonic}, key=score)
        shown = "; ".join("(" + ", ".join(s) + ")" for s in sigs[:5])
        return shown + ("; ..." if len(sigs) > 5 else "")

    def decode(self, word: int, pc: int = 0) -> str | None:
        """objdump text of ``word`` (mnemonic TAB operands), or None if no form matches."""
        if self._decode_index is None:
            self._build_decode_index()
        assert self._decode_index is not None
        for mask, base, form in self._decode_index.get(word >> _KEY_SHIFT, ()):
            if word & mask == base:
                text = form.decode(word, pc)
                if text is not None:
                    return text
        return None

    def _build_decode_index(self) -> None:
        """Bucket forms by the top bits of the word; a form whose top bits are not all fixed goes
        into every bucket it can match."""
        index: dict[int, list[tuple[int, int, Form]]] = {}
        masks = [f.mask for f in self.forms]
        # Aliases first (each carries its own preconditions), then the most specific mask.
        order = sorted(range(len(self.forms)),
                       key=lambda i: (not self.forms[i].alias, -bin(masks[i]).count("1"), i))
        for i in order:
            f, mask = self.forms[i], masks[i]
            key_mask = mask >> _KEY_SHIFT
            key_base = f.base >> _KEY_SHIFT
            free = ~key_mask & ((1 << (32 - _KEY_SHIFT)) - 1)
            sub = free
            while True:  # every subset of the free key bits
                index.setdefault(key_base | sub, []).append((mask, f.base, f))
                if sub == 0:
                    break
                sub = (sub - 1) & free
        self._decode_index = index


_KEY_SHIFT = 21


TABLE = Table()


def arr_bits(arr: str) -> int:
    """Q (bit 30) and size (bits 22..23) of an arrangement, as most SIMD classes place them."""
    size, q = ARR_INFO[arr]
    return q << 30 | size << 22


__all__ = ["MASK32", "TABLE", "Context", "Field", "Form", "Table", "arr_bits", "bit_field", "check_imm",
           "signed64"]
