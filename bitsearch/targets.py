"""Targets: the instruction sets a kernel may use, and whether this host can run them."""

from __future__ import annotations

import functools
import platform

TARGETS: tuple[str, ...] = ("x86_64-avx2", "x86_64-avx512", "aarch64-cortex-a53")

# /proc/cpuinfo flags a target's kernels need.
TARGET_FLAGS: dict[str, frozenset[str]] = {
    "x86_64-avx2": frozenset({"avx2", "bmi2", "popcnt"}),
    "x86_64-avx512": frozenset({"avx2", "bmi2", "popcnt", "avx512f", "avx512vl", "avx512_vpopcntdq"}),
    "aarch64-cortex-a53": frozenset({"asimd"}),  # ARMv8.0-A Advanced SIMD (/proc/cpuinfo "Features")
}
# Machine architecture (Job.arch spelling) of each target's code.
TARGET_ARCH: dict[str, str] = {
    "x86_64-avx2": "x86_64", "x86_64-avx512": "x86_64", "aarch64-cortex-a53": "aarch64",
}


def target_arch(target: str) -> str:
    """"x86_64" or "aarch64": the architecture ``target``'s machine code is for."""
    if target not in TARGET_ARCH:
        raise ValueError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
    return TARGET_ARCH[target]


def runs_natively(target: str) -> bool:
    """Whether this host executes ``target``'s code directly (else: under qemu, or remotely)."""
    import platform as _platform

    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(_platform.machine().lower(),
                                                          _platform.machine().lower())
    return machine == target_arch(target)


@functools.cache
def host_flags() -> frozenset[str]:
    if platform.machine() not in ("x86_64", "AMD64"):
        return frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def missing_features(target: str) -> frozenset[str]:
    """CPU features ``target`` needs that this host lacks (empty: it can run them)."""
    if not runs_natively(target):
        return frozenset({target_arch(target)})  # another architecture altogether
    if target_arch(target) == "aarch64":
        return frozenset()  # every AArch64 Linux machine has Advanced SIMD
    return TARGET_FLAGS[target] - host_flags()
