"""Code identity: the machine code of a few hundred (operator, schedule, target) kernels, pinned.

Why this test exists: the kernel-registry redesign (and any refactor of the emitters or of the
kernel classes) must not change one emitted byte. ``tests/data/code_hashes.json`` holds the
sha256 of every function of kernels built through the public API (``bs.build``) before the
redesign: bit-serial dense, int16/int8 dense, FP8 dense, bit-serial and int16 conv2d on both
x86-64 targets, the NEON bit-serial and int16 kernels for the Cortex-A53, and the FP8 quantize
kernel; default schedules (built with ``schedule=None``) and schedules sampled from each space.
Every test rebuilds one kernel from its recorded workload, schedule and target and compares
the hash of each function.

A failure means emitted code changed. Regenerate the table only for an intended code change,
with ``python scripts/make_code_hashes.py`` (never by editing hashes), and say why in the commit.

Only :func:`function_codes` and :func:`quantizer_code` touch kernel internals. When the kernel
classes change, adapt those two (so they return the same bytes under the same names) and
nothing else; the rest of this file uses the public API only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import bitsearch as bs
import bitsearch.space


# -- the only two places that know kernel internals ---------------------------------------------
def function_codes(kern: bs.Kernel) -> dict[str, bytes]:
    """{function: machine code bytes} of a built kernel: ``Kernel.functions`` is keyed by role
    ("pack", "gather", "gemm", "fix")."""
    return {name: code.code for name, code in kern.functions.items()}


def quantizer_code(fmt: str, rounding: str, saturate: bool) -> bytes:
    """The FP8 quantize kernel's bytes, emitted and encoded as ``bitsearch.ops`` does (it also
    loads them into executable memory, which needs an AVX2 CPU)."""
    from bitsearch.asm.x86_64.encode import encode
    from bitsearch.asm.x86_64.fp8_quantize import emit_quantize

    return encode(emit_quantize(fmt, rounding, saturate)).code


# -- public API from here on ----------------------------------------------------------------------
TABLE = Path(__file__).parent / "data" / "code_hashes.json"
WORKLOADS = {"dense": bs.Dense, "int_dense": bs.IntDense, "conv2d": bs.Conv2d,
             "int_conv2d": bs.IntConv2d, "fp8_dense": bs.Fp8Dense}
QUANTIZE = "fp8_quantize"  # the op name of the quantize kernel's entries


def sha256s(codes: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(code).hexdigest() for name, code in codes.items()}


def workload_of(data: dict) -> object:
    """The workload of a ``to_dict()`` record (JSON lists, e.g. conv kernel/stride/padding, as tuples)."""
    params = {key: tuple(value) if isinstance(value, list) else value
              for key, value in data.items() if key != "op"}
    return WORKLOADS[data["op"]](**params)


def schedule_of(type_name: str, data: dict) -> object:
    return getattr(bitsearch.space, type_name).from_dict(data)


def entry_codes(entry: dict) -> dict[str, str]:
    """Rebuild the kernel of a table entry: {function: sha256 hex}. Entries marked ``default`` go
    through ``schedule=None`` (the default-schedule path); the others get their recorded schedule."""
    data = entry["workload"]
    if data["op"] == QUANTIZE:
        return sha256s({"quantize": quantizer_code(data["fmt"], data["rounding"], data["saturate"])})
    workload = workload_of(data)
    assert workload.to_dict() == data, "the workload does not round-trip through its record"
    schedule = None if entry["default"] else schedule_of(entry["schedule_type"], entry["schedule"])
    return sha256s(function_codes(bs.build(workload, schedule, entry["target"])))


def load_entries() -> list[dict]:
    """The table's entries ([] while scripts/make_code_hashes.py, which imports this file, makes
    the first one; test_table_covers_every_kernel_kind then fails)."""
    return json.loads(TABLE.read_text())["entries"] if TABLE.exists() else []


ENTRIES = load_entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry["id"] for entry in ENTRIES])
def test_code_identity(entry: dict) -> None:
    codes = entry_codes(entry)
    how = "default schedule (schedule=None)" if entry.get("default") else f"schedule {entry['schedule']}"
    assert codes == entry["codes"], (
        f"emitted code changed for {entry['workload']} on {entry['target']}, {how}: functions "
        f"{sorted(n for n in codes.keys() | entry['codes'].keys() if codes.get(n) != entry['codes'].get(n))}")


def test_table_covers_every_kernel_kind() -> None:
    groups = {(entry["workload"]["op"], entry["target"]) for entry in ENTRIES}
    x86 = ("x86_64-avx2", "x86_64-avx512")
    expected = {(op, t) for op in ("dense", "int_dense", "fp8_dense", "conv2d", "int_conv2d") for t in x86}
    expected |= {("dense", "aarch64-cortex-a53"), ("int_dense", "aarch64-cortex-a53"),
                 (QUANTIZE, "x86_64-avx2")}
    assert groups == expected
    assert len({entry["id"] for entry in ENTRIES}) == len(ENTRIES)
    assert any(entry.get("default") for entry in ENTRIES)
