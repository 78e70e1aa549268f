"""SSHRunner against a real, throwaway sshd on 127.0.0.1 (its own keys, config and port).

The "board" is this machine: x86-64 jobs run natively over SSH, AArch64 jobs through the
runner's ``wrapper`` (qemu-aarch64 -cpu cortex-a53). Works as root (creates /run/sshd, the
privilege-separation directory sshd insists on) and as an ordinary user.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import bitsearch as bs
from bitsearch.measure import measure
from bitsearch.runners import Buffer, Call, ErrorClass, Job, _harness, make_runner
from bitsearch.runners.ssh import SSHError, SSHRunner, classify_ssh_failure

SSHD = "/usr/sbin/sshd"
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
QEMU = shutil.which("qemu-aarch64")
pytestmark = [
    pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")),
                       reason="needs openssh-server and openssh-client"),
    pytest.mark.skipif(not IS_X86_64, reason="the hand-written x86-64 jobs need an x86-64 host"),
]

# x86-64 (SysV): copy(src=rdi, dst=rsi, n=rdx) byte loop; a store past the end; an endless loop.
COPY = bytes.fromhex("4885d2740f8a07880648ffc748ffc648ffca75f1c3")
STORE_AT = bytes.fromhex("c6043701c3")  # mov byte [rdi + rsi], 1
SPIN = b"\xeb\xfe"
UD2 = b"\x0f\x0b"
# AArch64: copy(src=x0, dst=x1, n=x2)
A64_COPY = b"".join(int(w, 16).to_bytes(4, "little")
                    for w in ["b40000a2", "38401403", "38001423", "f1000442", "54ffffa1", "d65f03c0"])
QEMU_WRAPPER = ("qemu-aarch64", "-cpu", "cortex-a53")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True)


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        for name in ("host_key", "user_key", "other_key"):
            _keygen(root / name)
        (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
        (root / "authorized_keys").chmod(0o600)
        host_pub = (root / "host_key.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "LogLevel ERROR",
            "AcceptEnv none", "",
        ]))
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self.log = open(root / "sshd.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sshd did not start listening") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)  # sshd and the per-connection sessions it forked
        self.proc.wait(timeout=10)
        self.log.close()

    def runner(self, **kwargs) -> SSHRunner:
        options = dict(user=getpass.getuser(), port=self.port, identity_file=self.root / "user_key",
                       known_hosts=self.known_hosts, ssh_config="/dev/null", connect_timeout=5,
                       remote_dir=str(self.root / "remote-cache"), min_time=0.0, repeats=3)
        options.update(kwargs)
        return SSHRunner("127.0.0.1", **options)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    for attempt in range(3):  # the free port may be taken between choosing and binding it
        try:
            server = Sshd(tmp_path_factory.mktemp("sshd"))
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        server.stop()


def copy_job(data: np.ndarray, code: bytes = COPY, arch: str = "x86_64") -> Job:
    return Job(code=(code,), buffers=(Buffer.input(data), Buffer.out(data.nbytes)),
               calls=(Call(0, (("buf", 0), ("buf", 1), ("int", data.nbytes))),), arch=arch)


def test_x86_job_runs_natively_over_ssh_and_the_harness_is_cached(sshd: Sshd, tmp_path: Path) -> None:
    cache = tmp_path / "board-cache"
    runner = sshd.runner(remote_dir=str(cache))
    data = (np.arange(777) * 13 % 256).astype(np.uint8)
    result = runner.run(copy_job(data))
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs == {1: data.tobytes()}
    assert len(result.times) == 3 and all(t > 0 for t in result.times)
    assert not result.emulated
    assert runner.uploads == 1
    cached = list(cache.iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("harness-x86_64-")
    assert cached[0].read_bytes() == _harness.harness_binary("x86_64").read_bytes()
    # A second runner (a new tuning run) finds the harness on the board.
    again = sshd.runner(remote_dir=str(cache))
    assert again.run(copy_job(data), timing=False).outputs == {1: data.tobytes()}
    assert again.uploads == 0


def test_candidate_failures_are_classified_over_ssh(sshd: Sshd) -> None:
    runner = sshd.runner(timeout=3)
    oob = Job(code=(STORE_AT,), buffers=(Buffer.out(100),), calls=(Call(0, (("buf", 0), ("int", 100))),))
    result = runner.run(oob, timing=False)
    assert result.error is ErrorClass.RUNTIME_ERROR and "SIGSEGV" in result.message, result.message
    ill = runner.run(Job(code=(UD2,), buffers=(), calls=(Call(0, ()),)), timing=False)
    assert ill.error is ErrorClass.RUNTIME_ERROR and "SIGILL" in ill.message, ill.message
    start = time.monotonic()
    hang = runner.run(Job(code=(SPIN,), buffers=(), calls=(Call(0, ()),)), timing=False)
    assert hang.error is ErrorClass.TIMEOUT, hang.message
    assert time.monotonic() - start < 20


def test_real_kernel_verified_and_timed_over_ssh(sshd: Sshd) -> None:
    wl = bs.Dense(13, 7, 300, abits=2, wbits=1, mode="unipolar")
    result = measure(wl, bs.Schedule(mr=2, nr=3), runner=sshd.runner())
    assert result.error is ErrorClass.NONE, result.message
    assert result.stats is not None and result.stats.repeats == 3 and not result.emulated


@pytest.mark.skipif(QEMU is None, reason="needs qemu-aarch64 (qemu-user)")
def test_aarch64_job_through_the_qemu_wrapper(sshd: Sshd) -> None:
    runner = sshd.runner(wrapper=QEMU_WRAPPER)
    data = (np.arange(300) % 251).astype(np.uint8)
    result = runner.run(copy_job(data, A64_COPY, "aarch64"))
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs == {1: data.tobytes()}
    assert result.emulated  # times under an emulator: tune refuses them
    with pytest.raises(ValueError, match="emulator"):
        bs.tune(bs.Dense(8, 8, 64), trials=1, storage="sqlite:///:memory:", runner=runner, progress=False)


def test_wrong_architecture_is_a_clear_error(sshd: Sshd) -> None:
    data = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match=r"x86_64.*aarch64|aarch64.*x86_64"):
        sshd.runner().run(copy_job(data, A64_COPY, "aarch64"))
    with pytest.raises(ValueError, match="takes aarch64 jobs"):
        sshd.runner(arch="aarch64", wrapper=QEMU_WRAPPER).run(copy_job(data))


def test_unreachable_port(sshd: Sshd) -> None:
    runner = sshd.runner(port=_free_port())
    with pytest.raises(SSHError) as info:
        runner.run(copy_job(np.zeros(4, np.uint8)))
    assert info.value.kind == "unreachable" and "refused" in str(info.value).lower()
    assert isinstance(info.value, ConnectionError)


def test_key_not_authorized(sshd: Sshd) -> None:
    with pytest.raises(SSHError) as info:
        sshd.runner(identity_file=sshd.root / "other_key").probe()
    assert info.value.kind == "auth", str(info.value)


def test_unknown_and_changed_host_keys(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(SSHError) as info:
        sshd.runner(known_hosts=empty).probe()
    assert info.value.kind == "host-key", str(info.value)
    _keygen(tmp_path / "impostor")
    pub = (tmp_path / "impostor.pub").read_text().split()
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    with pytest.raises(SSHError) as info:
        sshd.runner(known_hosts=changed).probe()
    assert info.value.kind == "host-key", str(info.value)


def test_specs_and_bad_arguments(sshd: Sshd) -> None:
    runner = make_runner(f"ssh://{getpass.getuser()}@127.0.0.1:{sshd.port}"
                         f"?identity_file={sshd.root / 'user_key'}&known_hosts={sshd.known_hosts}&core=0",
                         "x86_64")
    assert isinstance(runner, SSHRunner) and runner.port == sshd.port and runner.core == 0
    assert runner.probe()["arch"] == "x86_64"
    for bad in ("ssh://", "ssh://h:99999", "ssh://h/path", "ssh://h?colour=red", "sftp://h"):
        with pytest.raises(ValueError):
            SSHRunner.from_spec(bad)
    with pytest.raises(ValueError, match="identity_file"):
        SSHRunner("127.0.0.1", identity_file=sshd.root / "missing")
    with pytest.raises(ValueError, match="remote_dir"):
        SSHRunner("127.0.0.1", remote_dir="a b")


def test_ssh_failure_classification() -> None:
    assert classify_ssh_failure("ssh: connect to host x port 22: Connection refused") == "unreachable"
    assert classify_ssh_failure("root@x: Permission denied (publickey).") == "auth"
    assert classify_ssh_failure("Host key verification failed.") == "host-key"
    assert classify_ssh_failure("something else") == "transport"


def test_cli_measure_over_ssh_and_an_unreachable_board(sshd: Sshd, capsys) -> None:
    from bitsearch.cli import main

    query = (f"identity_file={sshd.root / 'user_key'}&known_hosts={sshd.known_hosts}"
             f"&ssh_config=/dev/null&remote_dir={sshd.root / 'cli-cache'}")
    spec = f"ssh://{getpass.getuser()}@127.0.0.1:{sshd.port}?{query}"
    code = main(["measure", "dense", "--m", "9", "--n", "5", "--k", "100", "--runner", spec, "--json"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and record["error"] == "NONE" and "timing" not in record
    dead = f"ssh://{getpass.getuser()}@127.0.0.1:{_free_port()}?{query}"
    assert main(["tune", "dense", "--m", "9", "--n", "5", "--k", "100", "--runner", dead, "--trials", "1",
                 "--storage", "sqlite:///:memory:", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unreachable" in err and err.count("\n") == 1


def test_shared_connection_is_closed(sshd: Sshd) -> None:
    data = np.arange(50, dtype=np.uint8)
    with sshd.runner() as runner:
        assert runner.run(copy_job(data), timing=False).outputs == {1: data.tobytes()}
        control_dir = Path(runner._control_dir)
        assert list(control_dir.iterdir())  # the ControlMaster's socket
    assert not control_dir.exists()  # master asked to exit, its directory removed
    single = sshd.runner(multiplex=False)
    assert single.run(copy_job(data), timing=False).outputs == {1: data.tobytes()}
    assert "ControlMaster=auto" not in single._ssh_command("true")
