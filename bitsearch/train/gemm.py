"""The one entry point of every FP8 GEMM in training, and the per-run quantization context."""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np

from bitsearch.numerics.fp8 import FORMATS, dequantize
from bitsearch.ops import quantize
from bitsearch.train.recipe import Recipe

_FP8 = (np.dtype(ml_dtypes.float8_e5m2), np.dtype(ml_dtypes.float8_e4m3fn))
_impl: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
_missing = False  # bitsearch.ops was looked up and is absent: do not retry on every GEMM


def reference_fp8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact stand-in for ``bitsearch.ops.fp8_matmul``: decode to float32, ``a @ b.T`` in float32.

    >>> a = quantize(np.ones((2, 3), np.float32), "e5m2"); reference_fp8_matmul(a, a).tolist()
    [[3.0, 3.0], [3.0, 3.0]]
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"fp8_matmul: a {a.shape} and b {b.shape} must be [m, k] and [n, k]")
    if a.dtype not in _FP8 or b.dtype not in _FP8:
        raise ValueError(f"fp8_matmul: a ({a.dtype}) and b ({b.dtype}) must be FP8 (ml_dtypes)")
    return dequantize(a) @ dequantize(b).T


def _resolve() -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    global _impl, _missing
    if _impl is None and not _missing:
        try:
            from bitsearch.ops import fp8_matmul as impl  # the kernel-backed operator, when present
        except ImportError:
            _missing = True
            return None
        _impl = impl
    return _impl


def gemm_backend() -> str:
    """Which implementation ``fp8_matmul`` uses now: "bitsearch.ops" or "numpy-fallback"."""
    return "bitsearch.ops" if _resolve() is not None else "numpy-fallback"


def fp8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """FP8 [m, k] x FP8 [n, k] -> float32 [m, n] = a @ b.T, via ``bitsearch.ops.fp8_matmul`` if importable."""
    impl = _resolve()
    if impl is None:
        return reference_fp8_matmul(a, b)
    return np.asarray(impl(np.ascontiguousarray(a), np.ascontiguousarray(b)), dtype=np.float32)


class Numerics:
    """Quantizers of one training run: forward (nearest, saturating) and backward (stochastic or nearest).

    Stochastic rounding seeds come from a generator seeded by ``seed``, so a run is reproducible.
    """

    def __init__(self, recipe: Recipe, *, seed: int = 0) -> None:
        self.recipe = recipe
        self._rng = np.random.default_rng(seed)
        self.fwd_dtype = np.dtype(FORMATS[recipe.fwd].dtype) if recipe.fwd else None

    def next_seed(self) -> int:
        return int(self._rng.integers(0, 2**32))

    def q_fwd(self, x: np.ndarray) -> np.ndarray:
        assert self.recipe.fwd is not None
        return quantize(x, self.recipe.fwd, rounding="nearest", saturate=True)

    def q_bwd(self, g: np.ndarray) -> np.ndarray:
        assert self.recipe.bwd is not None
        if self.recipe.stochastic_grads:
            return quantize(g, self.recipe.bwd, rounding="stochastic", seed=self.next_seed())
        return quantize(g, self.recipe.bwd, rounding="nearest")

    def master(self, w: np.ndarray) -> np.ndarray:
        """FP16 master weights after an update: stochastic rounding (seeded) or nearest, per the recipe."""
        if self.recipe.stochastic_master:
            return quantize(w, "fp16", rounding="stochastic", seed=self.next_seed())
        return quantize(w, "fp16", rounding="nearest")
