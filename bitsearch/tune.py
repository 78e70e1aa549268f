"""Optuna glue: the tuning loop, study storage, de-duplication, seeding and best-kernel loading.

Every trial is one schedule: suggested define-by-run from the :class:`~bitsearch.space.Space`,
rejected with its reason if statically invalid, otherwise built, verified bit for bit and timed.
The study stores the schedule, the error class and the timing statistics of every trial as user
attributes, so a study is a complete record that ``optuna-dashboard`` can open.

Example:
    >>> import bitsearch as bs
    >>> res = bs.tune(bs.Dense(64, 64, 256), trials=3, storage="sqlite:///:memory:", progress=False)
    >>> res.best_seconds > 0 and res.best_schedule is not None
    True
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bitsearch.asm.kernel import Kernel
from bitsearch.build import build
from bitsearch.lowerings import OPERATORS, SCHEDULE_TYPES, Space, lowering_for, lowering_named
from bitsearch.measure import (
    BuildResult,
    MeasureInput,
    MeasureResult,
    Verifier,
    build_candidate,
    run_candidate,
)
from bitsearch.records import Timing
from bitsearch.runners import make_runner
from bitsearch.runners.base import BaseRunner
from bitsearch.targets import get_target

DEFAULT_STORAGE = "sqlite:///studies/bitsearch.db"
SAMPLERS: tuple[str, ...] = ("tpe", "random", "cmaes", "gp")


def storage_url(storage: str | None, *, create: bool = False) -> str:
    """An Optuna storage URL; ``None`` is the embedded default under ./studies/, and a plain
    path ``studies/x.db`` means that SQLite file. ``create`` makes the directory of a SQLite
    file; without it a missing SQLite file is a ``ValueError`` (reading must not create one)."""
    url = storage or DEFAULT_STORAGE
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.exists():
            raise ValueError(f"no study storage at {url} (tune first, or pass --storage)")
    return url


def default_study_name(workload: Any, target: str) -> str:
    """The study ``tune`` uses for ``workload`` on ``target`` unless told another."""
    return workload.study_name(get_target(target).name)


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """``tpe`` (default), ``random``, ``cmaes`` (needs the cmaes package), ``gp`` (needs torch
    and scipy: the ``peers`` extra)."""
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate/group are "experimental" since 2.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ValueError("the cmaes sampler needs the 'cmaes' package (pip install cmaes)") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import scipy  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            raise ValueError("the gp sampler needs torch and scipy (pip install -e .[peers])") from None
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}")


@dataclass
class TuneResult:
    """What a tuning run found; ``study`` is the optuna.Study with every trial."""

    study: optuna.Study
    workload: Any
    target: str
    best_schedule: Any
    best_seconds: float | None

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        return best_trial(self.study)

    def to_dict(self) -> dict[str, Any]:
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        errors: dict[str, int] = {}
        for t in trials:
            outcome = t.user_attrs.get("error", t.state.name)
            errors[outcome] = errors.get(outcome, 0) + 1
        best = self.best_trial
        return {
            "study": self.study.study_name,
            "workload": self.workload.to_dict(),
            "target": self.target,
            "trials": len(trials),
            "outcomes": errors,
            "best_schedule": self.best_schedule.to_dict() if self.best_schedule else None,
            "best_seconds": self.best_seconds,
            "best_macs_per_s": best.user_attrs.get("macs_per_s") if best else None,
            "best_bit_macs_per_s": best.user_attrs.get("bit_macs_per_s") if best else None,
            "best_trial": best.number if best else None,
        }


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The fastest verified trial of a study, or None."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return min(done, key=lambda t: t.value) if done else None


def _result_attrs(result: MeasureResult) -> dict[str, Any]:
    attrs = {k: v for k, v in result.to_dict().items() if k not in ("workload", "schedule", "target")}
    if not attrs.get("message"):
        attrs.pop("message", None)
    else:
        attrs["message"] = attrs["message"][:2000]
    return attrs


def _open_study(workload: Any, target: str, storage: str, name: str,
                sampler: optuna.samplers.BaseSampler, space: Space) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                direction="minimize", load_if_exists=True)
    attrs = study.user_attrs
    if "workload" in attrs:
        if attrs["workload"] != workload.to_dict() or attrs.get("target") != target:
            raise ValueError(
                f"study {name!r} in {storage} tunes {attrs['workload']} on {attrs.get('target')}, "
                f"not {workload.to_dict()} on {target}; choose another --study"
            )
        if attrs.get("lowering", space.lowering.name) != space.lowering.name:
            raise ValueError(f"study {name!r} in {storage} searches lowering {attrs['lowering']}, not "
                             f"{space.lowering.name}; choose another --study")
    else:
        study.set_user_attr("workload", workload.to_dict())
        study.set_user_attr("target", target)
        study.set_user_attr("schedule_type", space.schedule_type.__name__)
        study.set_user_attr("lowering", space.lowering.name)
        study.set_user_attr("objective", "median seconds per call (activation packing included)")
    return study


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]tune"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=Console(stderr=True),
                  transient=False) as bar:
        bar.task = bar.add_task("", total=total)
        yield bar


def tune(
    workload: Any,
    target: str = "x86_64-avx2",
    trials: int = 50,
    storage: str | None = None,
    study_name: str | None = None,
    *,
    sampler: str = "tpe",
    seed: int | None = None,
    runner: BaseRunner | str | None = None,
    fixed: dict[str, Any] | None = None,
    progress: bool = True,
    arithmetic: str | None = None,
) -> TuneResult:
    """Search the schedule space of ``workload`` for ``trials`` more trials.

    The study lives in ``storage`` (an Optuna URL; default an SQLite file under ./studies/) as
    ``study_name`` (default derived from the workload and target) and resumes where it stopped.
    The default and a few hand-written schedules are tried first in a new study; a schedule that
    was measured before (in this run or a stored one) is not measured again. ``fixed`` pins knobs;
    ``arithmetic`` picks the lowering (None: the default one of the workload and target).
    ``runner`` is a runner or its spec (``"local"``, ``"model"``, ``"ssh://user@host"``, see
    :func:`bitsearch.runners.make_runner`). A runner with emulated times (qemu) is refused; a
    modeled one (``"model"``: llvm-mca seconds) gets its own default study (name + ``-model``)
    and a study never mixes modeled and measured trials.
    """
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    arch = get_target(target).arch
    if isinstance(runner, str):
        runner = make_runner(runner, arch)
    runner = runner or make_runner("local", arch)
    if runner.timing is Timing.EMULATED:
        raise ValueError(
            f"{runner!r} times code under an emulator, which is not a speed: tune with runner "
            "'model' (exact verification, llvm-mca modeled seconds) or on the real CPU (ssh://user@host)")
    timing = runner.timing.value
    space = Space(workload, target=target, fixed=fixed, arithmetic=arithmetic)
    url = storage_url(storage, create=True)
    default_arithmetic = lowering_for(workload, target) is space.lowering
    name = study_name or (default_study_name(workload, target)
                          + ("" if default_arithmetic else f"-{space.lowering.arithmetic}")
                          + ("-model" if timing == "modeled" else ""))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(workload, target, url, name, make_sampler(sampler, seed), space)
    recorded = study.user_attrs.get("timing", "measured" if study.get_trials(deepcopy=False) else None)
    if recorded is None:
        study.set_user_attr("timing", timing)
        if timing == "modeled":
            study.set_user_attr("objective", "llvm-mca modeled seconds per call (activation packing "
                                "included); verified bit for bit")
    elif recorded != timing:
        raise ValueError(f"study {name!r} holds {recorded} times, this runner's are {timing}; "
                         "choose another --study")
    verifier = Verifier(workload)
    import peachpy.x86_64  # noqa: F401 -- its first import is not any one trial's overhead

    known: dict[str, tuple[float | None, dict[str, Any], int]] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("schedule")
        if key and t.state in (TrialState.COMPLETE, TrialState.FAIL) and key not in known:
            known[key] = (t.value, dict(t.user_attrs), t.number)
    if not study.get_trials(deepcopy=False):
        for params in space.experts():
            study.enqueue_trial(params, skip_if_exists=True)

    with _progress(progress, trials) as bar:
        for _ in range(trials):
            start = time.perf_counter()
            trial = study.ask()
            try:
                schedule = space.suggest(trial)
                key = schedule.to_json()
                trial.set_user_attr("schedule", key)
                measure_seconds = 0.0
                if key in known:
                    value, attrs, number = known[key]
                    attrs = {k: v for k, v in attrs.items() if k not in ("duplicate_of", "overhead_s")}
                    attrs["duplicate_of"] = number
                else:
                    built = build_candidate(MeasureInput(workload, schedule, target))
                    t0 = time.perf_counter()
                    result = run_candidate(built, runner, verifier=verifier)
                    if result.emulated:
                        raise ValueError(f"{runner!r} returned emulated times: not a speed")
                    measure_seconds = time.perf_counter() - t0
                    value = result.stats.median if result.ok else None
                    attrs = _result_attrs(result)
                    known[key] = (value, attrs, trial.number)
                for k, v in attrs.items():
                    trial.set_user_attr(k, v)
                trial.set_user_attr("overhead_s", time.perf_counter() - start - measure_seconds)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
            if bar is not None:
                best = best_trial(study)
                text = "no valid schedule yet" if best is None else (
                    f"best {best.value * 1e3:.3f} ms, trial {best.number}")
                bar.update(bar.task, advance=1, description=text)

    best = best_trial(study)
    return TuneResult(
        study=study, workload=workload, target=target,
        best_schedule=space.schedule_type.from_json(best.user_attrs["schedule"]) if best else None,
        best_seconds=best.value if best else None,
    )


def load_study(study_name: str, storage: str | None = None) -> optuna.Study:
    try:
        url = storage_url(storage)
    except ValueError as exc:
        raise ValueError(f"no study named {study_name!r}: {exc}") from None
    try:
        return optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        raise ValueError(f"no study named {study_name!r} in {url}") from None


def study_workload(study: optuna.Study) -> tuple[Any, str]:
    """The workload and target a study tunes (as ``tune`` recorded them)."""
    attrs = study.user_attrs
    if "workload" not in attrs:
        raise ValueError(f"study {study.study_name!r} was not made by bitsearch.tune")
    spec = dict(attrs["workload"])
    op = spec.pop("op")
    if op not in OPERATORS:
        raise ValueError(f"study {study.study_name!r} holds an unknown operator {op!r}")
    return OPERATORS[op].from_dict(spec), attrs["target"]


def study_schedule_type(study: optuna.Study) -> type:
    """The schedule record of a study's trials: its lowering's (or, in studies older than the
    registry, the recorded type name)."""
    attrs = study.user_attrs
    if "lowering" in attrs:
        return lowering_named(attrs["lowering"]).schedule_type
    name = attrs.get("schedule_type", "Schedule")
    if name not in SCHEDULE_TYPES:
        raise ValueError(f"study {study.study_name!r} holds schedules of an unknown type {name!r}")
    return SCHEDULE_TYPES[name]


def load(study_name: str, storage: str | None = None) -> Kernel:
    """The kernel of the best (fastest verified) trial of a stored study.

    Example:
        >>> import bitsearch as bs
        >>> url = "sqlite:////tmp/bitsearch-doctest.db"
        >>> _ = bs.tune(bs.Dense(32, 32, 128), trials=2, storage=url, study_name="doc", progress=False)
        >>> bs.load("doc", url).workload
        Dense(m=32, n=32, k=128, abits=1, wbits=1, mode='and')
    """
    study = load_study(study_name, storage)
    workload, target = study_workload(study)
    best = best_trial(study)
    if best is None:
        raise ValueError(f"study {study_name!r} has no successful trial yet")
    return build(workload, study_schedule_type(study).from_json(best.user_attrs["schedule"]), target)


__all__ = ["DEFAULT_STORAGE", "SAMPLERS", "BuildResult", "TuneResult", "best_trial",
           "default_study_name", "load", "load_study", "make_sampler", "storage_url", "study_schedule_type",
           "study_workload", "tune"]
