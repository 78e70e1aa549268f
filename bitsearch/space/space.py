"""The schedule space: knobs declared once, with their domains, the conditions under which they
exist, and the static constraints between them (delegated to ``Schedule.check``).

Suggestion is define-by-run: a knob that only exists under some strategy (``nibble_split`` under
``popcount="lut"``) is only suggested there, so Optuna never wastes a dimension on it.

Example:
    >>> import bitsearch as bs
    >>> space = bs.Space(bs.Dense(256, 256, 512), fixed={"popcount": "lut", "acc_bits": 8})
    >>> space.size().valid > 300
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from bitsearch.space.schedule import (
    ACC_BITS,
    K_UNROLLS,
    LOOP_ORDERS,
    POPCOUNTS,
    Schedule,
    default_schedule,
)
from bitsearch.workloads import Dense

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Knob:
    """One dimension of the space. ``when`` says whether it exists given the knobs before it."""

    name: str
    choices: tuple[Any, ...]
    doc: str
    when: Callable[[Params], bool] | None = None
    when_doc: str = ""

    @property
    def is_int_range(self) -> bool:
        """Consecutive integers: suggested with ``suggest_int`` so samplers see their order."""
        c = self.choices
        return all(type(v) is int for v in c) and list(c) == list(range(c[0], c[0] + len(c)))

    def applies(self, params: Params) -> bool:
        return self.when is None or self.when(params)

    def suggest(self, trial: Any) -> Any:
        if self.is_int_range:
            return trial.suggest_int(self.name, self.choices[0], self.choices[-1])
        return trial.suggest_categorical(self.name, list(self.choices))


DENSE_X86_KNOBS: tuple[Knob, ...] = (
    Knob("popcount", POPCOUNTS, "popcount strategy: VPSHUFB nibble look-up, Harley-Seal CSA, POPCNT"),
    Knob("mr", tuple(range(1, 7)), "register tile rows (rows of x per tile)"),
    Knob("nr", tuple(range(1, 13)), "register tile columns (rows of w per tile)"),
    Knob("k_unroll", K_UNROLLS, "K blocks per inner-loop iteration"),
    Knob("acc_bits", ACC_BITS, "vector lane width of the accumulators (8 = widened by VPSADBW)",
         when=lambda p: p["popcount"] != "scalar", when_doc="popcount != scalar"),
    Knob("nibble_split", (True, False), "operands packed as split nibbles",
         when=lambda p: p["popcount"] == "lut", when_doc="popcount == lut"),
    Knob("layout", ("plane_major", "interleaved"), "bit-plane layout of the packed operands"),
    Knob("loop_order", LOOP_ORDERS, "mn: column tiles innermost; nm: row tiles innermost"),
    Knob("nc", (0, 4, 8, 16, 32), "column cache block in tiles (0 = none)",
         when=lambda p: p["loop_order"] == "mn", when_doc="loop_order == mn"),
)

# Hand-written starting points, enqueued before the sampler takes over.
EXPERT_DENSE_X86: tuple[dict[str, Any], ...] = (
    {"popcount": "lut", "mr": 2, "nr": 4, "k_unroll": 1, "acc_bits": 8, "nibble_split": False},
    {"popcount": "lut", "mr": 2, "nr": 3, "k_unroll": 4, "acc_bits": 8, "nibble_split": True},
    {"popcount": "csa", "mr": 1, "nr": 4, "k_unroll": 2, "acc_bits": 8},
    {"popcount": "scalar", "mr": 2, "nr": 3, "k_unroll": 4},
)


class SpaceSize(NamedTuple):
    total: int  # distinct schedules (after normalisation)
    valid: int  # of which pass the static checks for the workload


class Space:
    """The schedules of ``workload`` on ``target``, optionally restricted by ``fixed`` knobs."""

    def __init__(
        self,
        workload: Dense,
        *,
        target: str = "x86_64-avx2",
        fixed: Params | None = None,
    ) -> None:
        if not isinstance(workload, Dense):
            raise ValueError(f"no schedule space for {type(workload).__name__} on {target}")
        if target != "x86_64-avx2":
            raise ValueError(f"no schedule space for target {target!r}")
        self.workload = workload
        self.target = target
        self.schedule_type = Schedule
        self.knobs = DENSE_X86_KNOBS
        self.fixed = dict(fixed or {})
        names = {k.name for k in self.knobs}
        for name, value in self.fixed.items():
            if name not in names:
                raise ValueError(f"unknown knob {name!r}; knobs: {', '.join(sorted(names))}")
            knob = next(k for k in self.knobs if k.name == name)
            if value not in knob.choices:
                raise ValueError(f"knob {name} has no value {value!r}; choices: {list(knob.choices)}")

    # -- one schedule ----------------------------------------------------------------------------
    def schedule(self, params: Params) -> Schedule:
        """The normalised schedule of a (possibly partial) parameter assignment."""
        known = {f.name for f in fields(self.schedule_type)}
        return self.schedule_type(**{k: v for k, v in params.items() if k in known}).normalized()

    def suggest(self, trial: Any) -> Schedule:
        """Define-by-run: suggest each applicable knob (fixed ones are not suggested)."""
        params: dict[str, Any] = {}
        for knob in self.knobs:
            if not knob.applies(params):
                continue
            params[knob.name] = self.fixed[knob.name] if knob.name in self.fixed else knob.suggest(trial)
        return self.schedule(params)

    def invalid_reason(self, schedule: Schedule) -> str | None:
        """Why ``schedule`` cannot run this workload, or None if it can."""
        try:
            schedule.check(self.workload)
        except ValueError as exc:
            return str(exc)
        return None

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
            values = [self.fixed[knob.name]] if knob.name in self.fixed else knob.choices
            for value in values:
                params[knob.name] = value
                yield from walk(i + 1, params)
                del params[knob.name]

        yield from walk(0, {})

    def enumerate(self, *, valid_only: bool = True) -> Iterator[Schedule]:
        """Every distinct (normalised) schedule, in a fixed order."""
        seen: set[Schedule] = set()
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

    def default(self) -> Schedule:
        return default_schedule(self.workload)

    def experts(self) -> list[dict[str, Any]]:
        """Parameters of the default and the hand-written schedules, for ``enqueue_trial``."""
        out = []
        for params in ({**self.default().to_dict()}, *EXPERT_DENSE_X86):
            merged = {**params, **self.fixed}
            if self.invalid_reason(self.schedule(merged)) is None and merged not in out:
                out.append(merged)
        return out

    def constraints(self) -> list[str]:
        return [
            "register tile within 16 ymm: lut mr*nr + mr*(2 if nibble_split else 1) + 4 (+1/2 for "
            "acc_bits 16/32/64); csa 2*mr*nr + 5; scalar mr*nr <= 6 GPR accumulators",
            "acc_bits 16/32/64 only where K*(2^a-1)*(2^w-1) fits the lanes; 8 is widened by VPSADBW "
            "before it can overflow",
            "nibble_split only with popcount=lut; nc only with loop_order=mn",
        ]

    def describe(self) -> dict[str, Any]:
        size = self.size()
        return {
            "workload": self.workload.to_dict(),
            "target": self.target,
            "knobs": [
                {"name": k.name, "choices": list(k.choices), "doc": k.doc,
                 **({"when": k.when_doc} if k.when_doc else {}),
                 **({"fixed": self.fixed[k.name]} if k.name in self.fixed else {})}
                for k in self.knobs
            ],
            "constraints": self.constraints(),
            "size": {"total": size.total, "valid": size.valid},
        }

