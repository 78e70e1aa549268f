"""A64 encoder, assembler and disassembler against GNU binutils as the oracle.

Every form of the encoder's table is sampled with random operands (seeded); each batch is
assembled by ONE ``aarch64-linux-gnu-as`` process and must agree word for word, and the bytes'
``objdump`` listing must equal ``disassemble``'s text (whitespace normalized).
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bitsearch.asm.aarch64 import AsmError, Instruction, Program, assemble, disassemble, isa_base, isa_simd
from bitsearch.asm.aarch64 import forms as F
from bitsearch.asm.aarch64.forms import TABLE, Form

AS = shutil.which("aarch64-linux-gnu-as")
OBJDUMP = shutil.which("aarch64-linux-gnu-objdump")
needs_binutils = pytest.mark.skipif(
    AS is None or OBJDUMP is None,
    reason="aarch64-linux-gnu-as/objdump missing (Debian: binutils-aarch64-linux-gnu)",
)
SAMPLES_PER_FORM = 6
QEMU = shutil.which("qemu-aarch64")


# ---------------------------------------------------------------------------------------------
# Oracle helpers


def elf_text(obj: bytes) -> bytes:
    """The .text section of a little-endian ELF64 relocatable."""
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    str_off = sections[shstrndx][4]
    for name, _type, _flags, _addr, off, size in sections:
        end = obj.index(b"\0", str_off + name)
        if obj[str_off + name : end] == b".text":
            return obj[off : off + size]
    raise AssertionError("no .text section")


def gas(text: str, tmp_path: Path) -> bytes:
    """Assemble with GNU as (one process); fail the test with its messages on error."""
    src, obj = tmp_path / "batch.s", tmp_path / "batch.o"
    src.write_text(text + "\n")
    proc = subprocess.run([AS, "-o", str(obj), str(src)], capture_output=True, text=True, check=False)
    lines = text.splitlines()
    errors = []
    for m in re.finditer(r":(\d+): Error: (.*)", proc.stderr):
        errors.append(f"{lines[int(m.group(1)) - 1]!r}: {m.group(2)}")
    assert proc.returncode == 0 and not errors, "GNU as rejected:\n" + "\n".join(errors[:30] or [proc.stderr])
    return elf_text(obj.read_bytes())


def objdump(code: bytes, tmp_path: Path) -> list[str]:
    """objdump -D -b binary -m aarch64 listing lines, whitespace normalized."""
    binf = tmp_path / "code.bin"
    binf.write_bytes(code)
    out = subprocess.run([OBJDUMP, "-D", "-b", "binary", "-m", "aarch64", str(binf)],
                         capture_output=True, text=True, check=True).stdout
    return [norm(ln) for ln in out.splitlines() if re.match(r"\s*[0-9a-f]+:\t", ln)]


def norm(line: str) -> str:
    return " ".join(line.split())


def words(code: bytes) -> list[int]:
    return [w for (w,) in struct.iter_unpack("<I", code)]


def compare_words(lines: list[str], mine: bytes, theirs: bytes) -> None:
    a, b = words(mine), words(theirs)
    assert len(a) == len(b), f"{len(a)} words vs GNU as {len(b)}"
    bad = [f"{t!r}: ours {x:08x}, GNU as {y:08x}" for t, x, y in zip(lines, a, b, strict=True) if x != y]
    assert not bad, f"{len(bad)} of {len(a)} differ:\n" + "\n".join(bad[:40])


def compare_listing(code: bytes, tmp_path: Path, lines: list[str] | None = None) -> None:
    theirs = objdump(code, tmp_path)
    ours = [norm(ln) for ln in disassemble(code).splitlines()]
    assert len(ours) == len(theirs)
    bad = [f"{(lines or [''] * len(ours))[i]!r}:\n   objdump: {t}\n   ours:    {o}"
           for i, (o, t) in enumerate(zip(ours, theirs, strict=True)) if o != t]
    assert not bad, f"{len(bad)} of {len(ours)} listing lines differ:\n" + "\n".join(bad[:30])


# ---------------------------------------------------------------------------------------------
# Random operands for every codec class (the samplers only know field types, not mnemonics)


def _num(rng: random.Random, lo: int, hi: int) -> str:
    v = rng.randint(lo, hi)
    return str(v) if rng.random() < 0.5 else hex(v)


def _imm(rng: random.Random, text: str) -> str:
    return text if rng.random() < 0.2 else "#" + text  # '#' is optional in GNU syntax


def _base(rng: random.Random) -> str:
    n = rng.randint(0, 31)
    return "sp" if n == 31 else f"x{n}"


def _gpr(rng: random.Random, kinds: frozenset[str]) -> str:
    k = rng.choice(sorted(kinds))
    return f"{k}{rng.randint(0, 30)}" if k in ("x", "w") else k


def sample(field: F.Field, rng: random.Random, label: str) -> str:
    """A random valid operand for ``field``."""
    t = type(field)
    if isinstance(field, F.RNot31):
        return f"x{rng.randint(0, 30)}"
    if t is isa_base.TbzReg:
        return f"x{rng.randint(0, 30)}"  # bit >= 32 picked below needs x; bits < 32 print as w
    if isinstance(field, F.R):
        return _gpr(rng, field.kinds)
    if t is F.V:
        return f"v{rng.randrange(field.limit)}.{field.arr}"
    if t is F.F:
        return f"{field.size}{rng.randint(0, 31)}"
    if t is F.VL:
        first, arr = rng.randint(0, 31), field.arr
        regs = [f"v{(first + i) % 32}.{arr}" for i in range(field.count)]
        if field.count > 1 and first + field.count <= 32 and rng.random() < 0.5:
            return "{" + f"{regs[0]}-{regs[-1]}" + "}"
        return "{" + ", ".join(regs) + "}"
    if t is F.VLane:
        first, es = rng.randint(0, 31), field.esize
        regs = [f"v{(first + i) % 32}.{es}" for i in range(field.count)]
        lane = f"[{rng.randint(0, (16 >> field.size) - 1)}]"
        if field.count > 1 and first + field.count <= 32 and rng.random() < 0.5:
            return "{" + f"{regs[0]}-{regs[-1]}" + "}" + lane
        return "{" + ", ".join(regs) + "}" + lane
    if t in (F.ElemImm5, F.ElemImm4):
        return f"v{rng.randint(0, 31)}.{field.esize}[{rng.randint(0, (16 >> field.size) - 1)}]"
    if t is F.ElemHLM:
        if field.esize == "h":
            return f"v{rng.randint(0, 15)}.h[{rng.randint(0, 7)}]"
        return f"v{rng.randint(0, 31)}.{field.esize}[{rng.randint(0, 3 if field.esize == 's' else 1)}]"
    if t is F.UImm:
        v = (rng.randint(0, (1 << field.width) - 1) + field.offset) * field.scale
        return _imm(rng, _num(rng, v, v))
    if t is F.ShiftField:
        op = rng.choice(sorted(field.ops))
        amounts = sorted(field.amounts) if field.amounts is not None else range(field.amax + 1)
        amount = rng.choice(amounts)
        return f"{op} #{amount}"
    if t in (F.LabelField, isa_base.AdrTarget):
        return label
    if t is isa_base.Extend:
        op = rng.choice(sorted(field.ops))
        amount = rng.randint(0, 4)
        return op if amount == 0 and rng.random() < 0.5 else f"{op} #{amount}"
    if t is isa_base.BitmaskImm:
        while True:
            size = rng.choice([s for s in (2, 4, 8, 16, 32, 64) if s <= field.width])
            ones, rot = rng.randint(1, size - 1), rng.randrange(size)
            run = (1 << ones) - 1
            elem = ((run >> rot) | (run << (size - rot))) & ((1 << size) - 1)
            v = sum(elem << i for i in range(0, field.width, size))
            if not field.mov or not isa_base._movable(v, field.width):
                return "#" + hex(v)
            if rng.random() < 0.1:  # MOV SP, #imm is always ORR (MOVZ/MOVN cannot write SP)
                return "#" + hex(v)
    if t is isa_base.AddSubImm:
        v = rng.randint(0, 4095) << rng.choice([0, 0, 12])
        return _imm(rng, str(-v if field.negate else v))
    if t is isa_base.PrfOp:
        return rng.choice(sorted(isa_base.PRFOPS))
    if t is isa_base.Cond:
        names = [*(isa_base.CONDITIONS[:14] if field.inverted else isa_base.CONDITIONS), "hs", "lo"]
        return rng.choice(names)
    if t is F.MemUImm:
        off = rng.randint(0, 4095) * field.scale
        return f"[{_base(rng)}, #{off}]" if off or rng.random() < 0.5 else f"[{_base(rng)}]"
    if t is F.MemBase:
        return f"[{_base(rng)}]"
    if t is F.MemIndexed:
        h = 1 << (field.width - 1)
        off = rng.randint(-h, h - 1) * field.scale
        return {"pre": f"[{_base(rng)}, #{off}]!", "post": f"[{_base(rng)}], #{off}"}.get(
            field.mode, f"[{_base(rng)}, #{off}]")
    if t is F.MemOffset7:
        off = rng.randint(-64, 63) * field.scale
        return f"[{_base(rng)}, #{off}]"
    if t is F.MemRegOffset:
        ext = rng.choice(["lsl", "uxtw", "sxtw", "sxtx"])
        n = rng.randint(0, 31)
        rm = ("w" if ext in ("uxtw", "sxtw") else "x") + ("zr" if n == 31 else str(n))
        amount = rng.choice(["", f" #{field.s}", " #0"])
        if ext == "lsl":
            return f"[{_base(rng)}, {rm}" + (f", lsl{amount}]" if amount else "]")
        return f"[{_base(rng)}, {rm}, {ext}{amount}]"
    if t is F.MemPostReg:
        return f"[{_base(rng)}], x{rng.randint(0, 30)}"
    if t is F.MemPostFixed:
        return f"[{_base(rng)}], #{field.nbytes}"
    if t is isa_base.MovWide:
        mask = (1 << field.width) - 1
        v = rng.randint(1, 0xFFFF) << (16 * rng.randrange(field.width // 16))
        v = (~v & mask) if field.inverted else v
        negative = v >> (field.width - 1) and rng.random() < 0.5
        return "#" + (str(v - (1 << field.width)) if negative else hex(v))
    if t is isa_base.BitfieldShift:
        lo = 1 if field.op == "lsl" else 0  # objdump spells LSL #0 as LSR #0
        return _imm(rng, str(rng.randint(lo, field.width - 1)))
    if t is isa_base.TbzBit:
        return f"#{rng.randint(0, 63)}"
    if t is isa_simd.ShiftImm:
        lo, hi = (1, field.esize) if field.right else (0, field.esize - 1)
        return _imm(rng, str(rng.randint(lo, hi)))
    if t is isa_simd.SimdImm8:
        if field.bytemask:
            return "#" + hex(sum(0xFF << (8 * i) for i in range(8) if rng.random() < 0.5))
        return _imm(rng, _num(rng, 0, 255))
    if t is isa_simd.Zero:
        return "#0"
    raise AssertionError(f"no sampler for {t.__name__}")


def sample_line(form: Form, rng: random.Random, label: str) -> str:
    ops = [sample(f, rng, label) for f in form.fields]
    if form.mnemonic in ("tbz", "tbnz"):
        bit = int(ops[1][1:])
        reg = int(ops[0][1:])
        ops[0] = f"x{reg}" if bit >= 32 or rng.random() < 0.5 else f"w{reg}"
        if ops[0][0] == "w":
            ops[1] = f"#{bit % 32}"
    sep = " " if rng.random() < 0.5 else "\t"
    return f"{form.mnemonic}{sep}{', '.join(ops)}" if ops else form.mnemonic


def batch(rng: random.Random, forms: list[Form], per_form: int) -> list[str]:
    """Random lines; a label before each form's samples gives branches targets both ways (and
    within TBZ's +-32 KiB)."""
    lines = []
    for i, form in enumerate(forms):
        lines.append(f"L{i}:")
        for _ in range(per_form):
            lines.append(sample_line(form, rng, rng.choice([f"L{i}", f"L{i + 1}"])))
    lines.append(f"L{len(forms)}:")
    return lines


def instruction_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not ln.endswith(":")]


# ---------------------------------------------------------------------------------------------
# The oracle tests


@needs_binutils
def test_every_form_matches_gnu_as(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    forms = list(TABLE.forms)
    lines = batch(rng, forms, SAMPLES_PER_FORM)
    insns = instruction_lines(lines)
    assert len(insns) >= 5000
    text = "\n".join(lines)
    compare_words(insns, assemble(text), gas(text, tmp_path))


@needs_binutils
def test_listing_matches_objdump(tmp_path: Path) -> None:
    rng = random.Random(7)
    lines = batch(rng, list(TABLE.forms), 2)
    text = "\n".join(lines)
    code = assemble(text)
    compare_words(instruction_lines(lines), code, gas(text, tmp_path))
    compare_listing(code, tmp_path, instruction_lines(lines))


@needs_binutils
def test_decoder_on_random_words(tmp_path: Path) -> None:
    """Random bits in every form's operand fields (not only what the encoder emits): whatever we
    decode must read exactly as objdump reads it, and must re-assemble to a word that decodes to
    the same text (bitmask immediates have several encodings of one value)."""
    rng = random.Random(3)
    ws = [f.base | (rng.getrandbits(32) & ~f.mask & F.MASK32) for f in TABLE.forms for _ in range(3)]
    code = struct.pack(f"<{len(ws)}I", *ws)
    theirs = objdump(code, tmp_path)
    ours = [norm(ln) for ln in disassemble(code).splitlines()]
    decoded = [i for i, o in enumerate(ours) if ".inst" not in o]
    assert len(decoded) > 0.9 * len(ws)  # reserved encodings (e.g. of bitmask immediates) stay .inst
    bad = [f"objdump: {theirs[i]}\n   ours:    {ours[i]}" for i in decoded if ours[i] != theirs[i]]
    assert not bad, f"{len(bad)} of {len(decoded)} differ:\n" + "\n".join(bad[:30])
    for i in decoded:
        text = ours[i].split(" ", 2)[2].split("//")[0]
        word = Instruction.parse(text).encode(pc=4 * i)
        assert disassemble(word.to_bytes(4, "little"), address=4 * i).split("\t", 2)[2] == \
            disassemble(code[4 * i : 4 * i + 4], address=4 * i).split("\t", 2)[2], text


def test_listing_reassembles_to_same_bytes() -> None:
    """disassemble's text (objdump's syntax) is itself valid input for assemble."""
    rng = random.Random(11)
    lines = batch(rng, list(TABLE.forms), 1)
    code = assemble("\n".join(lines))
    listing = [ln.split("\t", 2)[2].split("//")[0] for ln in disassemble(code).splitlines()]
    # branch targets print as absolute addresses; reassemble those at their own address
    words_again = [Instruction.parse(t).encode(pc=4 * i) for i, t in enumerate(listing)]
    assert words_again == words(code)


KERNEL_SUBSET = """
    ldr x0, [x1], #8
    ldr x0, [x1, #-8]
    str q0, [x1, #-16]
    add x0, x1, #4096
    sub x0, x1, #-1
    cmp x0, #-1
    ldr q0, [x1, #32]
    str q3, [x2], #16
    ldr d1, [x3, x4, lsl #3]
    ld1 {v0.16b-v3.16b}, [x0], #64
    ld1 {v4.8h, v5.8h}, [x1], x9
    st1 {v0.4s}, [x2], #16
    ld1r {v7.8h}, [x3], #2
    stp d8, d9, [sp, #-64]!
    stp d10, d11, [sp, #16]
    ldp d10, d11, [sp, #16]
    ldp d8, d9, [sp], #64
    stp x19, x20, [sp, #-16]!
    add x0, x0, #16
    add x0, x0, x9, lsl #4
    sub x1, x1, #1, lsl #12
    subs x2, x2, #1
    cmp x2, x3
    mov x4, sp
    mov x5, x6
    movz x6, #0x1234, lsl #16
    movk x6, #0x5678
    mov x7, #-1
    madd x8, x9, x10, x11
    mul x8, x9, x10
    lsl x8, x8, #5
    and v0.16b, v1.16b, v2.16b
    eor v0.8b, v1.8b, v2.8b
    orr v0.16b, v1.16b, v2.16b
    mov v0.16b, v1.16b
    cnt v0.16b, v0.16b
    add v0.16b, v0.16b, v1.16b
    add v0.2d, v0.2d, v1.2d
    addp v0.4s, v1.4s, v2.4s
    uaddlp v0.8h, v0.16b
    uadalp v1.4s, v0.8h
    sadalp v1.2d, v0.4s
    uaddlv h0, v1.16b
    addv s0, v1.4s
    ushr v0.16b, v1.16b, #1
    sshr v0.4s, v1.4s, #31
    shl v0.8h, v1.8h, #3
    ushll v0.8h, v1.8b, #0
    ushll2 v0.4s, v1.8h, #2
    uxtl v0.2d, v1.2s
    sxtl2 v0.8h, v1.16b
    movi v0.16b, #0x55
    movi v1.4s, #0
    movi v2.2d, #0
    movi v3.8h, #1, lsl #8
    dup v0.4s, v1.s[3]
    dup v0.16b, w1
    umov w0, v1.b[15]
    mov x0, v1.d[1]
    ins v0.s[1], w1
    ins v0.d[1], v2.d[0]
    smlal v0.4s, v1.4h, v2.4h
    umlal2 v0.8h, v1.16b, v2.16b
    smlal v0.4s, v1.4h, v15.h[7]
    umlal2 v0.2d, v1.4s, v31.s[3]
    smull v0.8h, v1.8b, v2.8b
    umull2 v0.4s, v1.8h, v2.h[1]
    mul v0.4s, v1.4s, v2.s[1]
    mla v0.8h, v1.8h, v2.8h
loop:
    subs x9, x9, #1
    b.ne loop
    b.hs loop
    cbz x0, done
    cbnz w1, loop
    b done
    bl loop
done:
    ret
"""


@needs_binutils
def test_kernel_subset(tmp_path: Path) -> None:
    """The instructions the NEON emitters use, written the way they write them."""
    lines = [ln.strip() for ln in KERNEL_SUBSET.strip().splitlines()]
    code = assemble(KERNEL_SUBSET)
    compare_words([ln for ln in lines if not ln.endswith(":")], code, gas(KERNEL_SUBSET, tmp_path))
    compare_listing(code, tmp_path)


def test_required_forms_exist() -> None:
    """Every arrangement the brief lists is present (the random test only samples the table)."""
    sigs = {(m, s) for (m, s) in TABLE.by_sig}
    need = [("add", ("v." + a,) * 3) for a in ("8b", "16b", "4h", "8h", "2s", "4s", "2d")]
    need += [("ld1", (f"l{n}.{a}", k)) for n in range(1, 5) for a in isa_simd.ARRANGEMENTS
             for k in ("mem", "mem+imm", "mem+reg")]
    need += [("movi", ("v." + a, "imm")) for a in ("8b", "16b", "4h", "8h", "2s", "4s", "2d")]
    need += [("movi", ("d", "imm")), ("uaddlv", ("d", "v.4s")), ("ret", ()), ("ret", ("x",))]
    need += [("b." + c, ("label",)) for c in isa_base.CONDITIONS]
    for mn in ("ldr", "str"):
        for reg in ("x", "w", "b", "h", "s", "d", "q"):
            need += [(mn, (reg, k)) for k in ("mem", "mem!", "mem+imm", "mem,reg")]
    for mn in ("ldp", "stp"):
        for reg in ("x", "d", "q"):
            need += [(mn, (reg, reg, k)) for k in ("mem", "mem!", "mem+imm")]
    missing = [n for n in need if n not in sigs]
    assert not missing, missing


@needs_binutils
def test_long_program(tmp_path: Path) -> None:
    """A few thousand lines with many labels (speed is measured in experiments/a64_assembler.py)."""
    body = "\n".join(ln for ln in KERNEL_SUBSET.splitlines() if "loop" not in ln and "done" not in ln)
    text = "\n".join(f"blk{i}:\n{body}\n cbnz x0, blk{max(i - 1, 0)}\n b.ne blk{i}" for i in range(40))
    code = assemble(text)
    assert len(code) >= 4 * 2000
    assert code == gas(text, tmp_path)


# ---------------------------------------------------------------------------------------------
# Labels and branches


@needs_binutils
def test_labels_local_and_range(tmp_path: Path) -> None:
    src = """
    1:  b 1f          // forward to the second '1'
        b.eq 1b
    1:  cbz x0, 1b
        tbnz x3, #40, far
        b 1b
    far: ret
    """
    code = assemble(src)
    assert code == gas(src, tmp_path)
    # B.cond reaches -1 MiB .. +1 MiB - 4 (.skip pads with zero words)
    for lo, hi in (("", "b.ne target\n.skip 1048568\ntarget: ret"),
                   ("target: ret\n.skip 1048572\n", "b.ne target")):
        src = lo + hi
        assert assemble(src) == gas(src, tmp_path)
    with pytest.raises(AsmError, match=r"line 1: 'b.ne target': .*branch target target at offset 1048576 "
                                        r"out of range -1048576\.\.1048572"):
        assemble("b.ne target\n.skip 1048572\ntarget: ret")
    with pytest.raises(AsmError, match=r"line 3: .*offset -1048580 out of range"):
        assemble("target: ret\n.skip 1048576\nb.ne target")
    with pytest.raises(AsmError, match=r"B: .*offset 134217728 out of range -134217728\.\.134217724"):
        assemble("b target\n.skip 134217724\ntarget: ret")
    with pytest.raises(AsmError, match=r"line 2: .*undefined label 'nowhere'"):
        assemble("nop\n b nowhere")
    with pytest.raises(AsmError, match=r"no earlier '7:'"):
        assemble("b 7b")
    with pytest.raises(AsmError, match="defined twice"):
        assemble("a: nop\na: nop")
    with pytest.raises(AsmError, match=r"TBZ: .*offset 32768 out of range -32768\.\.32764"):
        assemble("tbz x0, #1, t\n.skip 32764\nt: ret")
    src = "tbz x0, #1, t\n.skip 32760\nt: ret"
    assert assemble(src) == gas(src, tmp_path)


@needs_binutils
def test_program_builder_and_directives(tmp_path: Path) -> None:
    p = Program()
    p.append("mov x0, #0")
    p.label("top")
    p.append(Instruction.parse("add x0, x0, #1"))
    p.add_text("cmp x0, #10 ; b.lo top\n.p2align 4\n.inst 0xd65f03c0")
    src = "mov x0, #0\ntop: add x0, x0, #1\ncmp x0, #10\nb.lo top\n.p2align 4\n.inst 0xd65f03c0\n"
    assert p.assemble() == gas(src, tmp_path)
    assert p.size == 20


@needs_binutils
def test_syntax_variants(tmp_path: Path) -> None:
    """Comments, case, spacing, separators and label placement as GNU as accepts them."""
    src = """
    .text
    .globl f
    .type f, %function
    # a full-line comment
    // another one
    f:
    entry:  start2:   // two labels, one line
    \tADD\tX0,X1,#0x10          // upper case, no spaces
    add x0 , x1 , 16             // spaces around commas, no '#'
    LD1 {V0.16B - V1.16B}, [X0], #32
    ldr q1, [ x2 , #32 ]
    movi v0.2d, #0 ; cnt v1.16b, v1.16b ; b.HS entry
    beq start2
    blo entry
    mov w0, #-1
    .Lloop: subs x0, x0, #1
    b.ne .Lloop
    ret
    .size f, .-f
    """
    assert assemble(src) == gas(src, tmp_path)


def test_instruction_objects() -> None:
    from bitsearch.asm.aarch64 import SP, Imm, Mem, VList, X

    ldp = Instruction("ldp", (X(19), X(20), Mem(SP, 16, "post")))
    assert str(ldp) == "ldp x19, x20, [sp], #16"
    assert ldp.encode() == Instruction.parse(str(ldp)).encode()
    st = Instruction("st1", (VList(0, 2, "4s"), Mem(X(1), X(2), "post")))
    assert str(st) == "st1 {v0.4s, v1.4s}, [x1], x2"
    assert assemble(str(st)) == st.encode().to_bytes(4, "little")
    with pytest.raises(ValueError, match=r"ADD: immediate 5000 not in 0\.\.4095"):
        Instruction("add", (X(0), X(1), Imm(5000))).encode()
    with pytest.raises(ValueError, match=r"register number 32 not in 0\.\.31"):
        X(32)


def test_unsupported_words_list_as_inst() -> None:
    assert disassemble(bytes.fromhex("00000000")).endswith("\t.inst\t0x00000000")


# ---------------------------------------------------------------------------------------------
# Errors name the operand and the allowed range


@pytest.mark.parametrize(("line", "message"), [
    ("ldr x0, [x1, #4100]", r"LDR: offset 4100 not a multiple of 8 in 0\.\.32760"),
    ("ldr x0, [x1, #32768]", r"LDR: offset 32768 not in 0\.\.32760"),
    ("ldr q0, [x1, #-272]", r"LDR: offset -272 not in 0\.\.65520"),
    ("ldr x0, [x1, #256]!", r"LDR: offset 256 not in -256\.\.255"),
    ("ldp d8, d9, [sp, #-520]!", r"LDP: offset -520 not in -512\.\.504"),
    ("ldp x0, x1, [sp, #12]", r"LDP: offset 12 not a multiple of 8 in -512\.\.504"),
    ("add x0, x1, #4097", r"ADD: immediate 4097 not in 0\.\.4095"),
    ("sub x0, x1, #-4097", r"SUB: immediate -4097 not in 0\.\.4095"),
    ("add x0, x1, #1, lsl #8", r"ADD: shift amount 8 not one of 0, 12"),
    ("add x0, x1, x2, lsl #64", r"ADD: shift amount 64 not in 0\.\.63"),
    ("add w0, w1, w2, lsl #32", r"ADD: shift amount 32 not in 0\.\.31"),
    ("movz x0, #0x10000", r"MOVZ: immediate 65536 not in 0\.\.65535"),
    ("movk w0, #1, lsl #32", r"MOVK: shift amount 32 not one of 0, 16"),
    ("mov x0, #0x12345", r"MOV: immediate 0x12345 not encodable"),
    ("lsl x0, x1, #64", r"LSL: shift 64 not in 0\.\.63"),
    ("ushr v0.4s, v1.4s, #0", r"USHR: shift 0 not in 1\.\.32"),
    ("shl v0.8h, v1.8h, #16", r"SHL: shift 16 not in 0\.\.15"),
    ("ushll v0.8h, v1.8b, #8", r"USHLL: shift 8 not in 0\.\.7"),
    ("movi v0.16b, #256", r"MOVI: immediate 256 not in 0\.\.255"),
    ("movi v0.4s, #1, lsl #4", r"MOVI: shift amount 4 not one of 0, 8, 16, 24"),
    ("movi v0.2d, #0x1234", r"MOVI: immediate 0x1234 is not a 64-bit mask"),
    ("dup v0.4s, v1.s[4]", r"DUP: index of v1.s\[4\] 4 not in 0\.\.3"),
    ("umov w0, v1.b[16]", r"UMOV: index of v1.b\[16\] 16 not in 0\.\.15"),
    ("smlal v0.4s, v1.4h, v16.h[0]", r"SMLAL: register of v16.h\[0\] not in v0\.\.v15"),
    ("mul v0.8h, v1.8h, v2.h[8]", r"MUL: index of v2.h\[8\] 8 not in 0\.\.7"),
    ("ld1 {v0.16b}, [x0], #8", r"LD1: post-index offset 8 must be 16"),
    ("ld1 {v0.16b}, [x0], xzr", r"LD1: post-index register xzr not x0\.\.x30"),
    ("ld1 {v0.16b}, [x0, #16]", r"LD1: offset 16 not allowed"),
    ("ldr x0, [x1, x2, lsl #2]", r"LDR: offset shift lsl #2 not one of 0, 3"),
    ("add v0.1d, v1.1d, v2.1d", r"ADD: no supported form takes v0.1d \(v.1d\)"),
    ("add x0, x1, v2.16b", r"ADD: no supported form"),
    ("frob x0", r"unknown or unsupported mnemonic 'frob'"),
    ("add x0, x1, #zz", r"bad immediate"),
    ("ld1 {v0.16b, v2.16b}, [x0]", r"consecutive"),
    ("ld1 {v0.16b-v4.16b}, [x0]", r"5 registers, allowed 1\.\.4"),
    ("add v32.16b, v1.16b, v2.16b", r"v32 .* not in v0\.\.v31"),
    ("ldr x0, [w1]", r"base 'w1' is not x0\.\.x30 or sp"),
    ("movi v0.8b, #1, msl #8", r"MOVI: no supported form"),
    ("tbz w0, #32, 0", r"TBZ: bit number 32 not in 0\.\.31 for w0"),
])
def test_errors_name_operand(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        assemble("nop\n" + line)
    assert isinstance(info.value, AsmError) and info.value.line == 2
    assert str(info.value).startswith(f"line 2: {line!r}: ")


def test_disassemble_rejects_ragged_code() -> None:
    with pytest.raises(ValueError, match="code length 6 is not a multiple of 4"):
        disassemble(b"\0" * 6)


# ---------------------------------------------------------------------------------------------
# Run assembled code under qemu (Cortex-A53 ISA) when available


@pytest.mark.skipif(QEMU is None or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="needs qemu-aarch64 and aarch64-linux-gnu-gcc")
@pytest.mark.parametrize("nbytes", [16, 80, 4096])
def test_runs_under_qemu_a53(tmp_path: Path, nbytes: int) -> None:
    """An AND + CNT + UADDLP/UADALP popcount loop gives numpy's answer on an emulated Cortex-A53,
    for random bytes and for all-ones (every counter at its maximum)."""
    import numpy as np

    from bitsearch.records import Buffer, Call, ErrorClass, Job
    from bitsearch.runners import _harness

    # popcount_and(a=x0, b=x1, out=x2, nbytes=x3), nbytes a positive multiple of 16:
    #   *(uint64_t *)out = popcount(a & b);  also exercises post-index LD1, MOVI, ADDV, UMOV, STR
    src = """
        movi v2.2d, #0
    1:  ld1 {v0.16b}, [x0], #16
        ld1 {v1.16b}, [x1], #16
        and v0.16b, v0.16b, v1.16b
        cnt v0.16b, v0.16b
        uaddlp v0.8h, v0.16b
        uadalp v2.4s, v0.8h
        subs x3, x3, #16
        b.ne 1b
        addv s2, v2.4s
        umov w4, v2.s[0]
        str x4, [x2]
        ret
    """
    code = assemble(src)
    rng = np.random.default_rng(nbytes)
    for a, b in ((rng.integers(0, 256, nbytes, dtype=np.uint8), rng.integers(0, 256, nbytes, dtype=np.uint8)),
                 (np.full(nbytes, 255, np.uint8), np.full(nbytes, 255, np.uint8))):
        job = Job(code=(code,), buffers=(Buffer.input(a), Buffer.input(b), Buffer.out(8)),
                  calls=(Call(0, (("buf", 0), ("buf", 1), ("buf", 2), ("int", nbytes))),), arch="aarch64")
        job_file = _harness.write_job(job, tmp_path)
        out_dir = tmp_path / f"out{int(a[0])}"
        out_dir.mkdir()
        args = _harness.harness_args(job_file, out_dir, timing=False, min_time=0.0, repeats=1)
        proc = subprocess.run([QEMU, "-cpu", "cortex-a53", str(_harness.harness_binary("aarch64")), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        result = _harness.interpret(job, proc.returncode, proc.stdout, proc.stderr, out_dir, timing=False,
                                    repeats=1)
        assert result.error is ErrorClass.NONE, result.message
        got = int.from_bytes(result.outputs[2], "little")
        assert got == int(np.unpackbits(a & b).sum())
