#!/usr/bin/env python3
"""Bit-serial dense kernel versus baselines, side by side in one process.

Candidates, all timed on the same shape and the same values, interleaved repeat by repeat:
- ``bitsearch``: our bit-serial kernel, ``kernel(x, packed_w)`` -- activation packing included,
  as a user pays it. Default schedule, or the best of a tuned study (``--study``).
- ``ours-int16``/``ours-int8``: our integer GEMM baselines (VPMADDWD / VPMADDUBSW) on the same
  values, default schedule or tuned (``--int16-study``, ``--int8-study``).
- ``numpy-f32``: ``x @ w.T`` in float32 (OpenBLAS).
- ``torch-fbgemm``/``torch-onednn``: PyTorch's int8 quantized linear (``pip install -e .[peers]``;
  skipped with a message when torch is missing).
One thread each first (threadpoolctl, torch.set_num_threads), then all threads. Every one of our
kernels is checked bit for bit against the exact reference before it is timed.

    .venv/bin/python experiments/bench_dense.py                      # 1024^3, A1W1, `and`
    .venv/bin/python experiments/bench_dense.py --study NAME --storage URL --int16-study NAME2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

import bitsearch as bs
from bitsearch.cost.clock import core_clock_hz
from bitsearch.cost.compare import time_interleaved


def value_operands(wl: bs.Dense, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The operands in the value domain of the mode (what an integer GEMM multiplies)."""
    xv, wv = x.astype(np.int32), w.astype(np.int32)
    if wl.mode in ("unipolar", "bipolar"):
        wv = 2 * wv - wl.wmax
    if wl.mode == "bipolar":
        xv = 2 * xv - wl.amax
    return xv, wv


def int_candidates(wl: bs.Dense, xv: np.ndarray, wv: np.ndarray, want: np.ndarray,
                   studies: dict[str, str | None], storage: str | None) -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {}
    if not hasattr(bs, "IntDense"):
        print("ours-int16/int8: skipped (integer baselines not available in this build)")
        return out
    for dtype in ("int16", "int8"):
        iw = bs.IntDense(wl.m, wl.n, wl.k, dtype=dtype)
        if dtype == "int8":
            if xv.min() < 0 or xv.max() > 127 or wv.min() < -128 or wv.max() > 127:
                print("ours-int8: skipped (values outside u7 x s8 for this mode and bit width)")
                continue
            x_in, w_in = xv.astype(np.uint8), wv.astype(np.int8)
        else:
            x_in, w_in = xv.astype(np.int16), wv.astype(np.int16)
        kern = bs.load(studies[dtype], storage) if studies[dtype] else bs.build(iw)
        if kern.workload != iw:
            raise ValueError(f"study {studies[dtype]!r} tunes {kern.workload}, not {iw}")
        wp = kern.pack_weights(w_in)
        if not np.array_equal(kern(x_in, wp), want):
            raise RuntimeError(f"ours-{dtype} disagrees with the reference")
        out[f"ours-{dtype}"] = lambda t=None, k=kern, a=x_in, b=wp: k(a, b, threads=t or 1)
        print(f"ours-{dtype}: schedule {kern.schedule.to_json()}")
    return out


def torch_candidates(wl: bs.Dense, xv: np.ndarray, wv: np.ndarray) -> dict[str, Callable[[], object]]:
    try:
        import torch
    except ImportError:
        print("torch-fbgemm/torch-onednn: skipped (torch not installed; pip install -e .[peers])")
        return {}
    import warnings

    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
    out: dict[str, Callable[[], object]] = {}
    x_zero = max(0, -int(xv.min()))  # activations are quint8: shift by a zero point
    xq = torch.quantize_per_tensor(torch.from_numpy(xv.astype(np.float32)), 1.0, x_zero, torch.quint8)
    for engine in ("fbgemm", "onednn"):
        if engine not in torch.backends.quantized.supported_engines:
            print(f"torch-{engine}: skipped (engine not supported by this torch build)")
            continue
        torch.backends.quantized.engine = engine
        lin = torch.ao.nn.quantized.Linear(wl.k, wl.n, bias_=False, dtype=torch.qint8)
        lin.set_weight_bias(torch.quantize_per_tensor(torch.from_numpy(wv.astype(np.float32)), 1.0, 0,
                                                      torch.qint8), None)
        lin.scale, lin.zero_point = float(max(1, wl.max_abs_output) / 127), 128  # no saturation

        def call(t: int | None = None, lin=lin, engine=engine) -> object:
            torch.backends.quantized.engine = engine
            return lin(xq)

        call()
        out[f"torch-{engine}"] = call
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--abits", type=int, default=1)
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--mode", default="and", choices=bs.MODES)
    p.add_argument("--schedule", help="bit-serial schedule as JSON (default: bitsearch's default)")
    p.add_argument("--target", default="x86_64-avx2", choices=bs.TARGETS,
                   help="target of the bit-serial kernel without --study (x86_64-avx512: VPOPCNTQ)")
    p.add_argument("--study", help="take the bit-serial kernel from this tuned study")
    p.add_argument("--also-study", action="append", default=[], metavar="NAME",
                   help="time the best kernel of this study too (e.g. the other target), repeatable")
    p.add_argument("--int16-study", help="take our int16 baseline from this tuned study")
    p.add_argument("--int8-study", help="take our int8 baseline from this tuned study")
    p.add_argument("--storage", help="storage of the studies (default sqlite:///studies/bitsearch.db)")
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads of the multi-threaded round (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)

    try:
        wl = bs.Dense(args.m, args.n, args.k, abits=args.abits, wbits=args.wbits, mode=args.mode)
        if args.study:
            kern = bs.load(args.study, args.storage)
            if kern.workload != wl:
                raise ValueError(f"study {args.study!r} tunes {kern.workload}, not {wl}")
        else:
            kern = bs.build(wl, bs.Schedule.from_json(args.schedule) if args.schedule else None, args.target)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    x = rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, wl.wmax + 1, wl.w_shape, dtype=np.uint8)
    want = bs.reference(wl, x, w)
    wp = kern.pack_weights(w)
    if not np.array_equal(kern(x, wp), want):
        print("error: the bit-serial kernel disagrees with the reference; not timing it", file=sys.stderr)
        return 1
    print(f"{wl}; bitsearch {kern.target} schedule {kern.schedule.to_json()}")
    xv, wv = value_operands(wl, x, w)
    xf, wf = xv.astype(np.float32), wv.astype(np.float32)
    candidates: dict[str, Callable[..., object]] = {"bitsearch": lambda t=1: kern(x, wp, threads=t)}
    for name in args.also_study:
        other = bs.load(name, args.storage)
        if other.workload != wl:
            raise ValueError(f"study {name!r} tunes {other.workload}, not {wl}")
        owp = other.pack_weights(w)
        if not np.array_equal(other(x, owp), want):
            raise RuntimeError(f"the kernel of study {name!r} disagrees with the reference")
        print(f"bs[{name}]: {other.target} schedule {other.schedule.to_json()}")
        candidates[f"bs[{name}]"] = lambda t=1, k=other, b=owp: k(x, b, threads=t)
    candidates |= int_candidates(wl, xv, wv, want, {"int16": args.int16_study, "int8": args.int8_study},
                                 args.storage)
    candidates["numpy-f32"] = lambda t=None: xf @ wf.T
    if not args.no_peers:
        candidates.update(torch_candidates(wl, xv, wv))

    rows = []
    for threads in sorted({1, args.threads}):
        if "torch-fbgemm" in candidates or "torch-onednn" in candidates:
            import torch

            torch.set_num_threads(threads)
        clock_before = core_clock_hz()
        with threadpool_limits(threads):
            stats = time_interleaved({name: (lambda f=f, t=threads: f(t)) for name, f in candidates.items()},
                                     repeats=args.repeats)
        clock = (clock_before + core_clock_hz()) / 2  # measured: a chain of dependent ADDs
        print(f"round of {threads} thread(s): core clock {clock / 1e9:.2f} GHz (measured before and after)")
        for name, st in stats.items():
            rows.append({
                "impl": name, "threads": threads, "median_ms": st.median * 1e3, "min_ms": st.min * 1e3,
                "iqr_ms": st.iqr * 1e3, "gmac_per_s": wl.macs / st.median / 1e9,
                "gbitmac_per_s": wl.bit_macs / st.median / 1e9,
                "bitmac_per_cycle_core": wl.bit_macs / st.median / clock / threads,
                "mac_per_cycle_core": wl.macs / st.median / clock / threads,
                "bitsearch_speedup": st.median / stats["bitsearch"].median, "clock_hz": clock,
                "target": kern.target if name == "bitsearch" else None,
            })

    print(f"{'impl':<14}{'threads':>8}{'median ms':>11}{'min ms':>9}{'IQR ms':>9}"
          f"{'GMAC/s':>9}{'MAC/cyc':>9}{'Gbit-MAC/s':>12}{'bit-MAC/cyc':>12}{'bitsearch is':>14}")
    for r in rows:
        print(f"{r['impl']:<14}{r['threads']:>8}{r['median_ms']:>11.3f}{r['min_ms']:>9.3f}"
              f"{r['iqr_ms']:>9.3f}{r['gmac_per_s']:>9.1f}{r['mac_per_cycle_core']:>9.1f}"
              f"{r['gbitmac_per_s']:>12.1f}{r['bitmac_per_cycle_core']:>12.1f}{r['bitsearch_speedup']:>12.2f}x")
    print("per-cycle figures are per core at the measured clock; bit-MAC = MAC x abits x wbits (the "
          "binary products a bit-serial kernel does); 'bitsearch is': how many times faster our "
          "bit-serial kernel is than that row, same threads.")
    if args.json:
        print(json.dumps({"workload": wl.to_dict(), "schedule": kern.schedule.to_dict(),
                          "machine": platform.processor() or platform.machine(),
                          "repeats": args.repeats, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
