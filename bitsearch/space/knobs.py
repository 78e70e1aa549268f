"""Knobs: the dimensions of a schedule space, with their domains, the conditions under which
they exist, and Optuna suggestion (define-by-run: a knob that only exists under some strategy is
only suggested there, so Optuna never wastes a dimension on it).

Each lowering (:mod:`bitsearch.lowerings`) declares its knobs in a :class:`SpaceDef`;
:class:`bitsearch.Space` walks and suggests them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Knob:
    """One dimension of the space.

    ``when`` says whether the knob exists given the knobs suggested before it. ``domain``, when
    given, computes the choices from those knobs (the register tiles that fit the register file
    of the chosen strategy); such a knob gets one Optuna parameter per condition (``tile[lut,
    split]``), so samplers never see an infeasible value nor a domain that changes under them.
    """

    name: str
    choices: tuple[Any, ...]
    doc: str
    when: Callable[[Params], bool] | None = None
    when_doc: str = ""
    domain: Callable[[Params], tuple[Any, ...]] | None = None
    condition: Callable[[Params], str] | None = None
    depends: tuple[str, ...] = ()  # the knobs ``when`` reads

    def applies(self, params: Params) -> bool:
        return self.when is None or self.when(params)

    def choices_for(self, params: Params) -> tuple[Any, ...]:
        return self.domain(params) if self.domain else self.choices

    def param_name(self, params: Params) -> str:
        return f"{self.name}[{self.condition(params)}]" if self.condition else self.name

    def suggest(self, trial: Any, params: Params) -> Any:
        choices = self.choices_for(params)
        name = self.param_name(params)
        if all(type(v) is int for v in choices) and list(choices) == list(
                range(choices[0], choices[0] + len(choices))):
            return trial.suggest_int(name, choices[0], choices[-1])  # ordered: samplers see it
        return trial.suggest_categorical(name, list(choices))


def tile_grid(rows: int, cols: int) -> tuple[str, ...]:
    """Register tiles ``"MRxNR"`` for 1..rows by 1..cols."""
    return tuple(f"{mr}x{nr}" for mr in range(1, rows + 1) for nr in range(1, cols + 1))


def same_value(value: Any, allowed: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of ``allowed`` with the same type (16.0 == 16 and True == 1, but
    neither is a knob value)."""
    return any(type(value) is type(v) and value == v for v in allowed)


@dataclass(frozen=True)
class SpaceDef:
    """What a lowering searches: its knobs (in suggestion order), hand-written starting points
    (complete knob assignments, enqueued before the sampler takes over) and the constraints
    between knobs, in words (the checks themselves are the schedule record's)."""

    knobs: tuple[Knob, ...]
    experts: tuple[dict[str, Any], ...] = ()
    constraints: tuple[str, ...] = ()


class SpaceSize(NamedTuple):
    total: int  # distinct schedules (after normalisation)
    valid: int  # of which pass the static checks for the workload


__all__ = ["Knob", "Params", "SpaceDef", "SpaceSize", "same_value", "tile_grid"]
