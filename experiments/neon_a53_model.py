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

``--table``: ResNet-18 C2 as a dense GEMM (default 3136x64x576), before vs after the short-K
path: for A1W1, A2W1, A2W2 (``and``) a small TPE tune with ``--runner model`` pinned to
``short_k=False`` (the windowed K loop: before) and to ``short_k=True`` (after), and a tune of
the int16 baseline; modeled ms are pack + GEMM (as ``bitsearch measure`` reports them),
bit-MAC/cycle at 1.2 GHz and % of the 42.7 bit-MAC/cycle ceiling, speed-up over int16, and the
A1W1 GEMM tile body (its straight-line block, the ``col`` loop region) as % of the ceiling.

    .venv/bin/python experiments/neon_a53_model.py --table --trials 30 --json
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


def _tune(wl, trials: int, storage: str, fixed: dict | None, seed: int):
    from bitsearch.tune import tune

    name = f"{wl}-{'int16' if fixed is None else 'short' if fixed['short_k'] else 'loop'}".replace(" ", "_")
    res = tune(wl, TARGET, trials=trials, storage=storage, study_name=name, seed=seed, runner="model",
               fixed=fixed, progress=False)
    if res.best_schedule is None:
        raise SystemExit(f"no valid trial for {wl} ({fixed})")
    return res


def _region_rate(kernel, bit_macs_per_execution: int, stem: str) -> tuple[float, float]:
    """(cycles per execution, bit-MAC/cycle) of the first region whose label starts with stem."""
    cost = McaModel(target=TARGET).cost(kernel.functions["gemm"])
    region = next(r for r in cost.regions if r.label and r.label.startswith(stem))
    return region.cycles_per_iteration, bit_macs_per_execution / region.cycles_per_iteration


def table(args) -> dict:
    import tempfile

    clock = 1.2e9
    m, n, k = args.m, args.n, args.k
    storage = args.storage or f"sqlite:///{tempfile.mkdtemp(prefix='neon_a53_')}/studies.db"
    rows = []
    model = McaModel(target=TARGET)

    def gemm_ms(wl, schedule) -> float:  # the GEMM alone (no packing), same model
        return 1e3 * model.cost(bs.build(wl, schedule, target=TARGET).functions["gemm"]).cycles / clock

    iwl = bs.IntDense(m, n, k)
    ires = _tune(iwl, args.trials, storage, None, args.seed)
    int_s = ires.best_seconds
    int_gemm = gemm_ms(iwl, ires.best_schedule)
    for abits, wbits in ((1, 1), (2, 1), (2, 2)):
        wl = bs.Dense(m, n, k, abits=abits, wbits=wbits, mode="and")
        for label, short in (("before", False), ("after", True)):
            res = _tune(wl, args.trials, storage, {"short_k": short}, args.seed)
            rate = wl.bit_macs / (res.best_seconds * clock)
            g = gemm_ms(wl, res.best_schedule)
            rows.append({"op": f"A{abits}W{wbits}", "version": label, "ms": 1e3 * res.best_seconds,
                         "gemm_ms": g, "gemm_speedup_vs_int16": int_gemm / g,
                         "bit_macs_per_cycle": rate, "ceiling_pct": 100 * rate / CEILING[1],
                         "speedup_vs_int16": int_s / res.best_seconds,
                         "schedule": res.best_schedule.to_dict(), "trials": args.trials})
    irate = iwl.macs / (int_s * clock)
    rows.append({"op": "int16", "version": "after", "ms": 1e3 * int_s, "macs_per_cycle": irate,
                 "gemm_ms": int_gemm,
                 "schedule": ires.best_schedule.to_dict(), "trials": args.trials})
    # The A1W1 GEMM's per-tile block: its bit-MACs over its modeled cycles per execution.
    best = next(r for r in rows if r["op"] == "A1W1" and r["version"] == "after")
    s = NeonSchedule.from_dict(best["schedule"])
    wl = bs.Dense(m, n, k)
    kern = bs.build(wl, s, target=TARGET)
    cyc, tile_rate = _region_rate(kern, s.mr * s.nr * k, "col")
    old = NeonSchedule.from_dict(next(r for r in rows if r["op"] == "A1W1" and r["version"] == "before")
                                 ["schedule"])
    long_k = bs.Dense(16, 16, 128 * 62)  # the old path's K loop (kloop) on a long K
    okern = bs.build(long_k, old, target=TARGET)
    ocyc, orate = _region_rate(okern, old.mr * old.nr * old.k_unroll * old.vector_bits, "kloop")
    micro = {"after_tile_body": {"schedule": s.to_dict(), "cycles": cyc, "bit_macs_per_cycle": tile_rate,
                                 "ceiling_pct": 100 * tile_rate / CEILING[1]},
             "before_inner_loop": {"schedule": old.to_dict(), "cycles": ocyc, "bit_macs_per_cycle": orate,
                                   "ceiling_pct": 100 * orate / CEILING[1]}}
    print(f"dense {m}x{n}x{k} ('and'), llvm-mca -mcpu=cortex-a53 at 1.2 GHz, pack + GEMM, best of "
          f"{args.trials} TPE trials each (modeled, not measured)")
    print(f"{'op':<6} {'version':<7} {'ms':>8} {'bitMAC/c':>9} {'ceil%':>6} {'x int16':>8} {'GEMM ms':>8} "
          f"{'x int16':>8}  schedule")
    for r in rows:
        if r["op"] == "int16":
            print(f"{'int16':<6} {'':<7} {r['ms']:8.2f} {r['macs_per_cycle']:9.2f} {'MAC/c':>6} {1:8.1f} "
                  f"{r['gemm_ms']:8.2f} {1:8.1f}  {json.dumps(r['schedule'])}")
            continue
        print(f"{r['op']:<6} {r['version']:<7} {r['ms']:8.2f} {r['bit_macs_per_cycle']:9.2f} "
              f"{r['ceiling_pct']:5.0f}% {r['speedup_vs_int16']:8.1f} {r['gemm_ms']:8.2f} "
              f"{r['gemm_speedup_vs_int16']:8.1f}  {json.dumps(r['schedule'])}")
    a, b = micro["after_tile_body"], micro["before_inner_loop"]
    print(f"A1W1 microkernel: after, one {s.mr}x{s.nr} tile over K={k} (straight line): {a['cycles']:.0f} "
          f"cycles, {a['bit_macs_per_cycle']:.1f} bit-MAC/cycle = {a['ceiling_pct']:.0f}% of {CEILING[1]}; "
          f"before, K-loop body: {b['bit_macs_per_cycle']:.1f} = {b['ceiling_pct']:.0f}%")
    return {"workload": {"m": m, "n": n, "k": k, "mode": "and"}, "cpu": "cortex-a53", "clock_hz": clock,
            "ceiling_bit_macs_per_cycle": CEILING[1], "storage": storage, "rows": rows, "microkernel": micro}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=None)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--out", default="results/neon_a53_model")
    ap.add_argument("--table", action="store_true", help="C2 before/after table (tunes with --runner model)")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", default=None, help="Optuna storage URL (default: a fresh temporary file)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    args = ap.parse_args()
    if args.table:
        args.m, args.n, args.k = args.m or 3136, args.n or 64, args.k or 576
        result = table(args)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "neon_a53_c2_table.json").write_text(json.dumps(result, indent=2))
        if args.json:
            print(json.dumps(result))
        return
    args.m, args.n, args.k = args.m or 256, args.n or 256, args.k or 1024
    model = McaModel(target=TARGET)
    wl = bs.Dense(args.m, args.n, args.k)
    small = bs.Dense(min(args.m, 9), min(args.n, 10), min(args.k, 128 * 40 + 17))
    rows = []
    print(f"{wl}, llvm-mca -mcpu=cortex-a53 (modeled, not measured)")
    print(f"{'schedule':<64} {'Mcycles':>8} {'bitMAC/c':>9} {'ceil%':>11} {'inner instr/128':>16}")
    for s in SCHEDULES:
        verify(wl, s, small)
        kern = bs.build(wl, s, target=TARGET)
        cycles = model.cost(kern.functions["gemm"]).cycles
        rate = wl.bit_macs / cycles
        # (K = 1024 may be one straight-line iteration: count the loop on a long-K build)
        _, instr, _ = inner_loop(bs.build(bs.Dense(16, 16, 128 * 62), s, target=TARGET).functions["gemm"], 0)
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
    icycles = model.cost(ik.functions["gemm"]).cycles
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
