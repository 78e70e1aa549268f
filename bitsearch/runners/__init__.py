"""Runners: execute machine-code jobs in a native harness and classify failures."""

from bitsearch.runners.base import BaseRunner, Buffer, Call, ErrorClass, Job, RunResult
from bitsearch.runners.local import LocalRunner

__all__ = [
    "BaseRunner", "Buffer", "Call", "ErrorClass", "Job", "LocalRunner", "ModelRunner", "QemuRunner",
    "RunResult", "SSHRunner", "make_runner", "target_arch",
]
RUNNER_SPECS = ("local", "qemu", "model", "ssh://user@host[:port]")

# Imported on first use: model.py needs bitsearch.asm.kernel, which imports this package.
_LAZY = {"ModelRunner": "bitsearch.runners.model", "QemuRunner": "bitsearch.runners.qemu",
         "SSHRunner": "bitsearch.runners.ssh"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def target_arch(target: str) -> str:
    """Job.arch of a target name: ``aarch64-*`` -> "aarch64", ``x86_64-*`` -> "x86_64"."""
    from bitsearch import targets

    table = getattr(targets, "TARGET_ARCH", {})
    if target in table:
        return table[target]
    arch = target.split("-", 1)[0]
    if arch not in ("x86_64", "aarch64"):
        raise ValueError(f"cannot tell the architecture of target {target!r}")
    return arch


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
    from bitsearch.runners import _harness

    host = _harness.host_arch()
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
        from bitsearch.runners.qemu import QemuRunner

        return QemuRunner()
    if spec == "model":
        from bitsearch.runners.model import ModelRunner

        return ModelRunner()
    if spec.startswith("ssh://"):
        from bitsearch.runners.ssh import SSHRunner

        runner = SSHRunner.from_spec(spec, arch=arch)
        runner.probe()  # an unreachable board is an error now, before any trial starts
        return runner
    raise ValueError(f"unknown runner {spec!r}; choose one of {', '.join(RUNNER_SPECS)}")
