"""Advanced SIMD (NEON) instructions, one section per ARM ARM encoding class.

Forms are expanded per arrangement; Q and size live in the form's fixed bits.
"""

from __future__ import annotations

from bitsearch.asm.aarch64.forms import (
    TABLE,
    VL,
    Context,
    ElemHLM,
    ElemImm4,
    ElemImm5,
    F,
    Field,
    R,
    ShiftField,
    UImm,
    V,
    arr_bits,
    bit_field,
    check_imm,
)
from bitsearch.asm.aarch64.operands import ARR_INFO, ARRANGEMENTS, Imm, Operand, VReg

add = TABLE.add
NOT_1D = tuple(a for a in ARRANGEMENTS if a != "1d")
BYTES = ("8b", "16b")
# widening pairs: (wide destination, narrow source, source is the upper half)
WIDEN = [("8h", "8b", False), ("4s", "4h", False), ("2d", "2s", False),
         ("8h", "16b", True), ("4s", "8h", True), ("2d", "4s", True)]


def _size_arrs(sizes: str) -> tuple[str, ...]:
    """Arrangements whose element size letter is in ``sizes`` (1d excluded)."""
    return tuple(a for a in NOT_1D if a[-1] in sizes)


# ---------------------------------------------------------------------------------------------
# Three same
#   0 Q(30) U(29) 01110 size(23:22) 1 Rm(20:16) opcode(15:11) 1 Rn(9:5) Rd(4:0)
_THREE_SAME: list[tuple[str, int, tuple[str, ...]]] = [
    ("add", 0x0E208400, NOT_1D), ("sub", 0x2E208400, NOT_1D), ("addp", 0x0E20BC00, NOT_1D),
    ("mul", 0x0E209C00, _size_arrs("bhs")), ("mla", 0x0E209400, _size_arrs("bhs")),
    ("mls", 0x2E209400, _size_arrs("bhs")),
    ("cmeq", 0x2E208C00, NOT_1D), ("cmtst", 0x0E208C00, NOT_1D), ("cmgt", 0x0E203400, NOT_1D),
    ("cmge", 0x0E203C00, NOT_1D), ("cmhi", 0x2E203400, NOT_1D), ("cmhs", 0x2E203C00, NOT_1D),
    ("smax", 0x0E206400, _size_arrs("bhs")), ("umax", 0x2E206400, _size_arrs("bhs")),
    ("smin", 0x0E206C00, _size_arrs("bhs")), ("umin", 0x2E206C00, _size_arrs("bhs")),
    ("sqadd", 0x0E200C00, NOT_1D), ("uqadd", 0x2E200C00, NOT_1D),
    ("sqsub", 0x0E202C00, NOT_1D), ("uqsub", 0x2E202C00, NOT_1D),
    ("sshl", 0x0E204400, NOT_1D), ("ushl", 0x2E204400, NOT_1D),
]
for mn, base, arrs in _THREE_SAME:
    for arr in arrs:
        add(mn, base | arr_bits(arr), V(0, arr), V(5, arr), V(16, arr))
# logical: size encodes the operation, so only 8b/16b
for mn, base in (("and", 0x0E201C00), ("bic", 0x0E601C00), ("orr", 0x0EA01C00), ("orn", 0x0EE01C00),
                 ("eor", 0x2E201C00), ("bsl", 0x2E601C00), ("bit", 0x2EA01C00), ("bif", 0x2EE01C00)):
    for arr in BYTES:
        add(mn, base | arr_bits(arr), V(0, arr), V(5, arr), V(16, arr))


def _mov_vector(ops: tuple[Operand, ...], ctx: Context | None) -> int:
    d, n = ops
    assert isinstance(d, VReg) and isinstance(n, VReg)
    return d.num | n.num << 5 | n.num << 16


for arr in BYTES:  # MOV Vd, Vn = ORR Vd, Vn, Vn
    add("mov", 0x0EA01C00 | arr_bits(arr), V(0, arr), V(5, arr), alias=True, free=31 << 16,
        encoder=_mov_vector, when=lambda w: bit_field(w, 5, 5) == bit_field(w, 16, 5))

# ---------------------------------------------------------------------------------------------
# Three different (widening)
#   0 Q U 01110 size 1 Rm opcode(15:12) 00 Rn Rd;  Q=1 is the "2" (upper half) form
_THREE_DIFF = [("saddl", 0x0E200000), ("uaddl", 0x2E200000), ("ssubl", 0x0E202000), ("usubl", 0x2E202000),
               ("sabal", 0x0E205000), ("uabal", 0x2E205000), ("sabdl", 0x0E207000), ("uabdl", 0x2E207000),
               ("smlal", 0x0E208000), ("umlal", 0x2E208000), ("smlsl", 0x0E20A000), ("umlsl", 0x2E20A000),
               ("smull", 0x0E20C000), ("umull", 0x2E20C000)]
for mn, base in _THREE_DIFF:
    for wide, narrow, upper in WIDEN:
        add(mn + ("2" if upper else ""), base | arr_bits(narrow), V(0, wide), V(5, narrow), V(16, narrow))
for mn, base in (("saddw", 0x0E201000), ("uaddw", 0x2E201000), ("ssubw", 0x0E203000), ("usubw", 0x2E203000)):
    for wide, narrow, upper in WIDEN:
        add(mn + ("2" if upper else ""), base | arr_bits(narrow), V(0, wide), V(5, wide), V(16, narrow))

# ---------------------------------------------------------------------------------------------
# Two-register miscellaneous
#   0 Q U 01110 size 10000 opcode(16:12) 10 Rn Rd
for arr in BYTES:
    add("cnt", 0x0E205800 | arr_bits(arr), V(0, arr), V(5, arr))
    add("mvn", 0x2E205800 | arr_bits(arr), V(0, arr), V(5, arr))
    add("not", 0x2E205800 | arr_bits(arr), V(0, arr), V(5, arr))  # objdump spells it mvn
    add("rbit", 0x2E605800 | arr_bits(arr), V(0, arr), V(5, arr))
# pairwise widening add (and accumulate): destination has half as many elements, twice as wide
_PAIRWISE = [("4h", "8b"), ("8h", "16b"), ("2s", "4h"), ("4s", "8h"), ("1d", "2s"), ("2d", "4s")]
for mn, base in (("saddlp", 0x0E202800), ("uaddlp", 0x2E202800), ("sadalp", 0x0E206800),
                 ("uadalp", 0x2E206800)):
    for wide, narrow in _PAIRWISE:
        add(mn, base | arr_bits(narrow), V(0, wide), V(5, narrow))
# narrowing moves: XTN (lower half) / XTN2 (upper half)
for narrow, wide in (("8b", "8h"), ("4h", "4s"), ("2s", "2d"), ("16b", "8h"), ("8h", "4s"), ("4s", "2d")):
    size, q = ARR_INFO[narrow]
    add("xtn2" if q else "xtn", 0x0E212800 | q << 30 | size << 22, V(0, narrow), V(5, wide))


class Zero(Field):
    """The literal ``#0`` of compare-with-zero forms."""

    kinds = frozenset({"imm"})
    bits = 0

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        if op.value != 0:
            raise ValueError(f"immediate {op.value} must be 0")
        return 0

    def decode(self, word: int, pc: int) -> str | None:
        return "#0"


for arr in NOT_1D:
    add("abs", 0x0E20B800 | arr_bits(arr), V(0, arr), V(5, arr))
    add("neg", 0x2E20B800 | arr_bits(arr), V(0, arr), V(5, arr))
    add("cmeq", 0x0E209800 | arr_bits(arr), V(0, arr), V(5, arr), Zero())
    add("cmlt", 0x0E20A800 | arr_bits(arr), V(0, arr), V(5, arr), Zero())

# ---------------------------------------------------------------------------------------------
# Across lanes
#   0 Q U 01110 size 11000 opcode(16:12) 10 Rn Rd
_ACROSS = [("8b", "b", "h"), ("16b", "b", "h"), ("4h", "h", "s"), ("8h", "h", "s"), ("4s", "s", "d")]
for arr, same, long in _ACROSS:
    b = arr_bits(arr)
    for mn, base in (("addv", 0x0E31B800), ("umaxv", 0x2E30A800), ("smaxv", 0x0E30A800),
                     ("uminv", 0x2E31A800), ("sminv", 0x0E31A800)):
        add(mn, base | b, F(0, same), V(5, arr))
    add("uaddlv", 0x2E303800 | b, F(0, long), V(5, arr))
    add("saddlv", 0x0E303800 | b, F(0, long), V(5, arr))
add("addp", 0x5EF1B800, F(0, "d"), V(5, "2d"))  # scalar pairwise: d = v.d[0] + v.d[1]

# ---------------------------------------------------------------------------------------------
# Shift by immediate
#   0 Q U 011110 immh(22:19) immb(18:16) opcode(15:11) 1 Rn Rd
#   left shifts: immh:immb = esize + shift; right shifts: immh:immb = 2 * esize - shift


class ShiftImm(Field):
    """SIMD shift amount: the low log2(esize) bits of immh:immb (the form fixes the size marker)."""

    kinds = frozenset({"imm"})

    def __init__(self, esize: int, right: bool) -> None:
        self.esize, self.right = esize, right
        self.bits = (esize - 1) << 16

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        if self.right:
            s = check_imm("shift", op.value, 1, self.esize)
            return (self.esize - s) << 16
        return check_imm("shift", op.value, 0, self.esize - 1) << 16

    def decode(self, word: int, pc: int) -> str | None:
        v = bit_field(word, 16, self.esize.bit_length() - 1)
        return f"#{self.esize - v}" if self.right else f"#{v}"


def _shift_base(opcode_base: int, arr: str) -> int:
    size, q = ARR_INFO[arr]
    return opcode_base | q << 30 | (8 << size) << 16  # size marker: the top set bit of immh:immb


for arr in NOT_1D:
    esize = 8 << ARR_INFO[arr][0]
    for mn, base, right in (("shl", 0x0F005400, False), ("sli", 0x2F005400, False),
                            ("ushr", 0x2F000400, True), ("sshr", 0x0F000400, True),
                            ("usra", 0x2F001400, True), ("ssra", 0x0F001400, True),
                            ("urshr", 0x2F002400, True), ("srshr", 0x0F002400, True),
                            ("sri", 0x2F004400, True)):
        add(mn, _shift_base(base, arr), V(0, arr), V(5, arr), ShiftImm(esize, right))
for wide, narrow, upper in WIDEN:
    esize = 8 << ARR_INFO[narrow][0]
    sfx = "2" if upper else ""
    for mn, base, ext in (("ushll", 0x2F00A400, "uxtl"), ("sshll", 0x0F00A400, "sxtl")):
        b = _shift_base(base, narrow)
        add(mn + sfx, b, V(0, wide), V(5, narrow), ShiftImm(esize, False))
        add(ext + sfx, b, V(0, wide), V(5, narrow), alias=True)
    # narrowing right shifts: SHRN / RSHRN (Vd narrow, Vn wide)
    for mn, base in (("shrn", 0x0F008400), ("rshrn", 0x0F008C00)):
        add(mn + sfx, _shift_base(base, narrow), V(0, narrow), V(5, wide), ShiftImm(esize, True))

# ---------------------------------------------------------------------------------------------
# Modified immediate
#   0 Q op(29) 0111100000 a b c(18:16) cmode(15:12) o2(11) 1 d e f g h(9:5) Rd


class SimdImm8(Field):
    """8-bit immediate abc:defgh split over bits 18..16 and 9..5; ``bytemask``: the 64-bit form in
    which each bit of imm8 stands for a whole 0x00/0xff byte."""

    kinds = frozenset({"imm"})
    bits = 7 << 16 | 31 << 5

    def __init__(self, bytemask: bool = False) -> None:
        self.bytemask = bytemask

    def encode(self, op: Operand, ctx: Context | None) -> int:
        assert isinstance(op, Imm)
        v = op.value
        if self.bytemask:
            if not 0 <= v < 1 << 64 or any((v >> (8 * i)) & 0xFF not in (0, 0xFF) for i in range(8)):
                raise ValueError(f"immediate {v:#x} is not a 64-bit mask of 0x00/0xff bytes")
            v = sum(1 << i for i in range(8) if (op.value >> (8 * i)) & 0xFF)
        else:
            check_imm("immediate", v, 0, 255)
        return (v >> 5) << 16 | (v & 31) << 5

    def decode(self, word: int, pc: int) -> str | None:
        v = bit_field(word, 16, 3) << 5 | bit_field(word, 5, 5)
        if self.bytemask:
            v = sum(0xFF << (8 * i) for i in range(8) if v >> i & 1)
        return f"#{v:#x}"


for mn, op in (("movi", 0), ("mvni", 1)):
    for arr in ("4h", "8h"):  # cmode 10x0: LSL #0 / #8
        b = 0x0F008400 | op << 29 | ARR_INFO[arr][1] << 30
        add(mn, b, V(0, arr), SimdImm8())
        add(mn, b, V(0, arr), SimdImm8(), ShiftField({"lsl": 0}, 0, amounts={0: 0, 8: 1}, apos=13, awidth=1))
    for arr in ("2s", "4s"):  # cmode 0xx0: LSL #0/8/16/24; cmode 110x: MSL #8/16
        b = 0x0F000400 | op << 29 | ARR_INFO[arr][1] << 30
        add(mn, b, V(0, arr), SimdImm8())
        add(mn, b, V(0, arr), SimdImm8(),
            ShiftField({"lsl": 0}, 0, amounts={0: 0, 8: 1, 16: 2, 24: 3}, apos=13, awidth=2))
        add(mn, b | 0xC000, V(0, arr), SimdImm8(), ShiftField({"msl": 0}, 0, amounts={8: 0, 16: 1}, apos=12,
                                                               awidth=1))
for arr in BYTES:  # cmode 1110, op 0
    add("movi", 0x0F00E400 | ARR_INFO[arr][1] << 30, V(0, arr), SimdImm8())
    add("movi", 0x0F00E400 | ARR_INFO[arr][1] << 30, V(0, arr), SimdImm8(),
        ShiftField({"lsl": 0}, 0, amounts={0: 0}, apos=0, awidth=0))
add("movi", 0x6F00E400, V(0, "2d"), SimdImm8(bytemask=True))  # cmode 1110, op 1
add("movi", 0x2F00E400, F(0, "d"), SimdImm8(bytemask=True))

# ---------------------------------------------------------------------------------------------
# Copy
#   0 Q op(29) 01110000 imm5(20:16) 0 imm4(14:11) 1 Rn Rd
#   imm5 = index:1:0..0 gives the element size; imm4 selects DUP/INS/UMOV/SMOV
_ESIZES = "bhsd"
for ei, es in enumerate(_ESIZES):
    marker = 1 << (16 + ei)
    # DUP (element) to every arrangement with that element size
    for arr in NOT_1D:
        if arr[-1] == es:
            add("dup", 0x0E000400 | ARR_INFO[arr][1] << 30 | marker, V(0, arr), ElemImm5(5, es))
            w = 64 if es == "d" else 32
            add("dup", 0x0E000C00 | ARR_INFO[arr][1] << 30 | marker, V(0, arr), R(5, w))
    # DUP (element, scalar) = MOV
    add("dup", 0x5E000400 | marker, F(0, es), ElemImm5(5, es))
    add("mov", 0x5E000400 | marker, F(0, es), ElemImm5(5, es), alias=True)
    # UMOV / SMOV to a general register
    q = 1 if es == "d" else 0
    w = 64 if es == "d" else 32
    add("umov", 0x0E003C00 | q << 30 | marker, R(0, w), ElemImm5(5, es))
    if es in "sd":
        add("mov", 0x0E003C00 | q << 30 | marker, R(0, w), ElemImm5(5, es), alias=True)
    if es in "bh":
        add("smov", 0x0E002C00 | marker, R(0, 32), ElemImm5(5, es))
    if es in "bhs":
        add("smov", 0x4E002C00 | marker, R(0, 64), ElemImm5(5, es))
    # INS (general) and INS (element), both spelled MOV by objdump
    for mn, alias in (("ins", False), ("mov", True)):
        add(mn, 0x4E001C00 | marker, ElemImm5(0, es), R(5, w), alias=alias)
        add(mn, 0x6E000400 | marker, ElemImm5(0, es), ElemImm4(es), alias=alias)

# ---------------------------------------------------------------------------------------------
# Vector x indexed element
#   0 Q U 01111 size(23:22) L(21) M(20) Rm(19:16) opcode(15:12) H(11) 0 Rn Rd
for arr in ("4h", "8h", "2s", "4s"):
    es = arr[-1]
    for mn, base in (("mul", 0x0F008000), ("mla", 0x2F000000), ("mls", 0x2F004000)):
        add(mn, base | arr_bits(arr), V(0, arr), V(5, arr), ElemHLM(es))
for wide, narrow, upper in WIDEN:
    if narrow[-1] == "b":
        continue
    for mn, base in (("smlal", 0x0F002000), ("umlal", 0x2F002000), ("smlsl", 0x0F006000),
                     ("umlsl", 0x2F006000), ("smull", 0x0F00A000), ("umull", 0x2F00A000)):
        add(mn + ("2" if upper else ""), base | arr_bits(narrow), V(0, wide), V(5, narrow),
            ElemHLM(narrow[-1]))

# ---------------------------------------------------------------------------------------------
# Table lookup, extract, permute
#   0 Q 001110 000 Rm 0 len(14:13) op(12) 00 Rn Rd          TBL (op 0) / TBX (op 1), table {Vn.16b..}
#   0 Q 101110 000 Rm 0 imm4(14:11) 0 Rn Rd                  EXT
#   0 Q 001110 size 0 Rm 0 opcode(14:12) 10 Rn Rd            UZP1/TRN1/ZIP1/UZP2/TRN2/ZIP2
for arr in BYTES:
    q = ARR_INFO[arr][1]
    for mn, op in (("tbl", 0), ("tbx", 1)):
        for count in range(1, 5):
            add(mn, 0x0E000000 | q << 30 | (count - 1) << 13 | op << 12, V(0, arr), VL(count, "16b", pos=5),
                V(16, arr))
    add("ext", 0x2E000000 | q << 30, V(0, arr), V(5, arr), V(16, arr), UImm(11, 3 + q, "index", hexfmt=False))
for mn, opcode in (("uzp1", 1), ("trn1", 2), ("zip1", 3), ("uzp2", 5), ("trn2", 6), ("zip2", 7)):
    for arr in NOT_1D:
        add(mn, 0x0E000800 | opcode << 12 | arr_bits(arr), V(0, arr), V(5, arr), V(16, arr))
for mn, base, sizes in (("rev64", 0x0E200800, "bhs"), ("rev32", 0x2E200800, "bh"),
                        ("rev16", 0x0E201800, "b")):
    for arr in _size_arrs(sizes):
        add(mn, base | arr_bits(arr), V(0, arr), V(5, arr))
# saturating narrows, same shape as XTN
for narrow, wide in (("8b", "8h"), ("4h", "4s"), ("2s", "2d"), ("16b", "8h"), ("8h", "4s"), ("4s", "2d")):
    size, q = ARR_INFO[narrow]
    for mn, base in (("sqxtn", 0x0E214800), ("uqxtn", 0x2E214800), ("sqxtun", 0x2E212800)):
        add(mn + ("2" if q else ""), base | q << 30 | size << 22, V(0, narrow), V(5, wide))
# more three-same integer ops (pairwise max/min, absolute difference)
for mn, base in (("smaxp", 0x0E20A400), ("umaxp", 0x2E20A400), ("sminp", 0x0E20AC00), ("uminp", 0x2E20AC00),
                 ("sabd", 0x0E207400), ("uabd", 0x2E207400), ("saba", 0x0E207C00), ("uaba", 0x2E207C00)):
    for arr in _size_arrs("bhs"):
        add(mn, base | arr_bits(arr), V(0, arr), V(5, arr), V(16, arr))

# ---------------------------------------------------------------------------------------------
# Scalar integer SIMD on D registers (64-bit lanes)
#   01 U 11110 size 1 Rm opcode 1 Rn Rd (three same); 01 U 111110 immh immb opcode 1 Rn Rd (shift)
for mn, base in (("add", 0x5EE08400), ("sub", 0x7EE08400)):
    add(mn, base, F(0, "d"), F(5, "d"), F(16, "d"))
for mn, base, right in (("shl", 0x5F405400, False), ("ushr", 0x7F400400, True), ("sshr", 0x5F400400, True),
                        ("usra", 0x7F401400, True), ("ssra", 0x5F401400, True)):
    add(mn, base, F(0, "d"), F(5, "d"), ShiftImm(64, right))

# ---------------------------------------------------------------------------------------------
# Floating point, vector (2s / 4s / 2d; sz at bit 22)
#   0 Q U 01110 a(23) sz(22) 1 Rm opcode(15:11) 1 Rn Rd        three same
#   0 Q U 01110 a sz 10000 opcode(16:12) 10 Rn Rd              two-register misc
#   0 Q U 01111 1 sz L M Rm opcode(15:12) H 0 Rn Rd            by element (FMLA/FMLS/FMUL)
FP_ARRS = {"2s": (0, 0), "4s": (0, 1), "2d": (1, 1)}  # arrangement -> (sz, Q)
for arr, (sz, q) in FP_ARRS.items():
    b = q << 30 | sz << 22
    for mn, base in (("fadd", 0x0E20D400), ("fsub", 0x0EA0D400), ("fmul", 0x2E20DC00), ("fdiv", 0x2E20FC00),
                     ("fmla", 0x0E20CC00), ("fmls", 0x0EA0CC00), ("fmax", 0x0E20F400), ("fmin", 0x0EA0F400),
                     ("faddp", 0x2E20D400)):
        add(mn, base | b, V(0, arr), V(5, arr), V(16, arr))
    for mn, base in (("scvtf", 0x0E21D800), ("ucvtf", 0x2E21D800), ("fcvtzs", 0x0EA1B800),
                     ("fcvtzu", 0x2EA1B800), ("fcvtns", 0x0E21A800), ("fneg", 0x2EA0F800),
                     ("fabs", 0x0EA0F800), ("fsqrt", 0x2EA1F800), ("frintn", 0x0E218800)):
        add(mn, base | b, V(0, arr), V(5, arr))
    for mn, base in (("fmla", 0x0F801000), ("fmls", 0x0F805000), ("fmul", 0x0F809000)):
        add(mn, base | b, V(0, arr), V(5, arr), ElemHLM(arr[-1]))

# ---------------------------------------------------------------------------------------------
# Floating point, scalar (S and D)
#   M 0 S 11110 ftype(23:22) 1 Rm opcode(15:12) 10 Rn Rd       two-source
#   0 0 0 11111 ftype o1 Rm o0 Ra Rn Rd                          FMADD/FMSUB/FNMADD/FNMSUB
#   sf 0 0 11110 ftype 1 rmode opcode 000000 Rn Rd              FMOV (general), SCVTF, FCVTZS
for fs, ftype in (("s", 0), ("d", 1)):
    t = ftype << 22
    for mn, base in (("fmul", 0x1E200800), ("fdiv", 0x1E201800), ("fadd", 0x1E202800), ("fsub", 0x1E203800),
                     ("fmax", 0x1E204800), ("fmin", 0x1E205800)):
        add(mn, base | t, F(0, fs), F(5, fs), F(16, fs))
    for mn, base in (("fmadd", 0x1F000000), ("fmsub", 0x1F008000), ("fnmadd", 0x1F200000),
                     ("fnmsub", 0x1F208000)):
        add(mn, base | t, F(0, fs), F(5, fs), F(16, fs), F(10, fs))
    for mn, base in (("fmov", 0x1E204000), ("fabs", 0x1E20C000), ("fneg", 0x1E214000), ("fsqrt", 0x1E21C000)):
        add(mn, base | t, F(0, fs), F(5, fs))
    for sf, w in ((0, 32), (1, 64)):
        b = sf << 31 | t
        add("scvtf", 0x1E220000 | b, F(0, fs), R(5, w))
        add("ucvtf", 0x1E230000 | b, F(0, fs), R(5, w))
        add("fcvtzs", 0x1E380000 | b, R(0, w), F(5, fs))
        add("fcvtzu", 0x1E390000 | b, R(0, w), F(5, fs))
        if (sf, ftype) in ((0, 0), (1, 1)):  # FMOV between same-size registers
            add("fmov", 0x1E270000 | b, F(0, fs), R(5, w))
            add("fmov", 0x1E260000 | b, R(0, w), F(5, fs))
add("fcvt", 0x1E22C000, F(0, "d"), F(5, "s"))
add("fcvt", 0x1E624000, F(0, "s"), F(5, "d"))
