"""The training loop: loss scaling, skipped steps, cosine learning rate, per-epoch evaluation, progress."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bitsearch.train.data import Dataset
from bitsearch.train.gemm import Numerics, gemm_backend
from bitsearch.train.layers import Sequential, softmax_cross_entropy
from bitsearch.train.models import MODELS
from bitsearch.train.optim import SGD
from bitsearch.train.recipe import Recipe
from bitsearch.train.scaler import LossScaler


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters shared by all recipes of a comparison."""

    model: str = "mlp"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model={self.model!r}: expected one of {sorted(MODELS)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}: invalid")


@dataclass(kw_only=True)
class History:
    """Per-epoch curves of one run (plain lists: JSON-ready with ``asdict``)."""

    recipe: str
    dataset: str
    model: str
    seed: int
    gemm_backend: str
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    loss_scale: list[float] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def build(recipe: Recipe, config: TrainConfig, data: Dataset) -> tuple[Sequential, Numerics]:
    """The model of ``config`` for ``data``, with the run's quantization context."""
    ctx = Numerics(recipe, seed=config.seed + 1_000_003)
    rng = np.random.default_rng(config.seed)
    net = MODELS[config.model](data.x_train.shape[1:], data.n_classes, recipe=recipe, ctx=ctx, rng=rng)
    return net, ctx


def evaluate(net: Sequential, x: np.ndarray, y: np.ndarray, batch: int = 500) -> tuple[float, float]:
    """(mean loss, accuracy in %) with the model's own forward precision."""
    total, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = net.forward(x[i:i + batch])
        loss, _ = softmax_cross_entropy(logits, y[i:i + batch])
        total += loss * len(logits)
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return total / len(x), 100.0 * correct / len(x)


def train(data: Dataset, recipe: Recipe, config: TrainConfig, *,
          progress: Progress | bool = True) -> History:
    """Train ``config.model`` on ``data`` with ``recipe``; returns the per-epoch history.

    >>> from bitsearch.train import data as d, recipe as r
    >>> h = train(d.digits(), r.FP32, TrainConfig(epochs=1), progress=False)
    >>> len(h.test_acc), h.test_acc[0] > 50
    (1, True)
    """
    net, ctx = build(recipe, config, data)
    params = net.params()
    opt = SGD(params, momentum=config.momentum, weight_decay=config.weight_decay, ctx=ctx)
    scaler = LossScaler(mode=recipe.loss_scaling, init_scale=recipe.init_scale,
                        growth_interval=recipe.growth_interval, floor=recipe.scale_floor)
    hist = History(recipe=recipe.name, dataset=data.name, model=config.model, seed=config.seed,
                   gemm_backend=gemm_backend() if recipe.fp8 else "fp32-numpy")
    rng = np.random.default_rng(config.seed + 7)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch

    own = progress is True
    bar = (Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), transient=True) if own else progress or None)
    task = None
    if bar is not None:
        if own:
            bar.start()
        task = bar.add_task(f"{recipe.name}/{data.name}/{config.model}/s{config.seed}", total=total, info="")
    try:
        step = 0
        for epoch in range(config.epochs):
            order = rng.permutation(n)
            losses = []
            for b in range(steps_per_epoch):
                idx = order[b * config.batch_size:(b + 1) * config.batch_size]
                lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))  # cosine decay
                logits = net.forward(data.x_train[idx])
                loss, dlogits = softmax_cross_entropy(logits, data.y_train[idx])
                scale = scaler.scale
                with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected below
                    net.backward(dlogits * np.float32(scale))
                found_inf = not all(np.isfinite(p.grad).all() for p in params)
                if scaler.update(found_inf=found_inf, epoch=epoch + b / steps_per_epoch, step=step):
                    opt.step(lr=lr, inv_scale=1.0 / scale)
                losses.append(loss)
                step += 1
                if bar is not None and task is not None:
                    bar.advance(task)
            tl, ta = evaluate(net, data.x_test, data.y_test)
            hist.train_loss.append(float(np.mean(losses)))
            hist.test_loss.append(tl)
            hist.test_acc.append(ta)
            hist.loss_scale.append(scaler.scale)
            hist.skipped_steps.append(scaler.skipped)
            if bar is not None and task is not None:
                bar.update(task, info=f"ep {epoch + 1} loss {hist.train_loss[-1]:.3f} acc {ta:.1f}% "
                                      f"scale {scaler.scale:g} skipped {scaler.skipped}")
    finally:
        if bar is not None and task is not None:
            bar.remove_task(task)
            if own:
                bar.stop()
    return hist
