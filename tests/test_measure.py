"""build -> verify -> time on real machine code, and the classification of bad candidates."""

from __future__ import annotations

import pytest

import bitsearch as bs
from bitsearch.measure import BuildResult, MeasureInput, measure, run_candidate
from bitsearch.records import MachineCode
from bitsearch.runners import ErrorClass, LocalRunner

RUNNER = LocalRunner(timeout=5.0, min_time=0.001, repeats=10)


def _built(wl: bs.Dense, schedule: bs.Schedule, gemm: MachineCode) -> BuildResult:
    kernel = bs.build(wl, schedule).replace_function("gemm", code=gemm.code)
    return BuildResult(MeasureInput(wl, schedule), kernel)


def test_good_candidate_is_verified_and_timed() -> None:
    wl = bs.Dense(13, 11, 300, abits=2, wbits=3, mode="unipolar")
    res = measure(wl, bs.Schedule(mr=3, nr=2), runner=RUNNER)
    assert res.error is ErrorClass.NONE, res.message
    assert res.stats is not None and res.stats.repeats >= 10
    assert 0 < res.stats.min <= res.stats.median
    assert res.bit_macs_per_second > 0
    assert res.to_dict()["error"] == "NONE"


def test_invalid_schedule_is_classified_with_its_reason() -> None:
    res = measure(bs.Dense(8, 8, 64), bs.Schedule(mr=4, nr=4), runner=RUNNER)
    assert res.error is ErrorClass.INVALID_SCHEDULE
    assert "ymm registers" in res.message


def test_kernel_of_another_mode_is_a_wrong_answer() -> None:
    wl = bs.Dense(9, 7, 100, mode="bipolar")
    other = bs.build(bs.Dense(9, 7, 100, mode="and"), bs.Schedule(mr=2, nr=2))
    built = _built(wl, bs.Schedule(mr=2, nr=2), gemm=other.functions["gemm"])
    res = run_candidate(built, RUNNER)
    assert res.error is ErrorClass.WRONG_ANSWER
    assert "wrong outputs" in res.message


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (b"\x0f\x0b", ErrorClass.RUNTIME_ERROR),  # ud2: illegal instruction
        (b"\xeb\xfe", ErrorClass.TIMEOUT),  # jmp $: hangs
        # mov dword [rdx + 4*m*n], 0 : one element past the end of y
        (b"\xc7\x82" + (4 * 5 * 6).to_bytes(4, "little") + b"\0\0\0\0\xc3", ErrorClass.RUNTIME_ERROR),
    ],
)
def test_crashing_or_hanging_gemm_is_classified(code: bytes, error: ErrorClass) -> None:
    wl = bs.Dense(5, 6, 64)
    schedule = bs.Schedule(mr=1, nr=1)
    built = _built(wl, schedule, gemm=MachineCode("broken", code, ""))
    res = run_candidate(built, LocalRunner(timeout=1.0, min_time=0.001))
    assert res.error is error, res.message


def test_verification_inputs_cover_the_accumulator_bound() -> None:
    wl = bs.Dense(4, 3, 70, abits=3, wbits=2, mode="bipolar")
    names = [name for name, _, _ in wl.verification_inputs()]
    assert names == ["random", "all-maximal", "checkerboard"]
    _, x, w = wl.verification_inputs()[1]
    assert int(abs(bs.reference(wl, x, w)).max()) == wl.max_abs_output
