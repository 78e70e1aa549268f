"""``build``: workload + schedule + target -> :class:`~bitsearch.asm.kernel.Kernel`, through the
lowering the registry names for them."""

from __future__ import annotations

from typing import Any

from bitsearch.asm.kernel import Kernel
from bitsearch.lowerings.registry import lowering_for
from bitsearch.targets import get_target


def build(workload: Any, schedule: Any = None, target: str = "x86_64-avx2") -> Kernel:
    """Emit, encode and wrap the kernel of ``workload`` under ``schedule`` for ``target``.

    ``schedule=None`` takes the lowering's default (a sound, fast starting point). An unknown
    target, a workload no lowering computes there, a schedule of the wrong type or one that fails
    its static checks raises ``ValueError`` naming the problem before any code is emitted.

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> wl = bs.Dense(3, 5, 40, abits=2, wbits=2, mode="and")
        >>> kern = bs.build(wl, bs.Schedule(mr=1, nr=2, popcount="scalar"))
        >>> x = np.full((3, 40), 3, np.uint8); w = np.full((5, 40), 2, np.uint8)
        >>> int(kern(x, w)[2, 4])
        240
    """
    t = get_target(target)
    lowering = lowering_for(workload, t, schedule)
    if schedule is None:
        schedule = lowering.default(workload, t)
    lowering.check(schedule, workload, t)
    return lowering.emit(workload, schedule, t)


def default_schedule_of(workload: Any, target: str = "x86_64-avx2") -> Any:
    """The schedule ``build(workload, None, target)`` uses."""
    t = get_target(target)
    return lowering_for(workload, t).default(workload, t)


__all__ = ["build", "default_schedule_of"]
