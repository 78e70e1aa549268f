"""Offline datasets: scikit-learn's bundled digits (8x8) and locally generated MNIST-1D (40 samples)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """Train/test split, inputs float32 NHWC ([N, H, W, 1]; MNIST-1D is [N, 1, 40, 1]), labels int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1


@cache
def digits(test_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
    """sklearn's 1797 8x8 digits (bundled, no download), scaled to [0, 1], stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    xtr, xte, ytr, yte = train_test_split(x, d.target.astype(np.int64), test_size=test_fraction,
                                          random_state=split_seed, stratify=d.target)
    return Dataset(name="digits", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


@cache
def mnist1d(num_samples: int = 5000) -> Dataset:
    """MNIST-1D generated locally with ``mnist1d.data.make_dataset`` (never the download path)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG: restore it
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    f = lambda a: np.asarray(a, np.float32)[:, None, :, None]  # noqa: E731
    return Dataset(name="mnist1d", x_train=f(d["x"]), y_train=np.asarray(d["y"], np.int64),
                   x_test=f(d["x_test"]), y_test=np.asarray(d["y_test"], np.int64))


DATASETS = {"digits": digits, "mnist1d": mnist1d}


def load(name: str) -> Dataset:
    """A dataset by name ("digits" | "mnist1d")."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r}: expected one of {sorted(DATASETS)}")
    return DATASETS[name]()
