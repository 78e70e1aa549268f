"""Number formats: bit-plane packing; FP8 (E5M2, E4M3) and FP16 formats with nearest/stochastic rounding."""

from bitsearch.numerics.fp8 import (
    FORMATS,
    FloatFormat,
    dequantize,
    fmix32,
    format_info,
    quantize,
    random_bits,
)
from bitsearch.numerics.packing import LAYOUTS, Layout, PackedLayout

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "FloatFormat",
    "Layout",
    "PackedLayout",
    "dequantize",
    "fmix32",
    "format_info",
    "quantize",
    "random_bits",
]
