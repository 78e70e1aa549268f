"""The schedule space: knobs and their conditions, enumeration, validity, ``fixed`` and description.

Suggestion is exercised through real Optuna trials (an in-memory study and ``FixedTrial``), and a
random sample of the schedules the space calls valid is built and run against ``bs.reference``.
The tests read Optuna parameter names from real trials instead of spelling them out, since a knob
may be suggested under a per-condition name (the register tile is).
"""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import optuna
import pytest

import bitsearch as bs
from bitsearch.space import Knob, SpaceSize

# K*(2^a-1)*(2^w-1) = 2048*15*15 does not fit 16 bits: the space has valid and invalid schedules
# whatever the register-tile rules are.
WL = bs.Dense(16, 24, 2048, abits=4, wbits=4)
# Small, awkward shapes (m, n not multiples of any tile, K not a multiple of 64 or 256) with a
# small enough accumulator bound (300 * 3 * 3 = 2700) that 16-bit accumulators are valid too.
SMALL = bs.Dense(7, 13, 300, abits=2, wbits=2, mode="unipolar")
LUT_SUBSPACE = {"popcount": "lut", "acc_bits": 8, "loop_order": "mn", "nc": 0}
SCHEDULE_FIELDS = {f.name for f in dataclasses.fields(bs.Schedule)}


@pytest.fixture(scope="module")
def full_space() -> tuple[bs.Space, list[bs.Schedule], list[bs.Schedule]]:
    space = bs.Space(WL)
    everything = list(space.enumerate(valid_only=False))
    valid = list(space.enumerate())
    return space, everything, valid


def _suggest_many(space: bs.Space, n: int, seed: int = 0) -> list[tuple[optuna.trial.Trial, bs.Schedule]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, space.suggest(trial)))
    return out


def _knob_of(param: str) -> str:
    """The knob an Optuna parameter belongs to: ``tile[lut,split]`` -> ``tile``."""
    return param.split("[", 1)[0]


# ---- knobs and their conditions (define-by-run) -----------------------------------------------
def test_knobs_are_documented_and_conditional_ones_say_when() -> None:
    space = bs.Space(WL)
    names = [k.name for k in space.knobs]
    assert len(names) == len(set(names))
    assert all(isinstance(k, Knob) and k.doc and k.choices for k in space.knobs)
    conditional = {k.name: k.when_doc for k in space.knobs if k.when is not None}
    assert {"acc_bits", "nibble_split", "nc"} <= set(conditional)
    assert all(conditional.values())


def test_suggested_knobs_follow_their_conditions() -> None:
    space = bs.Space(WL)
    knob_names = {k.name for k in space.knobs}
    seen: dict[str, set[object]] = {}
    for trial, schedule in _suggest_many(space, 300):
        params = trial.params
        assert {_knob_of(p) for p in params} <= knob_names
        assert len(params) == len({_knob_of(p) for p in params})  # one parameter per knob
        assert ("nibble_split" in params) == (params["popcount"] == "lut")
        assert ("acc_bits" in params) == (params["popcount"] != "scalar")
        assert ("nc" in params) == (params["loop_order"] == "mn")
        # the schedule is normalised and carries every plainly named suggested knob
        assert schedule == schedule.normalized()
        for name, value in params.items():
            if name in SCHEDULE_FIELDS:
                assert getattr(schedule, name) == value, name
        for name in SCHEDULE_FIELDS:
            seen.setdefault(name, set()).add(getattr(schedule, name))
    # random sampling reaches every value of the knobs with a fixed domain, and varies the tile
    # (whose domain depends on the strategy: some sizes fit only one rare combination)
    for knob in space.knobs:
        if knob.name in SCHEDULE_FIELDS and knob.domain is None:
            assert set(knob.choices) <= seen[knob.name], knob.name
    assert len(seen["mr"]) > 1 and len(seen["nr"]) > 1


def test_fixed_trial_needs_only_the_knobs_that_apply() -> None:
    space = bs.Space(WL)
    trials = _suggest_many(space, 200, seed=3)
    by_kind = {}
    for trial, schedule in trials:
        by_kind.setdefault((schedule.popcount, schedule.loop_order), (trial.params, schedule))
    assert len(by_kind) == 6
    for (popcount, loop_order), (params, schedule) in by_kind.items():
        # a FixedTrial holding exactly the suggested parameters replays the schedule: nothing
        # else was asked for (FixedTrial raises on a parameter it does not hold)
        assert space.suggest(optuna.trial.FixedTrial(dict(params))) == schedule
        # ... and every one of them was asked for
        for name in params:
            fewer = {k: v for k, v in params.items() if k != name}
            with pytest.raises(ValueError, match="not found"):
                space.suggest(optuna.trial.FixedTrial(fewer))
        assert ("nibble_split" in params) == (popcount == "lut")
        assert ("acc_bits" in params) == (popcount != "scalar")
        assert ("nc" in params) == (loop_order == "mn")


def test_fixed_knobs_are_not_suggested() -> None:
    fixed = {"popcount": "lut", "k_unroll": 4, "loop_order": "mn"}
    space = bs.Space(WL, fixed=fixed)
    for trial, schedule in _suggest_many(space, 60, seed=1):
        assert not set(fixed) & {_knob_of(p) for p in trial.params}
        assert "nibble_split" in trial.params and "nc" in trial.params  # their conditions hold
        assert (schedule.popcount, schedule.k_unroll, schedule.loop_order) == ("lut", 4, "mn")


# ---- enumeration and validity ----------------------------------------------------------------
def test_enumerate_yields_distinct_normalised_schedules(full_space) -> None:
    _, everything, valid = full_space
    assert all(isinstance(s, bs.Schedule) for s in everything)
    assert len(everything) == len(set(everything))
    assert all(s == s.normalized() for s in everything)
    valid_set = set(valid)
    assert valid_set <= set(everything)
    assert [s for s in everything if s in valid_set] == valid  # valid_only keeps the order
    # normalisation collapses the knobs without effect
    assert all(s.acc_bits == 64 and not s.nibble_split for s in everything if s.popcount == "scalar")
    assert all(s.nc == 0 for s in everything if s.loop_order == "nm")
    assert not any(s.nibble_split for s in everything if s.popcount != "lut")
    # and every knob of the schedule is searched
    for name in SCHEDULE_FIELDS:
        assert len({getattr(s, name) for s in everything}) > 1, name


def test_enumeration_is_deterministic() -> None:
    a = list(bs.Space(WL, fixed={"popcount": "csa"}).enumerate())
    assert a and a == list(bs.Space(WL, fixed={"popcount": "csa"}).enumerate())


def test_valid_and_invalid_agree_with_schedule_check(full_space) -> None:
    space, everything, valid = full_space
    valid_set = set(valid)
    assert 0 < len(valid) < len(everything)
    for schedule in everything:
        if schedule in valid_set:
            schedule.check(WL)  # must not raise
            assert space.invalid_reason(schedule) is None
        else:
            with pytest.raises(ValueError) as info:
                schedule.check(WL)
            assert str(info.value)
            assert space.invalid_reason(schedule) == str(info.value)


def test_size_agrees_with_enumerate(full_space) -> None:
    space, everything, valid = full_space
    size = space.size()
    assert isinstance(size, SpaceSize)
    assert size == (len(everything), len(valid))
    assert (size.total, size.valid) == (len(everything), len(valid))
    sub = bs.Space(WL, fixed={"popcount": "scalar", "layout": "interleaved"})
    assert sub.size() == (len(list(sub.enumerate(valid_only=False))), len(list(sub.enumerate())))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"mr": 0}, "mr"), ({"mr": 9}, "mr"), ({"nr": 17}, "nr"), ({"mr": "2"}, "mr"),
        ({"k_unroll": 3}, "k_unroll"), ({"popcount": "avx512"}, "popcount"),
        ({"acc_bits": 12}, "acc_bits"), ({"layout": "row_major"}, "layout"),
        ({"loop_order": "km"}, "loop_order"), ({"nibble_split": "yes"}, "nibble_split"),
        ({"nibble_split": True, "popcount": "csa"}, "nibble_split"), ({"nc": -4}, "nc"),
        ({"nc": 2.5}, "nc"), ({"mr": 6, "nr": 12}, "registers"),
        ({"popcount": "scalar", "mr": 3, "nr": 3}, "GPR"),
    ],
    ids=str,
)
def test_check_names_the_problem(changes: dict[str, object], match: str) -> None:
    schedule = dataclasses.replace(bs.Schedule(mr=1, nr=2), **changes)
    with pytest.raises(ValueError, match=match):
        schedule.check(WL)
    with pytest.raises(ValueError, match=match):
        bs.build(WL, schedule)


def test_validity_depends_on_the_accumulator_bound() -> None:
    # 4096*255*255 does not fit 16 bits; 300*3*3 does
    wide = bs.Space(bs.Dense(8, 8, 4096, abits=8, wbits=8))
    assert not any(s.acc_bits == 16 for s in wide.enumerate())
    assert any(s.acc_bits == 16 for s in wide.enumerate(valid_only=False))
    assert any(s.acc_bits == 16 for s in bs.Space(SMALL).enumerate())
    with pytest.raises(ValueError, match="too narrow"):
        bs.Schedule(mr=1, nr=1, acc_bits=16).check(wide.workload)


@pytest.mark.parametrize("wl", [SMALL, bs.Dense(5, 9, 70, abits=1, wbits=1, mode="bipolar")], ids=str)
def test_sampled_valid_schedules_build_and_match_the_reference(wl: bs.Dense) -> None:
    valid = list(bs.Space(wl).enumerate())
    sample = random.Random(20240).sample(valid, 8)
    rng = np.random.default_rng(7)
    x = rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, wl.wmax + 1, wl.w_shape, dtype=np.uint8)
    x_max = np.full(wl.x_shape, wl.amax, np.uint8)
    w_max = np.full(wl.w_shape, wl.wmax, np.uint8)
    for schedule in sample:
        kern = bs.build(wl, schedule)
        assert kern.schedule == schedule
        np.testing.assert_array_equal(kern(x, kern.pack_weights(w)), bs.reference(wl, x, w),
                                      err_msg=schedule.to_json())
        np.testing.assert_array_equal(kern(x_max, w_max), bs.reference(wl, x_max, w_max),
                                      err_msg=schedule.to_json())


def test_build_rejects_what_the_space_calls_invalid(full_space) -> None:
    space, everything, valid = full_space
    invalid = sorted(set(everything) - set(valid), key=lambda s: s.to_json())
    for schedule in random.Random(3).sample(invalid, 5):
        with pytest.raises(ValueError) as info:
            bs.build(WL, schedule)
        assert str(info.value) == space.invalid_reason(schedule)


# ---- fixed knobs -----------------------------------------------------------------------------
def test_fixed_restricts_the_space(full_space) -> None:
    _, everything, valid = full_space
    fixed = {"popcount": "csa", "k_unroll": 2}
    sub = bs.Space(WL, fixed=fixed)
    sub_all = list(sub.enumerate(valid_only=False))
    sub_valid = list(sub.enumerate())
    assert sub_all and sub_valid
    assert all(s.popcount == "csa" and s.k_unroll == 2 for s in sub_all)
    assert set(sub_all) == {s for s in everything if s.popcount == "csa" and s.k_unroll == 2}
    assert set(sub_valid) == {s for s in valid if s.popcount == "csa" and s.k_unroll == 2}
    assert sub.size().total < len(everything)
    assert sub.fixed == fixed


def test_lut_subspace_has_at_least_300_valid_schedules() -> None:
    space = bs.Space(bs.Dense(256, 256, 512), fixed=LUT_SUBSPACE)
    assert space.size().valid >= 300
    assert all(s.popcount == "lut" and s.acc_bits == 8 and s.loop_order == "mn" and s.nc == 0
               for s in space.enumerate())


@pytest.mark.parametrize(
    "fixed",
    [
        {"tile_rows": 4},
        {"popcount": "avx512"},
        {"k_unroll": 3},
        {"acc_bits": 12},
        {"layout": "row_major"},
        {"nc": 5},
        {"loop_order": "km"},
        {"nibble_split": "yes"},
        {"popcount": "lut", "bogus": 1},
    ],
    ids=str,
)
def test_fixed_rejects_unknown_knobs_and_values(fixed: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="knob"):
        bs.Space(WL, fixed=fixed)


def test_space_rejects_other_workloads_and_targets() -> None:
    with pytest.raises(ValueError, match="target"):
        bs.Space(WL, target="riscv64-rvv")  # (aarch64-cortex-a53 has a space of its own now)
    with pytest.raises(ValueError):
        bs.Space("dense 64x64x256")  # type: ignore[arg-type]


# ---- experts and description -----------------------------------------------------------------
@pytest.mark.parametrize(
    "fixed", [None, {"popcount": "csa"}, LUT_SUBSPACE, {"popcount": "scalar", "layout": "interleaved"}],
    ids=str)
def test_experts_are_valid_and_carry_the_fixed_knobs(fixed: dict[str, object] | None) -> None:
    space = bs.Space(WL, fixed=fixed)
    experts = space.experts()
    assert experts
    schedules = []
    for params in experts:
        # experts are complete Optuna parameter sets of the space (enqueue_trial takes them)
        schedule = space.suggest(optuna.trial.FixedTrial(dict(params)))
        assert space.invalid_reason(schedule) is None, params
        for name, value in (fixed or {}).items():
            assert getattr(schedule, name) == value
        schedules.append(schedule)
    if not fixed:
        assert schedules[0] == space.default() == bs.default_schedule(WL)
        assert len(experts) >= 3
        assert len(set(schedules)) == len(schedules)
        assert {s.popcount for s in schedules} == {"lut", "csa", "scalar"}


def test_describe_is_json_and_consistent() -> None:
    fixed = {"popcount": "lut", "k_unroll": 4}
    space = bs.Space(WL, fixed=fixed)
    info = space.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["workload"] == WL.to_dict()
    assert info["target"] == "x86_64-avx2"
    assert info["size"] == space.size()._asdict()
    knobs = {k["name"]: k for k in info["knobs"]}
    assert list(knobs) == [k.name for k in space.knobs]
    for name, knob in knobs.items():
        assert knob["choices"] and knob["doc"]
        assert ("fixed" in knob) == (name in fixed)
    assert knobs["popcount"]["fixed"] == "lut" and knobs["k_unroll"]["fixed"] == 4
    assert "lut" in knobs["nibble_split"]["when"] and "mn" in knobs["nc"]["when"]
    assert "csa" in knobs["acc_bits"]["when"]
    assert "when" not in knobs["layout"]
    assert info["constraints"] and all(isinstance(c, str) for c in info["constraints"])


# ---- regressions: bugs found while writing these tests, since fixed ---------------------------
def test_regression_check_raises_value_error_for_float_acc_bits() -> None:
    with pytest.raises(ValueError):
        bs.Schedule(acc_bits=16.0).check(WL)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fixed", [{"acc_bits": 16.0}, {"acc_bits": 8.0}, {"nibble_split": 1}, {"nc": False}], ids=str)
def test_regression_fixed_rejects_values_of_the_wrong_type(fixed: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        bs.Space(WL, fixed=fixed).size()


@pytest.mark.parametrize("fixed", [{"nc": 8}, {"popcount": "scalar", "acc_bits": 16}], ids=str)
def test_regression_fixed_knobs_hold_in_every_schedule_or_are_rejected(fixed: dict[str, object]) -> None:
    try:
        space = bs.Space(WL, fixed=fixed)
    except ValueError:
        return
    schedules = list(space.enumerate(valid_only=False))
    assert schedules
    for name, value in fixed.items():
        assert all(getattr(s, name) == value for s in schedules), name
