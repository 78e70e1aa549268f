"""The registry, targets as data, and the combinations that broke before it (each bug of the
redesign issue has its test here; the schedule-record ones are in test_record_checks.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import bitsearch as bs
from bitsearch.cli import main
from bitsearch.lowerings import LOWERINGS, lowering_for, lowerings_for
from bitsearch.measure import measure
from bitsearch.records import ErrorClass
from bitsearch.runners import ModelRunner
from bitsearch.targets import TARGET_DEFS, TargetDef, get_target, missing_features

CONV = bs.Conv2d(h=5, w=5, cin=3, cout=4, kernel=3, abits=1, wbits=1, mode="bipolar")


# -- targets ---------------------------------------------------------------------------------------
def test_targets_are_data_and_code_asks_for_features() -> None:
    assert tuple(TARGET_DEFS) == bs.TARGETS
    avx512 = get_target("x86_64-avx512")
    assert avx512.has("avx512_vpopcntdq") and not get_target("x86_64-avx2").has("avx512_vpopcntdq")
    assert bs.Space(bs.Dense(8, 8, 512), target="x86_64-avx512").knobs[0].choices[-1] == "vpopcnt"
    with pytest.raises(ValueError, match="unknown target 'riscv'"):
        get_target("riscv")


def test_a_new_target_is_one_more_record() -> None:
    """A target made of data alone builds through the registry: the lowerings ask it for
    features (here: no VPOPCNTDQ, so no vpopcnt strategy) and never compare its name."""
    zen = dataclasses.replace(get_target("x86_64-avx2"), name="x86_64-test")
    wl = bs.Dense(4, 4, 256)
    assert lowering_for(wl, zen).name == "dense/x86_64/bitserial"
    kern = lowering_for(wl, zen).emit(wl, bs.Schedule(mr=1, nr=2), zen)
    reference = bs.build(wl, bs.Schedule(mr=1, nr=2), "x86_64-avx2")
    assert kern.functions["gemm"].code == reference.functions["gemm"].code
    with pytest.raises(ValueError, match="vpopcnt"):
        lowering_for(wl, zen).check(bs.Schedule(mr=1, nr=2, popcount="vpopcnt"), wl, zen)


def test_a_kernel_for_missing_features_refuses_to_run_in_process() -> None:
    future = TargetDef("x86_64-future", "x86_64", frozenset({"avx2", "avx10_9"}), 32, 512,
                       "znver3", None)
    assert missing_features(future) == {"avx10_9"}
    wl = bs.Dense(4, 4, 64)
    kern = dataclasses.replace(bs.build(wl), target="x86_64-avx2")
    with pytest.raises(RuntimeError, match="lacks avx10_9"):
        from bitsearch.asm.kernel import LoadedCode

        LoadedCode(kern.functions["gemm"], future)


# -- the registry ----------------------------------------------------------------------------------
def test_registry_names_the_lowering_of_every_workload_and_refuses_with_reasons() -> None:
    assert [lw.name for lw in lowerings_for(CONV, "x86_64-avx2")] == ["conv2d/x86_64/bitserial"]
    with pytest.raises(ValueError, match="Conv2d is emitted for x86_64 targets only"):
        bs.build(CONV, target="aarch64-cortex-a53")
    with pytest.raises(ValueError, match="int16 baseline only"):
        bs.build(bs.IntDense(4, 4, 64, dtype="int8"), target="aarch64-cortex-a53")
    with pytest.raises(ValueError, match="workload must be one of"):
        bs.build("dense")
    assert {lw.schedule_type.__name__ for lw in LOWERINGS} >= {"Schedule", "NeonSchedule", "ConvSchedule"}


def test_space_rejects_a_schedule_of_another_lowering() -> None:
    """Bug: Space.invalid_reason accepted a bs.Schedule for a Conv2d, which bs.build rejects."""
    reason = bs.Space(CONV).invalid_reason(bs.Schedule())
    assert reason is not None and "ConvSchedule" in reason
    with pytest.raises(ValueError, match="ConvSchedule"):
        bs.build(CONV, bs.Schedule())


def test_invalid_schedule_and_emitter_failure_are_told_apart() -> None:
    res = measure(bs.Dense(8, 8, 64), bs.Schedule(mr=6, nr=6))
    assert res.error is ErrorClass.INVALID_SCHEDULE and "registers" in res.message


# -- the model runner on every kernel class ---------------------------------------------------------
def test_model_runner_measures_a_convolution() -> None:
    """Bug: `measure conv2d --runner model` crashed (ModelRunner found no MachineCode fields in
    ConvKernel, and the ValueError escaped)."""
    res = measure(CONV, None, runner=ModelRunner())
    assert res.error is ErrorClass.NONE, res.message
    assert res.modeled
    assert main(["measure", "conv2d", "--h", "5", "--w", "5", "--cin", "3", "--cout", "4", "--runner",
                 "model", "--json"]) == 0


# -- stored studies of every target -----------------------------------------------------------------
def test_load_and_export_an_aarch64_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bug: bs.load / `export --study` on an AArch64 study raised KeyError (NeonSchedule was
    missing from tune.SCHEDULES); `export --study S --target aarch64-...` on an x86 study wrote
    x86-64 code silently."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    wl = bs.Dense(8, 8, 128)
    bs.tune(wl, "aarch64-cortex-a53", trials=2, storage=url, study_name="a53", runner="model",
            progress=False)
    kern = bs.load("a53", url)
    assert kern.target == "aarch64-cortex-a53" and type(kern.schedule) is bs.space.NeonSchedule
    out = tmp_path / "out"
    assert main(["export", "--study", "a53", "--storage", url, "--out", str(out)]) == 0
    assert json.loads((out / "bitsearch.json").read_text())["target"] == "aarch64-cortex-a53"
    bs.tune(wl, "x86_64-avx2", trials=2, storage=url, study_name="x86", progress=False)
    capsys.readouterr()
    code = main(["export", "--study", "x86", "--storage", url, "--target", "aarch64-cortex-a53",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "holds x86_64-avx2 kernels, not aarch64-cortex-a53" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_validates_the_prefix_before_writing(tmp_path: Path) -> None:
    """Bug: `export --prefix 'a b'` wrote .h/.S/.s/.json, then failed in the assembler."""
    kern = bs.build(bs.Dense(4, 4, 64))
    for prefix in ("a b", "1x", "a-b", ""):
        with pytest.raises(ValueError, match="C identifier"):
            kern.export(tmp_path / "out", prefix=prefix)
    assert not (tmp_path / "out").exists()


def test_kernel_repr_is_short_and_headers_declare_every_buffer() -> None:
    kern = bs.build(CONV)
    assert len(repr(kern)) < 400
    header = kern.header("c")
    for name in ("X", "IMG", "PIXSUM", "XP", "ROWSUM", "WP", "Y", "CORR", "CLS"):
        assert f"#define C_{name}_BYTES " in header
    assert 'extern "C"' in header


def test_kernel_threads_run_the_same_plan() -> None:
    wl = bs.Conv2d(h=9, w=7, cin=5, cout=6, kernel=3, stride=1, abits=2, wbits=2, mode="unipolar")
    kern = bs.build(wl)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, 4, wl.w_shape, dtype=np.uint8)
    wp = kern.pack_weights(w)
    want = bs.reference(wl, x, w)
    for threads in (1, 2, 3, 7):
        assert (kern(x, wp, threads=threads) == want).all()


def test_build_timeout_is_its_own_error_class() -> None:
    """A build that runs past its limit is a BUILD_TIMEOUT, not a run TIMEOUT nor a crash."""
    from bitsearch.measure import MeasureInput, build_candidate

    wl = bs.Conv2d(h=16, w=16, cin=64, cout=64, kernel=3)
    built = build_candidate(MeasureInput(wl, bs.space.ConvSchedule()), timeout=1e-4)
    assert built.error is ErrorClass.BUILD_TIMEOUT and "longer than" in built.message
    assert build_candidate(MeasureInput(wl, bs.space.ConvSchedule())).error is ErrorClass.NONE


def test_a_new_arithmetic_is_one_registry_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A lowering registered beside the default one is searched, stored and loaded by name:
    here the bit-serial emitter restricted to POPCNT, as a second arithmetic of Dense on x86."""
    from bitsearch.lowerings import registry
    from bitsearch.lowerings.dense_x86 import DenseBitserialX86
    from bitsearch.space.knobs import SpaceDef

    class ScalarPopcount(DenseBitserialX86):
        arithmetic = "popcnt"

        def space(self, workload: bs.Dense, target: TargetDef) -> SpaceDef:
            knobs = tuple(dataclasses.replace(k, choices=("scalar",)) if k.name == "popcount" else k
                          for k in super().space(workload, target).knobs)
            return SpaceDef(knobs)

        def default(self, workload: bs.Dense, target: TargetDef) -> bs.Schedule:
            return bs.Schedule(mr=2, nr=3, popcount="scalar")

    monkeypatch.setattr(registry, "LOWERINGS", (*registry.LOWERINGS, ScalarPopcount()))
    wl = bs.Dense(9, 7, 200)
    assert [lw.arithmetic for lw in lowerings_for(wl, "x86_64-avx2")] == ["bitserial", "popcnt"]
    space = bs.Space(wl, arithmetic="popcnt")
    assert {s.popcount for s in space.enumerate()} == {"scalar"}
    url = f"sqlite:///{tmp_path / 's.db'}"
    res = bs.tune(wl, trials=3, storage=url, arithmetic="popcnt", progress=False)
    assert res.study.study_name.endswith("-popcnt")
    assert res.study.user_attrs["lowering"] == "dense/x86_64/popcnt"
    assert all(t.user_attrs["schedule"].count('"popcount": "scalar"') for t in res.study.trials)
    assert bs.load(res.study.study_name, url).schedule == res.best_schedule
    with pytest.raises(ValueError, match="searches lowering dense/x86_64/popcnt"):
        bs.tune(wl, trials=1, storage=url, study_name=res.study.study_name, progress=False)
