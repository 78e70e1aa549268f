"""Shared pieces of the NEON (Cortex-A53) emitters: a GNU-syntax text builder, the AAPCS64
prologue/epilogue, constant materialisation and the text -> bytes step.

Emitters produce GNU assembler text (one instruction per line, ``name:`` labels, ``//`` comments)
that only uses the subset the project's encoder (:func:`bitsearch.asm.aarch64.assemble`) accepts;
:func:`to_machine_code` turns it into a :class:`~bitsearch.asm.kernel.MachineCode`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from bitsearch.records import Arg, LoopCount, MachineCode, Signature

# AAPCS64: x19-x28 and the low halves of v8-v15 (d8-d15) are callee-saved; x18 is the platform
# register (never touched); x29/x30 are left alone (leaf functions, no calls).
CALLEE_SAVED_X = tuple(f"x{i}" for i in range(19, 29))
CALLEE_SAVED_D = tuple(f"d{i}" for i in range(8, 16))
SAVE_BYTES = 8 * (len(CALLEE_SAVED_X) + len(CALLEE_SAVED_D))  # 144
SPILL_SLOTS = 4  # 8-byte slots above the saved registers, for values read once per tile
FRAME_BYTES = SAVE_BYTES + 8 * SPILL_SLOTS  # 176, keeps sp 16-byte aligned


# The two functions of every GEMM kernel, declared once (the x86 emitters declare the same
# through PeachPy arguments): pack returns the OR of the bytes of x it read.
PACK_SIGNATURE = Signature((Arg("x", "const uint8_t*"), Arg("xp", "uint8_t*"), Arg("rowsum", "int32_t*"),
                            Arg("row_begin", "uint64_t"), Arg("row_end", "uint64_t")), "uint32_t")
GEMM_SIGNATURE = Signature((Arg("xp", "const uint8_t*"), Arg("wp", "const uint8_t*"), Arg("y", "int32_t*"),
                            Arg("rowsum", "const int32_t*"), Arg("row_begin", "uint64_t"),
                            Arg("row_end", "uint64_t")))


def spill_slot(i: int) -> str:
    """Address of spill slot ``i`` (after :meth:`Asm.save_callee_saved`)."""
    return f"[sp, #{SAVE_BYTES + 8 * i}]"


class Asm:
    """Accumulates GNU-syntax lines, unique labels and loop execution counts of the function
    ``name`` with C signature ``signature``."""

    def __init__(self, name: str, signature: Signature) -> None:
        self.name = name
        self.signature = signature
        self.lines: list[str] = []
        self.loops: list[LoopCount] = []
        self._labels = 0

    def __call__(self, line: str) -> None:
        self.lines.append("    " + line)

    def comment(self, text: str) -> None:
        self.lines.append("    // " + text)

    def new_label(self, stem: str) -> str:
        self._labels += 1
        return f"{stem}_{self._labels}"

    def label(self, name: str, *, loop_executions: int | None = None) -> None:
        """Place ``name``; with ``loop_executions`` it heads a loop body run that many times per
        full call (recorded for static cost models and marked in the listing)."""
        if loop_executions is not None:
            self.loops.append(LoopCount(name, int(loop_executions)))
            self.lines.append(f"{name}:    // LOOP: body runs {int(loop_executions)} times per call")
        else:
            self.lines.append(f"{name}:")

    def mov_imm(self, reg: str, value: int) -> None:
        """reg = value (64-bit two's complement) with MOVZ + MOVK."""
        value &= (1 << 64) - 1
        chunks = [(value >> (16 * i)) & 0xFFFF for i in range(4)]
        self(f"movz {reg}, #{chunks[0]}")
        for i in range(1, 4):
            if chunks[i]:
                self(f"movk {reg}, #{chunks[i]}, lsl #{16 * i}")

    def add_imm(self, dst: str, src: str, value: int, tmp: str) -> None:
        """dst = src + value (value >= 0), through ``tmp`` when it does not fit 12 bits."""
        if value == 0:
            if dst != src:
                self(f"mov {dst}, {src}")
        elif value < 4096:
            self(f"add {dst}, {src}, #{value}")
        else:
            self.mov_imm(tmp, value)
            self(f"add {dst}, {src}, {tmp}")

    def save_callee_saved(self, scratch_bytes: int = 0) -> None:
        """Open the frame: saved registers, spill slots, then ``scratch_bytes`` (rounded up to
        16) at [sp, #FRAME_BYTES]."""
        self._frame = FRAME_BYTES + -(-scratch_bytes // 16) * 16
        self(f"sub sp, sp, #{self._frame}")
        regs = CALLEE_SAVED_X + CALLEE_SAVED_D
        for i in range(0, len(regs), 2):
            self(f"stp {regs[i]}, {regs[i + 1]}, [sp, #{8 * i}]")

    def restore_callee_saved(self) -> None:
        regs = CALLEE_SAVED_X + CALLEE_SAVED_D
        for i in range(0, len(regs), 2):
            self(f"ldp {regs[i]}, {regs[i + 1]}, [sp, #{8 * i}]")
        self(f"add sp, sp, #{self._frame}")

    def store_words(self, v: str, base: str, count: int, tmp: str) -> None:
        """Store the first ``count`` 32-bit lanes of vector ``v`` at [``base``]: one Q store for
        four, else lane by lane through the x register ``tmp`` (edge tiles)."""
        if count == 4:
            self(f"str q{v[1:]}, [{base}]")
            return
        for i in range(count):
            self(f"umov w{tmp[1:]}, {v}.s[{i}]")
            self(f"str w{tmp[1:]}, [{base}, #{4 * i}]")

    def text(self) -> str:
        return "\n".join([f"// {self.name}", *self.lines]) + "\n"


def assemble(text: str) -> bytes:
    """GNU-syntax text -> machine code bytes, through the project's A64 encoder."""
    from bitsearch.asm.aarch64 import assemble as encoder

    return encoder(text)


def gnu_assemble(text: str) -> bytes:
    """The same through GNU ``aarch64-linux-gnu-as`` + ``objcopy`` (an oracle for tests)."""
    gas, objcopy = shutil.which("aarch64-linux-gnu-as"), shutil.which("aarch64-linux-gnu-objcopy")
    if gas is None or objcopy is None:
        raise RuntimeError("gnu_assemble needs aarch64-linux-gnu-as and aarch64-linux-gnu-objcopy")
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, raw = Path(tmp) / "k.s", Path(tmp) / "k.o", Path(tmp) / "k.bin"
        src.write_text(".text\n" + text)
        for cmd in ([gas, "-o", str(obj), str(src)],
                    [objcopy, "-O", "binary", "-j", ".text", str(obj), str(raw)]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()}")
        return raw.read_bytes()


def to_machine_code(asm: Asm, *, assembler=None) -> MachineCode:
    """Assemble ``asm`` (default: the project's encoder) into position-independent bytes."""
    text = asm.text()
    code = (assembler or assemble)(text)
    return MachineCode(name=asm.name, code=code, listing=text, loops=tuple(asm.loops),
                       signature=asm.signature)


__all__ = ["GEMM_SIGNATURE", "PACK_SIGNATURE", "Asm", "assemble", "gnu_assemble", "spill_slot",
           "to_machine_code"]
