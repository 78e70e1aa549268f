"""FP8 mixed-precision training in numpy (Mellempudi et al. 2019 at CPU scale).

Every FP8 GEMM goes through ``fp8_matmul`` (``bitsearch.ops.fp8_matmul`` when importable, else an exact
numpy stand-in); ``Recipe`` selects formats, rounding, loss scaling and master-weight precision.

>>> from bitsearch.train import FP32, TrainConfig, digits, train
>>> train(digits(), FP32, TrainConfig(epochs=1), progress=False).test_acc[0] > 50
True
"""

from bitsearch.train.data import Dataset, digits, mnist1d
from bitsearch.train.gemm import Numerics, fp8_matmul, gemm_backend, reference_fp8_matmul
from bitsearch.train.layers import Conv2d, Flatten, Linear, Param, ReLU, Sequential, softmax_cross_entropy
from bitsearch.train.models import cnn, mlp
from bitsearch.train.optim import SGD
from bitsearch.train.recipe import FP32, FloorSchedule, Recipe, fp8_recipes
from bitsearch.train.scaler import LossScaler
from bitsearch.train.trainer import History, TrainConfig, evaluate, train

__all__ = [
    "FP32",
    "SGD",
    "Conv2d",
    "Dataset",
    "Flatten",
    "FloorSchedule",
    "History",
    "Linear",
    "LossScaler",
    "Numerics",
    "Param",
    "ReLU",
    "Recipe",
    "Sequential",
    "TrainConfig",
    "cnn",
    "digits",
    "evaluate",
    "fp8_matmul",
    "fp8_recipes",
    "gemm_backend",
    "mlp",
    "mnist1d",
    "reference_fp8_matmul",
    "softmax_cross_entropy",
    "train",
]
