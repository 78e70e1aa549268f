"""``bs.tune`` on real Optuna storage: trial records, build errors, de-duplication, seeding with the
default and expert schedules, resuming, samplers, ``fixed`` knobs and best-kernel loading.

Small workloads and a fast runner keep every measured trial well under a second; the studies live
in SQLite files under ``tmp_path`` (and one in ``sqlite:///:memory:``).
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import bitsearch as bs
from bitsearch.records import ErrorClass, Job, RunResult
from bitsearch.runners import LocalRunner
from bitsearch.runners.base import BaseRunner

RUNNER = LocalRunner(min_time=0.002, repeats=10)
# m, n not multiples of any register tile; K not a multiple of the 256-bit block
WL = bs.Dense(48, 40, 320)
TINY = bs.Dense(32, 32, 128)
# K*(2^a-1)*(2^w-1) = 2048*15*15 >= 2^16: no 16-bit accumulator is valid for it
NARROW = bs.Dense(32, 32, 2048, abits=4, wbits=4)
TIMING_ATTRS = ("median_s", "min_s", "iqr_s", "bit_macs_per_s")


def _url(tmp_path, name: str = "studies.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def _tune(wl: bs.Dense, storage: str, study: str, trials: int, **kwargs) -> bs.TuneResult:
    kwargs.setdefault("sampler", "random")
    kwargs.setdefault("seed", 0)
    return bs.tune(wl, trials=trials, storage=storage, study_name=study, runner=RUNNER,
                   progress=False, **kwargs)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sorted(trials, key=lambda t: t.number)


def _schedule(trial: optuna.trial.FrozenTrial) -> bs.Schedule:
    return bs.Schedule.from_json(trial.user_attrs["schedule"])


def _expert_schedules(space: bs.Space) -> list[bs.Schedule]:
    return [space.suggest(optuna.trial.FixedTrial(dict(p))) for p in space.experts()]


def _assert_exact(kern: bs.Kernel, wl: bs.Dense, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, wl.wmax + 1, wl.w_shape, dtype=np.uint8)
    np.testing.assert_array_equal(kern(x, kern.pack_weights(w)), bs.reference(wl, x, w))


# ---- one run: what every trial records -------------------------------------------------------
def test_new_study_starts_with_the_experts_and_records_every_trial(tmp_path) -> None:
    url = _url(tmp_path)
    experts = _expert_schedules(bs.Space(WL))
    assert experts[0] == bs.default_schedule(WL)
    res = _tune(WL, url, "first", len(experts) + 3)
    trials = _finished(res.study)
    assert [t.number for t in trials] == list(range(len(experts) + 3))
    # the default schedule, then the hand-written ones, then the sampler
    assert [_schedule(t) for t in trials[: len(experts)]] == experts
    for t in trials[: len(experts)]:
        assert t.state is TrialState.COMPLETE, t.user_attrs  # sound schedules verify and time
    for t in trials:
        attrs = t.user_attrs
        assert {"schedule", "error", "overhead_s"} <= set(attrs), t.number
        assert _schedule(t) == _schedule(t).normalized()
        assert attrs["overhead_s"] >= 0
        if t.state is TrialState.COMPLETE:
            assert attrs["error"] == "NONE"
            assert set(TIMING_ATTRS) <= set(attrs)
            assert t.value == attrs["median_s"] > 0
            assert 0 < attrs["min_s"] <= attrs["median_s"]
            assert attrs["iqr_s"] >= 0
            assert attrs["repeats"] >= 10
            assert attrs["bit_macs_per_s"] == pytest.approx(WL.bit_macs / attrs["median_s"])
        else:
            assert attrs["error"] != "NONE" and attrs.get("message")
            assert not set(TIMING_ATTRS) & set(attrs)
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    assert res.best_seconds == best.value
    assert res.best_schedule == _schedule(best)
    assert res.best_trial.number == best.number
    summary = json.loads(json.dumps(res.to_dict()))
    assert summary["best_schedule"] == res.best_schedule.to_dict()
    assert summary["best_seconds"] == res.best_seconds
    assert summary["study"] == "first" and summary["workload"] == WL.to_dict()
    assert res.study.user_attrs["workload"] == WL.to_dict()
    assert res.study.user_attrs["target"] == "x86_64-avx2"


def test_statically_invalid_schedules_are_invalid_schedule_trials(tmp_path) -> None:
    url = _url(tmp_path)
    # every schedule of this subspace has 16-bit accumulators that NARROW overflows
    res = _tune(NARROW, url, "narrow", 4, fixed={"popcount": "lut", "acc_bits": 16})
    trials = _finished(res.study)
    assert len(trials) == 4
    for t in trials:
        assert t.state is TrialState.FAIL
        assert t.value is None
        assert t.user_attrs["error"] == "INVALID_SCHEDULE"
        assert "too narrow" in t.user_attrs["message"]
        assert _schedule(t).acc_bits == 16
        assert not set(TIMING_ATTRS) & set(t.user_attrs)
    assert res.best_schedule is None and res.best_seconds is None and res.best_trial is None
    assert res.to_dict()["outcomes"] == {"INVALID_SCHEDULE": 4}
    with pytest.raises(ValueError, match="no successful trial"):
        bs.load("narrow", url)


def test_identical_schedules_are_measured_once(tmp_path) -> None:
    url = _url(tmp_path)
    n_experts = len(bs.Space(TINY).experts())
    first = _tune(TINY, url, "dup", n_experts)  # the queue of experts is now empty
    t0 = _finished(first.study)[0]
    assert t0.state is TrialState.COMPLETE
    params = dict(t0.params)
    fresh = {**params, "layout": "interleaved", "k_unroll": 8}  # not among the experts
    known = {t.user_attrs["schedule"] for t in _finished(first.study)}
    study = optuna.load_study(study_name="dup", storage=url)
    for p in (params, fresh, fresh, params):
        study.enqueue_trial(p)
    res = _tune(TINY, url, "dup", 4)
    a, b, c, d = _finished(res.study)[n_experts:]
    # a stored schedule is not measured again: same value and statistics, pointing at the original
    for dup, original in ((a, t0), (c, b), (d, t0)):
        assert dup.user_attrs["duplicate_of"] == original.number
        assert dup.user_attrs["schedule"] == original.user_attrs["schedule"]
        assert dup.state is original.state is TrialState.COMPLETE
        assert dup.value == original.value
        for key in TIMING_ATTRS:
            assert dup.user_attrs[key] == original.user_attrs[key]
    # the fresh schedule was measured once, in this run
    assert b.user_attrs["schedule"] not in known
    assert "duplicate_of" not in b.user_attrs
    assert _schedule(b).layout == "interleaved" and _schedule(b).k_unroll == 8


def test_duplicates_of_invalid_schedules_are_failed_trials_too(tmp_path) -> None:
    url = _url(tmp_path)
    # only the register tile is free, and 16-bit accumulators are too narrow for NARROW
    fixed = {"popcount": "lut", "acc_bits": 16, "nibble_split": False, "layout": "plane_major",
             "loop_order": "nm", "k_unroll": 1}
    res = _tune(NARROW, url, "dupfail", 30, fixed=fixed)
    trials = _finished(res.study)
    assert all(t.state is TrialState.FAIL and t.user_attrs["error"] == "INVALID_SCHEDULE" for t in trials)
    # a couple of dozen tiles at most, 30 trials: some trials are duplicates
    originals = {t.number: t for t in trials if "duplicate_of" not in t.user_attrs}
    dups = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(originals) == len({t.user_attrs["schedule"] for t in trials})
    assert dups
    for t in dups:
        original = originals[t.user_attrs["duplicate_of"]]
        assert original.number < t.number
        assert (t.state, t.value, t.user_attrs["error"]) == (
            original.state, original.value, original.user_attrs["error"])


# ---- studies across runs ---------------------------------------------------------------------
def test_resuming_adds_trials_and_does_not_reenqueue_the_experts(tmp_path) -> None:
    url = _url(tmp_path)
    n_experts = len(bs.Space(WL).experts())
    _tune(WL, url, "resume", 2)
    res = _tune(WL, url, "resume", n_experts + 1, seed=1)  # resumes by name
    study = optuna.load_study(study_name="resume", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(_finished(study)) == n_experts + 3  # nothing left waiting
    enqueued = [t.number for t in trials if "fixed_params" in t.system_attrs]
    assert enqueued == list(range(n_experts))  # the leftover experts ran first, once
    assert [_schedule(t) for t in _finished(study)[:n_experts]] == _expert_schedules(bs.Space(WL))
    assert res.study.study_name == "resume"
    assert len(_finished(res.study)) == n_experts + 3
    # a third run only adds sampled trials
    _tune(WL, url, "resume", 2, seed=2)
    trials = optuna.load_study(study_name="resume", storage=url).get_trials(deepcopy=False)
    assert len(trials) == n_experts + 5
    assert [t.number for t in trials if "fixed_params" in t.system_attrs] == list(range(n_experts))


def test_stored_study_loads_with_optuna_and_as_a_kernel(tmp_path) -> None:
    url = _url(tmp_path)
    res = _tune(TINY, url, "store", 3)
    study = optuna.load_study(study_name="store", storage=url)
    assert [t.number for t in _finished(study)] == [0, 1, 2]
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["workload"] == TINY.to_dict()
    assert study.best_trial.number == res.best_trial.number
    assert study.best_value == res.best_seconds
    kern = bs.load("store", url)
    assert kern.workload == TINY
    assert kern.schedule == res.best_schedule
    _assert_exact(kern, TINY)
    with pytest.raises(ValueError, match="no study"):
        bs.load("missing", url)


def test_a_study_refuses_another_workload(tmp_path) -> None:
    url = _url(tmp_path)
    _tune(NARROW, url, "wl", 1, fixed={"acc_bits": 16, "popcount": "csa"})  # no measurement
    for other in (bs.Dense(32, 32, 2048, abits=4, wbits=3), bs.Dense(32, 32, 1024, abits=4, wbits=4),
                  bs.Dense(32, 32, 2048, abits=4, wbits=4, mode="bipolar")):
        with pytest.raises(ValueError, match="tunes"):
            _tune(other, url, "wl", 1)
    assert len(optuna.load_study(study_name="wl", storage=url).get_trials()) == 1


def test_in_memory_storage(tmp_path) -> None:
    res = _tune(TINY, "sqlite:///:memory:", "mem", 2)
    assert len(_finished(res.study)) == 2
    assert res.best_seconds > 0
    assert res.best_schedule in _expert_schedules(bs.Space(TINY))[:2]  # the first two trials


def test_default_study_name_and_plain_path_storage(tmp_path) -> None:
    path = tmp_path / "sub" / "plain.db"
    res = bs.tune(NARROW, trials=1, storage=str(path), runner=RUNNER, progress=False,
                  fixed={"acc_bits": 16, "popcount": "csa"})
    assert path.exists()
    name = res.study.study_name
    assert "32x32x2048" in name and "x86_64-avx2" in name
    assert optuna.get_all_study_names(storage=f"sqlite:///{path}") == [name]


# ---- samplers and fixed knobs -------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_samplers(tmp_path, sampler: str) -> None:
    url = _url(tmp_path)
    n_experts = len(bs.Space(TINY).experts())
    trials = n_experts + (9 if sampler == "tpe" else 2)  # past TPE's 8 start-up trials
    res = _tune(TINY, url, sampler, trials, sampler=sampler)
    assert len(_finished(res.study)) == trials
    assert res.best_schedule is not None
    name = type(res.study.sampler).__name__.lower()
    assert sampler in name


def test_unknown_sampler_is_a_value_error_and_makes_no_study(tmp_path) -> None:
    url = _url(tmp_path)
    with pytest.raises(ValueError, match="sampler"):
        _tune(TINY, url, "bad", 1, sampler="annealing")
    assert "bad" not in optuna.get_all_study_names(storage=url)


def test_cmaes_works_or_names_the_missing_package(tmp_path) -> None:
    try:
        res = _tune(NARROW, _url(tmp_path), "cma", 3, sampler="cmaes",
                    fixed={"popcount": "csa", "acc_bits": 16})
    except ValueError as exc:
        assert "cmaes" in str(exc)
    else:
        assert len(_finished(res.study)) == 3


def test_fixed_knobs_hold_in_every_trial(tmp_path) -> None:
    fixed = {"popcount": "lut", "nibble_split": True, "loop_order": "mn", "nc": 4, "layout": "interleaved"}
    res = _tune(WL, _url(tmp_path), "fixed", 5, fixed=fixed)
    trials = _finished(res.study)
    assert len(trials) == 5
    for t in trials:
        schedule = _schedule(t)
        for name, value in fixed.items():
            assert getattr(schedule, name) == value, (t.number, name)
        assert not set(fixed) & set(t.params)  # fixed knobs are not Optuna parameters
    assert res.best_schedule is not None


def test_bad_arguments() -> None:
    for trials in (0, -1, 1.5, "3"):
        with pytest.raises(ValueError, match="trials"):
            bs.tune(TINY, trials=trials, storage="sqlite:///:memory:", progress=False)
    with pytest.raises(ValueError, match="knob"):
        bs.tune(TINY, trials=1, storage="sqlite:///:memory:", fixed={"warp": 2}, progress=False)
    with pytest.raises(ValueError):
        bs.tune(TINY, target="aarch64-cortex-a53", trials=1, storage="sqlite:///:memory:",
                progress=False)


# ---- bad candidates and interruptions --------------------------------------------------------
class _CorruptingRunner(BaseRunner):
    """Runs the real harness, then flips one bit of every output: every answer is wrong."""

    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        result = RUNNER.run(job, timing=timing)
        result.outputs = {i: bytes([data[0] ^ 1]) + data[1:] for i, data in result.outputs.items()}
        return result


class _CrashingRunner(BaseRunner):
    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        return RunResult(ErrorClass.RUNTIME_ERROR, "harness died: signal 11")


class _InterruptedRunner(BaseRunner):
    """Like Ctrl-C during the measurement of the second trial."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        self.calls += 1
        if self.calls > 3:  # a trial runs the harness three times (two adversarial inputs, one timed)
            raise KeyboardInterrupt
        return RUNNER.run(job, timing=timing)


@pytest.mark.parametrize(("runner", "error"), [(_CorruptingRunner(), "WRONG_ANSWER"),
                                               (_CrashingRunner(), "RUNTIME_ERROR")])
def test_failed_measurements_are_classified_failed_trials(tmp_path, runner, error: str) -> None:
    res = bs.tune(TINY, trials=3, storage=_url(tmp_path), study_name="bad", runner=runner,
                  sampler="random", seed=0, progress=False)
    trials = _finished(res.study)
    assert len(trials) == 3
    for t in trials:
        assert t.state is TrialState.FAIL
        assert t.user_attrs["error"] == error and t.user_attrs["message"]
        assert not set(TIMING_ATTRS) & set(t.user_attrs)
    assert res.best_schedule is None and res.best_seconds is None


def test_an_interrupted_run_leaves_no_running_trial_and_resumes(tmp_path) -> None:
    url = _url(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        bs.tune(TINY, trials=5, storage=url, study_name="int", runner=_InterruptedRunner(),
                sampler="random", seed=0, progress=False)
    study = optuna.load_study(study_name="int", storage=url)
    states = [t.state for t in sorted(study.get_trials(), key=lambda t: t.number)]
    assert states[:2] == [TrialState.COMPLETE, TrialState.FAIL]
    assert TrialState.RUNNING not in states
    res = _tune(TINY, url, "int", 2)
    assert len(_finished(res.study)) == 4
    assert res.best_schedule is not None


def test_load_refuses_a_study_not_made_by_tune(tmp_path) -> None:
    url = _url(tmp_path)
    optuna.create_study(study_name="foreign", storage=url)
    with pytest.raises(ValueError, match="not made by bitsearch"):
        bs.load("foreign", url)


# ---- overhead ------------------------------------------------------------------------------------
def test_tuner_overhead_per_trial_is_small(tmp_path) -> None:
    """Behaviour bound, not a benchmark: suggestion, code generation and storage writes of a trial
    (measurement excluded) take a fraction of a second. Observed medians: about 0.1 s on an idle
    machine, 0.25 s beside a parallel test run (each user attribute is its own SQLite commit), so
    the bound is loose: it catches a tuner that, say, rebuilds its verifier or rereads the whole
    study per trial, not a slow disk."""
    res = _tune(TINY, _url(tmp_path), "overhead", 10, seed=5)
    overheads = [t.user_attrs["overhead_s"] for t in _finished(res.study)]
    assert len(overheads) == 10
    assert all(o >= 0 for o in overheads)
    assert statistics.median(overheads) < 1.0, overheads


# ---- regressions: bugs found while writing these tests, since fixed ---------------------------
def test_regression_summary_counts_only_trials_that_ran(tmp_path) -> None:
    res = _tune(TINY, _url(tmp_path), "count", 1)
    summary = res.to_dict()
    assert summary["trials"] == 1, summary
    assert summary["outcomes"] == {"NONE": 1}, summary


# ---- integer baselines go through the same search ---------------------------------------------
@pytest.mark.parametrize("dtype", ["int16", "int8"])
def test_integer_baseline_is_tuned_and_loaded(tmp_path, dtype: str) -> None:
    wl = bs.IntDense(40, 24, 200, dtype=dtype)
    url = _url(tmp_path)
    res = _tune(wl, url, f"i-{dtype}", trials=6)
    done = _finished(res.study)
    assert len(done) == 6
    assert done[0].user_attrs["schedule"] == bs.space.default_int_schedule(wl).to_json()
    ok = [t for t in done if t.state == TrialState.COMPLETE]
    assert ok and all(t.user_attrs["macs_per_s"] > 0 and "bit_macs_per_s" not in t.user_attrs for t in ok)
    assert isinstance(res.best_schedule, bs.IntSchedule)
    kern = bs.load(f"i-{dtype}", url)
    assert kern.workload == wl and kern.schedule == res.best_schedule
    (xlo, xhi), (wlo, whi) = wl.x_range, wl.w_range
    rng = np.random.default_rng(1)
    x = rng.integers(xlo, xhi + 1, wl.x_shape).astype(wl.x_dtype)
    w = rng.integers(wlo, whi + 1, wl.w_shape).astype(wl.w_dtype)
    np.testing.assert_array_equal(kern(x, kern.pack_weights(w)), bs.reference(wl, x, w))
