"""Base (non-SIMD) A64 instructions: loads/stores, data processing, branches.

Each section registers its forms in :data:`TABLE`; the ARM ARM field layout heads each section.
"""

from __future__ import annotations

from bitsearch.asm.aarch64.forms import (
    TABLE,
    VL,
    Context,
    F,
    Field,
    LabelField,
    MemBase,
    MemIndexed,
    MemOffset7,
    MemPostFixed,
    MemPostReg,
    MemRegOffset,
    MemUImm,
    R,
    ShiftField,
    UImm,
    VLane,
    bit_field,
    check_imm,
    signed64,
)
from bitsearch.asm.aarch64.operands import ARR_INFO, ARRANGEMENTS, GPR, Imm, Label, Operand, Shift

add = TABLE.add

# ---------------------------------------------------------------------------------------------
# Loads and stores, single register
#   size(31:30) 111 V(26) 01 opc(23:22) imm12(21:10) Rn(9:5) Rt(4:0)          unsigned offset
#   size 111 V 00 opc 0 imm9(20:12) 01|11(11:10) Rn Rt                         post | pre-index
#   size 111 V 00 opc 0 imm9 00 Rn Rt                                          LDUR/STUR
#   size 111 V 00 opc 1 Rm(20:16) option(15:13) S(12) 10 Rn Rt                register offset
# (mnemonic, register kind, size letter, log2 bytes, base of the unsigned-offset form)
_LDST = [
    ("ldr", 64, None, 3, 0xF9400000), ("str", 64, None, 3, 0xF9000000),
    ("ldr", 32, None, 2, 0xB9400000), ("str", 32, None, 2, 0xB9000000),
    ("ldrb", 32, None, 0, 0x39400000), ("strb", 32, None, 0, 0x39000000),
    ("ldrh", 32, None, 1, 0x79400000), ("strh", 32, None, 1, 0x79000000),
    ("ldrsw", 64, None, 2, 0xB9800000),
    ("ldrsb", 64, None, 0, 0x39800000), ("ldrsb", 32, None, 0, 0x39C00000),
    ("ldrsh", 64, None, 1, 0x79800000), ("ldrsh", 32, None, 1, 0x79C00000),
    ("ldr", 0, "b", 0, 0x3D400000), ("str", 0, "b", 0, 0x3D000000),
    ("ldr", 0, "h", 1, 0x7D400000), ("str", 0, "h", 1, 0x7D000000),
    ("ldr", 0, "s", 2, 0xBD400000), ("str", 0, "s", 2, 0xBD000000),
    ("ldr", 0, "d", 3, 0xFD400000), ("str", 0, "d", 3, 0xFD000000),
    ("ldr", 0, "q", 4, 0x3DC00000), ("str", 0, "q", 4, 0x3D800000),
]
for mn, width, fp, lg, base in _LDST:
    rt: Field = R(0, width) if fp is None else F(0, fp)
    nb = base & ~(1 << 24)  # the imm9 / register-offset classes clear bit 24
    add(mn, base, rt, MemUImm(1 << lg))
    add(mn, nb | 0x400, rt, MemIndexed("post", 12, 9, 1))
    add(mn, nb | 0xC00, rt, MemIndexed("pre", 12, 9, 1))
    add(mn, nb | 0x200800, rt, MemRegOffset(lg))
    add(mn.replace("ldr", "ldur").replace("str", "stur"), nb, rt, MemIndexed("unscaled", 12, 9, 1))
    # GNU as turns an offset the scaled form cannot take into LDUR/STUR; objdump prints LDUR
    add(mn, nb, rt, MemIndexed("unscaled", 12, 9, 1))

# ---------------------------------------------------------------------------------------------
# Load/store pair
#   opc(31:30) 101 V(26) 0 mode(24:23) L(22) imm7(21:15) Rt2(14:10) Rn(9:5) Rt(4:0)
#   mode: 01 post-index, 10 signed offset, 11 pre-index
_PAIR = [(64, None, 3, 0x28000000 | 2 << 30), (32, None, 2, 0x28000000),
         (0, "s", 2, 0x2C000000), (0, "d", 3, 0x2C000000 | 1 << 30), (0, "q", 4, 0x2C000000 | 2 << 30)]
for width, fp, lg, base in _PAIR:
    def reg(pos: int, width: int = width, fp: str | None = fp) -> Field:
        return R(pos, width) if fp is None else F(pos, fp)

    for mn, load in (("stp", 0), ("ldp", 1)):
        b = base | load << 22
        add(mn, b | 2 << 23, reg(0), reg(10), MemOffset7(1 << lg))
        add(mn, b | 1 << 23, reg(0), reg(10), MemIndexed("post", 15, 7, 1 << lg))
        add(mn, b | 3 << 23, reg(0), reg(10), MemIndexed("pre", 15, 7, 1 << lg))

# ---------------------------------------------------------------------------------------------
# Advanced SIMD load/store multiple structures (LD1/ST1) and single structure replicate (LD1R)
#   0 Q(30) 0011000 L(22) 000000 opcode(15:12) size(11:10) Rn Rt            no offset
#   0 Q 0011001 L 0 Rm(20:16) opcode size Rn Rt                               post-index (Rm=31: imm)
#   0 Q 0011010 1 0 00000 110 0 size Rn Rt / 0 Q 0011011 1 0 Rm 110 0 size   LD1R
#   0 Q 0011010 L R(21) 00000 opcode(15:13) S(12) size Rn Rt                  single structure (lane)
#   LDnR: opcode 110 (n = 1, 2) / 111 (n = 3, 4), R = 1 for n = 2, 4
# (mnemonic, registers, opcode): LD1 of 1..4 registers, LD2/LD3/LD4 interleaved (no 1d)
_LDST_MULTI = [("1", 1, 0b0111), ("1", 2, 0b1010), ("1", 3, 0b0110), ("1", 4, 0b0010),
               ("2", 2, 0b1000), ("3", 3, 0b0100), ("4", 4, 0b0000)]
for arr in ARRANGEMENTS:
    size, q = ARR_INFO[arr]
    nbytes = 16 if q else 8
    for n, count, opcode in _LDST_MULTI:
        if n != "1" and arr == "1d":
            continue
        for mn, load in (("st" + n, 0), ("ld" + n, 1)):
            b = 0x0C000000 | q << 30 | load << 22 | opcode << 12 | size << 10
            add(mn, b, VL(count, arr), MemBase())
            add(mn, b | 1 << 23 | 31 << 16, VL(count, arr), MemPostFixed(count * nbytes))
            add(mn, b | 1 << 23, VL(count, arr), MemPostReg())
    for count in range(1, 5):
        b = 0x0D40C000 | q << 30 | size << 10 | (count - 1) % 2 << 21 | (count - 1) // 2 << 13
        add(f"ld{count}r", b, VL(count, arr), MemBase())
        add(f"ld{count}r", b | 1 << 23 | 31 << 16, VL(count, arr), MemPostFixed(count << size))
        add(f"ld{count}r", b | 1 << 23, VL(count, arr), MemPostReg())
for esize_log2, es in enumerate("bhsd"):  # single lane: opcode 000 b, 010 h, 100 s/d (d: size 01)
    opcode = (0, 2, 4, 4)[esize_log2]
    for count in range(1, 5):
        for mn, load in ((f"st{count}", 0), (f"ld{count}", 1)):
            b = (0x0D000000 | load << 22 | (count - 1) % 2 << 21 | ((count - 1) // 2 | opcode) << 13
                 | (1 << 10 if es == "d" else 0))
            add(mn, b, VLane(count, es), MemBase())
            add(mn, b | 1 << 23 | 31 << 16, VLane(count, es), MemPostFixed(count << esize_log2))
            add(mn, b | 1 << 23, VLane(count, es), MemPostReg())

# ---------------------------------------------------------------------------------------------
# Add/subtract (immediate)
#   sf(31) op(30) S(29) 100010 sh(22) imm12(21:10) Rn(9:5) Rd(4:0)
#   Like GNU as, a bare immediate that is a multiple of 4096 gets LSL #12, and a negative one
#   flips ADD <-> SUB (CMP <-> CMN).


class AddSubImm(Field):
    """ADD/SUB immediate without an explicit shift: imm12, or imm12 << 12 (sets sh, bit 22).
    ``negate``: the fallback form of the opposite operation, used for negative values only (it
    never decodes: objdump spells those words with the other mnemonic)."""

    kinds = frozenset({"imm"})
    bits = 0x1FFF << 10

    def __init__(self, negate: bool = False) -> None:
        self.negate = negate

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        v = -op.value if self.negate else op.value
        if 0 <= v <= 0xFFF:
            return v << 10
        if v > 0 and v % 4096 == 0 and v >> 12 <= 0xFFF:
            return 1 << 22 | (v >> 12) << 10
        raise ValueError(f"immediate {op.value} not in 0..4095 (nor a multiple of 4096 up to {0xFFF << 12}, "
                         "nor the negative of one of those)")

    def decode(self, word: int, pc: int) -> str | None:
        if self.negate or word >> 22 & 1:
            return None
        return f"#{bit_field(word, 10, 12):#x}"


_LSL12 = {"lsl": 0}
for sf, w in ((1, 64), (0, 32)):
    for mn, op, s in (("add", 0, 0), ("adds", 0, 1), ("sub", 1, 0), ("subs", 1, 1)):
        b = sf << 31 | op << 30 | s << 29 | 0x11000000
        rd = R(0, w) if s else R(0, w, sp=True)
        imm = UImm(10, 12, "immediate")
        sh = ShiftField(_LSL12, 0, amounts={0: 0, 12: 1}, apos=22, awidth=1)
        add(mn, b, rd, R(5, w, sp=True), AddSubImm())
        add(mn, b, rd, R(5, w, sp=True), imm, sh)
        if s:  # CMP / CMN: Rd = ZR
            alias = "cmp" if op else "cmn"
            add(alias, b | 31, R(5, w, sp=True), AddSubImm(), alias=True)
            add(alias, b | 31, R(5, w, sp=True), imm, sh, alias=True)
    for mn, op, s in (("add", 0, 0), ("adds", 0, 1), ("sub", 1, 0), ("subs", 1, 1)):  # negative fallbacks
        b = sf << 31 | (1 - op) << 30 | s << 29 | 0x11000000
        rd = R(0, w) if s else R(0, w, sp=True)
        add(mn, b, rd, R(5, w, sp=True), AddSubImm(negate=True))
        if s:
            add("cmp" if op else "cmn", b | 31, R(5, w, sp=True), AddSubImm(negate=True))
    # MOV to/from SP = ADD #0; objdump prefers it only when Rd or Rn is SP.
    b = sf << 31 | 0x11000000

    def _is_sp_move(word: int) -> bool:
        return word & 31 == 31 or (word >> 5) & 31 == 31

    # two forms, each accepting only SP on one side, so MOV Xd, Xn still means ORR
    add("mov", b, R(0, w, sp=True, sp_only=True), R(5, w, sp=True), alias=True, when=_is_sp_move)
    add("mov", b, R(0, w, sp=True), R(5, w, sp=True, sp_only=True), alias=True, when=_is_sp_move)

# ---------------------------------------------------------------------------------------------
# Add/subtract and logical (shifted register)
#   sf op S 01011 shift(23:22) 0 Rm(20:16) imm6(15:10) Rn Rd          add/sub
#   sf opc(30:29) 01010 shift N(21) Rm imm6 Rn Rd                      logical
_SHIFTS = {"lsl": 0, "lsr": 1, "asr": 2}
for sf, w in ((1, 64), (0, 32)):
    for mn, base, shifts in (
        ("add", 0x0B000000, _SHIFTS), ("adds", 0x2B000000, _SHIFTS),
        ("sub", 0x4B000000, _SHIFTS), ("subs", 0x6B000000, _SHIFTS),
        ("and", 0x0A000000, _SHIFTS | {"ror": 3}), ("ands", 0x6A000000, _SHIFTS | {"ror": 3}),
        ("orr", 0x2A000000, _SHIFTS | {"ror": 3}), ("eor", 0x4A000000, _SHIFTS | {"ror": 3}),
        ("bic", 0x0A200000, _SHIFTS | {"ror": 3}), ("orn", 0x2A200000, _SHIFTS | {"ror": 3}),
    ):
        b = sf << 31 | base
        sh = ShiftField(shifts, 22, apos=10, awidth=6, amax=w - 1)
        add(mn, b, R(0, w), R(5, w), R(16, w))
        add(mn, b, R(0, w), R(5, w), R(16, w), sh)
        alias = {"subs": "cmp", "adds": "cmn", "ands": "tst"}.get(mn)
        if alias:  # Rd = ZR
            add(alias, b | 31, R(5, w), R(16, w), alias=True)
            add(alias, b | 31, R(5, w), R(16, w), sh, alias=True)
        alias = {"sub": "neg", "subs": "negs", "orn": "mvn"}.get(mn)
        if alias:  # Rn = ZR
            add(alias, b | 31 << 5, R(0, w), R(16, w), alias=True)
            add(alias, b | 31 << 5, R(0, w), R(16, w), sh, alias=True)
    add("mov", sf << 31 | 0x2A0003E0, R(0, w), R(16, w), alias=True)  # ORR Rd, ZR, Rm

# ---------------------------------------------------------------------------------------------
# Add/subtract (extended register)
#   sf op S 01011 00 1 Rm(20:16) option(15:13) imm3(12:10) Rn Rd
#   option: UXTB UXTH UXTW UXTX SXTB SXTH SXTW SXTX; LSL is UXTX (64-bit) / UXTW (32-bit) when
#   Rd or Rn is SP (for ADDS/SUBS: Rn), which is also how objdump spells it then.
_EXT_W = {"uxtb": 0, "uxth": 1, "uxtw": 2, "sxtb": 4, "sxth": 5, "sxtw": 6}
_EXT_X = {"uxtx": 3, "sxtx": 7}


class Extend(Field):
    """Extend operand ``{op}{ #amount}`` (amount 0..4) in option(15:13):imm3(12:10)."""

    bits = 0x3F << 10

    def __init__(self, ops: dict[str, int]) -> None:
        self.ops = ops
        self.kinds = frozenset(ops)

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Shift)
        check_imm(f"{op.op} amount", op.amount, 0, 4)
        return self.ops[op.op] << 13 | op.amount << 10

    def decode(self, word: int, pc: int) -> str | None:
        option, amount = bit_field(word, 13, 3), bit_field(word, 10, 3)
        names = [k for k, v in self.ops.items() if v == option]
        if not names or amount > 4:
            return None
        return f"{names[0]} #{amount}" if amount else names[0]


for sf, w in ((1, 64), (0, 32)):
    lsl_option = 3 if sf else 2

    def _sp_operand(word: int) -> bool:
        s_bit = word >> 29 & 1
        return (word >> 5) & 31 == 31 or (not s_bit and word & 31 == 31)

    for mn, base in (("add", 0x0B200000), ("adds", 0x2B200000), ("sub", 0x4B200000), ("subs", 0x6B200000)):
        b = sf << 31 | base
        s = mn.endswith("s")
        rd = R(0, w) if s else R(0, w, sp=True)
        targets = [(mn, b, (rd,))]
        if s:
            targets.append(("cmp" if mn == "subs" else "cmn", b | 31, ()))
        for name, bb, dst in targets:
            alias = name != mn
            rn = R(5, w, sp=True)
            lsl = ShiftField({"lsl": 0}, 0, amounts={i: i for i in range(5)}, apos=10, awidth=3)
            fixed = bb | lsl_option << 13
            # the LSL spelling (or none) when SP is involved
            add(name, fixed, *dst, rn, R(16, w), alias=True, when=_sp_operand)
            add(name, fixed, *dst, rn, R(16, w), lsl, alias=True, when=_sp_operand)
            if sf:
                add(name, bb, *dst, rn, R(16, 32), Extend(_EXT_W), alias=alias)
                add(name, bb, *dst, rn, R(16, 64), Extend(_EXT_X), alias=alias)
            else:
                add(name, bb, *dst, rn, R(16, 32), Extend(_EXT_W | _EXT_X), alias=alias)

# ---------------------------------------------------------------------------------------------
# Logical (immediate)
#   sf opc(30:29) 100100 N(22) immr(21:16) imms(15:10) Rn Rd     opc: 00 AND, 01 ORR, 10 EOR, 11 ANDS
#   The immediate is a rotated run of ones replicated in 2..64-bit elements ("bitmask immediate").


def encode_bitmask(value: int, width: int) -> int | None:
    """N:immr:imms (13 bits, N at bit 12) of a bitmask immediate, or None if not encodable.

    >>> hex(encode_bitmask(0x5555555555555555, 64)), encode_bitmask(0, 64)
    ('0x3c', None)
    """
    mask = (1 << width) - 1
    value &= mask
    if value in (0, mask):
        return None
    size = width
    while size > 2:  # smallest repeating element
        half = size // 2
        if value & ((1 << half) - 1) != (value >> half) & ((1 << half) - 1):
            break
        size = half
    elem = value & ((1 << size) - 1)
    ones = bin(elem).count("1")
    run = (1 << ones) - 1
    emask = (1 << size) - 1
    for r in range(size):  # elem = ROR(run, r)  <=>  ROL(elem, r) = run
        if ((elem << r) | (elem >> (size - r))) & emask == run:
            n = 1 if size == 64 else 0
            imms = ((~(size - 1) << 1) & 0x3F) | (ones - 1)
            return n << 12 | r << 6 | imms
    return None


def decode_bitmask(n: int, immr: int, imms: int, width: int) -> int | None:
    """The value of N:immr:imms at ``width`` bits, or None if reserved."""
    combined = (n << 6) | (~imms & 0x3F)
    if combined == 0:
        return None
    length = combined.bit_length() - 1
    size = 1 << length
    if length < 1 or size > width:
        return None
    levels = size - 1
    s, r = imms & levels, immr & levels
    if s == levels:
        return None
    run = (1 << (s + 1)) - 1
    elem = ((run >> r) | (run << (size - r))) & ((1 << size) - 1)
    value = 0
    for i in range(width // size):
        value |= elem << (i * size)
    return value


def _movable(value: int, width: int) -> bool:
    """True if one MOVZ or MOVN makes ``value`` (then MOV means those, not ORR)."""
    mask = (1 << width) - 1
    for v in (value & mask, ~value & mask):
        if any(v & ~(0xFFFF << (16 * hw)) & mask == 0 for hw in range(width // 16)):
            return True
    return False


class BitmaskImm(Field):
    """Bitmask immediate of the logical-immediate class (printed in hex)."""

    kinds = frozenset({"imm"})
    bits = 0x1FFF << 10

    def __init__(self, width: int, mov: bool = False) -> None:
        self.width, self.mov = width, mov

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        mask = (1 << self.width) - 1
        if not -(1 << (self.width - 1)) <= op.value <= mask:
            raise ValueError(f"immediate {op.value} not in {-(1 << (self.width - 1))}..{mask:#x}")
        enc = encode_bitmask(op.value, self.width)
        if enc is None:
            raise ValueError(f"immediate {op.value & mask:#x} is not a bitmask immediate "
                             f"(a rotated run of ones repeated in 2..{self.width}-bit elements)")
        return enc << 10

    def value(self, word: int) -> int | None:
        n, immr, imms = bit_field(word, 22, 1), bit_field(word, 16, 6), bit_field(word, 10, 6)
        if self.width == 32 and n:
            return None
        return decode_bitmask(n, immr, imms, self.width)

    def decode(self, word: int, pc: int) -> str | None:
        v = self.value(word)
        # objdump spells ORR Rd, ZR, #imm as MOV unless MOVZ/MOVN could do it (they cannot write SP)
        if v is None or (self.mov and word & 31 != 31 and _movable(v, self.width)):
            return None
        return f"#{v:#x}"

    def comment(self, word: int) -> str:
        v = self.value(word) or 0
        if v >> (self.width - 1):
            v -= 1 << self.width
        return f"#{v}"


for sf, w in ((1, 64), (0, 32)):
    for mn, opc in (("and", 0), ("orr", 1), ("eor", 2), ("ands", 3)):
        b = sf << 31 | opc << 29 | 0x12000000
        rd = R(0, w) if opc == 3 else R(0, w, sp=True)
        add(mn, b, rd, R(5, w), BitmaskImm(w))
    add("tst", sf << 31 | 3 << 29 | 0x12000000 | 31, R(5, w), BitmaskImm(w), alias=True)

# ---------------------------------------------------------------------------------------------
# Move wide (immediate)
#   sf opc(30:29) 100101 hw(22:21) imm16(20:5) Rd(4:0)        opc: 00 MOVN, 10 MOVZ, 11 MOVK


class MovWide(Field):
    """MOV's wide immediate: the value a single MOVZ (``inverted``: MOVN) produces."""

    kinds = frozenset({"imm"})
    bits = 0x7FFFE0  # hw + imm16

    def __init__(self, width: int, inverted: bool) -> None:
        self.width, self.inverted = width, inverted

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        mask = (1 << self.width) - 1
        if not -(1 << (self.width - 1)) <= op.value <= mask:
            raise ValueError(f"immediate {op.value} not in {-(1 << (self.width - 1))}..{mask:#x}")
        v = op.value & mask
        if self.inverted:
            v = ~v & mask
        for hw in range(self.width // 16):
            if v & ~(0xFFFF << (16 * hw)) == 0:
                return hw << 21 | (v >> (16 * hw)) << 5
        kind = "MOVN" if self.inverted else "MOVZ"
        raise ValueError(f"immediate {op.value:#x} not encodable by one {kind} (16 bits at a 16-bit shift)")

    def value(self, word: int) -> int:
        mask = (1 << self.width) - 1
        v = bit_field(word, 5, 16) << (16 * bit_field(word, 21, 2))
        return (~v & mask) if self.inverted else v

    def decode(self, word: int, pc: int) -> str | None:
        imm16, hw = bit_field(word, 5, 16), bit_field(word, 21, 2)
        if self.width == 32 and hw > 1:
            return None
        if imm16 == 0 and hw != 0:  # objdump keeps MOVZ/MOVN spelling then
            return None
        if self.inverted and self.width == 32 and imm16 == 0xFFFF:
            return None
        return f"#{self.value(word):#x}"

    def comment(self, word: int) -> str:
        v = self.value(word)
        if v >> (self.width - 1):
            v -= 1 << self.width
        return f"#{v}"


for sf, w in ((1, 64), (0, 32)):
    hw = ShiftField({"lsl": 0}, 0, amounts={16 * i: i for i in range(w // 16)}, apos=21,
                    awidth=2 if sf else 1)
    for mn, opc in (("movn", 0), ("movz", 2), ("movk", 3)):
        b = sf << 31 | opc << 29 | 0x12800000
        imm = UImm(5, 16, "immediate")
        add(mn, b, R(0, w), imm)
        add(mn, b, R(0, w), imm, hw)
    for opc, inv in ((2, False), (0, True)):  # MOVZ first: GAS prefers it when both fit
        mw = MovWide(w, inv)
        add("mov", sf << 31 | opc << 29 | 0x12800000, R(0, w), mw, alias=True, comment=mw.comment)
    # then ORR Rd, ZR, #bitmask (GAS's last resort for MOV #imm; objdump's MOV unless MOVZ/MOVN fit)
    bm = BitmaskImm(w, mov=True)
    add("mov", sf << 31 | 1 << 29 | 0x12000000 | 31 << 5, R(0, w, sp=True), bm, alias=True,
        comment=bm.comment)

# ---------------------------------------------------------------------------------------------
# Bitfield shifts: LSL/LSR/ASR (immediate) are UBFM/SBFM aliases
#   sf opc(30:29) 100110 N(22) immr(21:16) imms(15:10) Rn Rd       opc: 00 SBFM, 10 UBFM


class BitfieldShift(Field):
    """Shift amount of LSL/LSR/ASR #n, stored as immr/imms of UBFM/SBFM."""

    kinds = frozenset({"imm"})
    bits = 0xFFF << 10

    def __init__(self, op: str, width: int) -> None:
        self.op, self.width = op, width

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        w = self.width
        if self.op == "lsl":
            s = check_imm("shift", op.value, 0, w - 1)
            return ((-s) % w) << 16 | (w - 1 - s) << 10
        s = check_imm("shift", op.value, 0, w - 1)
        return s << 16 | (w - 1) << 10

    def decode(self, word: int, pc: int) -> str | None:
        immr, imms, w = bit_field(word, 16, 6), bit_field(word, 10, 6), self.width
        if immr >= w or imms >= w:
            return None
        if self.op == "lsl":
            return f"#{w - 1 - imms}" if imms != w - 1 and imms + 1 == immr else None
        return f"#{immr}" if imms == w - 1 else None


for sf, w in ((1, 64), (0, 32)):
    n = sf << 22
    add("lsl", sf << 31 | 0x53000000 | n, R(0, w), R(5, w), BitfieldShift("lsl", w), alias=True)
    add("lsr", sf << 31 | 0x53000000 | n, R(0, w), R(5, w), BitfieldShift("lsr", w), alias=True)
    add("asr", sf << 31 | 0x13000000 | n, R(0, w), R(5, w), BitfieldShift("asr", w), alias=True)

# ---------------------------------------------------------------------------------------------
# Data processing (3 source) and (2 source)
#   sf 00 11011 op31(23:21) Rm(20:16) o0(15) Ra(14:10) Rn Rd      MADD/MSUB/SMADDL/UMADDL
#   sf 0 0 11010110 Rm opcode(15:10) Rn Rd                          UDIV/SDIV/LSLV/LSRV/ASRV
for sf, w in ((1, 64), (0, 32)):
    b = sf << 31 | 0x1B000000
    add("madd", b, R(0, w), R(5, w), R(16, w), R(10, w))
    add("msub", b | 1 << 15, R(0, w), R(5, w), R(16, w), R(10, w))
    add("mul", b | 31 << 10, R(0, w), R(5, w), R(16, w), alias=True)
    add("mneg", b | 1 << 15 | 31 << 10, R(0, w), R(5, w), R(16, w), alias=True)
    for mn, opcode in (("udiv", 2), ("sdiv", 3), ("lsl", 8), ("lsr", 9), ("asr", 10)):
        add(mn, sf << 31 | 0x1AC00000 | opcode << 10, R(0, w), R(5, w), R(16, w))
add("umaddl", 0x9BA00000, R(0), R(5, 32), R(16, 32), R(10))
add("smaddl", 0x9B200000, R(0), R(5, 32), R(16, 32), R(10))
add("umull", 0x9BA07C00, R(0), R(5, 32), R(16, 32), alias=True)
add("smull", 0x9B207C00, R(0), R(5, 32), R(16, 32), alias=True)

# ---------------------------------------------------------------------------------------------
# Branches
#   000101 imm26 B | 100101 imm26 BL
#   01010100 imm19(23:5) 0 cond(3:0)                       B.cond
#   sf 011010 op(24) imm19 Rt                               CBZ / CBNZ
#   1101011 0 0 op(22:21) 11111 000000 Rn(9:5) 00000        BR / BLR / RET
CONDITIONS = ("eq", "ne", "cs", "cc", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al", "nv")
COND_ALIASES = {"hs": "cs", "lo": "cc"}
# objdump's trailing comment on B.cond: the SVE-flavoured synonyms of the condition
_COND_COMMENT = {"eq": "b.none", "ne": "b.any", "cs": "b.hs, b.nlast", "cc": "b.lo, b.ul, b.last",
                 "mi": "b.first", "pl": "b.nfrst", "hi": "b.pmore", "ls": "b.plast", "ge": "b.tcont",
                 "lt": "b.tstop"}

add("b", 0x14000000, LabelField(0, 26))
add("bl", 0x94000000, LabelField(0, 26))
for code, cond in enumerate(CONDITIONS):
    text = _COND_COMMENT.get(cond)
    add("b." + cond, 0x54000000 | code, LabelField(5, 19),
        comment=None if text is None else (lambda word, text=text: text))
for sf, w in ((1, 64), (0, 32)):
    add("cbz", sf << 31 | 0x34000000, R(0, w), LabelField(5, 19))
    add("cbnz", sf << 31 | 0x35000000, R(0, w), LabelField(5, 19))


class TbzBit(Field):
    """Bit number of TBZ/TBNZ: b5 at bit 31, b40 at bits 23..19."""

    kinds = frozenset({"imm"})
    bits = 1 << 31 | 31 << 19

    def __init__(self, width: int) -> None:
        self.width = width

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        b = check_imm("bit number", op.value, 0, self.width - 1)
        return (b >> 5) << 31 | (b & 31) << 19

    def decode(self, word: int, pc: int) -> str | None:
        return f"#{bit_field(word, 31, 1) << 5 | bit_field(word, 19, 5)}"


class TbzReg(R):
    """TBZ's register: x when the bit number is >= 32, else w (as objdump prints it)."""

    def __init__(self) -> None:
        super().__init__(0)
        self.kinds = frozenset({"x", "xzr", "w", "wzr"})

    def decode(self, word: int, pc: int) -> str | None:
        n = word & 31
        if word >> 31:
            return "xzr" if n == 31 else f"x{n}"
        return "wzr" if n == 31 else f"w{n}"


def _tb_encode(ops: tuple[Operand, ...], ctx: Context | None) -> int:
    reg, bit, target = ops
    assert isinstance(reg, GPR) and isinstance(bit, Imm)
    if not 0 <= bit.value < reg.width:
        raise ValueError(f"bit number {bit.value} not in 0..{reg.width - 1} for {reg}")
    return TbzBit(64).encode(bit, ctx) | reg.num | LabelField(5, 14).encode(target, ctx)


for mn, op in (("tbz", 0), ("tbnz", 1)):
    add(mn, 0x36000000 | op << 24, TbzReg(), TbzBit(64), LabelField(5, 14), encoder=_tb_encode)

# ---------------------------------------------------------------------------------------------
# PC-relative: ADR / ADRP and LDR (literal)
#   op(31) immlo(30:29) 10000 immhi(23:5) Rd          ADR: byte offset, ADRP: 4 KiB page offset
#   opc(31:30) 011 V(26) 00 imm19(23:5) Rt            LDR (literal), PRFM (literal)


class AdrTarget(Field):
    """ADR / ADRP target (a label or an absolute address), 21-bit signed immlo:immhi."""

    kinds = frozenset({"label", "imm"})
    bits = 3 << 29 | 0x7FFFF << 5

    def __init__(self, page: bool) -> None:
        self.page = page

    def encode(self, op: Operand, ctx: Context | None) -> int:
        if isinstance(op, Imm):
            target = op.value
        else:
            assert isinstance(op, Label)
            if ctx is None or op.name not in ctx.labels:
                raise ValueError(f"undefined label {op.name!r}")
            target = ctx.labels[op.name]
        pc = 0 if ctx is None else ctx.pc
        if self.page:
            delta = signed64((target >> 12 << 12) - (pc >> 12 << 12)) >> 12
        else:
            delta = signed64(target - pc)
        if not -(1 << 20) <= delta < 1 << 20:
            unit = "pages" if self.page else "bytes"
            raise ValueError(f"target {op} at offset {delta} {unit} out of range "
                             f"{-(1 << 20)}..{(1 << 20) - 1}")
        delta &= (1 << 21) - 1
        return (delta & 3) << 29 | (delta >> 2) << 5

    def decode(self, word: int, pc: int) -> str | None:
        v = bit_field(word, 29, 2) | bit_field(word, 5, 19) << 2
        if v >> 20:
            v -= 1 << 21
        target = ((pc >> 12) + v) << 12 if self.page else pc + v
        return f"{target & 0xFFFFFFFFFFFFFFFF:#x}"


add("adr", 0x10000000, R(0), AdrTarget(page=False))
add("adrp", 0x90000000, R(0), AdrTarget(page=True))
for rt, base in ((R(0, 32), 0x18000000), (R(0), 0x58000000), (F(0, "s"), 0x1C000000), (F(0, "d"), 0x5C000000),
                 (F(0, "q"), 0x9C000000)):
    add("ldr", base, rt, LabelField(5, 19))
add("ldrsw", 0x98000000, R(0), LabelField(5, 19))

# ---------------------------------------------------------------------------------------------
# Prefetch: PRFM (immediate, register, literal) and PRFUM; the Rt field holds the operation
_PRF_TYPES, _PRF_TARGETS, _PRF_POLICIES = ("pld", "pli", "pst"), ("l1", "l2", "l3"), ("keep", "strm")
PRFOPS = {f"{t}{lv}{p}": ti << 3 | li << 1 | pi for ti, t in enumerate(_PRF_TYPES)
          for li, lv in enumerate(_PRF_TARGETS) for pi, p in enumerate(_PRF_POLICIES)}


class PrfOp(Field):
    """Prefetch operation name (``pldl1keep`` ...) in the Rt field."""

    kinds = frozenset({"label"})
    bits = 31

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Label)
        if op.name.lower() not in PRFOPS:
            raise ValueError(f"prefetch operation {op.name!r} not one of {', '.join(PRFOPS)}")
        return PRFOPS[op.name.lower()]

    def decode(self, word: int, pc: int) -> str | None:
        names = [k for k, v in PRFOPS.items() if v == word & 31]
        return names[0] if names else None


add("prfm", 0xF9800000, PrfOp(), MemUImm(8))
add("prfm", 0xF8A00800, PrfOp(), MemRegOffset(3))
add("prfm", 0xD8000000, PrfOp(), LabelField(5, 19))
add("prfum", 0xF8800000, PrfOp(), MemIndexed("unscaled", 12, 9, 1))
add("prfm", 0xF8800000, PrfOp(), MemIndexed("unscaled", 12, 9, 1))

# ---------------------------------------------------------------------------------------------
# Conditional select
#   sf op(30) S(29) 11010100 Rm(20:16) cond(15:12) op2(11:10) Rn Rd
#   CSET/CSETM: Rn = Rm = ZR, inverted condition; CINC/CINV/CNEG: Rn = Rm, inverted condition
# objdump's comment after a condition operand: its SVE-flavoured synonyms
_COND_SYNONYMS = {"eq": "none", "ne": "any", "cs": "hs, nlast", "cc": "lo, ul, last", "mi": "first",
                  "pl": "nfrst", "hi": "pmore", "ls": "plast", "ge": "tcont", "lt": "tstop"}


class Cond(Field):
    """Condition operand (``eq`` ... ``nv``, also ``hs``/``lo``) at bits 15..12; ``inverted`` for
    the CSET family, which stores the opposite condition and excludes AL/NV."""

    kinds = frozenset({"label"})
    bits = 15 << 12

    def __init__(self, inverted: bool = False) -> None:
        self.inverted = inverted

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Label)
        name = COND_ALIASES.get(op.name.lower(), op.name.lower())
        if name not in CONDITIONS or (self.inverted and name in ("al", "nv")):
            allowed = CONDITIONS[:14] if self.inverted else CONDITIONS
            raise ValueError(f"condition {op.name!r} not one of {', '.join(allowed)}")
        code = CONDITIONS.index(name)
        return (code ^ 1 if self.inverted else code) << 12

    def name(self, word: int) -> str | None:
        code = bit_field(word, 12, 4)
        if self.inverted:
            if code >= 14:
                return None
            code ^= 1
        return CONDITIONS[code]

    def decode(self, word: int, pc: int) -> str | None:
        return self.name(word)

    def comment(self, word: int) -> str | None:
        name = self.name(word)
        return None if name not in _COND_SYNONYMS else f"{name} = {_COND_SYNONYMS[name]}"


def _mirror_rn_to_rm(ops: tuple[Operand, ...], ctx: Context | None) -> int:
    rd, rn, cond = ops
    assert isinstance(rd, GPR) and isinstance(rn, GPR)
    return rd.num | rn.num << 5 | rn.num << 16 | Cond(inverted=True).encode(cond, ctx)


for sf, w in ((1, 64), (0, 32)):
    for mn, base, alias3, alias1 in (
        ("csel", 0x1A800000, None, None), ("csinc", 0x1A800400, "cinc", "cset"),
        ("csinv", 0x5A800000, "cinv", "csetm"), ("csneg", 0x5A800400, "cneg", None),
    ):
        b = sf << 31 | base
        cond = Cond()
        add(mn, b, R(0, w), R(5, w), R(16, w), cond, comment=cond.comment)
        inv = Cond(inverted=True)
        if alias1:
            add(alias1, b | 31 << 5 | 31 << 16, R(0, w), inv, alias=True, comment=inv.comment)
        if alias3:
            add(alias3, b, R(0, w), R(5, w), inv, alias=True, free=31 << 16, encoder=_mirror_rn_to_rm,
                comment=inv.comment, when=lambda word: bit_field(word, 5, 5) == bit_field(word, 16, 5))

add("ret", 0xD65F03C0, alias=True)
add("ret", 0xD65F0000, R(5))
add("br", 0xD61F0000, R(5))
add("blr", 0xD63F0000, R(5))
add("nop", 0xD503201F)

__all__ = ["CONDITIONS", "COND_ALIASES"]
