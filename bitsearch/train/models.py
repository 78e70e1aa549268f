"""Model builders: an MLP and a small im2col CNN; first/last layers FP32 when the recipe says so."""

from __future__ import annotations

import numpy as np

from bitsearch.train.gemm import Numerics
from bitsearch.train.layers import Conv2d, Flatten, Linear, ReLU, Sequential
from bitsearch.train.recipe import Recipe


def _precision(recipe: Recipe, index: int, count: int) -> tuple[bool, bool]:
    """(fp8, fp16 master) of weight layer ``index`` of ``count``."""
    edge = index in (0, count - 1)
    fp8 = recipe.fp8 and not (recipe.first_last_fp32 and edge)
    return fp8, fp8 and recipe.master_fp16


def mlp(input_shape: tuple[int, ...], n_classes: int, *, recipe: Recipe, ctx: Numerics,
        rng: np.random.Generator, hidden: tuple[int, ...] = (128, 128, 128)) -> Sequential:
    """Flatten -> Linear/ReLU x len(hidden) -> Linear. With 3 hidden layers, 2 FP8 layers sit inside.

    >>> import numpy as np
    >>> from bitsearch.train.recipe import Recipe
    >>> r = Recipe(); net = mlp((8, 8, 1), 10, recipe=r, ctx=Numerics(r), rng=np.random.default_rng(0))
    >>> [getattr(layer, "fp8", None) for layer in net.layers if hasattr(layer, "w")]
    [False, True, True, False]
    """
    if not hidden:
        raise ValueError("mlp: need at least one hidden layer")
    sizes = [int(np.prod(input_shape)), *hidden, n_classes]
    count = len(sizes) - 1
    layers: list = [Flatten()]
    for i in range(count):
        fp8, m16 = _precision(recipe, i, count)
        layers.append(Linear(sizes[i], sizes[i + 1], rng=rng, fp8=fp8, ctx=ctx, master_fp16=m16,
                             name=f"fc{i}"))
        if i < count - 1:
            layers.append(ReLU())
    return Sequential(layers)


def cnn(input_shape: tuple[int, int, int], n_classes: int, *, recipe: Recipe, ctx: Numerics,
        rng: np.random.Generator, channels: tuple[int, int, int] = (16, 32, 32),
        dense: int = 64) -> Sequential:
    """conv(s1) -> conv(s2) -> conv(s2) -> FC -> FC, ReLU between; kernel 3x3, or 1x5 for [1, L, C] signals.

    >>> import numpy as np
    >>> from bitsearch.train.recipe import FP32
    >>> net = cnn((8, 8, 1), 10, recipe=FP32, ctx=Numerics(FP32), rng=np.random.default_rng(0))
    >>> net.forward(np.zeros((2, 8, 8, 1), np.float32)).shape
    (2, 10)
    """
    h, w, c = input_shape
    kernel = (1, 5) if h == 1 else (3, 3)
    count = 5
    layers: list = []
    cin = c
    for i, (cout, stride) in enumerate(zip(channels, (1, 2, 2), strict=True)):
        fp8, m16 = _precision(recipe, i, count)
        layers += [Conv2d(cin, cout, kernel=kernel, stride=stride, padding="SAME", rng=rng, fp8=fp8,
                          ctx=ctx, master_fp16=m16, name=f"conv{i}"), ReLU()]
        cin = cout
        h, w = -(-h // stride), -(-w // stride)
    layers.append(Flatten())
    fp8, m16 = _precision(recipe, 3, count)
    layers += [Linear(h * w * cin, dense, rng=rng, fp8=fp8, ctx=ctx, master_fp16=m16, name="fc3"), ReLU()]
    fp8, m16 = _precision(recipe, 4, count)
    layers.append(Linear(dense, n_classes, rng=rng, fp8=fp8, ctx=ctx, master_fp16=m16, name="fc4"))
    return Sequential(layers)


MODELS = {"mlp": mlp, "cnn": cnn}
