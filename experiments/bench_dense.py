#!/usr/bin/env python3
"""Bit-serial dense kernel versus numpy float32 matmul, side by side in one process.

Times ``kernel(x, packed_w)`` -- activation packing included, as a user pays it -- and
``x_f32 @ w_f32.T`` on the same shape, interleaved repeat by repeat, first with one thread each
(threadpoolctl caps OpenBLAS) and then with all threads. The kernel is verified bit for bit first.

    .venv/bin/python experiments/bench_dense.py                      # 1024^3, A1W1, `and`
    .venv/bin/python experiments/bench_dense.py --abits 2 --wbits 2 --json
    .venv/bin/python experiments/bench_dense.py --schedule '{"mr": 2, "nr": 4, "k_unroll": 2}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np
from threadpoolctl import threadpool_limits

import bitsearch as bs
from bitsearch.cost.compare import time_interleaved

FP32_MAC_PER_CYCLE = 16  # Zen 3: two 8-wide FMA pipes (../shared/reference/limits.md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--abits", type=int, default=1)
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--mode", default="and", choices=bs.MODES)
    p.add_argument("--schedule", help="schedule as JSON (default: bitsearch's default schedule)")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of the multi-threaded round (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)

    try:
        wl = bs.Dense(args.m, args.n, args.k, abits=args.abits, wbits=args.wbits, mode=args.mode)
        schedule = bs.Schedule.from_json(args.schedule) if args.schedule else None
        kern = bs.build(wl, schedule)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    x = rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, wl.wmax + 1, wl.w_shape, dtype=np.uint8)
    wp = kern.pack_weights(w)
    if not np.array_equal(kern(x, wp), bs.reference(wl, x, w)):
        print("error: the kernel disagrees with the reference; not timing it", file=sys.stderr)
        return 1
    xf, wf = x.astype(np.float32), w.astype(np.float32)

    rows = []
    for threads in sorted({1, args.threads}):
        with threadpool_limits(threads):
            stats = time_interleaved(
                {"bitsearch": lambda t=threads: kern(x, wp, threads=t), "numpy-f32": lambda: xf @ wf.T},
                repeats=args.repeats,
            )
        base = stats["numpy-f32"].median
        clock = wl.macs / base / FP32_MAC_PER_CYCLE / threads  # Hz implied by numpy at FMA peak
        for name, st in stats.items():
            rows.append({
                "impl": name, "threads": threads, "median_ms": st.median * 1e3, "min_ms": st.min * 1e3,
                "iqr_ms": st.iqr * 1e3, "gmac_per_s": wl.macs / st.median / 1e9,
                "gbitmac_per_s": wl.bit_macs / st.median / 1e9,
                "bitmac_per_cycle_core": wl.bit_macs / st.median / clock / threads,
                "speedup_vs_numpy": base / st.median,
            })

    print(f"{wl}, schedule {kern.schedule.to_json()}")
    print(f"{'impl':<12}{'threads':>8}{'median ms':>11}{'min ms':>9}{'IQR ms':>9}"
          f"{'GMAC/s':>9}{'Gbit-MAC/s':>12}{'bit-MAC/cyc':>12}{'vs numpy':>10}")
    for r in rows:
        print(f"{r['impl']:<12}{r['threads']:>8}{r['median_ms']:>11.3f}{r['min_ms']:>9.3f}"
              f"{r['iqr_ms']:>9.3f}{r['gmac_per_s']:>9.1f}{r['gbitmac_per_s']:>12.1f}"
              f"{r['bitmac_per_cycle_core']:>12.1f}{r['speedup_vs_numpy']:>9.2f}x")
    print("bit-MAC/cyc: per core, at the clock implied by numpy f32 running at 16 MAC/cycle.")
    if args.json:
        print(json.dumps({"workload": wl.to_dict(), "schedule": kern.schedule.to_dict(),
                          "machine": platform.processor() or platform.machine(),
                          "repeats": args.repeats, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
