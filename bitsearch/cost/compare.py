"""Side-by-side timing in one process: candidates interleaved repeat by repeat, so that drift of
a shared, noisy machine hits all of them alike and their *ratios* stay meaningful."""

from __future__ import annotations

import time
from collections.abc import Callable

from bitsearch.cost.stats import TimingStats


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    inner = 1
    while True:
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        if time.perf_counter() - start >= min_time or inner >= 1 << 20:
            return inner
        inner *= 2


def time_interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int = 15,
    min_time: float = 0.02,
    progress: Callable[[int], None] | None = None,
) -> dict[str, TimingStats]:
    """Seconds per call of each candidate: ``repeats`` rounds, each timing every candidate once
    (order rotated per round) for at least ``min_time`` seconds."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    names = list(candidates)
    inner = {name: _calibrate(candidates[name], min_time) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            fn, count = candidates[name], inner[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
        if progress is not None:
            progress(round_ + 1)
    return {name: TimingStats.from_times(samples[name]) for name in names}
