"""The runner interface: run a :class:`~bitsearch.records.Job` and classify failures.

A runner executes a job -- self-contained machine-code blobs, buffers and a sequence of calls --
in a native harness in another process (or on another machine, or in a static model) and
returns a :class:`~bitsearch.records.RunResult`. Runners know nothing about workloads or bit
widths: verification against a reference happens in :mod:`bitsearch.measure`. What a runner's
times are is declared on the class (``timing``), never probed.
"""

from __future__ import annotations

import abc

from bitsearch.records import Job, RunResult, Timing


class BaseRunner(abc.ABC):
    """Runs jobs in a native harness and classifies failures; never raises for a bad candidate.

    Capabilities (class attributes): ``timing`` -- what the times of :meth:`run` are (a
    measurement, an emulator's, a cost model's); ``reads_listings`` -- whether the runner needs
    ``Job.functions`` (listings and loop counts), not only the code bytes."""

    timing: Timing = Timing.MEASURED
    reads_listings: bool = False

    @abc.abstractmethod
    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` once for outputs, then (if ``timing``) time it. Never raises for bad code."""
