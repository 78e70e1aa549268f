"""Build the native harness (``harness.c``) and speak its file protocol.

Everything a runner needs apart from *where* the harness runs lives here, so that the local,
qemu and SSH runners share one protocol:

* :func:`harness_binary` compiles ``harness.c`` once per (source, compiler, flags) and caches the
  binary under ``$BITSEARCH_CACHE`` (default ``~/.cache/bitsearch``).
* :func:`write_job` writes a :class:`Job` into a directory (``job.txt`` + ``.bin`` files).
* :func:`harness_args` builds the harness command line.
* :func:`interpret` turns the harness's exit status, stdout, stderr and output directory into a
  :class:`RunResult`, classifying candidate failures; it raises :class:`HarnessError` only for
  failures of the harness itself (usage or I/O errors: our bug, not the candidate's).

The job file format and the exit codes are documented at the top of ``harness.c``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from bitsearch.paths import cache_dir
from bitsearch.records import Buffer, ErrorClass, Job, RunResult
from bitsearch.targets import host_arch

SOURCE = Path(__file__).with_name("harness.c")
JOB_FILE = "job.txt"
MAX_ARGS = 6

EXIT_OK = 0
EXIT_HARNESS_ERROR = 2  # usage / I/O error: a bug on our side
EXIT_OUT_OF_BOUNDS = 3  # canary in front of a buffer overwritten
EXIT_ABI_VIOLATION = 4  # callee-saved register, stack pointer or FP control state not restored

_ERROR_PREFIX = "bitsearch-harness: error:"
_MESSAGE_PREFIX = "bitsearch-harness:"
_BASE_FLAGS = ("-O2", "-std=c99", "-D_GNU_SOURCE")
_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class HarnessError(RuntimeError):
    """The harness could not run the job for a reason that is not the candidate's fault."""


# --------------------------------------------------------------------------------------------
# Building


def _toolchain(arch: str) -> tuple[str, tuple[str, ...]]:
    """(compiler, flags) building a harness for ``arch``."""
    if arch not in ("x86_64", "aarch64"):
        raise ValueError(f"unsupported harness architecture {arch!r}")
    if arch == "aarch64":
        # Static, so that it runs under qemu-user and on any AArch64 Linux box over SSH.
        cross = "aarch64-linux-gnu-gcc"
        if shutil.which(cross):
            return cross, (*_BASE_FLAGS, "-static")
        if host_arch() == "aarch64" and shutil.which("cc"):
            return "cc", (*_BASE_FLAGS, "-static")
        raise RuntimeError(
            "building the AArch64 harness needs the cross compiler aarch64-linux-gnu-gcc "
            "(Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)"
        )
    if host_arch() == "x86_64":
        if not shutil.which("cc"):
            raise RuntimeError("building the harness needs a C compiler 'cc' on PATH")
        return "cc", _BASE_FLAGS
    cross = "x86_64-linux-gnu-gcc"
    if shutil.which(cross):
        return cross, (*_BASE_FLAGS, "-static")
    raise RuntimeError(f"building the x86-64 harness on {host_arch()} needs {cross}")


def _compiler_identity(compiler: str) -> str:
    """Resolved path and version banner of a compiler (part of the cache key)."""
    path = shutil.which(compiler) or compiler
    try:
        proc = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        banner = proc.stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot run compiler {compiler!r}: {exc}") from exc
    return f"{os.path.realpath(path)}\n{banner}"


def _compile(compiler: str, flags: tuple[str, ...], source: Path, dest: Path) -> None:
    """Compile ``source`` to ``dest`` atomically (temporary file in the same directory)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        cmd = [compiler, *flags, "-o", tmp, str(source)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"compiling the harness failed ({' '.join(cmd)}):\n{proc.stderr.strip()}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_memo: dict[tuple[str, str], Path] = {}
_memo_lock = threading.Lock()


def harness_binary(arch: str = "x86_64") -> Path:
    """Path of a harness binary for ``arch``, compiling it on first use.

    Cached on disk under :func:`cache_dir` keyed by a hash of the source, the compiler (path and
    version) and the flags, and in memory for the life of the process. Concurrent callers, in
    this or other processes, at worst compile twice; each replaces the file atomically.
    """
    arch = _ARCH_ALIASES.get(arch, arch)
    key = (arch, str(cache_dir()))
    with _memo_lock:
        cached = _memo.get(key)
        if cached is not None and cached.exists():
            return cached
        compiler, flags = _toolchain(arch)
        digest = hashlib.sha256()
        digest.update(SOURCE.read_bytes())
        digest.update(b"\0" + _compiler_identity(compiler).encode())
        digest.update(b"\0" + " ".join(flags).encode())
        dest = cache_dir() / f"harness-{arch}-{digest.hexdigest()[:20]}"
        if not dest.exists():
            _compile(compiler, flags, SOURCE, dest)
        _memo[key] = dest
        return dest


def clear_memo() -> None:
    """Forget the in-process cache of :func:`harness_binary` (the disk cache stays)."""
    with _memo_lock:
        _memo.clear()


# --------------------------------------------------------------------------------------------
# Job files


def _input_bytes(buf: Buffer) -> bytes:
    if buf.data is None:
        raise ValueError("an input buffer needs data")
    return bytes(buf.data)


def write_job(job: Job, directory: str | os.PathLike[str]) -> Path:
    """Write ``job`` into ``directory`` (which must exist); return the job file's path.

    Raises ValueError for a malformed job (bad indices, too many arguments, ...).
    """
    directory = Path(directory)
    nbuf = len(job.buffers)
    lines = ["version 1"]
    for i, blob in enumerate(job.code):
        name = f"code{i}.bin"
        (directory / name).write_bytes(bytes(blob))
        lines.append(f"code {i} {name} {len(blob)}")
    for i, buf in enumerate(job.buffers):
        if buf.output:
            if buf.data is not None:
                raise ValueError(f"output buffer {i} must not carry data")
            if buf.nbytes < 0:
                raise ValueError(f"output buffer {i} has a negative size")
            lines.append(f"buf {i} out {buf.nbytes}")
        else:
            data = _input_bytes(buf)
            name = f"buf{i}.bin"
            (directory / name).write_bytes(data)
            lines.append(f"buf {i} in {name} {len(data)}")
    for k, call in enumerate(job.calls):
        if not 0 <= call.code_index < len(job.code):
            raise ValueError(f"call {k}: no code blob {call.code_index}")
        if len(call.args) > MAX_ARGS:
            raise ValueError(f"call {k}: at most {MAX_ARGS} arguments, got {len(call.args)}")
        fields = [f"call {call.code_index}"]
        for kind, value in call.args:
            value = int(value)
            if kind == "buf":
                if not 0 <= value < nbuf:
                    raise ValueError(f"call {k}: no buffer {value}")
                fields.append(f"buf:{value}")
            elif kind == "int":
                if not -(2**63) <= value < 2**64:
                    raise ValueError(f"call {k}: integer argument {value} does not fit 64 bits")
                fields.append(f"int:{value % 2**64}")
            else:
                raise ValueError(f"call {k}: unknown argument kind {kind!r}")
        lines.append(" ".join(fields))
    path = directory / JOB_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def harness_args(
    job_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    timing: bool = True,
    min_time: float = 0.01,
    repeats: int = 10,
    warmup: int = 1,
    core: int | None = None,
) -> list[str]:
    """Arguments after the harness binary for one run."""
    args = [str(job_file), str(out_dir)]
    if timing:
        args += ["--timing", "--min-time", repr(float(min_time))]
        args += ["--repeats", str(int(repeats)), "--warmup", str(int(warmup))]
    if core is not None:
        args += ["--core", str(int(core))]
    return args


def read_outputs(job: Job, out_dir: str | os.PathLike[str]) -> dict[int, bytes]:
    """{buffer index: bytes} of every output buffer written by the harness into ``out_dir``."""
    out_dir = Path(out_dir)
    outputs: dict[int, bytes] = {}
    for i, buf in enumerate(job.buffers):
        if not buf.output:
            continue
        path = out_dir / f"out{i}.bin"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise HarnessError(f"harness did not write output buffer {i}: {exc}") from exc
        if len(data) != buf.nbytes:
            raise HarnessError(
                f"output buffer {i}: harness wrote {len(data)} bytes, expected {buf.nbytes}"
            )
        outputs[i] = data
    return outputs


def parse_report(stdout: str) -> tuple[int, list[float]] | None:
    """(inner repetitions, seconds per call sequence) from the harness's JSON line, or None."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(report, dict) and report.get("status") == "ok":
            return int(report["inner"]), [float(t) for t in report["times"]]
    return None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _harness_lines(stderr: str) -> list[str]:
    return [ln.strip() for ln in stderr.splitlines() if ln.startswith(_MESSAGE_PREFIX)]


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def interpret(
    job: Job,
    returncode: int,
    stdout: str,
    stderr: str,
    out_dir: str | os.PathLike[str],
    *,
    timing: bool,
    repeats: int | None = None,
) -> RunResult:
    """Classify one finished harness run (``returncode`` < 0: killed by signal ``-returncode``).

    Candidate failures become RUNTIME_ERROR results; a harness usage or I/O error raises
    :class:`HarnessError`. Timeouts are the caller's to detect (they never reach here).
    """
    messages = _harness_lines(stderr)
    if returncode < 0:
        name = signal_name(-returncode)
        detail = next((m for m in messages if "fault:" in m), "")
        message = f"killed by {name}" + (f": {detail}" if detail else "")
        return RunResult(error=ErrorClass.RUNTIME_ERROR, message=message)
    if returncode == EXIT_HARNESS_ERROR and any(m.startswith(_ERROR_PREFIX) for m in messages):
        raise HarnessError(f"harness failed: {_tail(stderr)}")
    if returncode in (EXIT_OUT_OF_BOUNDS, EXIT_ABI_VIOLATION) and messages:
        return RunResult(error=ErrorClass.RUNTIME_ERROR, message=messages[-1])
    if returncode != EXIT_OK:
        return RunResult(
            error=ErrorClass.RUNTIME_ERROR,
            message=f"harness exited with status {returncode}: {_tail(stderr, 500)}",
        )
    report = parse_report(stdout)
    if report is None:
        # The candidate may have called exit() itself.
        return RunResult(
            error=ErrorClass.RUNTIME_ERROR,
            message="harness exited without a report (did the code call exit?)",
        )
    inner, times = report
    if timing and (inner < 1 or not times or (repeats is not None and len(times) != repeats)):
        raise HarnessError(f"harness reported malformed timings: {stdout.strip()[:500]}")
    return RunResult(outputs=read_outputs(job, out_dir), times=times if timing else [])
