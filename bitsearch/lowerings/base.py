"""``Lowering``: one way to compute an operator on a target family with one arithmetic.

A lowering owns its schedule record type, its schedule space, its default schedule, the static
check of a schedule (with the reason it is invalid) and its emitter, which returns a
:class:`~bitsearch.asm.kernel.Kernel` (machine code + :class:`~bitsearch.asm.kernel.CallPlan`).
The registry (:mod:`bitsearch.lowerings`) is a list of lowerings keyed by
``(operator, arch, arithmetic)``; build, space, tune, measure, load, export and the command line
derive their tables from it.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from bitsearch.asm.kernel import Kernel
from bitsearch.space.knobs import SpaceDef
from bitsearch.targets import TargetDef


class Lowering(abc.ABC):
    """Computes ``operator`` workloads on ``arch`` targets with ``arithmetic``.

    Subclasses set the four class attributes and implement :meth:`space`, :meth:`default` and
    :meth:`emit`; :meth:`supports` and :meth:`normalize` have sound defaults."""

    operator: ClassVar[type]  # the workload record (bitsearch.workloads)
    arch: ClassVar[str]  # the target family: TargetDef.arch
    arithmetic: ClassVar[str]  # "bitserial", "int", "fp32", ...
    schedule_type: ClassVar[type]  # its schedule record (frozen, JSON round trip, .check)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.operator.OP, self.arch, self.arithmetic)

    @property
    def name(self) -> str:
        return "/".join(self.key)

    def __repr__(self) -> str:
        return f"<lowering {self.name}>"

    def applies(self, workload: Any, target: TargetDef) -> bool:
        return isinstance(workload, self.operator) and target.arch == self.arch

    def supports(self, workload: Any, target: TargetDef) -> str | None:
        """Why this lowering cannot compute ``workload`` on ``target`` at all, or None."""
        del workload, target
        return None

    @abc.abstractmethod
    def space(self, workload: Any, target: TargetDef) -> SpaceDef:
        """The knobs, starting points and constraints of the search."""

    @abc.abstractmethod
    def default(self, workload: Any, target: TargetDef) -> Any:
        """A sound, fast starting point (a schedule of ``schedule_type``)."""

    def normalize(self, schedule: Any, workload: Any) -> Any:
        """The canonical form of ``schedule`` for ``workload`` (knobs without effect reset)."""
        del workload
        return schedule.normalized()

    def check(self, schedule: Any, workload: Any, target: TargetDef) -> None:
        """Raise ``ValueError`` naming the problem if ``schedule`` cannot compute ``workload``."""
        if type(schedule) is not self.schedule_type:
            raise ValueError(f"{self.name} on {target.name} needs a bitsearch.{self.schedule_type.__name__}"
                             f", got {type(schedule).__name__}")
        schedule.check(workload, target)

    def invalid_reason(self, schedule: Any, workload: Any, target: TargetDef) -> str | None:
        """Why ``schedule`` cannot compute ``workload`` on ``target``, or None if it can."""
        try:
            self.check(schedule, workload, target)
        except ValueError as exc:
            return str(exc)
        return None

    @abc.abstractmethod
    def emit(self, workload: Any, schedule: Any, target: TargetDef) -> Kernel:
        """The kernel of a checked schedule."""


__all__ = ["Lowering"]
