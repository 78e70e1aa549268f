"""Regenerate tests/data/code_hashes.json, the table of tests/test_code_identity.py.

Builds a fixed set of (workload, schedule, target) kernels through the public API and records,
per kernel, the workload and schedule records, the target and the sha256 of every function's
machine code. The selection is deterministic: fixed workloads, and per (workload, target) the
default schedule plus schedules drawn from ``bs.Space(workload, target=t).enumerate()`` (valid
ones) with a ``random.Random`` seeded by the workload and target (a string seed: the same in
every process), a few per value of the space's main strategy knob and a few more at random.

Run only for an intended change of emitted code (the test exists to prove refactors change no
byte), from the repository root:

    PYTHONPATH=. .venv/bin/python scripts/make_code_hashes.py [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_code_identity import QUANTIZE, TABLE, function_codes, quantizer_code, sha256s  # noqa: E402

import bitsearch as bs  # noqa: E402

X86 = ("x86_64-avx2", "x86_64-avx512")
A53 = "aarch64-cortex-a53"
SHORT_TARGET = {"x86_64-avx2": "avx2", "x86_64-avx512": "avx512", A53: "a53"}
ABOUT = ("sha256 of the machine code of every function of kernels built by bs.build before the "
         "registry redesign; regenerate only for an intended code change: scripts/make_code_hashes.py")

# Small shapes (fast to build): m and n off the register-tile grid, K off the 64/256/512-bit blocks,
# plus one aligned shape; every mode, bit widths 1..8.
DENSE = [
    bs.Dense(5, 7, 100, abits=1, wbits=1, mode="and"),
    bs.Dense(3, 11, 300, abits=2, wbits=3, mode="unipolar"),
    bs.Dense(7, 5, 600, abits=1, wbits=1, mode="bipolar"),
    bs.Dense(9, 13, 70, abits=8, wbits=8, mode="and"),
    bs.Dense(4, 6, 520, abits=3, wbits=2, mode="bipolar"),
    bs.Dense(1, 17, 130, abits=4, wbits=1, mode="unipolar"),
    bs.Dense(6, 3, 1000, abits=1, wbits=5, mode="and"),
    bs.Dense(8, 8, 512, abits=2, wbits=2, mode="bipolar"),
]
INT_DENSE = [
    bs.IntDense(5, 7, 100, dtype="int16"),
    bs.IntDense(13, 9, 300, dtype="int16"),
    bs.IntDense(1, 20, 70, dtype="int16"),
    bs.IntDense(5, 7, 100, dtype="int8"),
    bs.IntDense(11, 17, 600, dtype="int8"),
    bs.IntDense(3, 24, 33, dtype="int8"),
]
FP8_DENSE = [
    bs.Fp8Dense(1, 19, 100, afmt="e5m2", wfmt="e5m2"),
    bs.Fp8Dense(6, 13, 300, afmt="e4m3", wfmt="e4m3"),
    bs.Fp8Dense(5, 9, 520, afmt="e5m2", wfmt="e4m3"),
    bs.Fp8Dense(3, 20, 70, afmt="e4m3", wfmt="e5m2"),
]
CONV2D = [
    bs.Conv2d(h=5, w=6, cin=3, cout=5, kernel=3, stride=1, padding="SAME", abits=1, wbits=1, mode="and"),
    bs.Conv2d(h=7, w=7, cin=10, cout=6, kernel=3, stride=2, padding="SAME", abits=2, wbits=1,
              mode="bipolar", batch=2),
    bs.Conv2d(h=6, w=5, cin=70, cout=3, kernel=1, stride=2, padding="VALID", abits=1, wbits=2,
              mode="unipolar"),
    bs.Conv2d(h=5, w=5, cin=8, cout=9, kernel=3, stride=1, padding=1, abits=3, wbits=3, mode="bipolar"),
    bs.Conv2d(h=6, w=7, cin=5, cout=4, kernel=(3, 2), stride=(2, 1), padding=(1, 0, 0, 1), abits=2,
              wbits=2, mode="and", batch=2),
    bs.Conv2d(h=4, w=4, cin=130, cout=7, kernel=2, stride=1, padding="VALID", abits=1, wbits=1,
              mode="bipolar"),
]
INT_CONV2D = [
    bs.IntConv2d(h=5, w=6, cin=3, cout=5, kernel=3, stride=1, padding="SAME"),
    bs.IntConv2d(h=7, w=6, cin=9, cout=10, kernel=3, stride=2, padding="VALID", batch=2),
    bs.IntConv2d(h=4, w=5, cin=20, cout=3, kernel=1, stride=1, padding=1),
]
NEON_DENSE = [
    bs.Dense(5, 7, 100, abits=1, wbits=1, mode="and"),
    bs.Dense(3, 11, 300, abits=2, wbits=3, mode="unipolar"),
    bs.Dense(7, 5, 600, abits=1, wbits=1, mode="bipolar"),
    bs.Dense(9, 6, 70, abits=8, wbits=8, mode="and"),
    bs.Dense(4, 6, 4100, abits=1, wbits=1, mode="bipolar"),  # beyond short K (31 x 128 bits)
    bs.Dense(6, 9, 1000, abits=2, wbits=1, mode="unipolar"),
]
NEON_INT_DENSE = [
    bs.IntDense(5, 7, 100, dtype="int16"),
    bs.IntDense(9, 13, 300, dtype="int16"),
    bs.IntDense(1, 20, 70, dtype="int16"),
]

# (workloads, targets, the knob to stratify the sampled schedules by, schedules per value, extra).
PLAN = [
    (DENSE, X86, "popcount", 1, 1),
    (INT_DENSE, X86, "formulation", 2, 0),
    (FP8_DENSE, X86, "decode", 2, 0),
    (CONV2D, X86, "lowering", 2, 0),
    (INT_CONV2D, X86, "formulation", 2, 0),
    (NEON_DENSE, (A53,), "reduction", 1, 1),
    (NEON_INT_DENSE, (A53,), None, 0, 3),
]
QUANTIZERS = [(fmt, rounding, saturate) for fmt in ("e5m2", "e4m3")
              for rounding in ("nearest", "stochastic") for saturate in (True, False)]


def sampled_schedules(workload: object, target: str, knob: str | None, per_value: int, extra: int) -> list:
    """``per_value`` valid schedules per value of ``knob`` and ``extra`` more, drawn from the whole
    enumerated space with a string-seeded RNG (deterministic across processes)."""
    valid = list(bs.Space(workload, target=target).enumerate())
    rng = random.Random(json.dumps([workload.to_dict(), target], sort_keys=True))
    groups: dict[str, list] = {}
    for schedule in valid:
        groups.setdefault(str(getattr(schedule, knob)) if knob else "", []).append(schedule)
    picked = []
    for value in sorted(groups):
        picked += rng.sample(groups[value], min(per_value, len(groups[value])))
    rest = [schedule for schedule in valid if schedule not in picked]
    return picked + rng.sample(rest, min(extra, len(rest)))


def kernel_entry(workload: object, schedule: object, target: str) -> dict:
    kern = bs.build(workload, schedule, target)
    used = kern.schedule  # schedule=None: the default the kernel was built with
    codes = sha256s(function_codes(kern))
    if schedule is None:  # the recorded default must rebuild to the same bytes when passed explicitly
        assert sha256s(function_codes(bs.build(workload, used, target))) == codes, (workload, target)
    return {"workload": workload.to_dict(), "target": target, "default": schedule is None,
            "schedule_type": type(used).__name__, "schedule": used.to_dict(), "codes": codes}


def make_entries() -> tuple[list[dict], float]:
    plan = []
    for workloads, targets, knob, per_value, extra in PLAN:
        for target in targets:
            for workload in workloads:
                plan.append((workload, None, target))
                plan += [(workload, s, target)
                         for s in sampled_schedules(workload, target, knob, per_value, extra)]
    entries, counts = [], Counter()
    start = time.perf_counter()
    for workload, schedule, target in plan:
        entry = kernel_entry(workload, schedule, target)
        group = (entry["workload"]["op"], target)
        entry["id"] = f"{group[0]}-{SHORT_TARGET[target]}-{counts[group]}"
        counts[group] += 1
        entries.append(entry)
    for i, (fmt, rounding, saturate) in enumerate(QUANTIZERS):
        entries.append({
            "id": f"{QUANTIZE}-avx2-{i}", "target": "x86_64-avx2", "default": False,
            "workload": {"op": QUANTIZE, "fmt": fmt, "rounding": rounding, "saturate": saturate},
            "schedule_type": None, "schedule": None,
            "codes": sha256s({"quantize": quantizer_code(fmt, rounding, saturate)}),
        })
    return entries, time.perf_counter() - start


def dumps(entries: list[dict]) -> str:
    """Stable, sorted JSON: one line per record and per function hash, so a diff names the kernel
    and the function that changed."""
    blocks = []
    for entry in entries:
        lines = []
        for key in sorted(entry):
            value = entry[key]
            if key == "codes":
                hashes = ",\n".join(f"        {json.dumps(name)}: {json.dumps(digest)}"
                                    for name, digest in sorted(value.items()))
                lines.append(f'      "codes": {{\n{hashes}\n      }}')
            else:
                lines.append(f"      {json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
        blocks.append("    {\n" + ",\n".join(lines) + "\n    }")
    text = ("{\n" + f'  "about": {json.dumps(ABOUT)},\n' + '  "entries": [\n' + ",\n".join(blocks)
            + "\n  ]\n}\n")
    assert json.loads(text) == {"about": ABOUT, "entries": entries}
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=TABLE)
    args = parser.parse_args()
    entries, seconds = make_entries()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(dumps(entries))
    counts = Counter((entry["workload"]["op"], entry["target"]) for entry in entries)
    for (op, target), count in sorted(counts.items()):
        print(f"{op:14} {target:20} {count:4}")
    print(f"{len(entries)} entries, built in {seconds:.1f} s -> {args.output}")


if __name__ == "__main__":
    main()
