"""The GEMMs of the bit-serial convolution: the dense emitter of :mod:`bitsearch.asm.x86_64.dense`,
subclassed (never edited) for the two lowerings of :mod:`bitsearch.asm.x86_64.conv`.

``Im2colGemm`` is the dense GEMM on the gathered rows, with bipolar's constant from the true K.
``ImplicitGemm`` keeps the dense register allocation, popcount blocks, reductions and epilogue,
and replaces the loop nest (output rows, spatial tiles of ``mr`` output columns, channel tiles)
and the K loop (taps x the blocks of one packed pixel, through static offsets into the image).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from peachpy.x86_64 import (
    ADD,
    CMP,
    DEC,
    DIV,
    INC,
    JAE,
    JB,
    JMP,
    JNZ,
    LABEL,
    MOV,
    SUB,
    VMOVDQU,
    VPXOR,
    XOR,
    Label,
    LocalVariable,
    rdx,
)

from bitsearch.asm.x86_64.common import imul_const, label_name
from bitsearch.asm.x86_64.conv_layout import ConvLayout
from bitsearch.asm.x86_64.dense import GemmEmitter
from bitsearch.asm.x86_64.dense_tile import KC, TMP, WQ, WT, XQ, XT, YT
from bitsearch.records import LoopCount
from bitsearch.space.conv_schedule import ConvSchedule, gemm_view
from bitsearch.workloads import Conv2d


class Im2colGemm(GemmEmitter):
    """The dense GEMM on the im2col rows; bipolar's constant uses the true K (taps * cin): the
    granule padding is zero in both operands, so it adds nothing to the XOR counts."""

    def __init__(self, conv: Conv2d, schedule: ConvSchedule) -> None:
        super().__init__(gemm_view(conv, schedule), schedule.dense())
        if conv.mode == "bipolar":
            self.gamma = conv.gemm_k * conv.amax * conv.wmax


@dataclass(frozen=True)
class _Strides:
    """What the dense emitter reads of a layout, for the implicit GEMM's operands."""

    row_bytes: int  # between tile rows (x: sw pixels; w: a whole weight row)
    plane_stride: int
    block_stride: int
    block_bytes: int
    blocks: int  # blocks per tap


@dataclass(frozen=True)
class _ImplicitGeometry:
    x: _Strides
    w: _Strides


class ImplicitGemm(GemmEmitter):
    """The dense GEMM with a K loop over taps: rows of a register tile are ``mr`` consecutive output
    columns of one output row, tap (dy, dx) of the tile's first row sits at a static offset from
    its window's top-left pixel in the packed image. Rows passed in are output rows."""

    def __init__(self, conv: Conv2d, schedule: ConvSchedule, lay: ConvLayout) -> None:
        super().__init__(gemm_view(conv, schedule), schedule.dense())
        self.conv, self.lay, self.row_block = conv, lay, schedule.row_block
        if conv.mode == "bipolar":
            self.gamma = conv.gemm_k * conv.amax * conv.wmax
        pix, wpix = lay.pix, lay.gemm_w
        sw = conv.strides[1]
        self.geo = _ImplicitGeometry(
            x=_Strides(sw * pix.row_bytes, pix.plane_stride, pix.block_stride, pix.block_bytes, pix.blocks),
            w=_Strides(lay.w_row_bytes, wpix.plane_stride, wpix.block_stride, wpix.block_bytes,
                       wpix.blocks),
        )
        self.tap_x = [lay.tap_offset(dy, dx, pix.row_bytes) for dy, dx in lay.taps]
        self.tap_w = [t * wpix.row_bytes for t in range(conv.taps)]

    # -- loops ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _loop(self, top: Label, trips: int = 0, *, executions: int | None = None) -> Iterator[None]:
        """Count the loop headed by ``top`` (dense.py's ``_push_loop``/``_pop_loop``): its body runs
        ``trips`` times per run of the code around it, or ``executions`` times per call in all."""
        count = self.mult * trips if executions is None else executions
        self.loops.append(LoopCount(label_name(top), count))
        outer, self.mult = self.mult, count
        try:
            yield
        finally:
            self.mult = outer

    # loop_order "mn": per output row, tiles of mr output columns, then tiles of nr channels.
    # loop_order "nm": per block of row_block output rows, tiles of nr channels outermost (their
    # weights stay in L1), then the block's rows, then tiles of mr output columns.
    def _loop_nest(self) -> None:
        loc = self.local
        for key in ("xrow", "yrow", "rsrow", "tcount", "orow", "bend", "ycol"):
            loc[key] = LocalVariable(8)
        # Output rows [0, batch*out_h) in one call: one per iteration (mn), or one block of
        # row_block (nm; the last block may be shorter).
        out_rows = self.conv.batch * self.conv.out_h
        iterations = out_rows if self.s.loop_order == "mn" else -(-out_rows // self.row_block)
        top, done = self.label("orow"), self.label("orow_done")
        MOV(TMP, loc["row_begin"])
        MOV(loc["row"], TMP)
        LABEL(top)
        with self._loop(top, iterations):
            MOV(TMP, loc["row"])
            CMP(TMP, loc["row_end"])
            JAE(done)
            if self.s.loop_order == "mn":
                self._row_pointers("row", ycol=False)
                self._ox_tiles(lambda rows: self._cout_tiles(rows))
                INC(loc["row"])
            else:
                self._row_block()
            JMP(top)
        LABEL(done)

    def _row_pointers(self, key: str, *, ycol: bool) -> None:
        """xrow, yrow, rsrow of output row loc[key]: (b, oy) = divmod(row, out_h), the window row's
        first pixel in the image, the row's first output (+ ycol bytes) and rowsum."""
        conv, lay, loc = self.conv, self.lay, self.local
        n, ow, sh = conv.cout, conv.out_w, conv.strides[0]
        MOV(TMP, loc[key])
        XOR(rdx.as_dword, rdx.as_dword)
        MOV(KC, conv.out_h)
        DIV(KC)
        imul_const(TMP, TMP, lay.hp)
        imul_const(rdx, rdx, sh)
        ADD(TMP, rdx)
        imul_const(TMP, TMP, lay.wp * lay.pix_bytes)
        ADD(TMP, loc["xp"])
        MOV(loc["xrow"], TMP)
        MOV(TMP, loc[key])
        imul_const(TMP, TMP, ow * n * 4)
        ADD(TMP, loc["y"])
        if ycol:
            ADD(TMP, loc["ycol"])
        MOV(loc["yrow"], TMP)
        if self.beta:
            MOV(TMP, loc[key])
            imul_const(TMP, TMP, ow * 4)
            ADD(TMP, loc["rowsum"])
            MOV(loc["rsrow"], TMP)

    def _ox_tiles(self, body) -> None:
        """Tiles of mr output columns of one output row; body(rows) sees xrow/yrow/rsrow at the tile."""
        loc, s = self.local, self.s
        tiles, edge = divmod(self.conv.out_w, s.mr)

        def one(rows: int) -> None:
            body(rows)
            ADD(loc["xrow"], rows * self.conv.strides[1] * self.lay.pix_bytes)
            ADD(loc["yrow"], rows * self.conv.cout * 4)
            if self.beta:
                ADD(loc["rsrow"], rows * 4)

        if tiles:
            MOV(loc["tcount"], tiles)
            tl = self.label("otile")
            LABEL(tl)
            with self._loop(tl, tiles):
                one(s.mr)
                DEC(loc["tcount"])
                JNZ(tl)
        if edge:
            one(edge)

    def _tile_at(self, rows: int, cols: int) -> None:
        """One tile at xrow/yrow/rsrow with the channel tile's WT."""
        loc = self.local
        MOV(XT, loc["xrow"])
        MOV(YT, loc["yrow"])
        if self.beta:
            MOV(TMP, loc["rsrow"])
            MOV(loc["rs_row"], TMP)
        self._tile(rows, cols)

    def _cout_tiles(self, rows: int) -> None:
        """All channel tiles of one spatial tile (loop_order mn)."""
        loc, s = self.local, self.s
        n_tiles, n_edge = divmod(self.conv.cout, s.nr)
        MOV(XT, loc["xrow"])
        MOV(WT, loc["wp"])
        MOV(YT, loc["yrow"])
        if self.beta:
            MOV(TMP, loc["rsrow"])
            MOV(loc["rs_row"], TMP)
        if n_tiles:
            MOV(loc["ccount"], n_tiles)
            col = self.label("col")
            LABEL(col)
            with self._loop(col, n_tiles):
                self._tile(rows, s.nr)
                ADD(WT, s.nr * self.geo.w.row_bytes)
                ADD(YT, s.nr * 4)
                DEC(loc["ccount"])
                JNZ(col)
        if n_edge:
            self._tile(rows, n_edge)

    def _row_block(self) -> None:
        """One block of row_block output rows, channel tiles outermost (loop_order nm)."""
        loc, s = self.local, self.s
        n_tiles, n_edge = divmod(self.conv.cout, s.nr)
        MOV(TMP, loc["row"])
        ADD(TMP, self.row_block)
        CMP(TMP, loc["row_end"])
        short = self.label("short_block")
        JB(short)
        MOV(TMP, loc["row_end"])
        LABEL(short)
        MOV(loc["bend"], TMP)
        MOV(WT, loc["wp"])
        MOV(loc["ycol"], 0)

        out_rows = self.conv.batch * self.conv.out_h

        def sweep(cols: int, sweeps: int) -> None:
            """The block's rows; over one call the row blocks cover every output row ``sweeps``
            times (once per channel tile)."""
            MOV(TMP, loc["row"])
            MOV(loc["orow"], TMP)
            rl = self.label("brow")
            LABEL(rl)
            with self._loop(rl, executions=sweeps * out_rows):
                self._row_pointers("orow", ycol=True)
                self._ox_tiles(lambda rows: self._tile_at(rows, cols))
                INC(loc["orow"])
                MOV(TMP, loc["orow"])
                CMP(TMP, loc["bend"])
                JB(rl)

        if n_tiles:
            MOV(loc["ccount"], n_tiles)
            col = self.label("bcol")
            LABEL(col)
            with self._loop(col, n_tiles):
                sweep(s.nr, n_tiles)
                ADD(WT, s.nr * self.geo.w.row_bytes)
                ADD(loc["ycol"], s.nr * 4)
                DEC(loc["ccount"])
                JNZ(col)
        if n_edge:
            sweep(n_edge, 1)
        MOV(TMP, loc["bend"])
        MOV(loc["row"], TMP)

    # -- K: taps x blocks of a pixel --------------------------------------------------------------
    def _advance_tap(self, t: int) -> None:
        """XQ/WQ walked tap t's blocks; move them to tap t+1."""
        blocks = self.geo.x.blocks
        dx = self.tap_x[t + 1] - self.tap_x[t] - blocks * self.geo.x.block_stride
        dw = self.tap_w[t + 1] - self.tap_w[t] - blocks * self.geo.w.block_stride
        if dx:
            ADD(XQ, dx)
        if dw:
            ADD(WQ, dw)

    def _taps(self, taps: list[int], body) -> None:
        if taps[0]:
            ADD(XQ, self.tap_x[taps[0]])
            ADD(WQ, self.tap_w[taps[0]])
        for i, t in enumerate(taps):
            self._k_run(self.geo.x.blocks, body)
            if i + 1 < len(taps):
                self._advance_tap(t)
        # back to the tile's first tap (the next window starts from there)
        last = taps[-1]
        back_x = self.tap_x[last] + self.geo.x.blocks * self.geo.x.block_stride
        back_w = self.tap_w[last] + self.geo.w.blocks * self.geo.w.block_stride
        SUB(XQ, back_x)
        SUB(WQ, back_w)

    def _vector_kloop(self, rows: int, cols: int):
        accs = [[self.acc_regs[r * cols + c] for c in range(cols)] for r in range(rows)]
        block = self._vpopcnt_block if self.zmm else self._lut_block

        def body(u: int) -> None:
            block(rows, cols, u, accs)

        def zero() -> None:
            for row in accs:
                for acc in row:
                    VPXOR(acc, acc, acc)

        taps = list(range(self.conv.taps))
        per = max(1, 31 // self.geo.x.blocks) if self.byte_counters else len(taps)
        windows = [taps[i : i + per] for i in range(0, len(taps), per)]
        if len(windows) == 1:
            zero()
            self._taps(taps, body)
            self._to_dwords(accs, [])
            return accs
        tmp = self.temps[0]
        VPXOR(tmp, tmp, tmp)
        for i in range(rows * cols):
            VMOVDQU(self._scratch(i), tmp)
        for window in windows:
            zero()
            self._taps(window, body)
            self._widen_to_scratch(accs)
        for r, row in enumerate(accs):
            for c, acc in enumerate(row):
                VMOVDQU(acc, self._scratch(r * cols + c))
        return accs

    def _whole_k(self, body) -> None:  # the scalar K loop of dense.py, over every tap
        self._taps(list(range(self.conv.taps)), body)


__all__ = ["Im2colGemm", "ImplicitGemm"]
