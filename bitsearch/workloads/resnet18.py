"""The ResNet-18 convolutions of the seed paper (Cowan et al. 2018), C2..C12."""

from __future__ import annotations

from bitsearch.workloads.base import Mode
from bitsearch.workloads.conv2d import Conv2d
from bitsearch.workloads.int_conv2d import IntConv2d

# ResNet-18 layers C2..C12 of the seed paper (Cowan et al. 2018, arXiv 1810.11066), batch 1, NHWC,
# TensorFlow SAME padding: (in_hw, c_in, c_out, k, stride, padding, out_hw, gemm_m, gemm_n, gemm_k, macs).
RESNET18_LAYERS: dict[str, dict[str, object]] = {
    name: dict(zip(("in_hw", "c_in", "c_out", "k", "stride", "padding", "out_hw", "gemm_m", "gemm_n",
                    "gemm_k", "macs"), row, strict=True))
    for name, row in (
        ("C2", (56, 64, 64, 3, 1, "SAME", 56, 3136, 64, 576, 115605504)),
        ("C3", (56, 64, 64, 1, 1, "SAME", 56, 3136, 64, 64, 12845056)),
        ("C4", (56, 64, 128, 3, 2, "SAME", 28, 784, 128, 576, 57802752)),
        ("C5", (56, 64, 128, 1, 2, "SAME", 28, 784, 128, 64, 6422528)),
        ("C6", (28, 128, 128, 3, 1, "SAME", 28, 784, 128, 1152, 115605504)),
        ("C7", (28, 128, 256, 3, 2, "SAME", 14, 196, 256, 1152, 57802752)),
        ("C8", (28, 128, 256, 1, 2, "SAME", 14, 196, 256, 128, 6422528)),
        ("C9", (14, 256, 256, 3, 1, "SAME", 14, 196, 256, 2304, 115605504)),
        ("C10", (14, 256, 512, 3, 2, "SAME", 7, 49, 512, 2304, 57802752)),
        ("C11", (14, 256, 512, 1, 2, "SAME", 7, 49, 512, 256, 6422528)),
        ("C12", (7, 512, 512, 3, 1, "SAME", 7, 49, 512, 4608, 115605504)),
    )
}


def resnet18_layer(
    name: str, *, abits: int = 1, wbits: int = 1, mode: Mode = "and", batch: int = 1,
    dtype: str | None = None,
) -> Conv2d | IntConv2d:
    """ResNet-18 layer ``name`` (C2..C12) as a :class:`Conv2d`, or with ``dtype="int16"`` as the
    :class:`IntConv2d` baseline.

    Example:
        >>> cv = resnet18_layer("C4", abits=2, wbits=1)
        >>> (cv.out_h, cv.gemm_m, cv.gemm_k, cv.pads)
        (28, 784, 576, (0, 1, 0, 1))
    """
    if name not in RESNET18_LAYERS:
        raise ValueError(f"unknown ResNet-18 layer {name!r}; valid: {', '.join(RESNET18_LAYERS)}")
    row = RESNET18_LAYERS[name]
    geometry = {"h": row["in_hw"], "w": row["in_hw"], "cin": row["c_in"], "cout": row["c_out"],
                "kernel": row["k"], "stride": row["stride"], "padding": row["padding"], "batch": batch}
    if dtype is not None:
        return IntConv2d(**geometry, dtype=dtype)
    return Conv2d(**geometry, abits=abits, wbits=wbits, mode=mode)


__all__ = ["RESNET18_LAYERS", "resnet18_layer"]
