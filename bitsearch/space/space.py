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
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

from bitsearch.space.int_schedule import (
    FORMULATIONS,
    INT_K_UNROLLS,
    INT_LOOP_ORDERS,
    IntSchedule,
    default_int_schedule,
)
from bitsearch.space.schedule import (
    ACC_BITS,
    K_UNROLLS,
    LOOP_ORDERS,
    TARGET_POPCOUNTS,
    YMM_REGISTERS,
    Schedule,
    default_schedule,
)
from bitsearch.workloads import Dense, IntDense

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


def _tile_fits(params: Params, mr: int, nr: int) -> bool:
    probe = Schedule(mr=mr, nr=nr, popcount=params["popcount"], acc_bits=params.get("acc_bits", 8),
                     nibble_split=params.get("nibble_split", False))
    return probe.register_problem() is None


def _tile_grid(rows: int, cols: int) -> tuple[str, ...]:
    return tuple(f"{mr}x{nr}" for mr in range(1, rows + 1) for nr in range(1, cols + 1))


def _tile_rows(params: Params) -> tuple[int, ...]:
    return tuple(mr for mr in range(1, 7) if any(_tile_fits(params, mr, nr) for nr in range(1, 12)))


def _tile_cols(params: Params) -> tuple[int, ...]:
    return tuple(nr for nr in range(1, 12) if _tile_fits(params, params["mr"], nr))


def _tile_condition(params: Params) -> str:
    parts = [params["popcount"]]
    if params.get("nibble_split"):
        parts.append("split")
    if params["popcount"] != "scalar" and params.get("acc_bits", 8) != 8:
        parts.append(f"acc{params['acc_bits']}")
    return ",".join(parts)


def _dense_knobs(target: str) -> tuple[Knob, ...]:
    return (Knob("popcount", TARGET_POPCOUNTS[target], "popcount strategy: VPSHUFB nibble look-up, "
                 "Harley-Seal CSA, POPCNT (and VPOPCNTQ with AVX-512)"), *DENSE_X86_KNOBS[1:])


DENSE_X86_KNOBS: tuple[Knob, ...] = (
    Knob("popcount", TARGET_POPCOUNTS["x86_64-avx2"],
         "popcount strategy: VPSHUFB nibble look-up, Harley-Seal CSA, POPCNT"),
    Knob("acc_bits", ACC_BITS, "vector lane width of the accumulators (8 = widened by VPSADBW)",
         when=lambda p: p["popcount"] in ("lut", "csa"), when_doc="popcount in (lut, csa)",
         depends=("popcount",)),
    Knob("nibble_split", (True, False), "operands packed as split nibbles",
         when=lambda p: p["popcount"] == "lut", when_doc="popcount == lut", depends=("popcount",)),
    # The register tile as two ordered integers per strategy (mr, then the nr that fit with it),
    # so TPE can model neighbourhoods: measured on the 320-schedule subspace, it reached 5 % of
    # the optimum in a median of 15 trials this way and 34 with one categorical "MRxNR" knob.
    Knob("mr", tuple(range(1, 7)), "register tile rows (rows of x), those that fit the register "
         "file of the strategy", domain=_tile_rows, condition=_tile_condition),
    Knob("nr", tuple(range(1, 12)), "register tile columns (rows of w) that fit with mr",
         domain=_tile_cols, condition=lambda p: f"{_tile_condition(p)},mr={p['mr']}"),
    Knob("k_unroll", K_UNROLLS, "K blocks per inner-loop iteration"),
    Knob("layout", ("plane_major", "interleaved"), "bit-plane layout of the packed operands"),
    Knob("loop_order", LOOP_ORDERS, "mn: column tiles innermost; nm: row tiles innermost"),
    Knob("nc", (0, 4, 8, 16, 32), "column cache block in tiles (0 = none)",
         when=lambda p: p["loop_order"] == "mn", when_doc="loop_order == mn", depends=("loop_order",)),
)

# Hand-written starting points, enqueued before the sampler takes over.
EXPERT_DENSE_X86: tuple[dict[str, Any], ...] = (
    {"popcount": "lut", "mr": 2, "nr": 4, "k_unroll": 1, "acc_bits": 8, "nibble_split": False},
    {"popcount": "lut", "mr": 2, "nr": 3, "k_unroll": 4, "acc_bits": 8, "nibble_split": True},
    {"popcount": "csa", "mr": 1, "nr": 4, "k_unroll": 2, "acc_bits": 8},
    {"popcount": "scalar", "mr": 2, "nr": 3, "k_unroll": 4},
)


# Integer baselines: the tile domain depends on the formulation and the element type.
INT_TILES = _tile_grid(8, 8)


def _int_tiles(dtype: str) -> Callable[[Params], tuple[str, ...]]:
    def domain(params: Params) -> tuple[str, ...]:
        def fits(tile: str) -> bool:
            mr, nr = map(int, tile.split("x"))
            probe = IntSchedule(formulation=params["formulation"], mr=mr, nr=nr)
            return probe.ymm_registers(dtype) <= YMM_REGISTERS
        return tuple(t for t in INT_TILES if fits(t))
    return domain


def _int_knobs(dtype: str) -> tuple[Knob, ...]:
    return (
        Knob("formulation", FORMULATIONS, "broadcast: w in column panels, x broadcast, no horizontal "
             "sums; dot: row-by-row dot products with one horizontal sum per output"),
        Knob("tile", INT_TILES, "register tile MRxNR (broadcast: NR vectors of 8 columns)",
             domain=_int_tiles(dtype), condition=lambda p: p["formulation"]),
        Knob("k_unroll", INT_K_UNROLLS, "K steps per inner-loop iteration"),
        Knob("loop_order", INT_LOOP_ORDERS, "mn: column tiles innermost; nm: row tiles innermost"),
        Knob("kc", (0, 256, 512), "K cache block in elements (0 = none)"),
    )


@dataclass(frozen=True)
class SpaceDef:
    """What a (workload kind, target) pair searches: knobs, schedule record, starting points."""

    knobs: tuple[Knob, ...]
    schedule_type: type
    default: Callable[[Any], Any]
    experts: tuple[dict[str, Any], ...]
    constraints: tuple[str, ...]


DENSE_X86 = SpaceDef(
    knobs=DENSE_X86_KNOBS, schedule_type=Schedule, default=default_schedule, experts=EXPERT_DENSE_X86,
    constraints=(
        "register tile within 16 ymm: lut mr*nr + mr*(2 if nibble_split else 1) + 4 (+1/2 for "
        "acc_bits 16/32/64); csa 2*mr*nr + 5; scalar mr*nr <= 6 GPR accumulators",
        "acc_bits 16/32/64 only where K*(2^a-1)*(2^w-1) fits the lanes; 8 is widened by VPSADBW "
        "before it can overflow",
        "nibble_split only with popcount=lut; nc only with loop_order=mn",
    ),
)


def _int_def(dtype: str) -> SpaceDef:
    return SpaceDef(
        knobs=_int_knobs(dtype), schedule_type=IntSchedule, default=default_int_schedule,
        experts=({"formulation": "broadcast", "tile": "4x2", "k_unroll": 2, "loop_order": "mn", "kc": 0},
                 {"formulation": "dot", "tile": "2x4", "k_unroll": 1, "loop_order": "mn", "kc": 0}),
        constraints=("register tile within 16 ymm: broadcast mr*nr + nr + 2 (+1 for int8); "
                     "dot mr*nr + mr + 2 (+1 for int8)",),
    )


def space_def(workload: Any, target: str) -> SpaceDef:
    if target not in TARGET_POPCOUNTS:
        raise ValueError(f"no schedule space for target {target!r}")
    if isinstance(workload, Dense):
        return DENSE_X86 if target == "x86_64-avx2" else replace(DENSE_X86, knobs=_dense_knobs(target))
    if isinstance(workload, IntDense):
        return _int_def(workload.dtype)
    raise ValueError(f"no schedule space for {type(workload).__name__} on {target}")


class SpaceSize(NamedTuple):
    total: int  # distinct schedules (after normalisation)
    valid: int  # of which pass the static checks for the workload


class Space:
    """The schedules of ``workload`` on ``target``, optionally restricted by ``fixed`` knobs."""

    def __init__(
        self,
        workload: Dense | IntDense,
        *,
        target: str = "x86_64-avx2",
        fixed: Params | None = None,
    ) -> None:
        self.definition = space_def(workload, target)
        self.workload = workload
        self.target = target
        self.schedule_type = self.definition.schedule_type
        self.knobs = self.definition.knobs
        self.fixed = dict(fixed or {})
        names = {k.name for k in self.knobs}
        for name, value in self.fixed.items():
            if name not in names:
                raise ValueError(f"unknown knob {name!r}; knobs: {', '.join(sorted(names))}")
            knob = next(k for k in self.knobs if k.name == name)
            if not any(type(value) is type(c) and value == c for c in knob.choices):
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
        schedule = self.schedule_type(**{k: v for k, v in params.items() if k in known}).normalized()
        if isinstance(schedule, IntSchedule) and schedule.kc >= self.workload.k:
            schedule = replace(schedule, kc=0)  # one K block is no blocking: measure it once
        return schedule

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
        """Why ``schedule`` cannot run this workload, or None if it can."""
        try:
            schedule.check(self.workload, self.target)
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
        return self.definition.default(self.workload, self.target)

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

