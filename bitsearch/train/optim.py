"""SGD with momentum on master weights (FP32, or FP16 re-rounded after each update)."""

from __future__ import annotations

import numpy as np

from bitsearch.train.gemm import Numerics
from bitsearch.train.layers import Param


class SGD:
    """Momentum SGD; gradients are unscaled (divided by the loss scale) in FP32 before use.

    Momentum buffers are FP32. A parameter with FP16 master weights is updated in FP32 and rounded
    back to FP16 with the run's rounding (stochastic by default: small updates survive on average).
    """

    def __init__(self, params: list[Param], *, momentum: float = 0.9, weight_decay: float = 0.0,
                 ctx: Numerics | None = None) -> None:
        if not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"momentum={momentum}, weight_decay={weight_decay}: need 0 <= m < 1, wd >= 0")
        if any(p.fp16_master for p in params) and ctx is None:
            raise ValueError("SGD: FP16 master weights need ctx (a Numerics) for their rounding")
        self.params, self.momentum, self.weight_decay, self.ctx = params, momentum, weight_decay, ctx
        self._buf = [np.zeros(p.value.shape, np.float32) for p in params]

    def step(self, *, lr: float, inv_scale: float = 1.0) -> None:
        for p, buf in zip(self.params, self._buf, strict=True):
            w = p.f32
            g = p.grad * np.float32(inv_scale)
            if self.weight_decay and p.value.ndim > 1:  # no decay on biases
                g = g + np.float32(self.weight_decay) * w
            buf *= np.float32(self.momentum)
            buf += g
            w = w - np.float32(lr) * buf
            p.value = self.ctx.master(w) if p.fp16_master and self.ctx else w.astype(np.float32)
