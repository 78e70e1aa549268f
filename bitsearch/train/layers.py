"""Layers with explicit forward/backward: Linear, Conv2d (im2col, NHWC), ReLU, Flatten; softmax cross-entropy.

A weight layer runs in FP32 or in FP8 (``layer.fp8``, set by the model builder from the recipe). In FP8,
every GEMM -- forward, backward-data, backward-weight -- goes through ``gemm.fp8_matmul`` on quantized
operands, and its FP32 result is rounded back to FP8: forward outputs in the forward format (nearest),
errors and weight gradients in the backward format (stochastic or nearest).
"""

from __future__ import annotations

import numpy as np

from bitsearch.numerics.fp8 import dequantize
from bitsearch.train.gemm import Numerics, fp8_matmul


class Param:
    """A trainable tensor: master ``value`` (float32, or float16 for FP16 master weights) and ``grad``."""

    def __init__(self, value: np.ndarray, *, name: str) -> None:
        self.value = value
        self.grad = np.zeros(value.shape, np.float32)
        self.name = name
        self.fp16_master = value.dtype == np.float16

    @property
    def f32(self) -> np.ndarray:
        return self.value.astype(np.float32)


def _t(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


class _Gemm:
    """y = x @ W.T + b for x [M, K] and W [N, K], in FP32 or FP8 (see module docstring)."""

    w: Param
    b: Param
    fp8: bool
    ctx: Numerics | None

    def _init_params(self, shape: tuple[int, ...], fan_in: int, rng: np.random.Generator,
                     name: str, master_fp16: bool) -> None:
        w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)  # He init: ReLU networks
        dt = np.float16 if master_fp16 else np.float32
        self.w = Param(w.astype(dt), name=f"{name}.w")
        self.b = Param(np.zeros(shape[0], dt), name=f"{name}.b")

    def _forward2d(self, x: np.ndarray) -> np.ndarray:
        """``x`` is float32, or already in the forward FP8 format (Conv2d quantizes before im2col)."""
        w2 = self.w.f32.reshape(self.w.value.shape[0], -1)
        if not self.fp8:
            self._saved = (x, w2)
            return x @ w2.T + self.b.f32
        assert self.ctx is not None
        xq = x if x.dtype == self.ctx.fwd_dtype else self.ctx.q_fwd(x)
        wq = self.ctx.q_fwd(w2)
        self._saved = (xq, wq)
        y = fp8_matmul(xq, wq) + self.b.f32  # FP32 accumulation, then bias in FP32
        return dequantize(self.ctx.q_fwd(y))  # GEMM output rounded back to FP8

    def _backward2d(self, g: np.ndarray) -> np.ndarray:
        x, w2 = self._saved
        if not self.fp8:
            self.w.grad = (g.T @ x).reshape(self.w.value.shape).astype(np.float32)
            self.b.grad = g.sum(0, dtype=np.float32)
            return g @ w2
        assert self.ctx is not None
        gq = self.ctx.q_bwd(g)  # errors in FP8
        dx = dequantize(self.ctx.q_bwd(fp8_matmul(gq, _t(w2))))  # backward-data
        dw = dequantize(self.ctx.q_bwd(fp8_matmul(_t(gq), _t(x))))  # backward-weight
        self.w.grad = dw.reshape(self.w.value.shape)
        self.b.grad = dequantize(gq).sum(0, dtype=np.float32)
        return dx

    def params(self) -> list[Param]:
        return [self.w, self.b]


class Linear(_Gemm):
    """Fully connected layer ``y = x @ W.T + b``, W [out, in].

    >>> import numpy as np
    >>> lin = Linear(3, 2, rng=np.random.default_rng(0))
    >>> lin.forward(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    def __init__(self, n_in: int, n_out: int, *, rng: np.random.Generator, fp8: bool = False,
                 ctx: Numerics | None = None, master_fp16: bool = False, name: str = "linear") -> None:
        if n_in < 1 or n_out < 1:
            raise ValueError(f"Linear({n_in}, {n_out}): sizes must be positive")
        if fp8 and ctx is None:
            raise ValueError("Linear(fp8=True) needs ctx (a Numerics)")
        self.fp8, self.ctx = fp8, ctx
        self._init_params((n_out, n_in), n_in, rng, name, master_fp16)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._forward2d(x)

    def backward(self, g: np.ndarray) -> np.ndarray:
        return self._backward2d(g)


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Conv2d(_Gemm):
    """2-D convolution on NHWC input via im2col; W [cout, kh, kw, cin]. ``kernel=(1, k)`` gives a 1-D conv.

    >>> import numpy as np
    >>> conv = Conv2d(1, 4, kernel=3, stride=2, padding="SAME", rng=np.random.default_rng(0))
    >>> conv.forward(np.ones((2, 8, 8, 1), np.float32)).shape
    (2, 4, 4, 4)
    """

    def __init__(self, cin: int, cout: int, *, kernel: int | tuple[int, int], stride: int = 1,
                 padding: str | int = "SAME", rng: np.random.Generator, fp8: bool = False,
                 ctx: Numerics | None = None, master_fp16: bool = False, name: str = "conv") -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if min(cin, cout, kh, kw, stride) < 1:
            raise ValueError(f"Conv2d(cin={cin}, cout={cout}, kernel={kernel}, stride={stride}): need >= 1")
        if not (padding in ("SAME", "VALID") or (isinstance(padding, int) and padding >= 0)):
            raise ValueError(f"padding={padding!r}: expected 'SAME', 'VALID' or an int >= 0")
        if fp8 and ctx is None:
            raise ValueError("Conv2d(fp8=True) needs ctx (a Numerics)")
        self.kh, self.kw, self.stride, self.padding = kh, kw, stride, padding
        self.fp8, self.ctx = fp8, ctx
        self._init_params((cout, kh, kw, cin), kh * kw * cin, rng, name, master_fp16)

    def _pads(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.padding == "SAME":
            return _same_pad(h, self.kh, self.stride), _same_pad(w, self.kw, self.stride)
        p = 0 if self.padding == "VALID" else int(self.padding)
        return (p, p), (p, p)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[3] != self.w.value.shape[3]:
            raise ValueError(f"Conv2d: x {x.shape} must be NHWC with C={self.w.value.shape[3]}")
        n, h, w, c = x.shape
        ph, pw = self._pads(h, w)
        dtype = x.dtype
        if self.fp8:
            assert self.ctx is not None
            # Quantize before im2col (kh*kw times fewer elements, same values); stride tricks need a
            # numpy dtype, so im2col runs on the FP8 bytes (byte 0 is +0 in both formats: the padding).
            q = self.ctx.q_fwd(x)
            dtype, x = q.dtype, q.view(np.uint8)
        xp = np.pad(x, ((0, 0), ph, pw, (0, 0)))
        s = self.stride
        win = np.lib.stride_tricks.sliding_window_view(xp, (self.kh, self.kw), axis=(1, 2))[:, ::s, ::s]
        ho, wo = win.shape[1], win.shape[2]
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2d: input {x.shape} is smaller than the kernel")
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, self.kh * self.kw * c)
        self._geom = (x.shape, xp.shape, ph, pw, ho, wo)
        y = self._forward2d(np.ascontiguousarray(cols).view(dtype))
        return y.reshape(n, ho, wo, -1)

    def backward(self, g: np.ndarray) -> np.ndarray:
        xshape, xpshape, ph, pw, ho, wo = self._geom
        dcols = self._backward2d(g.reshape(-1, g.shape[3]))
        n, c, s = xshape[0], xshape[3], self.stride
        d6 = dcols.reshape(n, ho, wo, self.kh, self.kw, c)
        dxp = np.zeros(xpshape, np.float32)
        for i in range(self.kh):
            for j in range(self.kw):
                dxp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :] += d6[:, :, :, i, j, :]
        return dxp[:, ph[0]:ph[0] + xshape[1], pw[0]:pw[0] + xshape[2], :]


class ReLU:
    """max(x, 0); keeps FP8 values representable."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return np.where(self._mask, x, np.float32(0))

    def backward(self, g: np.ndarray) -> np.ndarray:
        return np.where(self._mask, g, np.float32(0))

    def params(self) -> list[Param]:
        return []


class Flatten:
    """[N, ...] -> [N, prod(...)]."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g: np.ndarray) -> np.ndarray:
        return g.reshape(self._shape)

    def params(self) -> list[Param]:
        return []


Layer = Linear | Conv2d | ReLU | Flatten


class Sequential:
    """A chain of layers.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> net = Sequential([Linear(4, 8, rng=rng), ReLU(), Linear(8, 3, rng=rng)])
    >>> net.forward(np.zeros((5, 4), np.float32)).shape
    (5, 3)
    """

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, g: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def params(self) -> list[Param]:
        return [p for layer in self.layers for p in layer.params()]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` [N, C] against integer ``labels`` [N], and d(loss)/d(logits).

    >>> import numpy as np
    >>> loss, g = softmax_cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 3]))
    >>> round(loss, 4), g.shape
    (1.3863, (2, 4))
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits {logits.shape} / labels {labels.shape}: expected [N, C] and [N]")
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    n = logits.shape[0]
    loss = float(-logp[np.arange(n), labels].mean())
    g = np.exp(logp)
    g[np.arange(n), labels] -= 1
    return loss, (g / n).astype(np.float32)
