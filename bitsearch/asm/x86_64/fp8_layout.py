"""Numpy-side layouts of the FP8 GEMM (see :mod:`bitsearch.asm.x86_64.fp8_gemm` for the kernel).

Activations are FP8 rows zero-padded to ``A_GRANULE`` bytes, decoded by the packing kernel into
FP32 rows (:class:`Fp8RowLayout`); weights are packed once into column panels of ``vector * nr``
columns (:class:`Fp8PanelLayout`), as FP8 bytes or as their FP32 values. :class:`Fp8Geometry`
derives both from a workload, a schedule and a target; :func:`decode_table` is the exact value of
every FP8 byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitsearch.numerics.int_packing import round_up
from bitsearch.space.fp8_schedule import Fp8Schedule
from bitsearch.targets import TargetDef, get_target
from bitsearch.workloads import Fp8Dense, fp8_dtype

A_GRANULE = 16  # activation rows are padded to this many FP8 bytes (16 -> 2 ymm of FP32)
PANEL_PAD = 32  # bytes after the weight panels: VPUNPCKLBW reads 16 bytes to decode 8
IMM32 = 2**31
E4M3_SCALE = 256.0  # the E4M3 decode yields value * 2**-8


def vector_lanes(target: str | TargetDef) -> int:
    """FP32 lanes of the GEMM's vectors: zmm (16) where the target has AVX-512, else ymm (8)."""
    return 16 if get_target(target).has("avx512f") else 8


def decode_table(fmt: str) -> np.ndarray:
    """float32 [256]: the value of every FP8 byte (ml_dtypes' exact decoding)."""
    return np.arange(256, dtype=np.uint8).view(fp8_dtype(fmt)).astype(np.float32)


_TABLES: dict[str, np.ndarray] = {}


def _table(fmt: str) -> np.ndarray:
    if fmt not in _TABLES:
        _TABLES[fmt] = decode_table(fmt)
    return _TABLES[fmt]


# ---------------------------------------------------------------------------------------------
# Layouts (numpy side)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fp8RowLayout:
    """Activations decoded to FP32: ``rows`` rows of ``k`` values padded to a multiple of 16.

    Example:
        >>> Fp8RowLayout(rows=2, k=20).row_bytes, Fp8RowLayout(rows=2, k=128).row_bytes
        (128, 576)
    """

    rows: int
    k: int

    @property
    def row_elements(self) -> int:
        """FP8 bytes per raw row (what the packing code reads)."""
        return round_up(self.k, A_GRANULE)

    @property
    def padded_elements(self) -> int:
        """FP32 values per decoded row: a row stride of a multiple of 512 bytes would put the
        rows of a register tile into the same few L1 sets, so such rows get 16 more."""
        elems = self.row_elements
        return elems + A_GRANULE if (4 * elems) % 512 == 0 else elems

    @property
    def row_bytes(self) -> int:
        return 4 * self.padded_elements


@dataclass(frozen=True)
class Fp8PanelLayout:
    """Weights b [n, k] in column panels of ``panel`` columns: panel j holds, K step after K step,
    that step's value of each of its columns (``[k][panel]``). Full panels follow each other; the
    last, narrower panel (n not a multiple of ``panel``) is ``edge_width`` wide (its columns
    rounded up to 8, one ymm, with zero columns). Elements are the FP8 bytes (``decode="kernel"``)
    or their FP32 values (``decode="pack"``: decoded while packing, exactly, with ml_dtypes' table).
    The flat buffer (plus 32 zero bytes) is viewed as [n, row_bytes], the shape of packed weights.

    Example:
        >>> import ml_dtypes
        >>> lay = Fp8PanelLayout(n=20, k=3, fmt="e5m2", decode="pack", panel=16)
        >>> lay.edge_width, lay.total_bytes, lay.pack(np.ones((20, 3), ml_dtypes.float8_e5m2)).shape
        (8, 320, (20, 16))
    """

    n: int
    k: int
    fmt: str
    decode: str
    panel: int
    vector: int = 8  # lanes of one vector: 8 (ymm) or 16 (zmm, x86_64-avx512)

    @property
    def element_bytes(self) -> int:
        return 1 if self.decode == "kernel" else 4

    @property
    def full_panels(self) -> int:
        return self.n // self.panel

    @property
    def edge_columns(self) -> int:
        return self.n % self.panel

    @property
    def edge_width(self) -> int:
        return round_up(self.edge_columns, self.vector)

    @property
    def nan_mask(self) -> bool:
        """E4M3 bytes decoded in the kernel: each panel ends with one float per column, NaN if
        that column holds a NaN code (0x7F / 0xFF) and 0 otherwise, added to the accumulators
        (the in-loop decoding maps the NaN codes to a finite value, 3 instructions cheaper)."""
        return self.decode == "kernel" and self.fmt == "e4m3"

    def region_bytes(self, width: int) -> int:
        """Bytes of a panel ``width`` columns wide: the values, then the NaN mask if any."""
        return self.k * width * self.element_bytes + (4 * width if self.nan_mask else 0)

    @property
    def panel_bytes(self) -> int:
        return self.region_bytes(self.panel)

    @property
    def total_bytes(self) -> int:
        return (self.full_panels * self.panel_bytes
                + (self.region_bytes(self.edge_width) if self.edge_width else 0) + PANEL_PAD)

    @property
    def row_bytes(self) -> int:
        return -(-self.total_bytes // self.n)

    def pack(self, values: np.ndarray) -> np.ndarray:
        """FP8 [n, k] (ml_dtypes) -> uint8 [n, row_bytes] (a flat panel buffer)."""
        n, k = self.n, self.k
        raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, k)
        full = self.full_panels * self.panel
        cols = full + self.edge_width
        if self.edge_width:
            raw = np.concatenate([raw, np.zeros((cols - n, k), np.uint8)])  # 0x00 is +0.0
        flat = np.zeros(n * self.row_bytes, np.uint8)
        if self.nan_mask:
            nan_cols = ((raw & 0x7F) == 0x7F).any(axis=1)
            masks = np.where(nan_cols, np.float32(np.nan), np.float32(0)).view(np.uint8).reshape(cols, 4)
        pos = 0
        for start, width, count in ((0, self.panel, self.full_panels), (full, self.edge_width, 1)):
            if not width or not count:
                continue
            cols_here = raw[start : start + width * count]
            block = cols_here.reshape(count, width, k).transpose(0, 2, 1).reshape(count, k * width)
            if self.decode == "pack":
                block = _table(self.fmt)[block].view(np.uint8)
            if self.nan_mask:
                mask = masks[start : start + width * count].reshape(count, 4 * width)
                block = np.concatenate([block, mask], axis=1)
            flat[pos : pos + block.size] = block.reshape(-1)
            pos += block.size
        return flat.reshape(n, self.row_bytes)


@dataclass(frozen=True)
class Fp8Geometry:
    x: Fp8RowLayout
    w: Fp8PanelLayout
    x_row_stride: int  # bytes per row of raw (FP8) a as the packing code reads it

    @classmethod
    def of(cls, workload: Fp8Dense, schedule: Fp8Schedule, target: str = "x86_64-avx2") -> Fp8Geometry:
        x = Fp8RowLayout(rows=workload.m, k=workload.k)
        vector = vector_lanes(target)
        w = Fp8PanelLayout(n=workload.n, k=workload.k, fmt=workload.wfmt, decode=schedule.decode,
                           panel=vector * schedule.nr, vector=vector)
        return cls(x=x, w=w, x_row_stride=x.row_elements)


__all__ = [
    "A_GRANULE",
    "E4M3_SCALE",
    "IMM32",
    "PANEL_PAD",
    "Fp8Geometry",
    "Fp8PanelLayout",
    "Fp8RowLayout",
    "decode_table",
    "vector_lanes",
]
