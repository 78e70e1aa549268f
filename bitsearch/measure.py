"""One candidate, end to end: build -> verify -> time, as plain records between the stages.

``MeasureInput -> BuildResult -> MeasureResult``, with failures classified by
:class:`~bitsearch.records.ErrorClass` instead of raised, so a tuner never dies on a bad schedule:
INVALID_SCHEDULE (the static checks' reason), BUILD_ERROR (the emitter failed), BUILD_TIMEOUT,
RUNTIME_ERROR, TIMEOUT (the run), WRONG_ANSWER. The verification inputs, the reference and how
outputs are compared are the operator's (:mod:`bitsearch.workloads`).

Example:
    >>> import bitsearch as bs
    >>> from bitsearch.measure import measure
    >>> res = measure(bs.Dense(64, 64, 300, abits=2, wbits=1), bs.Schedule(mr=2, nr=3))
    >>> res.error.name, res.stats.repeats >= 10
    ('NONE', True)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitsearch.asm.kernel import Kernel
from bitsearch.cost.stats import TimingStats
from bitsearch.lowerings.registry import lowering_for
from bitsearch.records import ErrorClass, Timing
from bitsearch.runners.base import BaseRunner
from bitsearch.runners.local import LocalRunner
from bitsearch.targets import get_target

BUILD_TIMEOUT_S = 120.0  # emitting one kernel takes well under a second; this is a hang


@dataclass(frozen=True)
class MeasureInput:
    workload: Any
    schedule: Any
    target: str = "x86_64-avx2"


@dataclass(frozen=True)
class BuildResult:
    input: MeasureInput
    kernel: Kernel | None
    error: ErrorClass = ErrorClass.NONE
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class MeasureResult:
    input: MeasureInput
    error: ErrorClass
    message: str = ""
    stats: TimingStats | None = None
    build_seconds: float = 0.0
    timing: Timing = Timing.MEASURED  # what the stats are: timings, a model's, an emulator's

    @property
    def ok(self) -> bool:
        return self.error is ErrorClass.NONE

    @property
    def modeled(self) -> bool:
        return self.timing is Timing.MODELED

    @property
    def emulated(self) -> bool:
        return self.timing is Timing.EMULATED

    @property
    def macs_per_second(self) -> float | None:
        return None if self.stats is None else self.input.workload.macs / self.stats.median

    @property
    def bit_macs_per_second(self) -> float | None:
        """Binary products per second (bit-serial workloads only)."""
        bit_macs = getattr(self.input.workload, "bit_macs", None)
        return None if self.stats is None or bit_macs is None else bit_macs / self.stats.median

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "workload": self.input.workload.to_dict(),
            "schedule": self.input.schedule.to_dict(),
            "target": self.input.target,
            "error": self.error.value,
            "message": self.message,
        }
        if self.stats is not None:
            out.update(median_s=self.stats.median, min_s=self.stats.min, iqr_s=self.stats.iqr,
                       repeats=self.stats.repeats, macs_per_s=self.macs_per_second)
            if self.timing is not Timing.MEASURED:
                out["timing"] = self.timing.value
            if self.bit_macs_per_second is not None:
                out["bit_macs_per_s"] = self.bit_macs_per_second
        return out


class Verifier:
    """The verification inputs of one workload and their expected outputs, computed once and
    shared by every candidate of a tuning run."""

    def __init__(self, workload: Any, seed: int = 0) -> None:
        self.workload = workload
        self.cases = workload.verification_inputs(seed)
        self._expected: dict[int, np.ndarray] = {}

    def expected(self, index: int) -> np.ndarray:
        if index not in self._expected:
            _, x, w = self.cases[index]
            self._expected[index] = self.workload.reference(x, w)
        return self._expected[index]


class BuildTimeout(Exception):
    """Emitting a kernel took longer than the build time limit."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`BuildTimeout` in this thread after ``seconds`` (the main thread only: where
    a signal can interrupt the emitter; elsewhere the build is not limited)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise BuildTimeout(f"building took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def build_candidate(inp: MeasureInput, *, timeout: float | None = BUILD_TIMEOUT_S) -> BuildResult:
    """Check, emit and encode: a schedule the static checks reject is INVALID_SCHEDULE (with
    their reason), an emitter failure a BUILD_ERROR, an emitter that runs past ``timeout``
    seconds a BUILD_TIMEOUT."""
    start = time.perf_counter()

    def failed(error: ErrorClass, message: str) -> BuildResult:
        return BuildResult(inp, None, error, message, time.perf_counter() - start)

    try:
        target = get_target(inp.target)
        lowering = lowering_for(inp.workload, target, inp.schedule)
        lowering.check(inp.schedule, inp.workload, target)
    except ValueError as exc:
        return failed(ErrorClass.INVALID_SCHEDULE, str(exc))
    try:
        with _time_limit(timeout):
            kernel = lowering.emit(inp.workload, inp.schedule, target)
    except BuildTimeout as exc:
        return failed(ErrorClass.BUILD_TIMEOUT, str(exc))
    except Exception as exc:
        return failed(ErrorClass.BUILD_ERROR, f"{type(exc).__name__}: {exc}")
    return BuildResult(inp, kernel, seconds=time.perf_counter() - start)


def run_candidate(
    built: BuildResult, runner: BaseRunner, *, seed: int = 0, verifier: Verifier | None = None
) -> MeasureResult:
    """Verify on every input of the operator's ``verification_inputs``, then time on the first
    (random) one."""
    inp = built.input
    if built.kernel is None:
        return MeasureResult(inp, built.error, built.message, build_seconds=built.seconds)
    kernel = built.kernel
    if verifier is None or verifier.workload != inp.workload:
        verifier = Verifier(inp.workload, seed)
    cases = verifier.cases
    # Adversarial cases first, untimed; the random case last, verified and timed in one run.
    for index in [*range(1, len(cases)), 0]:
        name, x, w = cases[index]
        result = runner.run(kernel.job(x, w), timing=index == 0)
        if result.error is not ErrorClass.NONE:
            return MeasureResult(inp, result.error, f"{name} inputs: {result.message}",
                                 build_seconds=built.seconds)
        problem = inp.workload.mismatch(x, w, kernel.output(result.outputs), verifier.expected(index))
        if problem is not None:
            return MeasureResult(inp, ErrorClass.WRONG_ANSWER, f"{name} inputs: {problem}",
                                 build_seconds=built.seconds)
    return MeasureResult(inp, ErrorClass.NONE, stats=TimingStats.from_times(result.times),
                         timing=result.timing, build_seconds=built.seconds)


def measure(
    workload: Any,
    schedule: Any = None,
    *,
    target: str = "x86_64-avx2",
    runner: BaseRunner | None = None,
    seed: int = 0,
) -> MeasureResult:
    """Build, verify bit for bit and time one schedule (the default one if ``None``)."""
    if schedule is None:
        t = get_target(target)
        schedule = lowering_for(workload, t).default(workload, t)
    inp = MeasureInput(workload, schedule, target)
    return run_candidate(build_candidate(inp), runner or LocalRunner(), seed=seed)


__all__ = ["BuildResult", "MeasureInput", "MeasureResult", "Verifier", "build_candidate", "measure",
           "run_candidate"]
