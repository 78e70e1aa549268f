"""Targets: the instruction sets a kernel may use, and whether this host can run them."""

from __future__ import annotations

import functools
import platform

TARGETS: tuple[str, ...] = ("x86_64-avx2", "x86_64-avx512")

# /proc/cpuinfo flags a target's kernels need.
TARGET_FLAGS: dict[str, frozenset[str]] = {
    "x86_64-avx2": frozenset({"avx2", "bmi2", "popcnt"}),
    "x86_64-avx512": frozenset({"avx2", "bmi2", "popcnt", "avx512f", "avx512vl", "avx512_vpopcntdq"}),
}


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
    return TARGET_FLAGS[target] - host_flags()
