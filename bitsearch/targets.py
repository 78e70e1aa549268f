"""Targets as data: one :class:`TargetDef` per instruction set a kernel may be emitted for.

Every fact about a target lives here: its architecture, the CPU features its kernels may use
(``/proc/cpuinfo`` spelling), its vector register file, the CPU its static cost model imitates and
how its code runs on a host of another architecture. Code asks a target for a feature
(``target.has("avx512_vpopcntdq")``), never compares its name; a new target is one more entry.

Example:
    >>> t = get_target("x86_64-avx512")
    >>> t.arch, t.has("avx512_vpopcntdq"), t.vector_registers
    ('x86_64', True, 32)
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class TargetDef:
    """One target. ``features`` are what its kernels may use (and what a host must have to run
    them); ``vector_registers`` x ``vector_bits`` is its vector register file; ``cost_model_cpu``
    the llvm-mca ``-mcpu`` that models it and ``clock_hz`` the clock modeled seconds assume;
    ``emulator_cpu`` the qemu-user CPU that runs its code on a host of another architecture
    (which also traps instructions the CPU lacks)."""

    name: str
    arch: str  # "x86_64" | "aarch64": the machine code's architecture (and harness build)
    features: frozenset[str]
    vector_registers: int
    vector_bits: int
    cost_model_cpu: str
    clock_hz: float | None  # None: this host's measured clock (a native target)
    emulator_cpu: str | None = None  # qemu-user's -cpu that runs its code on another host
    doc: str = ""

    def has(self, feature: str) -> bool:
        """Whether kernels for this target may use ``feature``."""
        return feature in self.features

    def __str__(self) -> str:
        return self.name


_X86_BASE = frozenset({"avx", "avx2", "bmi2", "popcnt", "fma", "f16c"})
TARGET_DEFS: dict[str, TargetDef] = {t.name: t for t in (
    TargetDef("x86_64-avx2", "x86_64", _X86_BASE, vector_registers=16, vector_bits=256,
              cost_model_cpu="znver3", clock_hz=None,
              doc="x86-64 with AVX2, BMI2, POPCNT, FMA and F16C (Haswell and later, Zen)"),
    TargetDef("x86_64-avx512", "x86_64",
              _X86_BASE | {"avx512f", "avx512vl", "avx512bw", "avx512_vpopcntdq", "avx512_vnni"},
              vector_registers=32, vector_bits=512,
              cost_model_cpu="icelake-server", clock_hz=None,  # LLVM 14 has no znver4
              doc="AVX2 plus AVX-512 F/VL/BW, VPOPCNTDQ and VNNI (Ice Lake, Zen 4)"),
    TargetDef("aarch64-cortex-a53", "aarch64", frozenset({"asimd"}), vector_registers=32,
              vector_bits=128, cost_model_cpu="cortex-a53", clock_hz=1.2e9,  # Raspberry Pi 3B
              emulator_cpu="cortex-a53",
              doc="ARMv8.0-A Advanced SIMD on the in-order Cortex-A53 (no dot products)"),
)}
TARGETS: tuple[str, ...] = tuple(TARGET_DEFS)


def get_target(target: str | TargetDef) -> TargetDef:
    """The :class:`TargetDef` of a target name (a TargetDef is returned as it is)."""
    if isinstance(target, TargetDef):
        return target
    if target not in TARGET_DEFS:
        raise ValueError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
    return TARGET_DEFS[target]


def target_arch(target: str | TargetDef) -> str:
    """"x86_64" or "aarch64": the architecture ``target``'s machine code is for."""
    return get_target(target).arch


@functools.cache
def host_arch() -> str:
    """This machine's architecture in TargetDef.arch spelling."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def runs_natively(target: str | TargetDef) -> bool:
    """Whether this host executes ``target``'s code directly (else: emulated, or remotely)."""
    return get_target(target).arch == host_arch()


@functools.cache
def host_features() -> frozenset[str]:
    """CPU features of this host (``/proc/cpuinfo`` flags on x86-64, Features on AArch64)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def missing_features(target: str | TargetDef) -> frozenset[str]:
    """What this host lacks to run ``target``'s code (empty: it can): the architecture itself
    when it is another one, else the CPU features."""
    t = get_target(target)
    if not runs_natively(t):
        return frozenset({t.arch})
    if t.arch == "aarch64":
        return frozenset()  # every AArch64 Linux machine has Advanced SIMD
    return t.features - host_features()


__all__ = ["TARGETS", "TARGET_DEFS", "TargetDef", "get_target", "host_arch", "host_features",
           "missing_features", "runs_natively", "target_arch"]
