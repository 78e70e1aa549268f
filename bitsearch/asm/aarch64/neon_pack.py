"""The activation packing kernel of the NEON bit-serial GEMM (Cortex-A53), list-scheduled.

``pack(x, xp, rowsum, row_begin, row_end) -> uint32`` (see :mod:`bitsearch.asm.aarch64.neon_dense`):
per block of ``block_bits`` activations (rows arrive zero-padded to whole blocks) and plane p,
each byte's bit p is moved to bit t = lane % 8 -- for 1-bit activations a MUL by the byte
weights [1, 2, ..., 128] (values are 0 or 1), otherwise CMTST with 1 << p then AND with the
weights -- and an ADDP tree sums each 8 consecutive bytes into one: bit t of byte j is element
8j + t, as ``PackedLayout`` wants. ``unipolar`` also writes rowsum[r] = sum_k x[r, k]. Returns the
OR of all bytes read (the caller rejects out-of-range activations with it).

Why scheduled: every block is a few dozen independent SIMD ops, but in program order their
ADDP/ORR trees are chains of 6-cycle latencies on the in-order A53. Several blocks (a whole row
when K is short) form one straight-line body that :func:`bitsearch.asm.aarch64.neon_sched.schedule`
interleaves; the OR and the row sum are trees with one accumulating op per block.

Example:
    >>> import bitsearch as bs
    >>> from bitsearch.space.schedule import NeonSchedule
    >>> asm = emit_pack(bs.Dense(4, 4, 576), NeonSchedule(vector_bits=128))
    >>> [lc.label.split("_")[0] for lc in asm.loops]  # 5 blocks of a row in one body: no block loop
    ['pack']
"""

from __future__ import annotations

from bitsearch.asm.aarch64.neon_common import PACK_SIGNATURE, Asm
from bitsearch.asm.aarch64.neon_sched import Op, access, allocate, schedule
from bitsearch.numerics.packing import PackedLayout
from bitsearch.space.schedule import NeonSchedule
from bitsearch.workloads import Dense

BYTE_WEIGHTS = 0x8040201008040201  # [1, 2, 4, ..., 128] as bytes, little-endian
MAX_UNROLL = 8  # blocks per scheduled body (a whole row up to this many blocks)


class _Pack:
    X, XP, RS, ROWR, END = "x0", "x1", "x2", "x3", "x4"
    SRC, DST, BC, T = "x6", "x7", "x8", "x9"
    GPR_POOL = ("x10", "x11", "x12", "x13", "x14", "x15")

    def __init__(self, workload: Dense, schedule_: NeonSchedule) -> None:
        self.wl = workload
        self.lay = PackedLayout(planes=workload.abits, k=workload.k, block_bits=schedule_.vector_bits)
        self.stride = self.lay.blocks * self.lay.block_bits  # raw x row: whole zero-padded blocks
        self.n_in = self.lay.block_bits // 16  # Q loads per block (one byte per activation)
        self.unipolar = workload.mode == "unipolar"
        regs = [f"v{i}" for i in range(32)]
        self.weights, self.orv, self.rsv = regs[0], regs[1], regs[2]
        multi = workload.abits > 1
        self.masks = regs[3: 3 + workload.abits] if multi else []
        self.pool = regs[3 + len(self.masks):]
        self._n = 0
        self.a = Asm("bitsearch_pack", PACK_SIGNATURE)

    def _v(self, stem: str) -> str:
        self._n += 1
        return f"%{stem}{self._n}"

    def emit(self) -> Asm:
        a, lay = self.a, self.lay
        a.save_callee_saved()  # the scheduled bodies use all 32 vectors (d8-d15 are callee-saved)
        a.mov_imm(self.T, BYTE_WEIGHTS)
        a(f"dup {self.weights}.2d, {self.T}")
        for p, m in enumerate(self.masks):
            a(f"movi {m}.16b, #{1 << p}")
        a(f"movi {self.orv}.2d, #0")
        top, done = a.new_label("pack_row"), a.new_label("pack_done")
        a.label(top, loop_executions=self.wl.m)
        a(f"cmp {self.ROWR}, {self.END}")
        a(f"b.hs {done}")
        a.mov_imm(self.T, self.stride)
        a(f"madd {self.SRC}, {self.ROWR}, {self.T}, {self.X}")
        a.mov_imm(self.T, lay.row_bytes)
        a(f"madd {self.DST}, {self.ROWR}, {self.T}, {self.XP}")
        if self.unipolar:
            a(f"movi {self.rsv}.2d, #0")
        unroll = min(lay.blocks, MAX_UNROLL)
        iters, rest = divmod(lay.blocks, unroll)
        if iters == 1:
            self._body(unroll)
        elif iters:
            blk = a.new_label("pack_block")
            a.mov_imm(self.BC, iters)
            a.label(blk, loop_executions=self.wl.m * iters)
            self._body(unroll)
            a(f"add {self.SRC}, {self.SRC}, #{unroll * lay.block_bits}")
            a(f"add {self.DST}, {self.DST}, #{unroll * lay.block_bytes}")
            a(f"subs {self.BC}, {self.BC}, #1")
            a(f"b.ne {blk}")
        if rest:
            if iters == 1:
                a(f"add {self.SRC}, {self.SRC}, #{unroll * lay.block_bits}")
                a(f"add {self.DST}, {self.DST}, #{unroll * lay.block_bytes}")
            self._body(rest)
        if self.unipolar:
            a(f"addv s{self.rsv[1:]}, {self.rsv}.4s")
            a(f"umov w{self.T[1:]}, {self.rsv}.s[0]")
            a(f"add {self.SRC}, {self.RS}, {self.ROWR}, lsl #2")
            a(f"str w{self.T[1:]}, [{self.SRC}]")
        a(f"add {self.ROWR}, {self.ROWR}, #1")
        a(f"b {top}")
        a.label(done)
        tmp = self.pool[0]
        for lane in ("d", "s", "h", "b"):  # OR of all 16 lanes: fold halves down to one byte
            a(f"ins {tmp}.{lane}[0], {self.orv}.{lane}[1]")
            a(f"orr {self.orv}.16b, {self.orv}.16b, {tmp}.16b")
        a(f"umov w0, {self.orv}.b[0]")
        a.restore_callee_saved()
        a("ret")
        return a

    def _tree(self, ops: list[Op], level: list[str], insn: str, arr: str) -> str:
        """Pairwise ``insn`` tree over ``level`` (results in the left operands); the root."""
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level) - 1, 2):
                ops.append(Op(f"{insn} {{d}}.{arr}, {{a}}.{arr}, {{b}}.{arr}",
                              reads={"a": level[i], "b": level[i + 1]}, writes={"d": level[i]}))
                nxt.append(level[i])
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return level[0]

    def _body(self, nblocks: int) -> None:
        """``nblocks`` blocks at SRC/DST (immediate offsets) as one scheduled block of code."""
        lay, ops = self.lay, []
        new_gpr = lambda: self._v("x")  # noqa: E731
        for b in range(nblocks):
            ins = [self._v("v") for _ in range(self.n_in)]
            for i, v in enumerate(ins):
                access(ops, "ldr q{d_n},", self.SRC, b * lay.block_bits + 16 * i, 16, v, load=True,
                       new_gpr=new_gpr)
            ors = [self._v("v") for _ in range(self.n_in // 2)]
            for i, o in enumerate(ors):  # the first level of the OR tree leaves the inputs intact
                ops.append(Op("orr {d}.16b, {a}.16b, {b}.16b", reads={"a": ins[2 * i], "b": ins[2 * i + 1]},
                              writes={"d": o}))
            root = self._tree(ops, ors, "orr", "16b")
            ops.append(Op("orr {d}.16b, {d}.16b, {s}.16b", reads={"d": self.orv, "s": root},
                          writes={"d": self.orv}))
            if self.unipolar:
                self._row_sum(ops, ins)
            for p in range(lay.planes):
                sc = [self._v("v") for _ in ins]
                for v, s in zip(ins, sc, strict=True):
                    if not self.masks:  # 0/1 values: the product is the bit already in place
                        ops.append(Op("mul {d}.16b, {a}.16b, {w}.16b", reads={"a": v, "w": self.weights},
                                      writes={"d": s}))
                    else:
                        ops.append(Op("cmtst {d}.16b, {a}.16b, {m}.16b", reads={"a": v, "m": self.masks[p]},
                                      writes={"d": s}))
                        ops.append(Op("and {d}.16b, {d}.16b, {w}.16b", reads={"d": s, "w": self.weights},
                                      writes={"d": s}))
                out = self._tree(ops, sc, "addp", "16b")
                off = p * lay.plane_stride + b * lay.block_bytes
                if lay.block_bits == 64:  # 16 lanes of 4 activations: one more level, low half
                    ops.append(Op("addp {d}.16b, {d}.16b, {d}.16b", reads={"d": out}, writes={"d": out}))
                    access(ops, "str d{d_n},", self.DST, off, 8, out, load=False, new_gpr=new_gpr)
                else:
                    access(ops, "str q{d_n},", self.DST, off, 16, out, load=False, new_gpr=new_gpr)
        ops = allocate(allocate(ops, self.pool, "%v"), list(self.GPR_POOL), "%x")
        for op in schedule(ops):
            self.a(op.render())

    def _row_sum(self, ops: list[Op], ins: list[str]) -> None:
        """rowsum += the block's activations: byte adds while they cannot overflow, else 16-bit."""
        if self.wl.amax * len(ins) <= 255:
            parts = [self._v("v") for _ in range(len(ins) // 2)]
            for i, s in enumerate(parts):
                ops.append(Op("add {d}.16b, {a}.16b, {b}.16b", reads={"a": ins[2 * i], "b": ins[2 * i + 1]},
                              writes={"d": s}))
            root = self._tree(ops, parts, "add", "16b")
            ops.append(Op("uaddlp {d}.8h, {s}.16b", reads={"s": root}, writes={"d": root}))
        else:  # lanes <= 2 * n_in * 255 = 4080
            parts = [self._v("v") for _ in ins]
            for v, s in zip(ins, parts, strict=True):
                ops.append(Op("uaddlp {d}.8h, {s}.16b", reads={"s": v}, writes={"d": s}))
            root = self._tree(ops, parts, "add", "8h")
        ops.append(Op("uadalp {d}.4s, {s}.8h", reads={"d": self.rsv, "s": root}, writes={"d": self.rsv}))


def emit_pack(workload: Dense, schedule_: NeonSchedule) -> Asm:
    """GNU text of the packing function for ``workload`` under ``schedule_``."""
    return _Pack(workload, schedule_).emit()


__all__ = ["BYTE_WEIGHTS", "emit_pack"]
