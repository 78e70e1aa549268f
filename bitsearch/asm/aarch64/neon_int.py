"""NEON emitters (GNU text) of the int16 GEMM baseline on the Cortex-A53 (AAPCS64).

Same C signatures as every kernel (``C_PROTOTYPES`` in :mod:`bitsearch.asm.kernel`):

``pack(x, xp, rowsum, row_begin, row_end) -> uint32``
    Copies rows [row_begin, row_end) of x (already zero-padded to ``row_bytes``, a multiple of
    32) into xp (up to 8 Q registers per scheduled iteration) and returns the OR of every byte
    read. ``rowsum`` is not touched.

``gemm(xp, wp, y, rowsum, row_begin, row_end)``
    The ``dot`` formulation: register tile mr x nr of .4s accumulators; per K step of 8 int16
    SMLAL (low halves) + SMLAL2 (high halves) per output. Every product fits int32
    ((-2^15)^2 = 2^30) and the lanes wrap modulo 2^32 exactly as the reference's sum does; an
    ADDP tree turns up to 4 accumulators of a row into one .4s vector of outputs at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitsearch.asm.aarch64.neon_common import GEMM_SIGNATURE, PACK_SIGNATURE, Asm, spill_slot
from bitsearch.asm.aarch64.neon_dense import POINTER_POOL, ROW, SLOT_WP, SLOT_XP, SLOT_Y, emit_row_tiles
from bitsearch.asm.aarch64.neon_sched import Op, schedule
from bitsearch.numerics.int_packing import IntRowLayout
from bitsearch.space.int_schedule import IntSchedule
from bitsearch.workloads import IntDense

XT, WT, YT, COLC, KC, T0, T1 = "x8", "x9", "x10", "x7", "x12", "x16", "x17"
STEP_BYTES = 16  # one Q register: 8 int16


@dataclass(frozen=True)
class NeonIntGeometry:
    """x and w as zero-padded rows (``IntRowLayout``, rows a multiple of 32 bytes)."""

    x: IntRowLayout
    w: IntRowLayout
    x_row_stride: int

    @classmethod
    def of(cls, workload: IntDense) -> NeonIntGeometry:
        if workload.dtype != "int16":
            raise ValueError(f"the A53 integer baseline is int16 only, got dtype={workload.dtype!r}")
        x = IntRowLayout(rows=workload.m, k=workload.k, element_bytes=2)
        w = IntRowLayout(rows=workload.n, k=workload.k, element_bytes=2)
        return cls(x=x, w=w, x_row_stride=x.row_bytes)


def _emit_pack(workload: IntDense) -> Asm:
    geo = NeonIntGeometry.of(workload)
    a = Asm("bitsearch_pack", PACK_SIGNATURE)
    src, dst, count, t = "x6", "x7", "x8", "x9"
    orv, tmp = "v0", "v1"
    chunks = geo.x.row_bytes // STEP_BYTES  # even: rows are whole 32-byte chunks
    # Q registers copied per iteration (a divisor of a row's chunks, so any row range is whole
    # iterations); one scheduled body with an OR tree, offsets from src/dst (no writeback loads:
    # llvm-mca's A53 model issues them as two micro-ops).
    unroll = next(u for u in (8, 4, 2) if chunks % u == 0)
    a(f"movi {orv}.2d, #0")
    done = a.new_label("pack_done")
    a("subs x4, x4, x3")  # rows to copy
    a(f"b.ls {done}")
    a.mov_imm(t, geo.x.row_bytes)
    a(f"madd {src}, x3, {t}, x0")
    a(f"madd {dst}, x3, {t}, x1")
    a.mov_imm(t, chunks // unroll)
    a(f"mul {count}, x4, {t}")
    top = a.new_label("pack_copy")
    a.label(top, loop_executions=workload.m * chunks // unroll)
    regs = [f"v{i}" for i in range(16, 16 + unroll)]  # v8-v15 are callee-saved: not touched
    ops = [Op(f"ldr q{{d_n}}, [{src}, #{STEP_BYTES * i}]", writes={"d": v}, kind="load")
           for i, v in enumerate(regs)]
    ors = [f"v{i}" for i in range(2, 2 + unroll // 2)]
    for i, o in enumerate(ors):
        ops.append(Op("orr {d}.16b, {a}.16b, {b}.16b", reads={"a": regs[2 * i], "b": regs[2 * i + 1]},
                      writes={"d": o}))
    while len(ors) > 1:
        ops += [Op("orr {d}.16b, {d}.16b, {b}.16b", reads={"d": ors[i], "b": ors[i + 1]},
                   writes={"d": ors[i]}) for i in range(0, len(ors), 2)]
        ors = ors[::2]
    ops.append(Op("orr {d}.16b, {d}.16b, {b}.16b", reads={"d": orv, "b": ors[0]}, writes={"d": orv}))
    ops += [Op(f"str q{{d_n}}, [{dst}, #{STEP_BYTES * i}]", reads={"d": v}, kind="store")
            for i, v in enumerate(regs)]
    for op in schedule(ops):
        a(op.render())
    a(f"add {src}, {src}, #{STEP_BYTES * unroll}")
    a(f"add {dst}, {dst}, #{STEP_BYTES * unroll}")
    a(f"subs {count}, {count}, #1")
    a(f"b.ne {top}")
    a.label(done)
    for lane in ("d", "s", "h", "b"):
        a(f"ins {tmp}.{lane}[0], {orv}.{lane}[1]")
        a(f"orr {orv}.16b, {orv}.16b, {tmp}.16b")
    a(f"umov w0, {orv}.b[0]")
    a("ret")
    return a


class _GemmEmitter:
    def __init__(self, workload: IntDense, schedule: IntSchedule) -> None:
        self.wl, self.s = workload, schedule
        self.geo = NeonIntGeometry.of(workload)
        mr, nr = schedule.mr, schedule.nr
        regs = [f"v{i}" for i in range(32)]
        self.xv, regs = regs[:mr], regs[mr:]
        self.wv, regs = regs[:nr], regs[nr:]
        self.acc, regs = regs[: mr * nr], regs[mr * nr:]
        # A second operand set, when it fits, lets step k+1's loads issue during step k's MACs.
        self.sets = [(self.xv, self.wv)]
        if len(regs) >= mr + nr:
            self.sets.append((regs[:mr], regs[mr: mr + nr]))
        self.xp, self.wp = POINTER_POOL[:mr], POINTER_POOL[mr: mr + nr]
        self.steps = self.geo.x.row_bytes // STEP_BYTES
        # One base pointer per operand when every row of the tile is an immediate offset away:
        # 2 pointer adds per K iteration instead of mr + nr (integer ops stall the in-order
        # pipe behind SIMD ones: about 2 cycles each in llvm-mca's A53 model).
        span = STEP_BYTES * 2 * schedule.k_unroll
        self.compact = all((count - 1) * lay.row_bytes + span <= 65520
                           for count, lay in ((mr, self.geo.x), (nr, self.geo.w)))
        self.a = Asm("bitsearch_gemm", GEMM_SIGNATURE)

    def emit(self) -> Asm:
        a, s, wl = self.a, self.s, self.wl
        a.save_callee_saved()
        for slot, reg in ((SLOT_XP, "x0"), (SLOT_WP, "x1"), (SLOT_Y, "x2")):
            a(f"str {reg}, {spill_slot(slot)}")
        a(f"mov {ROW}, x4")
        emit_row_tiles(a, wl.m, s.mr, self._row_body)
        a.restore_callee_saved()
        a("ret")
        return a

    def _row_body(self, rows: int, mult: int) -> None:
        a, wl, s = self.a, self.wl, self.s
        a(f"ldr {XT}, {spill_slot(SLOT_XP)}")
        a.mov_imm(T0, self.geo.x.row_bytes)
        a(f"madd {XT}, {ROW}, {T0}, {XT}")
        a(f"ldr {YT}, {spill_slot(SLOT_Y)}")
        a.mov_imm(T0, 4 * wl.n)
        a(f"madd {YT}, {ROW}, {T0}, {YT}")
        a(f"ldr {WT}, {spill_slot(SLOT_WP)}")
        tiles_n, n_edge = divmod(wl.n, s.nr)
        if tiles_n:
            top = a.new_label("col")
            a.mov_imm(COLC, tiles_n)
            a.label(top, loop_executions=mult * tiles_n)
            self._tile(rows, s.nr, mult * tiles_n)
            a.add_imm(WT, WT, s.nr * self.geo.w.row_bytes, T0)
            a(f"add {YT}, {YT}, #{4 * s.nr}")
            a(f"subs {COLC}, {COLC}, #1")
            a(f"b.ne {top}")
        if n_edge:
            self._tile(rows, n_edge, mult)

    def _tile(self, rows: int, cols: int, mult: int) -> None:
        a, geo, u = self.a, self.geo, self.s.k_unroll
        a.comment(f"tile {rows}x{cols}")
        for ptrs, base, stride, count in ((self.xp, XT, geo.x.row_bytes, rows),
                                          (self.wp, WT, geo.w.row_bytes, cols)):
            a(f"mov {ptrs[0]}, {base}")
            for i in range(1, 1 if self.compact else count):
                a.add_imm(ptrs[i], ptrs[i - 1], stride, T0)
        for r in range(rows):
            for c in range(cols):
                a(f"movi {self.acc[r * self.s.nr + c]}.2d, #0")
        iters, tail = divmod(self.steps, u)
        if iters == 1:
            tail += u
        elif iters:
            top = a.new_label("kloop")
            a.mov_imm(KC, iters)
            a.label(top, loop_executions=mult * iters)
            self._steps(rows, cols, u)
            a(f"subs {KC}, {KC}, #1")
            a(f"b.ne {top}")
        if tail:
            self._steps(rows, cols, tail)
        self._store(rows, cols)

    def _steps(self, rows: int, cols: int, nsteps: int) -> None:
        """``nsteps`` K steps of 8 int16: per step every SMLAL (low halves), then every SMLAL2,
        so an accumulator's two updates are rows*cols instructions apart (the A53 issues in
        order). Offset loads, pointers advanced once (LLVM's A53 model stalls writeback loads
        twice as long). With two operand sets, step k+1's loads are spread over step k's MACs;
        with one, x rows are reloaded right after their last SMLAL2."""
        a = self.a
        double = len(self.sets) == 2

        def addr(ptrs: tuple[str, ...], stride: int, i: int, k: int) -> str:
            if self.compact:
                return f"[{ptrs[0]}, #{i * stride + STEP_BYTES * k}]"
            return f"[{ptrs[i]}, #{STEP_BYTES * k}]"

        def loads(k: int) -> list[str]:
            xv, wv = self.sets[k % len(self.sets)]
            xs, ws = self.geo.x.row_bytes, self.geo.w.row_bytes
            return ([f"ldr q{xv[r][1:]}, {addr(self.xp, xs, r, k)}" for r in range(rows)]
                    + [f"ldr q{wv[c][1:]}, {addr(self.wp, ws, c, k)}" for c in range(cols)])

        for line in loads(0):
            a(line)
        for k in range(nsteps):
            xv, wv = self.sets[k % len(self.sets)]
            macs = [f"smlal {self.acc[r * self.s.nr + c]}.4s, {xv[r]}.4h, {wv[c]}.4h"
                    for c in range(cols) for r in range(rows)]
            macs += [f"smlal2 {self.acc[r * self.s.nr + c]}.4s, {xv[r]}.8h, {wv[c]}.8h"
                     for r in range(rows) for c in range(cols)]
            pending = loads(k + 1) if k + 1 < nsteps else []
            if double:  # one load after every few MACs
                every = max(1, len(macs) // (len(pending) + 1))
                for i, mac in enumerate(macs):
                    a(mac)
                    if pending and (i + 1) % every == 0:
                        a(pending.pop(0))
                for line in pending:
                    a(line)
                continue
            for i, mac in enumerate(macs):  # single set: reload x row r after its last SMLAL2
                a(mac)
                if pending and i >= rows * cols and (i - rows * cols + 1) % cols == 0:
                    a(pending[(i - rows * cols) // cols])
            for line in pending[rows:]:
                a(line)
        for ptr in (self.xp[0], self.wp[0]) if self.compact else (*self.xp[:rows], *self.wp[:cols]):
            a(f"add {ptr}, {ptr}, #{STEP_BYTES * nsteps}")

    def _store(self, rows: int, cols: int) -> None:
        a, n = self.a, self.wl.n
        for r in range(rows):
            for g in range(0, cols, 4):
                level = [self.acc[r * self.s.nr + c] for c in range(g, min(cols, g + 4))]
                lanes = 4
                while len(level) > 1:  # modular adds: the tree is exact modulo 2^32
                    nxt = []
                    for i in range(0, len(level), 2):
                        x = level[i]
                        y = level[i + 1] if i + 1 < len(level) else x
                        a(f"addp {x}.4s, {x}.4s, {y}.4s")
                        nxt.append(x)
                    level, lanes = nxt, lanes // 2
                while lanes > 1:
                    a(f"addp {level[0]}.4s, {level[0]}.4s, {level[0]}.4s")
                    lanes //= 2
                v, count = level[0], min(4, cols - g)
                a.add_imm(T0, YT, 4 * (r * n + g), T1)
                a.store_words(v, T0, count, T1)


def emit_neon_int(workload: IntDense, schedule: IntSchedule) -> tuple[Asm, Asm]:
    """GNU-text functions ``(pack, gemm)`` of the int16 baseline under a checked ``schedule``."""
    return _emit_pack(workload), _GemmEmitter(workload, schedule).emit()


__all__ = ["NeonIntGeometry", "emit_neon_int"]
