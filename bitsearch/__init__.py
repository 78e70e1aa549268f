"""bitsearch: a search-based superoptimizer for low-precision deep-learning operators.

Example:
    >>> import numpy as np, bitsearch as bs
    >>> wl = bs.Dense(16, 16, 256, abits=1, wbits=1, mode="and")
    >>> x = np.random.randint(0, 2, (16, 256), dtype=np.uint8)
    >>> w = np.random.randint(0, 2, (16, 256), dtype=np.uint8)
    >>> kern = bs.build(wl)
    >>> bool((kern(x, kern.pack_weights(w)) == bs.reference(wl, x, w)).all())
    True
"""

from bitsearch.asm.kernel import CallPlan, Kernel, PackedWeights
from bitsearch.build import build
from bitsearch.lowerings import LOWERINGS, Lowering, Space
from bitsearch.space import IntSchedule, Schedule, default_schedule
from bitsearch.targets import TARGETS, TargetDef, get_target
from bitsearch.tune import TuneResult, load, tune
from bitsearch.workloads import MODES, Conv2d, Dense, Fp8Dense, IntConv2d, IntDense, reference

__all__ = [
    "LOWERINGS",
    "MODES",
    "TARGETS",
    "CallPlan",
    "Conv2d",
    "Dense",
    "Fp8Dense",
    "IntConv2d",
    "IntDense",
    "IntSchedule",
    "Kernel",
    "Lowering",
    "PackedWeights",
    "Schedule",
    "Space",
    "TargetDef",
    "TuneResult",
    "build",
    "default_schedule",
    "get_target",
    "load",
    "reference",
    "tune",
]
__version__ = "0.1.0"
