"""Runners: execute machine-code jobs in a native harness and classify failures."""

from bitsearch.records import Buffer, Call, ErrorClass, Job, RunResult, Timing
from bitsearch.runners.base import BaseRunner
from bitsearch.runners.local import LocalRunner
from bitsearch.runners.model import ModelRunner
from bitsearch.runners.qemu import QemuRunner
from bitsearch.runners.ssh import SSHRunner
from bitsearch.targets import host_arch

__all__ = [
    "BaseRunner", "Buffer", "Call", "ErrorClass", "Job", "LocalRunner", "ModelRunner", "QemuRunner",
    "RunResult", "SSHRunner", "Timing", "make_runner",
]
RUNNER_SPECS = ("local", "qemu", "model", "ssh://user@host[:port]")


def make_runner(spec: str, arch: str | None = None) -> BaseRunner:
    """A runner from its command-line spelling, for code of ``arch`` (default: this host's).

    ``local`` (the harness on this CPU), ``qemu`` (AArch64 under qemu-aarch64 -cpu cortex-a53;
    emulated times, never a speed), ``model`` (exact verification, llvm-mca modeled seconds) or
    ``ssh://user@host[:port]`` with optional query ``?identity_file=PATH&known_hosts=PATH&core=N``
    (a real board; see :class:`bitsearch.runners.ssh.SSHRunner`; connects once here and raises
    its SSHError, a ConnectionError, if the board cannot be reached or authenticated).

    Example:
        >>> make_runner("model", "aarch64")
        ModelRunner(verifier=None, target=None)
    """
    host = host_arch()
    arch = arch or host
    if not isinstance(spec, str):
        raise ValueError(f"runner spec must be a string, got {spec!r}")
    if spec == "local":
        if arch != host:
            raise ValueError(
                f"the local runner cannot run {arch} code on this {host} host; use "
                "--runner model (verify under qemu, modeled time), qemu or ssh://user@host")
        return LocalRunner()
    if spec == "qemu":
        if arch != "aarch64":
            raise ValueError(f"the qemu runner runs aarch64 code, not {arch}")
        return QemuRunner()
    if spec == "model":
        return ModelRunner()
    if spec.startswith("ssh://"):
        runner = SSHRunner.from_spec(spec, arch=arch)
        runner.probe()  # an unreachable board is an error now, before any trial starts
        return runner
    raise ValueError(f"unknown runner {spec!r}; choose one of {', '.join(RUNNER_SPECS)}")
