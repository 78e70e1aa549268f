"""Operand records of the A64 subset and the GNU-syntax operand parser.

Every operand is a small frozen record with a ``kind`` string; an instruction form is looked up by
its mnemonic and the tuple of its operands' kinds, so the kinds are the vocabulary shared by the
parser, the encoders and the decoder:

=============  ==========================================================
kind           operand
=============  ==========================================================
``x`` ``w``    general register 0..30; ``xzr`` ``wzr`` ``sp`` ``wsp``
``v.16b``      vector register with an arrangement (8b 16b 4h 8h 2s 4s 1d 2d)
``b``..``q``   scalar SIMD&FP register (b0, h0, s0, d0, q0)
``e.s``        vector element ``v1.s[2]``
``l3.4s``      register list ``{v0.4s-v2.4s}`` (count, arrangement)
``imm``        immediate ``#12``, ``#0x10``, ``12``
``lsl`` ...    shift ``lsl #12`` (also ``lsr`` ``asr`` ``ror`` ``msl``; extends ``uxtw #2``, ``sxtb``)
``mem``        ``[xn]`` or ``[xn, #imm]``; ``mem!`` pre-index; ``mem+imm`` / ``mem+reg`` post-index;
               ``mem,reg`` register offset ``[xn, xm{, lsl #s}]``
``label``      branch target
=============  ==========================================================

Example:
    >>> parse_operand("v3.4s")
    VReg(num=3, arr='4s')
    >>> parse_operand("[sp, #-16]!").kind
    'mem!'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

ARRANGEMENTS = ("8b", "16b", "4h", "8h", "2s", "4s", "1d", "2d")
# arrangement -> (element size log2, Q bit)
ARR_INFO = {"8b": (0, 0), "16b": (0, 1), "4h": (1, 0), "8h": (1, 1), "2s": (2, 0), "4s": (2, 1),
            "1d": (3, 0), "2d": (3, 1)}
ESIZES = "bhsdq"  # element / scalar size letters, index = log2(bytes)


@dataclass(frozen=True, slots=True)
class GPR:
    """General-purpose register: ``num`` 0..31, ``width`` 64 or 32; ``num`` 31 is SP when ``sp``."""

    num: int
    width: int = 64
    sp: bool = False

    @property
    def kind(self) -> str:
        prefix = "x" if self.width == 64 else "w"
        if self.num == 31:
            return ("sp" if self.width == 64 else "wsp") if self.sp else prefix + "zr"
        return prefix

    def __str__(self) -> str:
        if self.num == 31:
            return self.kind
        return f"{self.kind}{self.num}"


@dataclass(frozen=True, slots=True)
class VReg:
    """Vector register with an arrangement, e.g. ``VReg(1, "16b")`` is ``v1.16b``."""

    num: int
    arr: str

    @property
    def kind(self) -> str:
        return "v." + self.arr

    def __str__(self) -> str:
        return f"v{self.num}.{self.arr}"


@dataclass(frozen=True, slots=True)
class FPReg:
    """Scalar SIMD&FP register: ``size`` is one of ``b h s d q``."""

    num: int
    size: str

    @property
    def kind(self) -> str:
        return self.size

    def __str__(self) -> str:
        return f"{self.size}{self.num}"


@dataclass(frozen=True, slots=True)
class VElem:
    """Vector element ``v{num}.{esize}[{index}]``."""

    num: int
    esize: str
    index: int

    @property
    def kind(self) -> str:
        return "e." + self.esize

    def __str__(self) -> str:
        return f"v{self.num}.{self.esize}[{self.index}]"


@dataclass(frozen=True, slots=True)
class VList:
    """List of ``count`` consecutive (modulo 32) vector registers starting at ``first``; with an
    ``index`` it is an element list such as ``{v0.s, v1.s}[1]`` (``arr`` is then b, h, s or d)."""

    first: int
    count: int
    arr: str
    index: int | None = None

    @property
    def kind(self) -> str:
        return f"l{self.count}.{self.arr}" if self.index is None else f"le{self.count}.{self.arr}"

    def __str__(self) -> str:
        regs = [(self.first + i) % 32 for i in range(self.count)]
        lane = "" if self.index is None else f"[{self.index}]"
        if self.count >= 3 and regs[-1] > regs[0]:  # objdump's range form, only without wrap-around
            return f"{{v{regs[0]}.{self.arr}-v{regs[-1]}.{self.arr}}}{lane}"
        return "{" + ", ".join(f"v{r}.{self.arr}" for r in regs) + "}" + lane


@dataclass(frozen=True, slots=True)
class Imm:
    """Immediate value."""

    value: int
    kind = "imm"

    def __str__(self) -> str:
        return f"#{self.value}"


@dataclass(frozen=True, slots=True)
class Shift:
    """Shift or extend modifier: ``lsl #12``, ``msl #8``, ``uxtw #2`` (an extend without amount is 0)."""

    op: str
    amount: int

    @property
    def kind(self) -> str:
        return self.op

    def __str__(self) -> str:
        return f"{self.op} #{self.amount}"


@dataclass(frozen=True, slots=True)
class Mem:
    """Memory operand. ``mode`` is ``offset`` (``[base, #imm]``), ``pre`` (``[base, #imm]!``),
    ``post`` (``[base], #imm`` or ``[base], xm``) or ``reg`` (``[base, xm, lsl #shift]``,
    ``[base, wm, uxtw #shift]``)."""

    base: GPR
    offset: int | GPR = 0
    mode: str = "offset"
    shift: int | None = None  # register offset: explicit shift amount, None if absent
    extend: str = "lsl"  # register offset: lsl, uxtw, sxtw or sxtx

    @property
    def kind(self) -> str:
        if self.mode == "offset":
            return "mem"
        if self.mode == "pre":
            return "mem!"
        if self.mode == "post":
            return "mem+reg" if isinstance(self.offset, GPR) else "mem+imm"
        return "mem,reg"

    def __str__(self) -> str:
        b = str(self.base)
        if self.mode == "offset":
            return f"[{b}, #{self.offset}]" if self.offset else f"[{b}]"
        if self.mode == "pre":
            return f"[{b}, #{self.offset}]!"
        if self.mode == "post":
            off = self.offset
            return f"[{b}], {off}" if isinstance(off, GPR) else f"[{b}], #{off}"
        ext = "" if self.extend == "lsl" and self.shift is None else f", {self.extend}"
        sh = "" if self.shift is None else f" #{self.shift}"
        return f"[{b}, {self.offset}{ext}{sh}]"


@dataclass(frozen=True, slots=True)
class Label:
    """Branch target by name (local numeric labels are renamed by the assembler)."""

    name: str
    kind = "label"

    def __str__(self) -> str:
        return self.name


Operand = GPR | VReg | FPReg | VElem | VList | Imm | Shift | Mem | Label


def X(n: int) -> GPR:
    """64-bit register ``x{n}`` (31 is XZR). Example: ``str(X(3))`` is ``'x3'``."""
    return GPR(_check_reg(n), 64)


def W(n: int) -> GPR:
    """32-bit register ``w{n}`` (31 is WZR)."""
    return GPR(_check_reg(n), 32)


XZR = GPR(31, 64)
WZR = GPR(31, 32)
SP = GPR(31, 64, sp=True)
WSP = GPR(31, 32, sp=True)


def _check_reg(n: int) -> int:
    if not 0 <= n <= 31:
        raise ValueError(f"register number {n} not in 0..31")
    return n


# ---------------------------------------------------------------------------------------------
# Parser

_GPR_RE = re.compile(r"([xw])(\d+)$")
_VREG_RE = re.compile(r"v(\d+)\.(\d*)([bhsd])$")
_ELEM_RE = re.compile(r"v(\d+)\.([bhsd])\[\s*(\d+)\s*\]$")
_FP_RE = re.compile(r"([bhsdq])(\d+)$")
_SHIFT_RE = re.compile(r"(lsl|lsr|asr|ror|msl)\s+#?\s*(\S+)$")
_EXTEND_RE = re.compile(r"([us]xt[bhwx])(?:\s+#?\s*(\S+))?$")
_LABEL_RE = re.compile(r"[A-Za-z_.$][\w.$]*$|\d+[fb]$")
_SPECIAL = {"xzr": XZR, "wzr": WZR, "sp": SP, "wsp": WSP, "lr": GPR(30, 64)}


def parse_int(text: str) -> int:
    """``#12``, ``#0x10``, ``-8``, ``#-0x10`` -> int; raises ValueError otherwise."""
    t = text.strip()
    if t.startswith("#"):
        t = t[1:].strip()
    try:
        return int(t, 0)
    except ValueError:
        raise ValueError(f"bad immediate {text!r}") from None


def _parse_reg(t: str) -> GPR | None:
    if t in _SPECIAL:
        return _SPECIAL[t]
    m = _GPR_RE.match(t)
    if m and int(m.group(2)) <= 30:
        return GPR(int(m.group(2)), 64 if m.group(1) == "x" else 32)
    return None


def _vnum(s: str, text: str) -> int:
    n = int(s)
    if n > 31:
        raise ValueError(f"vector register v{n} in {text!r} not in v0..v31")
    return n


_LIST_ITEM_RE = re.compile(r"v(\d+)\.(\d*[bhsd])$")


def _list_item(text: str, item: str) -> VReg:
    m = _LIST_ITEM_RE.match(item.strip())
    if not m:
        raise ValueError(f"register list {text!r}: {item.strip()!r} is not a vector register")
    return VReg(_vnum(m.group(1), text), m.group(2))


def _parse_list(text: str) -> VList:
    body, _, rest = text[1:].partition("}")
    index = None
    if rest.strip():
        m = re.fullmatch(r"\[\s*(\d+)\s*\]", rest.strip())
        if not m:
            raise ValueError(f"register list {text!r}: unexpected {rest.strip()!r} after the list")
        index = int(m.group(1))
    regs: list[VReg] = []
    for part in body.split(","):
        lo, dash, hi = part.partition("-")
        a = _list_item(text, lo)
        regs.append(a)
        if dash:
            b = _list_item(text, hi)
            if b.arr != a.arr:
                raise ValueError(f"register list {text!r}: bad range end {hi.strip()!r}")
            regs.extend(VReg((a.num + i) % 32, a.arr) for i in range(1, (b.num - a.num) % 32 + 1))
    if not 1 <= len(regs) <= 4:
        raise ValueError(f"register list {text!r}: {len(regs)} registers, allowed 1..4")
    for i, r in enumerate(regs):
        if r.arr != regs[0].arr or r.num != (regs[0].num + i) % 32:
            raise ValueError(f"register list {text!r}: registers must be consecutive with one arrangement")
    arr = regs[0].arr
    if (index is None) != (arr in ARR_INFO):
        what = "an element list needs b, h, s or d" if index is not None else "a list needs an arrangement"
        raise ValueError(f"register list {text!r}: {what}, not {arr!r}")
    return VList(regs[0].num, len(regs), arr, index)


def _parse_mem(text: str) -> Mem:
    pre = text.endswith("!")
    inner = text[1 : text.rindex("]")].strip()
    parts = [p.strip() for p in inner.split(",")]
    base = _parse_reg(parts[0])
    if base is None or base.width != 64:
        raise ValueError(f"memory operand {text!r}: base {parts[0]!r} is not x0..x30 or sp")
    base = GPR(base.num, 64, sp=True)  # a base of 31 is always SP
    if len(parts) == 1:
        if pre:
            raise ValueError(f"memory operand {text!r}: pre-index needs an offset")
        return Mem(base)
    off = parts[1]
    reg = _parse_reg(off)
    if reg is not None:
        if pre:
            raise ValueError(f"memory operand {text!r}: register offset cannot be pre-indexed")
        shift, extend = None, "lsl"
        if len(parts) == 3:
            m = _SHIFT_RE.match(parts[2]) or _EXTEND_RE.match(parts[2])
            if not m or m.group(1) not in ("lsl", "uxtw", "sxtw", "sxtx"):
                raise ValueError(f"memory operand {text!r}: only 'lsl #n', 'uxtw', 'sxtw' or 'sxtx' "
                                 "may follow the offset register")
            extend = m.group(1)
            shift = parse_int(m.group(2)) if m.group(2) else None
        elif len(parts) > 3:
            raise ValueError(f"memory operand {text!r}: too many parts")
        return Mem(base, reg, "reg", shift, extend)
    if len(parts) != 2:
        raise ValueError(f"memory operand {text!r}: too many parts")
    return Mem(base, parse_int(off), "pre" if pre else "offset")


@lru_cache(maxsize=4096)
def parse_operand(text: str) -> Operand:
    """Parse one GNU-syntax operand (already split at top-level commas).

    >>> parse_operand("{v0.16b-v3.16b}")
    VList(first=0, count=4, arr='16b', index=None)
    """
    t = text.strip().lower()
    if not t:
        raise ValueError("empty operand")
    c = t[0]
    if c == "#" or c == "-" or (c.isdigit() and not _LABEL_RE.match(t)):
        return Imm(parse_int(t))
    if c == "[":
        if "]" not in t:
            raise ValueError(f"memory operand {text!r}: missing ']'")
        return _parse_mem(t)
    if c == "{":
        return _parse_list(t)
    r = _parse_reg(t)
    if r is not None:
        return r
    m = _VREG_RE.match(t)
    if m:
        arr = m.group(2) + m.group(3)
        if arr not in ARR_INFO:
            raise ValueError(f"operand {text!r}: arrangement {arr!r} not in {', '.join(ARRANGEMENTS)}")
        return VReg(_vnum(m.group(1), text), arr)
    m = _ELEM_RE.match(t)
    if m:
        return VElem(_vnum(m.group(1), text), m.group(2), int(m.group(3)))
    m = _FP_RE.match(t)
    if m:
        return FPReg(_vnum(m.group(2), text), m.group(1))
    m = _SHIFT_RE.match(t)
    if m:
        return Shift(m.group(1), parse_int(m.group(2)))
    m = _EXTEND_RE.match(t)
    if m:
        return Shift(m.group(1), parse_int(m.group(2)) if m.group(2) else 0)
    if _LABEL_RE.match(text.strip()):
        return Label(text.strip())
    raise ValueError(f"cannot parse operand {text!r}")


# a comma not inside [] or {} (A64 syntax never nests them): no closing bracket ahead of an opening one
_TOP_COMMA = re.compile(r",(?![^\[{]*[\]}])")


def split_operands(text: str) -> list[str]:
    """Split at commas outside ``[]`` and ``{}``.

    >>> split_operands("x0, [x1, #8]!")
    ['x0', '[x1, #8]!']
    """
    parts = text.split(",") if "[" not in text and "{" not in text else _TOP_COMMA.split(text)
    return [p for p in (s.strip() for s in parts) if p]


def parse_operands(text: str) -> tuple[Operand, ...]:
    """Parse an operand string; ``[base], #imm`` / ``[base], xm`` become one post-index :class:`Mem`."""
    ops = [parse_operand(p) for p in split_operands(text)]
    for i, op in enumerate(ops):
        if isinstance(op, Mem) and op.mode == "offset" and i + 1 < len(ops) and op.offset == 0:
            nxt = ops[i + 1]
            if isinstance(nxt, Imm):
                ops[i : i + 2] = [Mem(op.base, nxt.value, "post")]
            elif isinstance(nxt, GPR) and nxt.width == 64:
                ops[i : i + 2] = [Mem(op.base, nxt, "post")]
            break
    return tuple(ops)
