"""The conformance suite every lowering of the registry must pass (as Optuna's
``testing/pytest_samplers.py`` is for samplers): parametrized over ``bitsearch.LOWERINGS`` and
every target of each lowering's family, so a new lowering is tested the moment it is registered.

Per (lowering, target): the default build, exact verification on the operator's adversarial
inputs (natively, or under qemu for AArch64), schedule JSON round trips over the space, a 2-trial
tune followed by ``bs.load``, an export whose object file links into a C program (and a C++ one)
that runs the plan and checks the reference, the model runner's cost (every emitter declares its
loop counts), and the plan agreeing with the functions' declared signatures and the C header.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bitsearch as bs
from bitsearch.asm.kernel import Begin, End, Kernel, c_function_type
from bitsearch.lowerings import LOWERINGS, Lowering
from bitsearch.measure import measure
from bitsearch.records import ErrorClass
from bitsearch.runners import LocalRunner, ModelRunner, QemuRunner
from bitsearch.targets import TARGET_DEFS, TargetDef, runs_natively

# A small workload of every operator, with shapes off every tile and block grid.
EXAMPLES: dict[str, object] = {
    "dense": bs.Dense(7, 10, 300, abits=2, wbits=1, mode="bipolar"),
    "int_dense": bs.IntDense(5, 9, 70, dtype="int16"),
    "fp8_dense": bs.Fp8Dense(5, 11, 37, afmt="e4m3", wfmt="e5m2"),
    "conv2d": bs.Conv2d(h=6, w=5, cin=3, cout=4, kernel=3, stride=2, abits=2, wbits=1, mode="bipolar"),
    "int_conv2d": bs.IntConv2d(h=5, w=5, cin=3, cout=5, kernel=3, padding="SAME"),
}
CASES = [pytest.param(lw, t, id=f"{lw.name}@{t.name}")
         for lw in LOWERINGS for t in TARGET_DEFS.values() if t.arch == lw.arch]
RUNNER = LocalRunner(timeout=20.0, min_time=0.0005, repeats=3)


def example(lowering: Lowering) -> object:
    return EXAMPLES[lowering.operator.OP]


def executing_runner(target: TargetDef) -> object:
    return RUNNER if runs_natively(target) else QemuRunner(repeats=1)


def test_every_operator_of_the_registry_has_an_example() -> None:
    assert {lw.operator.OP for lw in LOWERINGS} <= set(EXAMPLES)
    assert all(lw.key == (lw.operator.OP, lw.arch, lw.arithmetic) for lw in LOWERINGS)
    assert len({lw.key for lw in LOWERINGS}) == len(LOWERINGS)  # one entry per key


@pytest.mark.parametrize(("lowering", "target"), CASES)
def test_default_build_is_exact(lowering: Lowering, target: TargetDef) -> None:
    wl = example(lowering)
    kern = bs.build(wl, None, target.name)
    assert isinstance(kern, Kernel) and type(kern.schedule) is lowering.schedule_type
    assert lowering.invalid_reason(kern.schedule, wl, target) is None
    result = measure(wl, kern.schedule, target=target.name, runner=executing_runner(target))
    assert result.error is ErrorClass.NONE, result.message


@pytest.mark.parametrize(("lowering", "target"), CASES)
def test_schedules_round_trip_through_json(lowering: Lowering, target: TargetDef) -> None:
    space = bs.Space(example(lowering), target=target.name)
    assert space.lowering is lowering
    schedules = list(space.enumerate())
    assert schedules, "the space holds no valid schedule for the example"
    for s in random.Random(0).sample(schedules, min(25, len(schedules))):
        assert type(s).from_json(s.to_json()) == s
        assert space.invalid_reason(s) is None


@pytest.mark.parametrize(("lowering", "target"), CASES)
def test_two_trial_tune_then_load(lowering: Lowering, target: TargetDef, tmp_path: Path) -> None:
    wl = example(lowering)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    runner = "local" if runs_natively(target) else "model"
    res = bs.tune(wl, target.name, trials=2, storage=url, study_name="s", progress=False, seed=0,
                  runner=runner)
    assert res.best_schedule is not None, res.to_dict()
    assert res.study.user_attrs["lowering"] == lowering.name
    kern = bs.load("s", url)
    assert kern.workload == wl and kern.target == target.name and kern.schedule == res.best_schedule


@pytest.mark.parametrize(("lowering", "target"), CASES)
def test_model_runner_costs_every_function(lowering: Lowering, target: TargetDef) -> None:
    """Every emitter declares its loop counts: the cost model prices the kernel, and the
    verification under the model runner is the real one."""
    if shutil.which("llvm-mca") is None:
        pytest.fail("llvm-mca is missing: scripts/setup.sh installs llvm")
    wl = example(lowering)
    result = measure(wl, None, target=target.name, runner=ModelRunner())
    assert result.error is ErrorClass.NONE, result.message
    assert result.modeled and result.stats.median > 0


@pytest.mark.parametrize(("lowering", "target"), CASES)
def test_plan_header_and_ctypes_agree_with_the_declared_signatures(lowering: Lowering,
                                                                    target: TargetDef) -> None:
    kern = bs.build(example(lowering), None, target.name)
    header = kern.header("k")
    names = {b.name for b in kern.plan.buffers}
    for _, step in kern.plan.steps():
        signature = kern.functions[step.function].signature
        assert signature is not None and len(step.args) == len(signature.args), step
        for arg, declared in zip(step.args, signature.args, strict=True):
            if isinstance(arg, str):  # a buffer for a pointer
                assert arg in names and declared.is_pointer, (step, declared)
            elif isinstance(arg, Begin | End):  # a row bound for an integer
                assert not declared.is_pointer, (step, declared)
            else:  # a constant: an integer, or 0 for a pointer the function never reads
                assert not declared.is_pointer or arg == 0, (step, declared)
    for name, code in kern.functions.items():
        match = re.search(rf"^(\w+) k_{name}\((.*)\);$", header, re.M)
        assert match, f"no prototype of k_{name} in the header"
        args = [a.strip() for a in match.group(2).split(",")]
        ctypes_fn = c_function_type(code.signature)
        assert len(args) == len(ctypes_fn._argtypes_)
        assert [("*" in a) for a in args] == [a.is_pointer for a in code.signature.args]
        assert (match.group(1) == "void") == (ctypes_fn._restype_ is None)


# -- export: the object file in a C program that runs the plan --------------------------------
def _c_array(name: str, data: bytes, const: bool = True) -> str:
    body = ",".join(str(b) for b in data)
    return f"static {'const ' if const else ''}uint8_t {name}_init[{max(len(data), 1)}] = {{{body}}};"


def c_driver(kern: Kernel, prefix: str, x: np.ndarray, w: np.ndarray) -> str:
    """A C program that runs ``kern``'s plan on ``x`` and ``w`` (packed weights baked in) and
    exits 0 iff y equals the reference: what a C user of the exported files writes."""
    job = kern.job(x, w)
    expected = kern.workload.reference(x, w)
    up = prefix.upper()
    lines = ["#include <stdint.h>", "#include <stdio.h>", "#include <string.h>", f'#include "{prefix}.h"']
    for spec, buf in zip(kern.plan.buffers, job.buffers, strict=True):
        lines.append(f"static uint8_t {spec.name}[{up}_{spec.name.upper()}_BYTES + 1] "
                     "__attribute__((aligned(64)));")
        if buf.data is not None:
            lines.append(_c_array(spec.name, buf.data))
    lines.append(_c_array("expected", np.ascontiguousarray(expected).astype(kern.plan.out_dtype).tobytes()))
    lines.append("int main(void) {")
    for spec, buf in zip(kern.plan.buffers, job.buffers, strict=True):
        if buf.data is not None:
            lines.append(f"  memcpy({spec.name}, {spec.name}_init, sizeof {spec.name}_init);")
    for phase, step in kern.plan.steps():
        values = []
        for a, declared in zip(step.args, kern.functions[step.function].signature.args, strict=True):
            if isinstance(a, str):
                values.append(f"({declared.ctype}){a}")
            elif isinstance(a, Begin):
                values.append("0")
            elif isinstance(a, End):
                values.append(str(phase.rows * a.scale))
            else:
                values.append(f"({declared.ctype}){a}")
        lines.append(f"  {prefix}_{step.function}({', '.join(values)});")
    y = kern.plan.buffer("y").name
    lines += [f"  if (memcmp({y}, expected_init, sizeof expected_init)) {{ puts(\"WRONG\"); return 1; }}",
              '  puts("OK");', "  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("lowering", "target"), CASES)
def test_export_links_into_c_and_cpp_programs(lowering: Lowering, target: TargetDef, tmp_path: Path) -> None:
    wl = example(lowering)
    if wl.OP == "fp8_dense":  # float sums: the exactness check of the driver needs exact inputs
        wl = bs.Fp8Dense(3, 10, 8, afmt="e5m2", wfmt="e4m3")
    kern = bs.build(wl, None, target.name)
    paths = kern.export(tmp_path, prefix="k1")
    assert set(paths) == {"o", "h", "S", "s", "json"}
    x, w = wl.verification_inputs(0)[0][1:]
    if wl.OP == "fp8_dense":  # small integers: every FP32 sum exact, so y must equal the reference
        x = np.full(wl.x_shape, 1.5, np.float32).astype(x.dtype)
        w = np.tile(np.arange(wl.k, dtype=np.float32) - 4, (wl.n, 1)).astype(w.dtype)
    source = tmp_path / "main.c"
    source.write_text(c_driver(kern, "k1", x, w))
    compilers = [["cc"], ["g++", "-x", "c++"]] if runs_natively(target) else [
        ["aarch64-linux-gnu-gcc", "-static"]]
    for compiler in compilers:
        exe = tmp_path / f"main-{compiler[0]}"
        built = subprocess.run([*compiler, "-O1", "-I", str(tmp_path), str(source), "-x", "none",
                                str(paths["o"]), "-o", str(exe)], capture_output=True, text=True)
        assert built.returncode == 0, built.stderr
        command = [str(exe)] if runs_natively(target) else [
            "qemu-aarch64", "-cpu", target.emulator_cpu, str(exe)]
        ran = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert (ran.returncode, ran.stdout.strip()) == (0, "OK"), (compiler, ran.stdout, ran.stderr)
