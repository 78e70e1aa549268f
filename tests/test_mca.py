"""The llvm-mca cost model (bitsearch.cost.mca), the dense emitter's loop counts, ModelRunner."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitsearch as bs
from bitsearch.cli import main
from bitsearch.cost import mca
from bitsearch.cost.mca import McaError, McaModel, regions
from bitsearch.measure import BuildResult, MeasureInput, build_candidate, measure, run_candidate
from bitsearch.records import LoopCount, MachineCode
from bitsearch.runners import Buffer, Call, ErrorClass, Job
from bitsearch.runners.model import ModelRunner
from bitsearch.targets import get_target

HAVE_MCA = shutil.which("llvm-mca") is not None
HAVE_QEMU = shutil.which("qemu-aarch64") is not None and shutil.which("aarch64-linux-gnu-gcc") is not None
needs_mca = pytest.mark.skipif(not HAVE_MCA, reason="needs llvm-mca (Debian: llvm)")


def x86_chain(adds: int, executions: int, label: str = "L_top") -> MachineCode:
    """A PeachPy-style listing: a loop of ``adds`` dependent 1-cycle ADDs, then RET."""
    body = "".join("\taddq %rax, %rax\n" for _ in range(adds))
    listing = (f".text\nbs_chain:\n\tmovq $5, %rcx\n7: # {label}:\n{body}"
               f"\tdecq %rcx\n\tjnz 7b # {label}\n\tret\n")
    return MachineCode("chain", b"", listing, (LoopCount(label, executions),))


# ---------------------------------------------------------------------------------------------
# Regions: pure parsing, no llvm-mca


def nested_listing(tree: list, counter: list[int], lines: list[str], expected: dict[str, int],
                   owner: str | None, loops: list[LoopCount]) -> None:
    """Emit a random loop nest in PeachPy's syntax; ``expected`` counts each region's insns."""
    for node in tree:
        if isinstance(node, int):  # straight-line instructions
            for _ in range(node):
                lines.append("\tvpaddb %ymm1, %ymm0, %ymm0")
            expected[owner or "rest"] = expected.get(owner or "rest", 0) + node
        else:
            counter[0] += 1
            name, number = f"L_loop_{counter[0]}", 100 + counter[0]
            loops.append(LoopCount(name, counter[0] * 3))
            lines.append(f"{number}: # {name}:")
            nested_listing(node, counter, lines, expected, name, loops)
            lines.append(f"\tjnz {number}b # {name}")
            expected[name] = expected.get(name, 0) + 1  # the back branch belongs to the loop


trees = st.recursive(st.integers(0, 3), lambda inner: st.lists(inner, min_size=1, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(trees, min_size=1, max_size=3))
def test_regions_assign_each_instruction_to_its_innermost_loop(tree: list) -> None:
    lines, expected, loops = [".text", "f:"], {}, []
    nested_listing(tree, [0], lines, expected, None, loops)
    lines.append("\tret")
    expected["rest"] = expected.get("rest", 0) + 1
    got = {r.label or "rest": len(r.instructions) for r in regions("\n".join(lines), loops, "x86_64")}
    assert got == {k: v for k, v in expected.items() if v}
    execs = {r.label: r.executions for r in regions("\n".join(lines), loops, "x86_64")}
    assert all(execs[loop.label] == loop.executions for loop in loops)


def test_region_errors_name_the_problem() -> None:
    code = x86_chain(2, 10)
    with pytest.raises(ValueError, match="'L_nope' is not in the listing"):
        regions(code.listing, [LoopCount("L_nope", 1)], "x86_64")
    with pytest.raises(ValueError, match="has no LoopCount"):
        regions(code.listing, [], "x86_64")
    with pytest.raises(ValueError, match="negative"):
        regions(code.listing, [LoopCount("L_top", -1)], "x86_64")
    forward = "1: # L_a:\n\tnop\n\tjmp 2f # L_b\n2: # L_b:\n\tret\n"
    with pytest.raises(ValueError, match="no branch back"):
        regions(forward, [LoopCount("L_a", 1)], "x86_64")
    crossed = "1: # L_a:\n\tnop\n2: # L_b:\n\tjnz 1b # L_a\n\tjnz 2b # L_b\n"
    with pytest.raises(ValueError, match="overlap"):
        regions(crossed, [LoopCount("L_a", 1), LoopCount("L_b", 1)], "x86_64")


def test_aarch64_gnu_labels_and_branch_forms() -> None:
    listing = """
    outer:
        mov x3, #4
    inner:
        cnt v1.16b, v0.16b   // per-byte popcount
        subs x3, x3, #1
        b.ne inner
        cbnz x2, outer
        tbz x4, #3, done
    done:
        ret
    """
    got = regions(listing, [LoopCount("outer", 5), LoopCount("inner", 20)], "aarch64")
    assert [(r.label, r.executions, len(r.instructions)) for r in got] == [
        ("outer", 5, 2), ("inner", 20, 3), (None, 1, 2)]
    assert "b.ne bs_target" in got[1].instructions and "tbz x4, #3, bs_target" in got[2].instructions


# ---------------------------------------------------------------------------------------------
# llvm-mca


@needs_mca
@pytest.mark.parametrize("adds", [1, 4, 12])
def test_x86_dependency_chain_cycles(adds: int) -> None:
    model = McaModel(target="x86_64-avx2", clock_hz=2e9)
    cost = model.cost(x86_chain(adds, 1000))
    loop, rest = cost.regions
    assert loop.label == "L_top" and loop.instructions == adds + 2
    # Zen 3: one dependent ADD per cycle; DEC/JNZ run beside the chain.
    assert abs(loop.cycles_per_iteration - adds) <= 0.1 * adds + 0.35
    assert rest.label is None and rest.executions == 1
    assert cost.cycles == pytest.approx(1000 * loop.cycles_per_iteration + rest.cycles_per_iteration)
    assert model.seconds([x86_chain(adds, 1000)]) == pytest.approx(cost.cycles / 2e9)


@needs_mca
def test_a53_model_and_linearity_in_executions() -> None:
    def code(n: int) -> MachineCode:
        listing = "f:\nloop:\n\tadd x0, x0, x1\n\tadd x0, x0, x1\n\tadd x0, x0, x1\n\tsubs x2, x2, #1\n" \
                  "\tb.ne loop\n\tret\n"
        return MachineCode("f", b"", listing, (LoopCount("loop", n),))

    model = McaModel(target="aarch64-cortex-a53")
    assert model.clock_hz == get_target("aarch64-cortex-a53").clock_hz and model.cpu == "cortex-a53"
    c0, c1, c2 = (model.cost(code(n)).cycles for n in (0, 1000, 2000))
    assert c2 - c1 == pytest.approx(c1 - c0)
    per_iteration = (c1 - c0) / 1000
    assert 3 <= per_iteration <= 6  # three dependent ADDs on an in-order core (1-cycle latency)


@needs_mca
def test_results_are_cached_in_memory_and_on_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BITSEARCH_CACHE", str(tmp_path))
    code = x86_chain(7, 123, "L_cache_test")
    first = McaModel(target="x86_64-avx2", clock_hz=1e9, cpu="znver2")
    cost = first.cost(code)
    assert first.runs == 1 and list((tmp_path / "mca").glob("*.json"))
    assert first.cost(code) == cost and first.runs == 1
    monkeypatch.setattr(mca, "_memo", {})  # a new process: only the disk cache is left
    second = McaModel(target="x86_64-avx2", clock_hz=1e9, cpu="znver2")
    assert second.cost(code) == cost and second.runs == 0


@needs_mca
def test_mca_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BITSEARCH_CACHE", str(tmp_path))
    with pytest.raises(McaError, match="apt-get install llvm"):
        McaModel(llvm_mca="llvm-mca-not-installed")
    with pytest.raises(ValueError, match="unknown target"):
        McaModel(target="riscv64")
    bogus = MachineCode("bogus", b"", "\tfrobnicate %rax\n\tret\n")
    with pytest.raises(McaError, match="llvm-mca"):
        McaModel(target="x86_64-avx2", clock_hz=1e9).cost(bogus)


# ---------------------------------------------------------------------------------------------
# Loop counts of the x86-64 dense emitter


def test_dense_loop_counts_exact() -> None:
    # m=20, n=20: mr=2 -> 10 row tiles; nr=3 -> 6 column tiles + an edge of 2; abits=2 -> a plane
    # loop of 2; k=700 -> 3 blocks of 256 bits: the first peeled, a k loop of 2 iterations.
    kern = bs.build(bs.Dense(20, 20, 700, abits=2, wbits=1), bs.Schedule(mr=2, nr=3, k_unroll=1))
    gemm = [(lc.label.rsplit("_", 1)[0], lc.executions) for lc in kern.functions["gemm"].loops]
    assert gemm == [("L_row", 10), ("L_col", 60), ("L_pi", 120), ("L_k", 240),  # full tiles
                    ("L_pi", 20), ("L_k", 40)]  # the column-edge tile of each row
    pack = [(lc.label.rsplit("_", 1)[0], lc.executions) for lc in kern.functions["pack"].loops]
    assert pack == [("L_pack_row", 20), ("L_pack_block", 40)]  # 2 whole 256-bit blocks per row
    blocked = bs.build(bs.Dense(20, 20, 256), bs.Schedule(mr=2, nr=2, nc=2, k_unroll=1))
    assert [(lc.label.rsplit("_", 1)[0], lc.executions) for lc in blocked.functions["gemm"].loops] == [
        ("L_block", 5), ("L_row", 50), ("L_col", 100)]  # one K block: no k loop


@needs_mca
@pytest.mark.parametrize("schedule", [
    bs.Schedule(mr=2, nr=3), bs.Schedule(mr=1, nr=2, popcount="scalar", k_unroll=2),
    bs.Schedule(mr=2, nr=2, popcount="csa", acc_bits=8), bs.Schedule(mr=3, nr=2, loop_order="nm"),
    bs.Schedule(mr=1, nr=4, acc_bits=32, layout="interleaved", nc=2),
])
def test_every_dense_loop_is_counted_and_modeled(schedule: bs.Schedule) -> None:
    wl = bs.Dense(9, 11, 5000, abits=2, wbits=2, mode="bipolar")  # long K: byte-counter windows too
    kern = bs.build(wl, schedule)
    model = McaModel(target="x86_64-avx2", clock_hz=3e9)
    for code in tuple(kern.functions.values()):
        assert code.loops, code.name
        cost = model.cost(code)  # raises if a backward branch had no LoopCount
        assert {r.label for r in cost.regions} >= {lc.label for lc in code.loops}
        assert all(r.cycles_per_iteration > 0 for r in cost.regions)
    longer = bs.build(bs.Dense(9, 11, 4 * 5000, abits=2, wbits=2, mode="bipolar"), schedule)
    ratio = model.seconds(list(longer.functions.values())) / model.seconds(list(kern.functions.values()))
    assert 2.5 < ratio < 4.5  # the K loops dominate: about 4x the work


# ---------------------------------------------------------------------------------------------
# ModelRunner


@needs_mca
def test_model_runner_verifies_and_reports_modeled_seconds() -> None:
    model = McaModel(target="x86_64-avx2", clock_hz=1e9)
    runner = ModelRunner(models={"x86_64-avx2": model})
    wl, schedule = bs.Dense(17, 10, 300, abits=1, wbits=2, mode="unipolar"), bs.Schedule(mr=2, nr=4)
    result = measure(wl, schedule, runner=runner)
    assert result.error is ErrorClass.NONE, result.message
    assert result.modeled and not result.emulated and result.to_dict()["timing"] == "modeled"
    kern = bs.build(wl, schedule)
    assert result.stats.median == model.seconds(list(kern.functions.values()))
    # Verification is real: a GEMM that returns at once leaves y zero.
    broken = kern.replace_function("gemm", code=b"\xc3")
    wrong = run_candidate(BuildResult(MeasureInput(wl, schedule), broken), runner)
    assert wrong.error is ErrorClass.WRONG_ANSWER
    # A kernel without loop counts cannot be modeled: recorded, not raised.
    uncounted = kern.replace_function("gemm", loops=())
    failed = run_candidate(BuildResult(MeasureInput(wl, schedule), uncounted), runner)
    assert failed.error is ErrorClass.RUNTIME_ERROR and failed.message.count("cost model:") == 1
    # A job of bare bytes (no listings) can be verified, not modeled.
    job = dataclasses.replace(kern.job(np.zeros(wl.x_shape, np.uint8), np.zeros(wl.w_shape, np.uint8)),
                              functions=())
    assert runner.run(job, timing=False).error is ErrorClass.NONE
    with pytest.raises(ValueError, match="lacks"):
        runner.run(job)


A64_COPY_LISTING = """
bs_copy:
    cbz x2, done
loop:
    ldrb w3, [x0], #1
    strb w3, [x1], #1
    subs x2, x2, #1
    b.ne loop
done:
    ret
"""
A64_COPY = b"".join(int(w, 16).to_bytes(4, "little")
                    for w in ["b40000a2", "38401403", "38001423", "f1000442", "54ffffa1", "d65f03c0"])


@needs_mca
@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-aarch64 and aarch64-linux-gnu-gcc")
def test_model_runner_on_aarch64_code_under_qemu() -> None:
    n = 1000
    data = (np.arange(n) % 256).astype(np.uint8)
    job = Job(code=(A64_COPY,), buffers=(Buffer.input(data), Buffer.out(n)),
              calls=(Call(0, (("buf", 0), ("buf", 1), ("int", n))),), arch="aarch64")
    code = MachineCode("bs_copy", A64_COPY, A64_COPY_LISTING, (LoopCount("loop", n),))
    runner = ModelRunner()
    result = runner.run_codes([code], job, target="aarch64-cortex-a53")
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs == {1: data.tobytes()} and result.modeled and not result.emulated
    assert result.times == [McaModel(target="aarch64-cortex-a53").seconds([code])]
    # 1000 iterations of a load/store/subs/branch loop on a 1.2 GHz in-order core: a few us.
    assert 1e-6 < result.times[0] < 1e-4
    bad = dataclasses.replace(job, code=(bytes(4),))  # udf: the verification run crashes
    assert runner.run_codes([code], bad, target="aarch64-cortex-a53").error is ErrorClass.RUNTIME_ERROR


@needs_mca
def test_tune_with_the_model_runner_keeps_studies_apart(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    wl = bs.Dense(16, 16, 256)
    res = bs.tune(wl, trials=2, storage=url, runner="model", progress=False, seed=1)
    assert res.study.study_name.endswith("-model") and res.best_seconds is not None
    assert res.study.user_attrs["timing"] == "modeled"
    assert all(t.user_attrs.get("timing") == "modeled" for t in res.study.get_trials()
               if t.state == optuna.trial.TrialState.COMPLETE)
    bs.tune(wl, trials=1, storage=url, study_name="measured", progress=False)
    with pytest.raises(ValueError, match="measured times"):
        bs.tune(wl, trials=1, storage=url, study_name="measured", runner="model", progress=False)


@needs_mca
def test_cli_measure_with_the_model_runner(capsys) -> None:
    code = main(["measure", "dense", "--m", "8", "--n", "8", "--k", "200", "--runner", "model", "--json"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and record["error"] == "NONE" and record["timing"] == "modeled"
    assert main(["measure", "dense", "--m", "8", "--n", "8", "--k", "200", "--runner", "nope"]) == 2
    assert "unknown runner" in capsys.readouterr().err
    assert build_candidate  # imported for the BuildResult tests above


@needs_mca
def test_avx512_kernels_use_a_model_that_knows_vpopcntq() -> None:
    schedule = bs.Schedule(mr=1, nr=12, popcount="vpopcnt")
    kern = bs.build(bs.Dense(16, 16, 2048), schedule, target="x86_64-avx512")
    model = McaModel(target="x86_64-avx512", clock_hz=3e9)
    assert model.cpu == "icelake-server"  # LLVM 14 has no znver4; znver3 rejects AVX-512
    cost = model.cost(kern.functions["gemm"])
    assert {lc.label for lc in kern.functions["gemm"].loops} <= {r.label for r in cost.regions}
    with pytest.raises(McaError, match="unsupported"):
        McaModel(target="x86_64-avx2", clock_hz=3e9).cost(kern.functions["gemm"])


@needs_mca
@pytest.mark.skipif(not HAVE_QEMU, reason="needs qemu-aarch64 and aarch64-linux-gnu-gcc")
@pytest.mark.skipif("aarch64-cortex-a53" not in bs.TARGETS, reason="no AArch64 target in this build")
def test_neon_kernel_verified_under_qemu_and_modeled_for_the_a53() -> None:
    wl = bs.Dense(13, 10, 300, abits=2, wbits=1, mode="unipolar")  # edges in m, n and k
    kern = bs.build(wl, target="aarch64-cortex-a53")
    assert all(code.loops for code in tuple(kern.functions.values()))
    result = measure(wl, kern.schedule, target="aarch64-cortex-a53", runner=ModelRunner())
    assert result.error is ErrorClass.NONE, result.message
    assert result.modeled and not result.emulated
    model = McaModel(target="aarch64-cortex-a53")
    assert result.stats.median == pytest.approx(model.seconds(list(kern.functions.values())))
