"""Run jobs on a real board over SSH (``ssh://user@host[:port]``) with the system ``ssh``.

Nothing of ours listens on the board: each job is one ``ssh`` command (over one shared
connection, an OpenSSH ControlMaster, unless ``multiplex=False``) that unpacks a tar of the
job files from stdin into a fresh temporary directory, runs the harness there pinned to a core
(``taskset -c`` when the board has it, and the harness's own ``--core``) under the board's
``timeout`` (coreutils/busybox, when present), and streams back a tar of the exit status,
stdout, stderr and output buffers; the directory is removed on exit. The harness binary (static
for AArch64) is uploaded once and cached on the board under ``remote_dir`` keyed by its SHA-256.

Authentication is by key only (``BatchMode=yes``: never a password prompt) and the host key must
already be known (``StrictHostKeyChecking=yes`` by default; pass ``known_hosts=`` for a separate
file). ``identity_file=`` picks the key; ``ssh_config=`` another client config (``/dev/null``
ignores ``~/.ssh/config``, which is otherwise honoured, e.g. for ControlMaster multiplexing).

Failures:

* the board cannot be used at all -- unreachable, authentication refused, unknown or changed
  host key, a transport failure that persists after one retry, or an architecture the board
  cannot run -- raise :class:`SSHError` (a ConnectionError, with ``kind`` "unreachable", "auth",
  "host-key" or "transport") or ValueError (wrong architecture) on first use or when it happens:
  the tuner stops with a clear message and the finished trials stay in the study;
* a candidate's crash, fault, ABI violation or hang is a RunResult (RUNTIME_ERROR / TIMEOUT),
  exactly as with :class:`~bitsearch.runners.LocalRunner`.

``wrapper`` prefixes the remote command (e.g. ``("qemu-aarch64", "-cpu", "cortex-a53")``): a
test and emulation aid that lets an x86-64 host stand in for an AArch64 board. With a wrapper,
times are marked ``emulated`` and the architecture check is the caller's responsibility.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import urllib.parse
import weakref
from pathlib import Path

from bitsearch.records import ErrorClass, Job, RunResult, Timing
from bitsearch.runners import _harness
from bitsearch.runners.base import BaseRunner

_ARCH_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_SSH_FAILED = 255  # ssh's own exit status for connection and authentication errors
_REMOTE_SETUP_FAILED = 97  # our remote script could not unpack the job
_TIMEOUT_STATUS = 124  # timeout(1) when the command ran out of time
_MARK = "bitsearch-probe:"


class SSHError(ConnectionError):
    """The board cannot be used: ``kind`` is "unreachable", "auth", "host-key" or "transport"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def classify_ssh_failure(stderr: str) -> str:
    """The ``kind`` of an ssh failure from its stderr."""
    text = stderr.lower()
    if ("host key verification failed" in text or "remote host identification has changed" in text
            or "no matching host key" in text or "host key for" in text):
        return "host-key"
    if "permission denied" in text or "too many authentication failures" in text \
            or "no more authentication methods" in text:
        return "auth"
    if any(s in text for s in ("connection refused", "timed out", "no route to host", "could not resolve",
                               "network is unreachable", "name or service not known",
                               "connection reset", "connection closed")):
        return "unreachable"
    return "transport"


class SSHRunner(BaseRunner):
    """Runs jobs in the native harness on ``user@host:port`` over SSH (see the module docs).

    ``arch`` is the architecture of the jobs this runner takes (default: the board's own, from
    ``uname -m``); ``connect_timeout`` bounds connecting (seconds), ``timeout`` one job's run on the
    board (the transfer gets ``connect_timeout`` more); ``core`` the CPU to pin the harness to
    (default: the board's last CPU); ``min_time``/``repeats``/``warmup`` as in LocalRunner.

    Example (needs a board)::

        runner = SSHRunner.from_spec("ssh://pi@raspberrypi.local", identity_file="~/.ssh/id_ed25519")
        bitsearch.tune(wl, target="aarch64-cortex-a53", runner=runner)
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int = 22,
        identity_file: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        ssh_config: str | os.PathLike[str] | None = None,
        strict_host_key_checking: bool = True,
        connect_timeout: float = 10.0,
        timeout: float = 60.0,
        arch: str | None = None,
        wrapper: tuple[str, ...] | list[str] = (),
        remote_dir: str | None = None,
        core: int | None = None,
        min_time: float = 0.01,
        repeats: int = 10,
        warmup: int = 1,
        ssh: str = "ssh",
        multiplex: bool = True,
    ) -> None:
        if not host or any(c.isspace() for c in host) or host.startswith("-"):
            raise ValueError(f"bad SSH host {host!r}")
        if user is not None and not re.fullmatch(r"[\w.][\w.-]*", user):
            raise ValueError(f"bad SSH user {user!r}")
        if not 0 < int(port) < 65536:
            raise ValueError(f"SSH port must be in 1..65535, got {port}")
        if not connect_timeout > 0 or not timeout > 0:
            raise ValueError(f"timeouts must be positive, got connect_timeout={connect_timeout}, "
                             f"timeout={timeout}")
        if repeats < 1 or warmup < 0 or not min_time >= 0:
            raise ValueError(f"need repeats >= 1, warmup >= 0, min_time >= 0; got {repeats}, "
                             f"{warmup}, {min_time}")
        if core is not None and core < 0:
            raise ValueError(f"core must be non-negative, got {core}")
        if remote_dir is not None and not re.fullmatch(r"[\w@%+=:,./${}-]+", remote_dir):
            raise ValueError(f"remote_dir {remote_dir!r} may only hold letters, digits, $VARS and @%+=:,./-")
        if arch is not None and arch not in ("x86_64", "aarch64"):
            raise ValueError(f"arch must be x86_64 or aarch64, got {arch!r}")
        for name, path in (("identity_file", identity_file), ("known_hosts", known_hosts)):
            if path is not None and not Path(path).expanduser().is_file():
                raise ValueError(f"{name} {str(path)!r} is not a file")
        self.host, self.user, self.port = host, user, int(port)
        self.identity_file = str(Path(identity_file).expanduser()) if identity_file else None
        self.known_hosts = str(Path(known_hosts).expanduser()) if known_hosts else None
        self.ssh_config = str(ssh_config) if ssh_config else None
        self.strict_host_key_checking = strict_host_key_checking
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.arch = arch
        self.wrapper = tuple(str(w) for w in wrapper)
        self.remote_dir = remote_dir or "$HOME/.cache/bitsearch"
        self.core = core
        self.min_time, self.repeats, self.warmup = float(min_time), int(repeats), int(warmup)
        self.ssh = ssh
        # One SSH connection shared by all jobs (ControlMaster): a handshake per job costs more
        # than a small job. The master exits 60 s after its last use, or at close().
        self._control_dir = tempfile.mkdtemp(prefix="bs-ssh-") if multiplex else None
        self._finalizer = weakref.finalize(self, _stop_master, self._ssh_command("", control_only=True),
                                           self._control_dir) if multiplex else None
        # an emulator's times are not speeds (tune refuses them)
        self.timing = Timing.EMULATED if self.wrapper else Timing.MEASURED
        self.uploads = 0  # harness uploads by this runner (the board caches them)
        self._lock = threading.Lock()
        self._board: dict[str, object] | None = None  # probe results
        self._harness: dict[str, str] = {}  # arch -> remote path, known to exist

    @classmethod
    def from_spec(cls, spec: str, **kwargs: object) -> SSHRunner:
        """``ssh://[user@]host[:port][?identity_file=P&known_hosts=P&core=N]`` -> runner.

        Keyword arguments override the query. Raises ValueError for a malformed spec.
        """
        parsed = urllib.parse.urlsplit(spec)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise ValueError(f"SSH runner spec must look like ssh://user@host[:port], got {spec!r}")
        try:
            port = parsed.port or 22
        except ValueError:
            raise ValueError(f"bad port in {spec!r}") from None
        if parsed.path not in ("", "/") or parsed.password:
            raise ValueError(f"SSH runner spec takes no path or password: {spec!r}")
        options: dict[str, object] = {}
        for key, value in urllib.parse.parse_qsl(parsed.query, strict_parsing=bool(parsed.query)):
            if key in ("identity_file", "known_hosts", "ssh_config", "remote_dir"):
                options[key] = value
            elif key in ("core", "repeats"):
                options[key] = int(value)
            elif key in ("timeout", "connect_timeout", "min_time"):
                options[key] = float(value)
            else:
                raise ValueError(f"unknown option {key!r} in {spec!r}")
        options.update(kwargs)
        return cls(parsed.hostname, user=parsed.username, port=port, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        who = f"{self.user}@{self.host}" if self.user else self.host
        wrap = f", wrapper={self.wrapper!r}" if self.wrapper else ""
        return f"SSHRunner('ssh://{who}:{self.port}'{wrap})"

    # -- ssh plumbing ----------------------------------------------------------------------------
    def _ssh_command(self, remote: str, *, control_only: bool = False) -> list[str]:
        """The ssh command line running ``remote`` (``control_only``: options and host only)."""
        cmd = [self.ssh]
        if self.ssh_config:
            cmd += ["-F", self.ssh_config]
        cmd += ["-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}",
                "-o", f"StrictHostKeyChecking={'yes' if self.strict_host_key_checking else 'accept-new'}",
                "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.identity_file:
            cmd += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.user:
            cmd += ["-l", self.user]
        if self._control_dir is not None:
            cmd += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C",
                    "-o", "ControlPersist=60"]
        if control_only:
            return [*cmd, "--", self.host]
        # One argument: the remote login shell runs "sh -c '<script>'" whatever shell it is.
        return [*cmd, "--", self.host, "sh -c " + shlex.quote(remote)]

    def _ssh(
        self, remote: str, stdin: bytes = b"", timeout: float | None = None
    ) -> tuple[int | None, bytes, str]:
        """(status, stdout, stderr) of ``remote`` run on the board; status None: ssh ran past
        ``connect_timeout + timeout`` seconds here and was killed."""
        limit = self.connect_timeout + (timeout if timeout is not None else 30.0)
        proc = subprocess.Popen(self._ssh_command(remote), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None, b"", f"ssh did not finish within {limit:g} s"
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        return proc.returncode, out, err.decode(errors="replace")

    def _fail(self, stderr: str, what: str) -> SSHError:
        kind = classify_ssh_failure(stderr)
        hint = {
            "unreachable": "is the board up and the address/port right?",
            "auth": "key authentication only (BatchMode): is the key in the board's authorized_keys?",
            "host-key": "the board's host key is unknown or changed: add it to known_hosts "
                        "(ssh-keyscan) after checking it",
            "transport": "",
        }[kind]
        where = f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        return SSHError(f"SSH to {where} failed ({kind}) while {what}: {stderr.strip()[-800:]}"
                        + (f" -- {hint}" if hint else ""), kind)

    # -- board set-up ----------------------------------------------------------------------------
    def probe(self) -> dict[str, object]:
        """Connect once: the board's architecture, CPUs and tools (cached). Raises SSHError."""
        with self._lock:
            if self._board is None:
                script = (f'echo "{_MARK}arch $(uname -m)"; '
                          f'echo "{_MARK}cpus $(nproc 2>/dev/null || echo 1)"; '
                          f'command -v taskset >/dev/null 2>&1 && echo "{_MARK}taskset"; '
                          f'command -v timeout >/dev/null 2>&1 && echo "{_MARK}timeout"; exit 0')
                status, out, err = self._ssh(script, timeout=self.connect_timeout)
                if status != 0:
                    raise self._fail(err or f"exit status {status}", "probing the board")
                info: dict[str, object] = {"taskset": False, "timeout": False}
                for line in out.decode(errors="replace").splitlines():
                    if line.startswith(_MARK):
                        key, _, value = line[len(_MARK):].partition(" ")
                        info[key] = value.strip() if value else True
                if "arch" not in info:
                    raise SSHError(f"unexpected answer from {self.host}: {out[:300]!r} {err[-300:]}",
                                   "transport")
                machine = str(info["arch"]).lower()
                info["arch"] = _ARCH_ALIASES.get(machine, machine)
                try:
                    info["cpus"] = max(1, int(str(info.get("cpus", "1"))))
                except ValueError:
                    info["cpus"] = 1
                self._board = info
            return self._board

    def _check_arch(self, arch: str) -> None:
        board = self.probe()
        if self.arch is not None and arch != self.arch:
            raise ValueError(f"{self!r} takes {self.arch} jobs, not {arch}")
        if not self.wrapper and board["arch"] != arch:
            raise ValueError(
                f"the board {self.host} is {board['arch']} (uname -m), it cannot run {arch} code; "
                f"pick a {arch} board (or, to emulate, pass wrapper=('qemu-aarch64', '-cpu', 'cortex-a53'))")

    def _remote_harness(self, arch: str) -> str:
        """Path of the harness on the board, uploading it if the board lacks it."""
        if arch in self._harness:
            return self._harness[arch]
        local = _harness.harness_binary(arch)
        data = local.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:20]
        path = f"{self.remote_dir}/harness-{arch}-{digest}"
        # Atomic: a partly written file must never look like a cached harness.
        script = (f'p="{path}"; if [ -x "$p" ]; then echo cached; exit 0; fi; '
                  f'mkdir -p "{self.remote_dir}" && t="$p.tmp.$$" && cat > "$t" && chmod 755 "$t" '
                  f'&& mv -f "$t" "$p" && echo uploaded')
        # Ask first without the bytes (cheap when cached), then send them if needed.
        status, out, err = self._ssh(f'p="{path}"; [ -x "$p" ] && echo cached; exit 0',
                                     timeout=self.connect_timeout)
        if status != 0:
            raise self._fail(err, "looking for the cached harness")
        if b"cached" not in out:
            status, out, err = self._ssh(script, stdin=data, timeout=120.0)
            if status != 0 or (b"uploaded" not in out and b"cached" not in out):
                raise self._fail(err or f"exit status {status}", "uploading the harness")
            self.uploads += 1
        self._harness[arch] = path
        return path

    # -- running ---------------------------------------------------------------------------------
    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` on the board once for outputs, then (if ``timing``) time it.

        Raises SSHError if the board cannot be used, ValueError for a malformed job or one of an
        architecture the board cannot run, HarnessError if the harness itself fails.
        """
        self._check_arch(job.arch)
        board = self.probe()
        harness = self._remote_harness(job.arch)
        core = self.core if self.core is not None else int(board["cpus"]) - 1  # type: ignore[call-overload]
        with tempfile.TemporaryDirectory(prefix="bitsearch-ssh-") as tmp:
            job_dir = Path(tmp) / "job"
            job_dir.mkdir()
            _harness.write_job(job, job_dir)
            payload = io.BytesIO()
            with tarfile.open(fileobj=payload, mode="w") as tar:
                for f in sorted(job_dir.iterdir()):
                    tar.add(f, arcname=f.name)
            args = _harness.harness_args("job.txt", "out", timing=timing, min_time=self.min_time,
                                         repeats=self.repeats, warmup=self.warmup, core=core)
            script = self._job_script(harness, args, core, board)
            for attempt in range(2):
                status, out, err = self._ssh(script, stdin=payload.getvalue(), timeout=self.timeout + 10)
                if status == 0:
                    break
                if status is None:
                    return RunResult(error=ErrorClass.TIMEOUT, timing=self.timing,
                                     message=f"did not finish within {self.timeout:g} s (on {self.host})")
                if attempt == 1 or status != _SSH_FAILED:
                    what = "running a job" if status == _SSH_FAILED else f"running a job (status {status})"
                    raise self._fail(err or f"exit status {status}", what)
            result_dir = Path(tmp) / "result"
            result_dir.mkdir()
            try:
                with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
                    _extract(tar, result_dir)
                returncode = int((result_dir / "rc").read_text().strip())
                stdout = (result_dir / "stdout").read_text(errors="replace")
                stderr = (result_dir / "stderr").read_text(errors="replace")
            except (tarfile.TarError, OSError, ValueError) as exc:
                raise SSHError(f"malformed answer from {self.host} ({exc}): {err.strip()[-500:]}",
                               "transport") from None
            if returncode == _TIMEOUT_STATUS or (returncode == 128 + 9 and board["timeout"]):
                return RunResult(error=ErrorClass.TIMEOUT, timing=self.timing,
                                 message=f"did not finish within {self.timeout:g} s (on {self.host})")
            if returncode > 128:  # the shell reports death by signal N as 128 + N
                returncode = -(returncode - 128)
            result = _harness.interpret(job, returncode, stdout, stderr, result_dir / "out",
                                        timing=timing, repeats=self.repeats)
            result.timing = self.timing
            return result

    def _job_script(self, harness: str, args: list[str], core: int, board: dict[str, object]) -> str:
        run = [*self.wrapper, harness, *args]
        command = " ".join(shlex.quote(a) if a != harness else f'"{a}"' for a in run)
        if board["taskset"]:
            command = f"taskset -c {int(core)} {command}"
        if board["timeout"]:
            command = f"timeout -k 2 {self.timeout:g} {command}"
        return "\n".join([
            'd=$(mktemp -d "${TMPDIR:-/tmp}/bitsearch-job.XXXXXX") || exit 97',
            "trap 'rm -rf \"$d\"' EXIT",
            'cd "$d" && tar -xf - && mkdir -p out || exit 97',
            f"{command} >stdout 2>stderr </dev/null",
            "echo $? >rc",
            "tar -cf - rc stdout stderr out",
        ])

    def close(self) -> None:
        """Close the shared connection (if any) and forget the probe and harness caches; the
        runner reconnects on its next job. Also runs when the runner is garbage-collected."""
        with self._lock:
            self._board = None
            self._harness.clear()
            if self._finalizer is not None:
                self._finalizer()
                self._control_dir = tempfile.mkdtemp(prefix="bs-ssh-")
                self._finalizer = weakref.finalize(self, _stop_master,
                                                   self._ssh_command("", control_only=True),
                                                   self._control_dir)

    def __enter__(self) -> SSHRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_master(base: list[str], control_dir: str) -> None:
    """Ask our ControlMaster (if one is running) to exit, and remove its socket directory."""
    if any(Path(control_dir).iterdir()):
        host = base[-1]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*base[:-2], "-O", "exit", "--", host], capture_output=True, timeout=10,
                           check=False)
    shutil.rmtree(control_dir, ignore_errors=True)


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract regular files and directories only, never outside ``dest`` (the answer comes
    from another machine; Python 3.11.2's tarfile has no extraction filters)."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if not parts or Path(member.name).is_absolute() or ".." in parts:
            raise tarfile.TarError(f"unsafe path {member.name!r}")
        target = dest.joinpath(*parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            target.write_bytes(source.read() if source is not None else b"")
        else:
            raise tarfile.TarError(f"unexpected member {member.name!r} (not a file)")


__all__ = ["SSHError", "SSHRunner", "classify_ssh_failure"]
