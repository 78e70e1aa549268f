"""A64 encoder, GNU-syntax assembler and disassembler for the subset bitsearch's kernels use.

Example:
    >>> from bitsearch.asm.aarch64 import assemble, disassemble
    >>> print(disassemble(assemble("ld1 {v0.16b}, [x0], #16")))  # doctest: +NORMALIZE_WHITESPACE
       0:	4cdf7000 	ld1	{v0.16b}, [x0], #16
"""

from bitsearch.asm.aarch64.assembler import AsmError, Instruction, Program, assemble
from bitsearch.asm.aarch64.disasm import decode, disassemble
from bitsearch.asm.aarch64.operands import (
    GPR,
    SP,
    WSP,
    WZR,
    XZR,
    FPReg,
    Imm,
    Label,
    Mem,
    Shift,
    VElem,
    VList,
    VReg,
    W,
    X,
)

__all__ = [
    "GPR",
    "SP",
    "WSP",
    "WZR",
    "XZR",
    "AsmError",
    "FPReg",
    "Imm",
    "Instruction",
    "Label",
    "Mem",
    "Program",
    "Shift",
    "VElem",
    "VList",
    "VReg",
    "W",
    "X",
    "assemble",
    "decode",
    "disassemble",
]
