#!/usr/bin/env python3
"""Modeled Cortex-A53 throughput of the NEON kernels (llvm-mca -mcpu=cortex-a53, no board needed).

For one dense shape (default 256x256x1024) every listed schedule is built for
``aarch64-cortex-a53``, verified bit for bit under ``qemu-aarch64 -cpu cortex-a53`` on a small
copy of the workload (same schedule, m/n/k cut down, all-maximal and random inputs), then modeled
with :class:`bitsearch.cost.mca.McaModel` (loop bodies x their ``MachineCode.loops`` counts). The
table gives modeled GEMM cycles, bit-MAC/cycle (A1W1; MAC/cycle for int16), the instructions the
A1W1 inner loop spends per 128 bit-MACs, and the ratio to the limits.md ceiling (21-43
bit-MAC/cycle). Writes results/neon_a53_model/neon_a53_model.json. A model, not a measurement.

    .venv/bin/python experiments/neon_a53_model.py
    .venv/bin/python experiments/neon_a53_model.py --m 512 --n 512 --k 4608
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import bitsearch as bs
from bitsearch.cost.mca import McaModel
from bitsearch.space.int_schedule import default_int_schedule
from bitsearch.space.schedule import NeonSchedule

TARGET = "aarch64-cortex-a53"
CEILING = (21.3, 42.7)  # limits.md: AND + CNT + ADD per 128 bits at 1 (LLVM) or 2 (GCC) Q-op/cycle
SCHEDULES = [
    NeonSchedule(mr=4, nr=4, vector_bits=128, reduction="addp", k_unroll=8, chains=8),  # default
    NeonSchedule(mr=4, nr=4, vector_bits=128, reduction="addp", k_unroll=4, chains=8),
    NeonSchedule(mr=3, nr=4, vector_bits=128, reduction="addp", k_unroll=8, chains=8),
    NeonSchedule(mr=3, nr=4, vector_bits=128, reduction="uaddlv", k_unroll=8, chains=8),
    NeonSchedule(mr=2, nr=4, vector_bits=128, reduction="uadalp", k_unroll=4, chains=4),
    NeonSchedule(mr=2, nr=4, vector_bits=128, reduction="addp", k_unroll=1, chains=1),
    NeonSchedule(mr=4, nr=4, vector_bits=64, reduction="addp", k_unroll=8, chains=8),
]


def verify(wl, schedule, small) -> None:
    kern = bs.build(small, schedule, target=TARGET)
    rng = np.random.default_rng(0)
    if isinstance(small, bs.IntDense):
        cases = [(np.full(small.x_shape, -(2**15), np.int16), np.full(small.w_shape, -(2**15), np.int16)),
                 (rng.integers(-(2**15), 2**15, small.x_shape).astype(np.int16),
                  rng.integers(-(2**15), 2**15, small.w_shape).astype(np.int16))]
    else:
        cases = [(np.full(small.x_shape, small.amax, np.uint8), np.full(small.w_shape, small.wmax, np.uint8)),
                 (rng.integers(0, small.amax + 1, small.x_shape, dtype=np.uint8),
                  rng.integers(0, small.wmax + 1, small.w_shape, dtype=np.uint8))]
    for x, w in cases:
        if not np.array_equal(kern(x, w), bs.reference(small, x, w)):
            raise SystemExit(f"WRONG ANSWER: {small} {schedule}")


def inner_loop(code, unroll_products: int) -> tuple[str, int, int]:
    """(label, instructions, bit-MACs) of the first K loop of the listing."""
    loop = next(lc for lc in code.loops if lc.label.startswith("kloop"))
    lines = code.listing.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(loop.label + ":"))
    body = []
    for ln in lines[start + 1:]:
        ln = ln.split("//")[0].strip()
        if ln:
            body.append(ln)
        if ln.startswith(f"b.ne {loop.label}"):
            break
    return loop.label, len(body), unroll_products


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--out", default="results/neon_a53_model")
    args = ap.parse_args()
    model = McaModel(target=TARGET)
    wl = bs.Dense(args.m, args.n, args.k)
    small = bs.Dense(min(args.m, 9), min(args.n, 10), min(args.k, 128 * 40 + 17))
    rows = []
    print(f"{wl}, llvm-mca -mcpu=cortex-a53 (modeled, not measured)")
    print(f"{'schedule':<64} {'Mcycles':>8} {'bitMAC/c':>9} {'ceil%':>11} {'inner instr/128':>16}")
    for s in SCHEDULES:
        verify(wl, s, small)
        kern = bs.build(wl, s, target=TARGET)
        cycles = model.cost(kern.gemm).cycles
        rate = wl.bit_macs / cycles
        # (K = 1024 may be one straight-line iteration: count the loop on a long-K build)
        _, instr, _ = inner_loop(bs.build(bs.Dense(16, 16, 128 * 62), s, target=TARGET).gemm, 0)
        per128 = instr * 128 / (s.mr * s.nr * s.k_unroll * s.vector_bits)
        pct = f"{100 * rate / CEILING[1]:.0f}-{100 * rate / CEILING[0]:.0f}%"
        name = (f"{s.mr}x{s.nr} Q{s.vector_bits} {s.reduction} u={s.k_unroll} chains={s.chains}")
        print(f"{name:<64} {cycles / 1e6:8.2f} {rate:9.2f} {pct:>11} {per128:16.3f}")
        rows.append({"schedule": s.to_dict(), "gemm_cycles": cycles, "bit_macs_per_cycle": rate,
                     "inner_instructions_per_128_bit_macs": per128})
    iwl = bs.IntDense(args.m, args.n, args.k)
    isched = default_int_schedule(iwl, TARGET)
    verify(iwl, isched, bs.IntDense(9, 10, 333))
    ik = bs.build(iwl, isched, target=TARGET)
    icycles = model.cost(ik.gemm).cycles
    print(f"{'int16 baseline ' + str(isched.mr) + 'x' + str(isched.nr) + ' SMLAL':<64} "
          f"{icycles / 1e6:8.2f} {iwl.macs / icycles:9.2f} MAC/cycle")
    best = max(rows, key=lambda r: r["bit_macs_per_cycle"])
    print(f"A1W1 best / int16 baseline, modeled speed-up: {icycles / best['gemm_cycles']:.1f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"workload": wl.to_dict(), "cpu": "cortex-a53", "ceiling_bit_macs_per_cycle": CEILING,
              "rows": rows, "int16": {"schedule": isched.to_dict(), "gemm_cycles": icycles,
                                      "macs_per_cycle": iwl.macs / icycles}}
    (out / "neon_a53_model.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({"best_bit_macs_per_cycle": best["bit_macs_per_cycle"],
                      "int16_macs_per_cycle": iwl.macs / icycles}))


if __name__ == "__main__":
    main()
