"""Number formats: bit-plane packing (and, later, FP8 formats and rounding)."""

from bitsearch.numerics.packing import LAYOUTS, Layout, PackedLayout

__all__ = ["LAYOUTS", "Layout", "PackedLayout"]
