"""``Space``: the schedules of a workload on a target -- its lowering's knobs, walked, counted and
suggested to Optuna.

Suggestion is define-by-run: a knob that only exists under some strategy (``nibble_split`` under
``popcount="lut"``) is only suggested there, so Optuna never wastes a dimension on it. The static
constraints between knobs are the schedule record's checks (through the lowering).

Example:
    >>> import bitsearch as bs
    >>> space = bs.Space(bs.Dense(256, 256, 512), fixed={"popcount": "lut", "acc_bits": 8})
    >>> space.size().valid > 300
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from bitsearch.lowerings.registry import lowering_for
from bitsearch.space.knobs import Params, SpaceSize, same_value
from bitsearch.targets import get_target


class Space:
    """The schedules of ``workload`` on ``target`` computed with ``arithmetic`` (None: the
    default lowering's), optionally restricted by ``fixed`` knobs."""

    def __init__(self, workload: Any, *, target: str = "x86_64-avx2", fixed: Params | None = None,
                 arithmetic: str | None = None) -> None:
        self.lowering = lowering_for(workload, target, arithmetic=arithmetic)
        self.target_def = get_target(target)
        self.definition = self.lowering.space(workload, self.target_def)
        self.workload = workload
        self.target = self.target_def.name
        self.schedule_type = self.lowering.schedule_type
        self.knobs = self.definition.knobs
        self.fixed = dict(fixed or {})
        names = {k.name for k in self.knobs}
        for name, value in self.fixed.items():
            if name not in names:
                raise ValueError(f"unknown knob {name!r}; knobs: {', '.join(sorted(names))}")
            knob = next(k for k in self.knobs if k.name == name)
            if not same_value(value, knob.choices):
                raise ValueError(f"knob {name} has no value {value!r}; choices: {list(knob.choices)}")
            # A fixed knob must hold in every schedule: the knobs its existence depends on must be
            # fixed too, to values under which it exists.
            if knob.when is not None:
                loose = [d for d in knob.depends if d not in self.fixed]
                if loose:
                    raise ValueError(f"fixing {name} needs {', '.join(loose)} fixed too "
                                     f"({name} only exists when {knob.when_doc})")
                if not knob.when(self.fixed):
                    raise ValueError(f"{name} cannot be fixed here: it only exists when {knob.when_doc}")

    # -- one schedule ----------------------------------------------------------------------------
    def schedule(self, params: Params) -> Any:
        """The normalised schedule of a (possibly partial) knob assignment."""
        params = dict(params)
        if "tile" in params:
            params["mr"], params["nr"] = map(int, str(params.pop("tile")).split("x"))
        known = {f.name for f in fields(self.schedule_type)}
        schedule = self.schedule_type(**{k: v for k, v in params.items() if k in known})
        return self.lowering.normalize(schedule, self.workload)

    def suggest(self, trial: Any) -> Any:
        """Define-by-run: suggest each applicable knob (fixed ones are not suggested)."""
        params: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.applies(params):
                params[knob.name] = (self.fixed[knob.name] if knob.name in self.fixed
                                     else knob.suggest(trial, params))
        return self.schedule(params)

    def trial_params(self, knobs: Params) -> dict[str, Any]:
        """Optuna parameters (as ``enqueue_trial`` wants them) of a knob assignment."""
        params: dict[str, Any] = {}
        out: dict[str, Any] = {}
        for knob in self.knobs:
            if knob.applies(params) and knob.name in knobs:
                params[knob.name] = knobs[knob.name]
                if knob.name not in self.fixed:
                    out[knob.param_name(params)] = knobs[knob.name]
        return out

    def invalid_reason(self, schedule: Any) -> str | None:
        """Why ``schedule`` cannot run this workload, or None if it can (a schedule of another
        lowering's type is invalid here, with that reason)."""
        return self.lowering.invalid_reason(schedule, self.workload, self.target_def)

    # -- the whole space -------------------------------------------------------------------------
    def _assignments(self) -> Iterator[dict[str, Any]]:
        def walk(i: int, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(self.knobs):
                yield dict(params)
                return
            knob = self.knobs[i]
            if not knob.applies(params):
                yield from walk(i + 1, params)
                return
            values = [self.fixed[knob.name]] if knob.name in self.fixed else knob.choices_for(params)
            for value in values:
                params[knob.name] = value
                yield from walk(i + 1, params)
                del params[knob.name]

        yield from walk(0, {})

    def enumerate(self, *, valid_only: bool = True) -> Iterator[Any]:
        """Every distinct (normalised) schedule, in a fixed order."""
        seen: set[Any] = set()
        for params in self._assignments():
            schedule = self.schedule(params)
            if schedule in seen:
                continue
            seen.add(schedule)
            if not valid_only or self.invalid_reason(schedule) is None:
                yield schedule

    def size(self) -> SpaceSize:
        total = valid = 0
        for schedule in self.enumerate(valid_only=False):
            total += 1
            valid += self.invalid_reason(schedule) is None
        return SpaceSize(total, valid)

    def default(self) -> Any:
        return self.lowering.default(self.workload, self.target_def)

    def experts(self) -> list[dict[str, Any]]:
        """Optuna parameters of the default and the hand-written schedules, for ``enqueue_trial``."""
        default = self.default().to_dict()
        if any(k.name == "tile" for k in self.knobs):
            default["tile"] = f"{default.pop('mr')}x{default.pop('nr')}"
        out = []
        for knobs in (default, *self.definition.experts):
            merged = {**default, **knobs, **self.fixed}  # experts are complete schedules
            params = self.trial_params(merged)
            if self.invalid_reason(self.schedule(merged)) is None and params not in out:
                out.append(params)
        return out

    def constraints(self) -> list[str]:
        return list(self.definition.constraints)

    def describe(self) -> dict[str, Any]:
        size = self.size()
        return {
            "workload": self.workload.to_dict(),
            "target": self.target,
            "lowering": self.lowering.name,
            "knobs": [
                {"name": k.name, "choices": list(k.choices), "doc": k.doc,
                 **({"per_condition": "only the choices that fit the knobs before it are offered"}
                    if k.domain else {}),
                 **({"when": k.when_doc} if k.when_doc else {}),
                 **({"fixed": self.fixed[k.name]} if k.name in self.fixed else {})}
                for k in self.knobs
            ],
            "constraints": self.constraints(),
            "size": {"total": size.total, "valid": size.valid},
        }


__all__ = ["Space"]
