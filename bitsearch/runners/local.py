"""Run jobs in the native harness on this machine, one subprocess per job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from bitsearch.records import ErrorClass, Job, RunResult
from bitsearch.runners import _harness
from bitsearch.runners.base import BaseRunner


class LocalRunner(BaseRunner):
    """Runs each job in a fresh harness process on the host CPU.

    ``timeout`` bounds the whole harness run (verification and timing) in seconds; ``min_time`` is
    the least duration of one timed repeat (the harness doubles its inner repetitions until a
    repeat lasts that long); ``repeats`` timed repeats follow ``warmup`` untimed runs of the call
    sequence; ``core`` pins the harness to one CPU (default: the highest-numbered CPU this
    process may use, away from core 0 where interrupts and the caller tend to run).
    """

    def __init__(
        self,
        *,
        timeout: float = 20.0,
        min_time: float = 0.01,
        repeats: int = 10,
        warmup: int = 1,
        core: int | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not min_time >= 0:
            raise ValueError("min_time must be non-negative")
        if repeats < 1:
            raise ValueError("repeats must be at least 1")
        if warmup < 0:
            raise ValueError("warmup must be non-negative")
        if core is not None and core < 0:
            raise ValueError("core must be non-negative")
        self.timeout = float(timeout)
        self.min_time = float(min_time)
        self.repeats = int(repeats)
        self.warmup = int(warmup)
        if core is None:
            allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
            core = max(allowed) if allowed else None
        self.core = core

    def __repr__(self) -> str:
        return (
            f"LocalRunner(timeout={self.timeout}, min_time={self.min_time}, "
            f"repeats={self.repeats}, warmup={self.warmup}, core={self.core})"
        )

    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` once for outputs, then (if ``timing``) time it. Never raises for bad code.

        Raises ValueError for a malformed job or one for another architecture, and
        :class:`bitsearch.runners._harness.HarnessError` (a RuntimeError) if the harness itself
        fails.
        """
        arch = _harness.host_arch()
        if job.arch != arch:
            raise ValueError(f"LocalRunner runs {arch} code, not {job.arch}")
        binary = _harness.harness_binary(arch)
        with tempfile.TemporaryDirectory(prefix="bitsearch-job-") as tmp:
            job_file = _harness.write_job(job, tmp)
            out_dir = Path(tmp) / "out"
            out_dir.mkdir()
            cmd = [
                str(binary),
                *_harness.harness_args(
                    job_file,
                    out_dir,
                    timing=timing,
                    min_time=self.min_time,
                    repeats=self.repeats,
                    warmup=self.warmup,
                    core=self.core,
                ),
            ]
            proc = subprocess.Popen(
                cmd,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,  # own process group: a timeout kills all of it
            )
            try:
                stdout, stderr = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                return RunResult(
                    error=ErrorClass.TIMEOUT,
                    message=f"did not finish within {self.timeout:g} s",
                )
            except BaseException:
                _kill_group(proc)
                proc.communicate()
                raise
            return _harness.interpret(
                job,
                proc.returncode,
                stdout,
                stderr,
                out_dir,
                timing=timing,
                repeats=self.repeats,
            )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group led by ``proc`` (started with start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
