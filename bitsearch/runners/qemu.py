"""Run AArch64 jobs in the static AArch64 harness under ``qemu-aarch64 -cpu cortex-a53``.

The emulated CPU enforces the Cortex-A53's instruction set: an instruction the A53 lacks (dot
product, SVE, FP16 arithmetic, ...) raises SIGILL, which is a RUNTIME_ERROR like any crash.
Failures are classified exactly as by :class:`~bitsearch.runners.LocalRunner` (same harness,
same guard pages and ABI checks). Times are those of the emulator: every result is marked
``emulated=True`` and must never be used as a speed -- :func:`bitsearch.tune` refuses such a
runner; search A53 schedules with the ``model`` runner (:mod:`bitsearch.runners.model`), which
verifies under qemu and reports llvm-mca modeled seconds.

Example:
    >>> from bitsearch.runners import Buffer, Call, Job
    >>> ret = bytes.fromhex("c0035fd6")  # ret
    >>> res = QemuRunner().run(Job(code=(ret,), buffers=(Buffer.out(4),),
    ...                            calls=(Call(0, (("buf", 0),)),), arch="aarch64"))
    >>> res.error.name, res.outputs[0], res.emulated
    ('NONE', b'\\x00\\x00\\x00\\x00', True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from bitsearch.records import ErrorClass, Job, RunResult, Timing
from bitsearch.runners import _harness
from bitsearch.runners.base import BaseRunner

QEMU_CPU = "cortex-a53"


def find_qemu(name: str = "qemu-aarch64") -> str:
    """Path of the qemu user-mode emulator; RuntimeError naming the Debian package if absent."""
    path = shutil.which(name)
    if path is None and name == "qemu-aarch64":
        path = shutil.which("qemu-aarch64-static")
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH: running AArch64 code on this machine needs qemu user-mode "
            "emulation (Debian/Ubuntu: apt-get install qemu-user)"
        )
    return path


class QemuRunner(BaseRunner):
    """Runs each ``arch="aarch64"`` job in a fresh ``qemu-aarch64 -cpu cortex-a53`` process.

    ``timeout`` bounds the whole emulated run in seconds (emulation is 10-50x slower than native);
    ``min_time``, ``repeats`` and ``warmup`` are passed to the harness as by LocalRunner, with
    small defaults because emulated times are not speeds; ``core`` pins the emulator to a CPU.
    """

    timing = Timing.EMULATED  # bitsearch.tune refuses runners whose times are not speeds

    def __init__(
        self,
        *,
        timeout: float = 120.0,
        min_time: float = 0.0,
        repeats: int = 3,
        warmup: int = 0,
        core: int | None = None,
        cpu: str = QEMU_CPU,
        qemu: str = "qemu-aarch64",
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not min_time >= 0:
            raise ValueError(f"min_time must be non-negative, got {min_time}")
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        if warmup < 0:
            raise ValueError(f"warmup must be non-negative, got {warmup}")
        if core is not None and core < 0:
            raise ValueError(f"core must be non-negative, got {core}")
        self.qemu = find_qemu(qemu)
        self.cpu = cpu
        self.timeout = float(timeout)
        self.min_time = float(min_time)
        self.repeats = int(repeats)
        self.warmup = int(warmup)
        self.core = core

    def __repr__(self) -> str:
        return f"QemuRunner(cpu={self.cpu!r}, timeout={self.timeout}, repeats={self.repeats})"

    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` once for outputs, then (if ``timing``) time it under the emulator.

        Raises ValueError for a job that is not AArch64 code or is malformed, and
        :class:`~bitsearch.runners._harness.HarnessError` if the harness itself fails.
        """
        if job.arch != "aarch64":
            raise ValueError(f"QemuRunner runs aarch64 code, not {job.arch}")
        binary = _harness.harness_binary("aarch64")
        with tempfile.TemporaryDirectory(prefix="bitsearch-qemu-") as tmp:
            job_file = _harness.write_job(job, tmp)
            out_dir = Path(tmp) / "out"
            out_dir.mkdir()
            args = _harness.harness_args(job_file, out_dir, timing=timing, min_time=self.min_time,
                                         repeats=self.repeats, warmup=self.warmup, core=self.core)
            cmd = [self.qemu, "-cpu", self.cpu, str(binary), *args]
            finished = run_process(cmd, cwd=tmp, timeout=self.timeout)
            if finished is None:
                return RunResult(error=ErrorClass.TIMEOUT,
                                 message=f"did not finish within {self.timeout:g} s (under qemu)",
                                 timing=Timing.EMULATED)
            returncode, stdout, stderr = finished
            result = _harness.interpret(job, returncode, stdout, stderr, out_dir, timing=timing,
                                        repeats=self.repeats)
            result.timing = Timing.EMULATED
            return result


def run_process(
    cmd: list[str], *, cwd: str | os.PathLike[str], timeout: float
) -> tuple[int, str, str] | None:
    """(returncode, stdout, stderr) of ``cmd``, or None if it ran past ``timeout`` (then its whole
    process group is killed)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)  # own process group: a timeout kills all of it
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return None
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    return proc.returncode, stdout, stderr


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


__all__ = ["QEMU_CPU", "QemuRunner", "find_qemu"]
