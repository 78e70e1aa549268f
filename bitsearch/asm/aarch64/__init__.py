"""A64 encoder, GNU-syntax assembler and disassembler for the subset bitsearch's kernels use.

- :func:`assemble` (text -> bytes; labels, ``1f``/``1b``, ``//`` and ``#`` comments, ``;``,
  ``.p2align``/``.align``/``.balign``, ``.skip``, ``.inst``/``.word``), :class:`Program` (append
  text lines, :class:`Instruction` objects and labels), :func:`disassemble` / :func:`decode`
  (objdump's text for the same subset; anything else prints as ``.inst``).
- Base ISA: LDR/STR (+B/H/SB/SH/SW, LDUR/STUR; X, W, B, H, S, D, Q; unsigned offset, pre/post
  index, register offset with LSL/UXTW/SXTW/SXTX, literal), LDP/STP (X, W, S, D, Q), PRFM, ADR/ADRP,
  ADD/SUB/ADDS/SUBS (immediate, shifted and extended register), CMP/CMN/NEG/NEGS, AND/ORR/EOR/ANDS/
  BIC/ORN (shifted register and bitmask immediate), TST/MVN, MOV (register, SP, wide and bitmask
  immediate), MOVZ/MOVN/MOVK, MADD/MSUB/MUL/MNEG, UMADDL/SMADDL/UMULL/SMULL, UDIV/SDIV, LSL/LSR/ASR
  (immediate and register), CSEL/CSINC/CSINV/CSNEG/CSET/CSETM/CINC/CINV/CNEG, B, BL, B.cond,
  CBZ/CBNZ, TBZ/TBNZ, BR/BLR/RET, NOP.
- Advanced SIMD (all arrangements each instruction has): LD1-LD4/ST1-ST4 (multiple, single lane),
  LD1R-LD4R; three-same integer and logical ops (ADD SUB ADDP MUL MLA MLS AND ORR EOR BIC ORN BSL
  BIT BIF CMxx S/U MAX MIN MAXP MINP ABD ABA QADD QSUB SHL), MOV; widening (S/U ADDL SUBL ADDW
  SUBW ABAL ABDL MLAL MLSL MULL and "2"); CNT NOT/MVN RBIT ABS NEG CMEQ/CMLT #0 REV16/32/64 XTN
  SQXTN UQXTN SQXTUN; S/U ADDLP ADALP; ADDV S/U ADDLV MAXV MINV, scalar ADDP; SHL SLI USHR SSHR
  USRA SSRA URSHR SRSHR SRI SHRN RSHRN S/U SHLL (UXTL/SXTL); MOVI/MVNI; DUP INS UMOV SMOV (MOV
  aliases); MUL MLA MLS S/U MLAL MLSL MULL by element; TBL TBX EXT ZIP/UZP/TRN; FP vector and
  scalar arithmetic, FMLA (by element), conversions, FMOV (register, general).

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
