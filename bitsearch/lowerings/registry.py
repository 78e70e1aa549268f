"""The registry: every (operator, target family, arithmetic) bitsearch can emit.

build, :class:`Space`, tune, measure, load, export and the command line derive their tables from
:data:`LOWERINGS`; adding an arithmetic, an operator or a target family is its own files plus one
line here.

Example:
    >>> import bitsearch as bs
    >>> from bitsearch.lowerings import lowerings_for
    >>> [lw.name for lw in lowerings_for(bs.Dense(8, 8, 64), "aarch64-cortex-a53")]
    ['dense/aarch64/bitserial']
"""

from __future__ import annotations

from typing import Any

from bitsearch.lowerings.base import Lowering
from bitsearch.lowerings.conv_x86 import Conv2dBitserialX86, IntConv2dX86
from bitsearch.lowerings.dense_x86 import DenseBitserialX86
from bitsearch.lowerings.fp8_x86 import Fp8DenseX86
from bitsearch.lowerings.int_x86 import IntDenseX86
from bitsearch.lowerings.neon import DenseBitserialNeon, IntDenseNeon
from bitsearch.targets import TargetDef, get_target

# One line per lowering; the first of an (operator, arch) is its default arithmetic.
LOWERINGS: tuple[Lowering, ...] = (
    DenseBitserialX86(),
    IntDenseX86(),
    Fp8DenseX86(),
    Conv2dBitserialX86(),
    IntConv2dX86(),
    DenseBitserialNeon(),
    IntDenseNeon(),
)
OPERATORS: dict[str, type] = {lw.operator.OP: lw.operator for lw in LOWERINGS}
SCHEDULE_TYPES: dict[str, type] = {lw.schedule_type.__name__: lw.schedule_type for lw in LOWERINGS}
ARITHMETICS: tuple[str, ...] = tuple(dict.fromkeys(lw.arithmetic for lw in LOWERINGS))


def lowerings_for(workload: Any, target: str | TargetDef) -> list[Lowering]:
    """The lowerings that can compute ``workload`` on ``target`` (ValueError, with the reasons,
    if there is none)."""
    t = get_target(target)
    if not isinstance(workload, tuple(OPERATORS.values())):
        names = ", ".join(f"bitsearch.{c.__name__}" for c in OPERATORS.values())
        raise ValueError(f"workload must be one of {names}; got {type(workload).__name__}")
    candidates = [lw for lw in LOWERINGS if lw.applies(workload, t)]
    found = [lw for lw in candidates if lw.supports(workload, t) is None]
    if not found:
        reasons = [r for lw in candidates if (r := lw.supports(workload, t))]
        archs = sorted({lw.arch for lw in LOWERINGS if isinstance(workload, lw.operator)})
        raise ValueError(f"no lowering of {workload} for target {t.name}: " + (
            "; ".join(reasons) if reasons else
            f"{type(workload).__name__} is emitted for {', '.join(archs)} targets only"))
    return found


def lowering_for(workload: Any, target: str | TargetDef, schedule: Any = None, *,
                 arithmetic: str | None = None) -> Lowering:
    """The lowering that computes ``workload`` on ``target`` with ``schedule`` (its type picks the
    lowering) or ``arithmetic``; neither: the first registered, the default arithmetic."""
    found = lowerings_for(workload, target)
    if arithmetic is not None:
        found = [lw for lw in found if lw.arithmetic == arithmetic]
        if not found:
            known = ", ".join(lw.arithmetic for lw in lowerings_for(workload, target))
            raise ValueError(f"no {arithmetic!r} lowering of {workload} on {get_target(target).name}; "
                             f"there: {known}")
    if schedule is None:
        return found[0]
    for lw in found:
        if type(schedule) is lw.schedule_type:
            return lw
    wanted = " or bitsearch.".join(lw.schedule_type.__name__ for lw in found)
    name = type(workload).__name__
    article = "an" if name[0] in "AEIOU" else "a"
    raise ValueError(f"{article} {name} on {get_target(target).name} needs a bitsearch.{wanted}, "
                     f"got {type(schedule).__name__}")


def lowering_named(name: str) -> Lowering:
    """The lowering of a ``operator/arch/arithmetic`` name (as studies record it)."""
    for lw in LOWERINGS:
        if lw.name == name:
            return lw
    raise ValueError(f"unknown lowering {name!r}; known: {', '.join(lw.name for lw in LOWERINGS)}")


__all__ = ["ARITHMETICS", "LOWERINGS", "OPERATORS", "SCHEDULE_TYPES", "lowering_for",
           "lowering_named", "lowerings_for"]
