"""Disassembler for the supported A64 subset, in objdump's GNU syntax.

It decodes through the same form table the assembler encodes with, so the subset is the same;
words outside it print as ``.inst``.

Example:
    >>> from bitsearch.asm.aarch64.assembler import assemble
    >>> print(disassemble(assemble("cnt v0.16b, v1.16b\\nret")))  # doctest: +NORMALIZE_WHITESPACE
       0:	4e205820 	cnt	v0.16b, v1.16b
       4:	d65f03c0 	ret
"""

from __future__ import annotations

import struct

import bitsearch.asm.aarch64.assembler  # noqa: F401  (registers all forms)
from bitsearch.asm.aarch64.forms import TABLE


def decode(word: int, pc: int = 0) -> str | None:
    """objdump text (``mnemonic<TAB>operands``) of one word at address ``pc``; None if unsupported.

    >>> decode(0x91004020)
    'add\\tx0, x1, #0x10'
    """
    return TABLE.decode(word, pc)


def disassemble(code: bytes, address: int = 0) -> str:
    """objdump-style listing (``addr: word <TAB> text`` per line) of little-endian A64 code."""
    if len(code) % 4:
        raise ValueError(f"code length {len(code)} is not a multiple of 4")
    lines = []
    for i, (word,) in enumerate(struct.iter_unpack("<I", code)):
        pc = address + 4 * i
        text = TABLE.decode(word, pc) or f".inst\t{word:#010x}"
        lines.append(f"{pc:4x}:\t{word:08x} \t{text}")
    return "\n".join(lines)
