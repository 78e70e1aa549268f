"""GNU-syntax assembler for the supported A64 subset: text or instruction objects -> bytes.

One pass parses lines into :class:`Instruction` records and places labels (every instruction is
4 bytes, so addresses are known without encoding); a second pass encodes, resolving branch targets
with range checks. Errors name the line number and its text.

Example:
    >>> code = assemble('''
    ...     mov  x2, #3
    ... 1:  subs x2, x2, #1     // count down
    ...     b.ne 1b
    ...     ret
    ... ''')
    >>> len(code), code[-4:].hex()
    (16, 'c0035fd6')
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache

import bitsearch.asm.aarch64.isa_simd  # noqa: F401  (registers the SIMD forms)
from bitsearch.asm.aarch64.forms import TABLE, Context
from bitsearch.asm.aarch64.isa_base import CONDITIONS
from bitsearch.asm.aarch64.operands import Imm, Label, Operand, parse_int, parse_operands

NOP = 0xD503201F
_COND_CANON = {c: c for c in CONDITIONS} | {"hs": "cs", "lo": "cc"}
_LABEL_DEF = re.compile(r"\s*([A-Za-z_.$][\w.$]*|\d+)\s*:")
_IGNORED_DIRECTIVES = frozenset({".text", ".global", ".globl", ".type", ".size", ".arch", ".cpu",
                                 ".section", ".hidden", ".local", ".file", ".ident"})


class AsmError(ValueError):
    """An assembly error at ``line`` (1-based) of the source text."""

    def __init__(self, line: int, text: str, message: str) -> None:
        super().__init__(f"line {line}: {text.strip()!r}: {message}")
        self.line, self.text, self.message = line, text, message


def canonical_mnemonic(mnemonic: str) -> str:
    """Lower-case; ``beq`` / ``b.hs`` / ``b.lo`` -> ``b.eq`` / ``b.cs`` / ``b.cc``.

    >>> canonical_mnemonic("B.HS"), canonical_mnemonic("bne")
    ('b.cs', 'b.ne')
    """
    m = mnemonic.lower()
    if m.startswith("b.") and m[2:] in _COND_CANON:
        return "b." + _COND_CANON[m[2:]]
    if len(m) == 3 and m[0] == "b" and m[1:] in _COND_CANON:
        return "b." + _COND_CANON[m[1:]]
    return m


@dataclass(frozen=True, slots=True)
class Instruction:
    """One A64 instruction: a mnemonic and its operands (see :mod:`.operands`).

    >>> from bitsearch.asm.aarch64.operands import X, Imm
    >>> hex(Instruction("add", (X(0), X(1), Imm(16))).encode())
    '0x91004020'
    >>> str(Instruction.parse("ld1 {v0.16b, v1.16b}, [x0], #32"))
    'ld1 {v0.16b, v1.16b}, [x0], #32'
    """

    mnemonic: str
    operands: tuple[Operand, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Instruction:
        """Parse one instruction in GNU syntax (no label, no comment)."""
        return _parse_statement(text)

    def encode(self, pc: int = 0, labels: dict[str, int] | None = None) -> int:
        """The 32-bit word at address ``pc``; ``labels`` maps label names to addresses."""
        return TABLE.encode(self.mnemonic, self.operands, Context(pc, labels or {}))

    def __str__(self) -> str:
        ops = ", ".join(map(str, self.operands))
        return f"{self.mnemonic} {ops}" if ops else self.mnemonic


@lru_cache(maxsize=8192)
def _parse_statement(text: str) -> Instruction:
    """Cached: unrolled kernels repeat the same lines many times."""
    parts = text.split(None, 1)
    if not parts:
        raise ValueError("empty instruction")
    return Instruction(canonical_mnemonic(parts[0]), parse_operands(parts[1] if len(parts) > 1 else ""))


# Mnemonics whose immediate operand can be an absolute target address (encoded relative to pc).
_PC_RELATIVE = frozenset({"b", "bl", "cbz", "cbnz", "tbz", "tbnz", "adr", "adrp", "ldr", "ldrsw", "prfm"})


def _position_independent(insn: Instruction) -> bool:
    """True if the word does not depend on its address or on labels (so it can be cached)."""
    for op in insn.operands:
        if isinstance(op, Label):
            return False
        if isinstance(op, Imm) and (insn.mnemonic in _PC_RELATIVE or insn.mnemonic.startswith("b.")):
            return False
    return True


@lru_cache(maxsize=16384)
def _encode_cached(insn: Instruction) -> int:
    """Encoding of a position-independent instruction: tuned kernels repeat most lines."""
    return TABLE.encode(insn.mnemonic, insn.operands, None)


@dataclass
class _Line:
    item: Instruction | int  # an instruction, or a raw word (.inst / .word / alignment NOP)
    lineno: int
    text: str
    count: int = 1  # a raw word repeated (.skip, .p2align)


@dataclass
class Program:
    """Programmatic builder: append instructions, text lines and labels, then :meth:`assemble`.

    >>> p = Program()
    >>> p.label("loop")
    >>> p.append("subs x0, x0, #1")
    >>> p.append(Instruction.parse("b.ne loop"))
    >>> p.assemble().hex()
    '000400f1e1ffff54'
    """

    _lines: list[_Line] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    _local_count: dict[str, int] = field(default_factory=dict)
    _lineno: int = 0
    size: int = 0  # bytes emitted so far: the address of the next instruction

    def label(self, name: str) -> None:
        """Define ``name`` at the current address (a decimal name is a local numeric label)."""
        if name.isdigit():
            n = self._local_count.get(name, 0)
            self._local_count[name] = n + 1
            name = f"{name}\x02{n}"
        elif name in self.labels:
            raise ValueError(f"label {name!r} defined twice")
        self.labels[name] = self.size

    def append(self, item: Instruction | str) -> None:
        """Append an instruction object or one line of source text (labels and comments allowed)."""
        if isinstance(item, Instruction):
            self._lineno += 1
            self._lines.append(_Line(self._local_refs(item), self._lineno, str(item)))
            self.size += 4
        else:
            self.add_text(item)

    def add_text(self, text: str) -> None:
        """Append GNU-syntax source (many lines)."""
        for raw in text.splitlines():
            self._lineno += 1
            try:
                self._add_line(raw)
            except AsmError:
                raise
            except ValueError as e:
                raise AsmError(self._lineno, raw, str(e)) from None

    def _add_line(self, raw: str) -> None:
        line = raw
        cut = line.find("//")
        if cut >= 0:
            line = line[:cut]
        if line.lstrip().startswith("#"):  # GNU as: a line starting with '#' is a comment
            return
        for stmt in line.split(";") if ";" in line else (line,):
            if ":" in stmt:
                while (m := _LABEL_DEF.match(stmt)) is not None:
                    self.label(m.group(1))
                    stmt = stmt[m.end():]
            stmt = stmt.strip()
            if not stmt:
                continue
            if stmt[0] == ".":
                self._directive(stmt, raw)
                continue
            insn = Instruction.parse(stmt)
            self._lines.append(_Line(self._local_refs(insn), self._lineno, raw))
            self.size += 4

    def _local_refs(self, insn: Instruction) -> Instruction:
        """Rename ``1f`` / ``1b`` references to the numbered definitions they denote."""
        if not any(isinstance(op, Label) for op in insn.operands):
            return insn
        ops = []
        for op in insn.operands:
            if isinstance(op, Label) and op.name[:-1].isdigit() and op.name[-1] in "fb":
                num, direction = op.name[:-1], op.name[-1]
                n = self._local_count.get(num, 0)
                if direction == "b":
                    if n == 0:
                        raise ValueError(f"local label {op.name!r}: no earlier '{num}:'")
                    n -= 1
                op = Label(f"{num}\x02{n}")
            ops.append(op)
        return Instruction(insn.mnemonic, tuple(ops))

    def _directive(self, stmt: str, raw: str) -> None:
        name, _, args = stmt.partition(" ")
        name = name.lower()
        if name in (".p2align", ".align", ".balign"):
            n = parse_int(args.split(",")[0])
            align = n if name == ".balign" else 1 << n
            if align <= 0 or align & (align - 1):
                raise ValueError(f"{name}: alignment {align} is not a power of two")
            self._raw(NOP, (-self.size % align) // 4, raw)
        elif name in (".skip", ".space", ".zero"):
            n = parse_int(args.split(",")[0])
            if n < 0 or n % 4:
                raise ValueError(f"{name}: size {n} not a non-negative multiple of 4")
            self._raw(0, n // 4, raw)
        elif name in (".inst", ".word", ".4byte"):
            for a in args.split(","):
                v = parse_int(a)
                if not -(1 << 31) <= v < 1 << 32:
                    raise ValueError(f"{name}: value {v} does not fit 32 bits")
                self._raw(v & 0xFFFFFFFF, 1, raw)
        elif name not in _IGNORED_DIRECTIVES:
            raise ValueError(f"unsupported directive {name!r}")

    def _raw(self, word: int, count: int, raw: str) -> None:
        if count:
            self._lines.append(_Line(word, self._lineno, raw, count))
            self.size += 4 * count

    def words(self) -> list[int]:
        """Encode every line (second pass: all labels are known)."""
        out: list[int] = []
        labels = self.labels
        for ln in self._lines:
            if isinstance(ln.item, int):
                out.extend([ln.item] * ln.count)
                continue
            try:
                insn = ln.item
                if _position_independent(insn):
                    out.append(_encode_cached(insn))
                else:
                    out.append(TABLE.encode(insn.mnemonic, insn.operands, Context(4 * len(out), labels)))
            except ValueError as e:
                msg = str(e).replace("\x02", "#")  # local label k-th definition, readable
                raise AsmError(ln.lineno, ln.text, msg) from None
        return out

    def assemble(self) -> bytes:
        """Little-endian machine code of the whole program."""
        w = self.words()
        return struct.pack(f"<{len(w)}I", *w)


def assemble(text: str) -> bytes:
    """Assemble GNU-syntax A64 source of the supported subset into little-endian machine code.

    >>> assemble("add x0, x1, #16").hex()
    '20400091'
    """
    p = Program()
    p.add_text(text)
    return p.assemble()
