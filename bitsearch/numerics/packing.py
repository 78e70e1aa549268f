"""Bit-plane packing: b-bit integers -> b planes of bits, in the layouts the emitters read.

Bit order is little-endian within a byte (bit t of byte j holds element 8j + t), as
``np.packbits(..., bitorder="little")`` and AVX2's VPMOVMSKB produce it. K is padded with zero bits
up to a whole number of blocks; what the padding means per mode is the kernel's business (zero bits
AND to nothing; in ``bipolar`` the XOR of two padding bits is 0, so the kernel uses the true K).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Layout = Literal["plane_major", "interleaved"]
LAYOUTS: tuple[str, ...] = ("plane_major", "interleaved")


@dataclass(frozen=True)
class PackedLayout:
    """Where plane p of K block b of a row lives.

    ``plane_major``: row = [plane][block][unit]; ``interleaved``: row = [block][plane][unit].
    A unit is the block's bytes, or with ``nibble_split`` two copies of them: the low nibble of
    every byte (bits & 0x0F), then the high one ((bits >> 4) & 0x0F) -- the operands of VPSHUFB's
    16-entry popcount table, split once at packing time instead of on every product.

    Example:
        >>> import numpy as np
        >>> lay = PackedLayout(planes=2, k=70, block_bits=64, layout="interleaved")
        >>> lay.pack(np.full((1, 70), 3, np.uint8)).shape
        (1, 32)
    """

    planes: int
    k: int
    block_bits: int = 256
    layout: Layout = "plane_major"
    nibble_split: bool = False

    def __post_init__(self) -> None:
        if self.block_bits not in (64, 128, 256, 512):  # 128: a NEON Q register
            raise ValueError(f"block_bits must be 64, 128, 256 or 512, got {self.block_bits}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    @property
    def block_bytes(self) -> int:
        return self.block_bits // 8

    @property
    def blocks(self) -> int:
        return -(-self.k // self.block_bits)

    @property
    def unit_bytes(self) -> int:
        """Bytes one (plane, block) occupies."""
        return self.block_bytes * (2 if self.nibble_split else 1)

    @property
    def row_bytes(self) -> int:
        return self.planes * self.blocks * self.unit_bytes

    @property
    def plane_stride(self) -> int:
        """Bytes between the same block of consecutive planes."""
        return self.blocks * self.unit_bytes if self.layout == "plane_major" else self.unit_bytes

    @property
    def block_stride(self) -> int:
        """Bytes between consecutive blocks of one plane."""
        return self.unit_bytes if self.layout == "plane_major" else self.planes * self.unit_bytes

    def pack(self, values: np.ndarray) -> np.ndarray:
        """Pack uint8 [rows, k] (values < 2^planes) into uint8 [rows, row_bytes]."""
        rows = values.shape[0]
        padded_bytes = self.blocks * self.block_bytes
        planes = np.zeros((rows, self.planes, padded_bytes), np.uint8)
        for p in range(self.planes):
            bits = (values >> p) & 1
            planes[:, p, : (self.k + 7) // 8] = np.packbits(bits, axis=-1, bitorder="little")
        units = planes.reshape(rows, self.planes, self.blocks, 1, self.block_bytes)
        if self.nibble_split:
            units = np.concatenate([units & 0x0F, units >> 4], axis=3)
        if self.layout == "interleaved":
            units = units.transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(units).reshape(rows, self.row_bytes)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`pack`: uint8 [rows, row_bytes] -> uint8 [rows, k]."""
        rows = packed.shape[0]
        halves = 2 if self.nibble_split else 1
        if self.layout == "interleaved":
            units = packed.reshape(rows, self.blocks, self.planes, halves, self.block_bytes)
            units = units.transpose(0, 2, 1, 3, 4)
        else:
            units = packed.reshape(rows, self.planes, self.blocks, halves, self.block_bytes)
        if self.nibble_split:
            units = units[:, :, :, :1] | (units[:, :, :, 1:] << 4)
        planes = units.reshape(rows, self.planes, -1)
        bits = np.unpackbits(planes, axis=-1, bitorder="little")[:, :, : self.k]
        weights = (1 << np.arange(self.planes, dtype=np.uint32))[None, :, None]
        return (bits.astype(np.uint32) * weights).sum(axis=1).astype(np.uint8)
