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

from bitsearch.space.fp8_schedule import Fp8Schedule
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
from bitsearch.workloads import Conv2d, Dense, Fp8Dense, IntConv2d, IntDense

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


# AArch64 Cortex-A53 (NEON): its own knobs and schedule records (NeonSchedule; IntSchedule 'dot').
def _neon_tile_fits(params: Params, mr: int, nr: int) -> bool:
    from bitsearch.space.schedule import NeonSchedule

    probe = NeonSchedule(mr=mr, nr=nr, reduction=params["reduction"], chains=params["chains"])
    return probe.register_problem() is None


def _neon_condition(params: Params) -> str:
    return f"{params['reduction']},chains={params['chains']}"


def _neon_dense_def() -> SpaceDef:
    from bitsearch.space.schedule import (
        NEON_CHAINS,
        NEON_K_UNROLLS,
        NEON_REDUCTIONS,
        NEON_VECTOR_BITS,
        NeonSchedule,
        default_neon_schedule,
    )

    knobs = (
        Knob("vector_bits", NEON_VECTOR_BITS, "64 = D forms, 128 = Q forms (one op per 128 bit-MACs)"),
        Knob("reduction", NEON_REDUCTIONS, "how byte counters are flushed every <= 31 blocks: ADDP "
             "tree, UADALP into 16-bit lanes, or UADDLV per output"),
        Knob("chains", NEON_CHAINS, "temporaries of the software-pipelined AND->CNT->ADD stream"),
        Knob("mr", tuple(range(1, 9)), "register tile rows that fit 32 NEON registers",
             domain=lambda p: tuple(mr for mr in range(1, 9)
                                    if any(_neon_tile_fits(p, mr, nr) for nr in range(1, 9))),
             condition=_neon_condition),
        Knob("nr", tuple(range(1, 9)), "register tile columns that fit with mr",
             domain=lambda p: tuple(nr for nr in range(1, 9) if _neon_tile_fits(p, p["mr"], nr)),
             condition=lambda p: f"{_neon_condition(p)},mr={p['mr']}"),
        Knob("k_unroll", NEON_K_UNROLLS, "K blocks per inner-loop iteration (one pipelined stream)"),
        Knob("short_k", (True, False), "whole K as one straight-line scheduled block per tile when "
             "it fits the 8-bit counters (<= 31 chunks of 128 bits); False: the windowed K loop"),
    )
    return SpaceDef(
        knobs=knobs, schedule_type=NeonSchedule, default=default_neon_schedule,
        experts=({"vector_bits": 128, "reduction": "addp", "chains": 8, "mr": 3, "nr": 4, "k_unroll": 8,
                  "short_k": True},
                 {"vector_bits": 128, "reduction": "uaddlv", "chains": 4, "mr": 2, "nr": 4, "k_unroll": 4,
                  "short_k": True}),
        constraints=("NEON registers: mr*nr byte counters (+ mr*nr 16-bit for uadalp) + mr + nr + "
                     "chains <= 32 (32-bit column sums go to the stack when they do not fit); "
                     "mr + nr <= 12 row pointers",
                     "uadalp only while K needs <= 4095 blocks (16-bit lanes)"),
    )


def _neon_int_def() -> SpaceDef:
    def tiles(params: Params) -> tuple[str, ...]:
        del params
        return tuple(t for t in _tile_grid(8, 8) if IntSchedule(
            formulation="dot", mr=int(t.split("x")[0]), nr=int(t.split("x")[1])).neon_registers() <= 32
            and sum(map(int, t.split("x"))) <= 12)

    knobs = (
        Knob("formulation", ("dot",), "SMLAL/SMLAL2 dot products (the only A53 formulation)"),
        Knob("tile", INT_TILES, "register tile MRxNR of .4s accumulators", domain=tiles),
        Knob("k_unroll", INT_K_UNROLLS, "K steps of 8 int16 per inner-loop iteration"),
        Knob("loop_order", ("mn",), "column tiles innermost"),
    )
    return SpaceDef(
        knobs=knobs, schedule_type=IntSchedule, default=default_int_schedule,
        experts=({"formulation": "dot", "tile": "2x4", "k_unroll": 2, "loop_order": "mn"},),
        constraints=("NEON registers: mr*nr + mr + nr <= 32; int16 only",),
    )


def space_def(workload: Any, target: str) -> SpaceDef:
    if target == "aarch64-cortex-a53":
        if isinstance(workload, Dense):
            return _neon_dense_def()
        if isinstance(workload, IntDense) and workload.dtype == "int16":
            return _neon_int_def()
        raise ValueError(f"no schedule space for {workload} on {target}")
    if target not in TARGET_POPCOUNTS:
        raise ValueError(f"no schedule space for target {target!r}")
    if isinstance(workload, Fp8Dense):
        return _fp8_def(workload, target)
    if isinstance(workload, Conv2d | IntConv2d):
        return _conv_def(workload, target)
    if isinstance(workload, Dense):
        return DENSE_X86 if target == "x86_64-avx2" else replace(DENSE_X86, knobs=_dense_knobs(target))
    if isinstance(workload, IntDense):
        return _int_def(workload.dtype)
    raise ValueError(f"no schedule space for {type(workload).__name__} on {target}")


def _fp8_def(workload: Any, target: str) -> SpaceDef:
    """FP8 GEMM: where the weights are decoded, then a register tile that fits with it."""
    from bitsearch.space.fp8_schedule import (
        FP8_DECODES,
        FP8_K_UNROLLS,
        FP8_LOOP_ORDERS,
        Fp8Schedule,
        default_fp8_schedule,
        vector_registers,
    )

    def tiles(params: Params) -> tuple[str, ...]:
        def fits(tile: str) -> bool:
            mr, nr = map(int, tile.split("x"))
            probe = Fp8Schedule(decode=params["decode"], mr=mr, nr=nr)
            return probe.ymm_registers(workload.wfmt) <= vector_registers(target, nr) and mr <= workload.m
        return tuple(t for t in _tile_grid(8, 8) if fits(t)) or ("1x1",)

    knobs = (
        Knob("decode", FP8_DECODES, "kernel: weight panels hold FP8 bytes, decoded in the inner loop; "
             "pack: decoded to FP32 panels when the weights are packed"),
        Knob("tile", _tile_grid(8, 8), "register tile MRxNR (NR vectors of 8 output columns)",
             domain=tiles, condition=lambda p: p["decode"]),
        Knob("k_unroll", FP8_K_UNROLLS, "K steps per inner-loop iteration"),
        Knob("loop_order", FP8_LOOP_ORDERS, "mn: column panels innermost; nm: row tiles innermost"),
        Knob("kc", (0, 128, 256, 512), "K cache block in elements (0 = none)"),
    )
    return SpaceDef(
        knobs=knobs, schedule_type=Fp8Schedule, default=default_fp8_schedule,
        experts=({"decode": "kernel", "tile": "1x7" if workload.wfmt == "e5m2" else "1x6",
                  "k_unroll": 4, "loop_order": "mn", "kc": 0},
                 {"decode": "pack", "tile": f"{min(4, workload.m)}x3", "k_unroll": 4, "loop_order": "nm",
                  "kc": 256},
                 {"decode": "kernel", "tile": f"{min(4, workload.m)}x2", "k_unroll": 2, "loop_order": "nm",
                  "kc": 256}),
        constraints=("register tile within 16 ymm (x86_64-avx512 with nr >= 2: 32 zmm): mr*nr + nr + 1, "
                     "plus 1 (E5M2) or 3 (E4M3) with decode=kernel; mr <= m",),
    )


def _conv_def(workload: Any, target: str) -> SpaceDef:
    """Convolutions: the lowering, then the knobs of the GEMM it lowers to (x86-64 only)."""
    from bitsearch.space.conv_schedule import (
        LOWERINGS,
        ROW_BLOCKS,
        ConvSchedule,
        IntConvSchedule,
        default_conv_schedule,
        default_int_conv_schedule,
    )

    if not target.startswith("x86_64"):
        raise ValueError(f"no convolution schedule space for target {target!r} (x86-64 only)")
    if isinstance(workload, IntConv2d):
        base = _int_def("int16")
        return SpaceDef(
            knobs=tuple(k for k in base.knobs if k.name != "kc"), schedule_type=IntConvSchedule,
            default=default_int_conv_schedule,
            experts=tuple({k: v for k, v in e.items() if k != "kc"} for e in base.experts),
            constraints=(*base.constraints, "kc = 0: the im2col rows are written whole"))
    dense = space_def(Dense(1, 1, 1), target)
    lowering = Knob("lowering", LOWERINGS, "im2col: gather packed pixels into GEMM rows (taps packed "
                    "densely in 64-bit granules); implicit: the GEMM walks the taps through offsets "
                    "into the packed image, no copy, each tap padded to whole popcount blocks")
    row_block = Knob("row_block", ROW_BLOCKS, "output rows swept per tile of channels",
                     when=lambda p: p["lowering"] == "implicit" and p["loop_order"] == "nm",
                     when_doc="lowering == implicit and loop_order == nm",
                     depends=("lowering", "loop_order"))
    return SpaceDef(
        knobs=(lowering, *dense.knobs, row_block), schedule_type=ConvSchedule, default=default_conv_schedule,
        experts=tuple({**e, "lowering": low} for low in LOWERINGS for e in dense.experts),
        constraints=(*dense.constraints, "implicit: popcount csa unsupported; with it mr counts "
                     "consecutive output columns and loop_order/nc do not apply"))


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
        if isinstance(schedule, IntSchedule | Fp8Schedule) and schedule.kc and schedule.kc >= self.workload.k:
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

