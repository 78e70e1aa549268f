"""Operators (what to compute): one module per operator, each a frozen record with its exact
numpy reference, its verification inputs and its MAC counts.

A workload fixes shapes, bit widths and the value semantics; a schedule (how to compute it) is
chosen separately. Value semantics of the bit-serial operators, with A = 2^abits - 1 and
W = 2^wbits - 1:

- ``and``:      y = x @ w.T
- ``unipolar``: y = x @ (2w - W).T          (odd, symmetric weight levels)
- ``bipolar``:  y = (2x - A) @ (2w - W).T   (1-bit x 1-bit is XNOR-popcount)
"""

from __future__ import annotations

import numpy as np

from bitsearch.workloads.base import INT32_MAX, MODES, GemmShape, Mode, Operator
from bitsearch.workloads.conv import PADDINGS, ConvGeometry, im2col
from bitsearch.workloads.conv2d import Conv2d
from bitsearch.workloads.dense import Dense
from bitsearch.workloads.fp8_dense import (
    FP8_FORMATS,
    Fp8Dense,
    fp8_dtype,
    fp8_mismatch,
    fp8_tolerance,
    fp8_verification_inputs,
)
from bitsearch.workloads.int_conv2d import IntConv2d
from bitsearch.workloads.int_dense import INT8_X_MAX, INT_DTYPES, IntDense
from bitsearch.workloads.resnet18 import RESNET18_LAYERS, resnet18_layer


def reference(workload: Operator, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The exact result of ``workload`` on ``x`` and ``w`` (``workload.reference(x, w)``): int32
    for the integer operators (y [m, n], or [batch, out_h, out_w, cout] for convolutions);
    float64 [m, n] for :class:`Fp8Dense` (compare within :func:`fp8_tolerance`).

    Example:
        >>> import numpy as np
        >>> wl = Dense(4, 3, 70, abits=2, wbits=1, mode="unipolar")
        >>> int(reference(wl, np.full((4, 70), 3, np.uint8), np.ones((3, 70), np.uint8))[0, 0])
        210
    """
    if not isinstance(workload, Operator):
        raise ValueError(f"no reference for workload type {type(workload).__name__}")
    return workload.reference(x, w)


__all__ = ["FP8_FORMATS", "INT8_X_MAX", "INT32_MAX", "INT_DTYPES", "MODES", "PADDINGS", "RESNET18_LAYERS",
           "Conv2d", "ConvGeometry", "Dense", "Fp8Dense", "GemmShape", "IntConv2d", "IntDense", "Mode",
           "Operator", "fp8_dtype", "fp8_mismatch", "fp8_tolerance", "fp8_verification_inputs", "im2col",
           "reference", "resnet18_layer"]
