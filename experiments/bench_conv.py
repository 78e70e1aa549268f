#!/usr/bin/env python3
"""Bit-serial conv2d versus our int16 conv baseline on ResNet-18 layers, side by side, one thread.

Per layer (default C2 and C12, batch 1): the default and a briefly tuned (``--trials``) bit-serial
kernel, and the default and briefly tuned int16 conv (im2col + the int16 GEMM), all on the same
values (the bit-serial operands, as int16 for the baseline), every one checked bit for bit against
the exact reference first, then timed interleaved repeat by repeat in one process -- activation
packing (and the int16 padded copy + im2col) included, weights packed once. Ratios are what to
read: absolute times on a shared machine drift by 15 % or more.

    .venv/bin/python experiments/bench_conv.py                         # C2 C12, A1W1 and, 12 trials
    .venv/bin/python experiments/bench_conv.py --layers C2 C7 --abits 2 --trials 30 --json
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
from bitsearch.targets import missing_features
from bitsearch.workloads import resnet18_layer


def tuned(workload, trials: int, storage: str, seed: int):
    if trials <= 0:
        return bs.build(workload)
    res = bs.tune(workload, trials=trials, storage=storage, study_name=f"bench-{workload}-{seed}",
                  progress=False, seed=seed)
    if res.best_schedule is None:
        raise RuntimeError(f"no valid schedule for {workload} in {trials} trials")
    return bs.build(workload, res.best_schedule)


def bench_layer(name: str, args: argparse.Namespace) -> dict[str, object]:
    cv = resnet18_layer(name, abits=args.abits, wbits=args.wbits, mode=args.mode)
    icv = resnet18_layer(name, dtype="int16")
    rng = np.random.default_rng(0)
    x = rng.integers(0, cv.amax + 1, cv.x_shape, dtype=np.uint8)
    w = rng.integers(0, cv.wmax + 1, cv.w_shape, dtype=np.uint8)
    xi, wi = x.astype(np.int16), w.astype(np.int16)
    kernels = {
        "bit-default": (bs.build(cv), cv, x, w),
        "bit-tuned": (tuned(cv, args.trials, args.storage, args.seed), cv, x, w),
        "int16-default": (bs.build(icv), icv, xi, wi),
        "int16-tuned": (tuned(icv, args.trials, args.storage, args.seed), icv, xi, wi),
    }
    if not missing_features("x86_64-avx512"):  # VPOPCNTQ on zmm (Zen 4, Ice Lake)
        kernels["bit-avx512"] = (bs.build(cv, target="x86_64-avx512"), cv, x, w)
    calls = {}
    for label, (kern, wl, xx, ww) in kernels.items():
        wp = kern.pack_weights(ww)
        if not np.array_equal(kern(xx, wp), bs.reference(wl, xx, ww)):
            raise RuntimeError(f"{label} on {name} is not exact")
        calls[label] = lambda kern=kern, xx=xx, wp=wp: kern(xx, wp)
    with threadpool_limits(1):
        stats = time_interleaved(calls, repeats=args.repeats)
    rows = {label: {"median_s": s.median, "min_s": s.min, "iqr_s": s.iqr,
                    "schedule": kernels[label][0].schedule.to_dict()} for label, s in stats.items()}
    return {
        "layer": name, "workload": cv.to_dict(), "macs": cv.macs, "kernels": rows,
        "speedup_default": stats["int16-default"].median / stats["bit-default"].median,
        "speedup_tuned": stats["int16-tuned"].median / stats["bit-tuned"].median,
        "speedup_tuned_min": stats["int16-tuned"].min / stats["bit-tuned"].min,
        "speedup_best_min": min(stats[k].min for k in stats if k.startswith("int16"))
        / min(stats[k].min for k in stats if k.startswith("bit")),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="+", default=["C2", "C12"])
    p.add_argument("--abits", type=int, default=1)
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--mode", default="and", choices=bs.MODES)
    p.add_argument("--trials", type=int, default=12, help="tuning trials per kernel (0: defaults only)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", default="sqlite:///:memory:")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = p.parse_args()
    results = []
    print(f"one thread, A{args.abits}W{args.wbits} {args.mode} vs int16, {args.trials} tuning trials each; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f} (noisy machine: read the ratios)")
    print(f"{'layer':<6}{'kernel':<15}{'median ms':>11}{'min ms':>9}{'GMAC/s':>9}")
    for name in args.layers:
        res = bench_layer(name, args)
        results.append(res)
        for label, row in res["kernels"].items():
            print(f"{name:<6}{label:<15}{row['median_s'] * 1e3:>11.3f}{row['min_s'] * 1e3:>9.3f}"
                  f"{res['macs'] / row['median_s'] / 1e9:>9.1f}")
        print(f"{name:<6}int16/bit medians: default {res['speedup_default']:.2f}x, tuned "
              f"{res['speedup_tuned']:.2f}x; minima: tuned {res['speedup_tuned_min']:.2f}x, best of "
              f"each {res['speedup_best_min']:.2f}x")
    if args.json:
        print(json.dumps({"results": results, "load": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
