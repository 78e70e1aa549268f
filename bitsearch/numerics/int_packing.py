"""Packed layouts of the integer GEMM operands (numpy side): rows of int16/int8 elements padded
to whole 32-byte chunks, and column panels of K-step dwords for the broadcast formulation. The
x86-64 and AArch64 integer emitters read these layouts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 32  # bytes of one ymm
STEP = 4  # bytes of one broadcast K step (a dword: 2 int16 or 4 int8 elements)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class IntRowLayout:
    """Rows of ``k`` elements of ``element_bytes`` each, zero-padded to ``row_bytes`` (a multiple
    of 32): the layout of x in both formulations and of w in ``dot``.

    With a K block of ``kc_bytes`` (a multiple of 32, 0 = none) the buffer is block-major: block
    b holds every row's bytes [b*kc_bytes, (b+1)*kc_bytes) one row after the other, so a K block
    of all rows is one contiguous stretch of memory (rows at a power-of-two stride would use a
    fraction of the cache sets). The last block is narrower when row_bytes is not a multiple of
    kc_bytes. Returned viewed as [rows, row_bytes].

    Example:
        >>> IntRowLayout(rows=1, k=20, element_bytes=2).pack(np.ones((1, 20), np.int16)).shape
        (1, 64)
        >>> lay = IntRowLayout(rows=3, k=100, element_bytes=1, kc_bytes=64)
        >>> lay.blocks, lay.block_row_bytes(0), lay.block_row_bytes(1), lay.block_offset(1)
        (2, 64, 64, 192)
    """

    rows: int
    k: int
    element_bytes: int
    kc_bytes: int = 0

    @property
    def row_bytes(self) -> int:
        return round_up(self.k * self.element_bytes, CHUNK)

    @property
    def block_bytes(self) -> int:
        """Bytes of a full K block of one row (the whole row without blocking)."""
        if 0 < self.kc_bytes < self.row_bytes:
            return self.kc_bytes
        return self.row_bytes

    @property
    def blocks(self) -> int:
        return -(-self.row_bytes // self.block_bytes)

    def block_row_bytes(self, block: int) -> int:
        """Bytes of one row in K block ``block`` (its row stride there)."""
        if block < self.blocks - 1:
            return self.block_bytes
        return self.row_bytes - (self.blocks - 1) * self.block_bytes

    def block_offset(self, block: int) -> int:
        return block * self.rows * self.block_bytes

    def pack(self, values: np.ndarray) -> np.ndarray:
        """[rows, k] int16 / int8 / uint8 -> uint8 [rows, row_bytes]."""
        rows = values.shape[0]
        padded = np.zeros((rows, self.row_bytes), np.uint8)
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(rows, self.k * self.element_bytes)
        padded[:, : raw.shape[1]] = raw
        if self.blocks == 1:
            return padded
        flat = np.empty(rows * self.row_bytes, np.uint8)
        for b in range(self.blocks):
            width, start = self.block_row_bytes(b), b * self.block_bytes
            off = b * rows * self.block_bytes
            flat[off : off + rows * width] = padded[:, start : start + width].reshape(-1)
        return flat.reshape(rows, self.row_bytes)


@dataclass(frozen=True)
class IntPanelLayout:
    """w for the ``broadcast`` formulation: column panels of ``panel`` columns.

    K is cut in steps of one dword per column (a K-pair of int16, a K-quad of int8; zero-padded).
    Panel j holds, step after step, that step's dword of each of its columns:
    ``[step][column][4 bytes]``. Full panels follow each other; the last, narrower panel (n not a
    multiple of ``panel``) has its width rounded up to 8 columns (one ymm) with zero columns.
    The buffer is flat; it is returned viewed as [n, row_bytes] (row_bytes = the total divided
    by n, rounded up; trailing bytes are zero) because that is the shape packed weights have.

    Example:
        >>> lay = IntPanelLayout(n=20, k=6, element_bytes=2, panel=16)
        >>> lay.steps, lay.total_bytes, lay.pack(np.ones((20, 6), np.int16)).shape
        (3, 288, (20, 15))
    """

    n: int
    k: int
    element_bytes: int
    panel: int

    @property
    def steps(self) -> int:
        return -(-self.k * self.element_bytes // STEP)

    @property
    def full_panels(self) -> int:
        return self.n // self.panel

    @property
    def edge_columns(self) -> int:
        return self.n % self.panel

    @property
    def edge_width(self) -> int:
        return round_up(self.edge_columns, 8)

    @property
    def panel_bytes(self) -> int:
        return self.steps * STEP * self.panel

    @property
    def total_bytes(self) -> int:
        return self.steps * STEP * (self.full_panels * self.panel + self.edge_width)

    @property
    def row_bytes(self) -> int:
        return -(-self.total_bytes // self.n)

    def pack(self, values: np.ndarray) -> np.ndarray:
        """[n, k] int16 / int8 -> uint8 [n, row_bytes] (a flat panel buffer)."""
        n, es = self.n, self.element_bytes
        per_step = STEP // es
        cols = self.full_panels * self.panel + self.edge_width
        padded = np.zeros((cols, self.steps * per_step), values.dtype)
        padded[:n, : self.k] = values
        dwords = padded.view(np.uint8).reshape(cols, self.steps, STEP)
        parts = []
        full = self.full_panels * self.panel
        if self.full_panels:
            body = dwords[:full].reshape(self.full_panels, self.panel, self.steps, STEP)
            parts.append(body.transpose(0, 2, 1, 3).reshape(-1))
        if self.edge_width:
            parts.append(dwords[full:].transpose(1, 0, 2).reshape(-1))
        flat = np.zeros(n * self.row_bytes, np.uint8)
        if parts:
            data = np.concatenate(parts)
            flat[: data.size] = data
        return flat.reshape(n, self.row_bytes)


__all__ = ["CHUNK", "STEP", "IntPanelLayout", "IntRowLayout", "round_up"]
