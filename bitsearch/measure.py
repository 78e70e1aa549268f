"""One candidate, end to end: build -> verify -> time, as plain records between the stages.

``MeasureInput -> BuildResult -> MeasureResult``, with failures classified by
:class:`~bitsearch.runners.ErrorClass` instead of raised, so a tuner never dies on a bad schedule.

Example:
    >>> import bitsearch as bs
    >>> from bitsearch.measure import measure
    >>> res = measure(bs.Dense(64, 64, 300, abits=2, wbits=1), bs.Schedule(mr=2, nr=3))
    >>> res.error.name, res.stats.repeats >= 10
    ('NONE', True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bitsearch.asm.kernel import Kernel
from bitsearch.build import build
from bitsearch.cost.stats import TimingStats
from bitsearch.runners.base import BaseRunner, ErrorClass
from bitsearch.runners.local import LocalRunner
from bitsearch.space.int_schedule import IntSchedule
from bitsearch.space.schedule import Schedule
from bitsearch.workloads import (
    Conv2d,
    Dense,
    Fp8Dense,
    IntConv2d,
    IntDense,
    fp8_mismatch,
    fp8_verification_inputs,
    reference,
)


@dataclass(frozen=True)
class MeasureInput:
    workload: Dense | IntDense
    schedule: Schedule | IntSchedule
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
    modeled: bool = False  # stats are a static cost model's seconds (runners.model), not timings
    emulated: bool = False  # stats were timed under an emulator: not a speed

    @property
    def ok(self) -> bool:
        return self.error is ErrorClass.NONE

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
            if self.modeled or self.emulated:
                out["timing"] = "modeled" if self.modeled else "emulated"
            if self.bit_macs_per_second is not None:
                out["bit_macs_per_s"] = self.bit_macs_per_second
        return out


Case = tuple[str, np.ndarray, np.ndarray]


def verification_inputs(workload: Dense | IntDense, seed: int = 0) -> list[Case]:
    """Random operands first (also the timed ones), then adversarial ones.

    Extreme values reach the accumulator bound (K*(2^a-1)*(2^w-1) for bit-serial kernels; for
    int16, (-32768)^2 pairs wrap VPMADDWD); a checkerboard of extreme values catches swapped
    planes, rows or columns that uniform inputs cannot.
    """
    if isinstance(workload, Conv2d | IntConv2d):
        return conv_verification_inputs(workload, seed)
    if isinstance(workload, Fp8Dense):
        return fp8_verification_inputs(workload, seed)
    rng = np.random.default_rng(seed)
    wl = workload
    if isinstance(wl, IntDense):
        (xlo, xhi), (wlo, whi) = wl.x_range, wl.w_range
        xt, wt = wl.x_dtype, wl.w_dtype
    else:
        (xlo, xhi), (wlo, whi) = (0, wl.amax), (0, wl.wmax)
        xt = wt = np.dtype(np.uint8)
    board_x = np.where(np.add.outer(np.arange(wl.m), np.arange(wl.k)) % 2 == 1, xhi, xlo).astype(xt)
    board_w = np.where(np.add.outer(np.arange(wl.n), np.arange(wl.k)) % 3 == 0, whi, wlo).astype(wt)
    cases = [
        ("random", rng.integers(xlo, xhi + 1, wl.x_shape).astype(xt),
         rng.integers(wlo, whi + 1, wl.w_shape).astype(wt)),
        ("all-maximal", np.full(wl.x_shape, xhi, xt), np.full(wl.w_shape, whi, wt)),
        ("checkerboard", board_x, board_w),
    ]
    if xlo < 0 or wlo < 0:
        cases.append(("all-minimal", np.full(wl.x_shape, xlo, xt), np.full(wl.w_shape, wlo, wt)))
    return cases


def conv_verification_inputs(workload: Conv2d | IntConv2d, seed: int = 0) -> list[Case]:
    """Convolutions: random operands first (also the timed ones), all-maximal ones, the two that
    make padded taps matter most (x minimal / w maximal: bipolar's zero bits mean -A, so
    border outputs are wrong without their correction; x maximal / w minimal: unipolar's -W
    weights against the rowsum), and a checkerboard over rows, columns and channels."""
    rng = np.random.default_rng(seed)
    wl = workload
    if isinstance(wl, IntConv2d):
        (xlo, xhi), (wlo, whi) = wl.x_range, wl.w_range
        xt = wt = np.dtype(np.int16)
    else:
        (xlo, xhi), (wlo, whi) = (0, wl.amax), (0, wl.wmax)
        xt = wt = np.dtype(np.uint8)
    _, h, w, c = wl.x_shape
    parity = (np.arange(h)[:, None, None] + np.arange(w)[None, :, None] + np.arange(c)) % 2
    board_x = np.broadcast_to(np.where(parity == 1, xhi, xlo), wl.x_shape).astype(xt)
    board_w = np.where(np.arange(np.prod(wl.w_shape)).reshape(wl.w_shape) % 3 == 0, whi, wlo).astype(wt)
    cases = [
        ("random", rng.integers(xlo, xhi + 1, wl.x_shape).astype(xt),
         rng.integers(wlo, whi + 1, wl.w_shape).astype(wt)),
        ("all-maximal", np.full(wl.x_shape, xhi, xt), np.full(wl.w_shape, whi, wt)),
        ("x-minimal-w-maximal", np.full(wl.x_shape, xlo, xt), np.full(wl.w_shape, whi, wt)),
        ("x-maximal-w-minimal", np.full(wl.x_shape, xhi, xt), np.full(wl.w_shape, wlo, wt)),
        ("checkerboard", board_x, board_w),
    ]
    if xlo < 0:
        cases.append(("all-minimal", np.full(wl.x_shape, xlo, xt), np.full(wl.w_shape, wlo, wt)))
    return cases


class Verifier:
    """The verification inputs of one workload and their expected outputs, computed once and
    shared by every candidate of a tuning run."""

    def __init__(self, workload: Dense | IntDense, seed: int = 0) -> None:
        self.workload = workload
        self.cases = verification_inputs(workload, seed)
        self._expected: dict[int, np.ndarray] = {}

    def expected(self, index: int) -> np.ndarray:
        if index not in self._expected:
            _, x, w = self.cases[index]
            self._expected[index] = reference(self.workload, x, w)
        return self._expected[index]


def build_candidate(inp: MeasureInput) -> BuildResult:
    """Emit and encode; a statically invalid schedule or an emitter failure is a BUILD_ERROR."""
    start = time.perf_counter()
    try:
        kernel = build(inp.workload, inp.schedule, inp.target)
    except Exception as exc:
        return BuildResult(inp, None, ErrorClass.BUILD_ERROR, f"{type(exc).__name__}: {exc}",
                           time.perf_counter() - start)
    return BuildResult(inp, kernel, seconds=time.perf_counter() - start)


def run_candidate(
    built: BuildResult, runner: BaseRunner, *, seed: int = 0, verifier: Verifier | None = None
) -> MeasureResult:
    """Verify on every input of :func:`verification_inputs`, then time on the random one."""
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
        job = kernel.job(x, w)
        # Runners that read the machine code itself (the llvm-mca model runner) take the kernel.
        run_kernel = getattr(runner, "run_kernel", None)
        result = (run_kernel(kernel, job, timing=index == 0) if run_kernel is not None
                  else runner.run(job, timing=index == 0))
        if result.error is not ErrorClass.NONE:
            return MeasureResult(inp, result.error, f"{name} inputs: {result.message}",
                                 build_seconds=built.seconds)
        got = kernel.output_from(result.outputs[kernel.OUTPUT_BUFFER])
        want = verifier.expected(index)
        if isinstance(inp.workload, Fp8Dense):  # FP32 sums: within a derived tolerance
            problem = fp8_mismatch(inp.workload, x, w, got, want)
            if problem is not None:
                return MeasureResult(inp, ErrorClass.WRONG_ANSWER, f"{name} inputs: {problem}",
                                     build_seconds=built.seconds)
            continue
        if got.ndim > 2:  # convolutions: y[position, channel] in the message
            got, want = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            r, c = (int(v) for v in bad[0])
            return MeasureResult(
                inp, ErrorClass.WRONG_ANSWER,
                f"{name} inputs: {len(bad)} wrong outputs, first y[{r},{c}] = {int(got[r, c])}, "
                f"expected {int(want[r, c])}",
                build_seconds=built.seconds,
            )
    return MeasureResult(inp, ErrorClass.NONE, stats=TimingStats.from_times(result.times),
                         modeled=result.modeled, emulated=result.emulated,
                         build_seconds=built.seconds)


def measure(
    workload: Dense | IntDense,
    schedule: Schedule | IntSchedule | None = None,
    *,
    target: str = "x86_64-avx2",
    runner: BaseRunner | None = None,
    seed: int = 0,
) -> MeasureResult:
    """Build, verify bit for bit and time one schedule (the default one if ``None``)."""
    from bitsearch.space.space import space_def

    inp = MeasureInput(workload, schedule or space_def(workload, target).default(workload, target), target)
    return run_candidate(build_candidate(inp), runner or LocalRunner(), seed=seed)
