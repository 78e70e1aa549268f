#!/usr/bin/env python3
"""FP8 kernels versus numpy float32, side by side in one process, one thread.

Three groups, each timed interleaved repeat by repeat (bitsearch.cost.compare.time_interleaved),
every kernel checked against its reference before it is timed:

- ``gemv``: y = W a with 4096x4096 FP8 weights (packed once, as a model's weights are), batch 1,
  versus numpy float32 ``W @ a`` (OpenBLAS sgemv). Memory bound: FP8 weights are 4x smaller.
  Target >= 2.5x. Both format pairs (e5m2 x e5m2, e4m3 x e4m3); the AVX2 kernels and, where the
  CPU has AVX-512, the zmm variant (``x86_64-avx512``), all in the same interleaved run.
- ``gemm``: 1024^3 FP8 GEMM versus numpy float32 matmul (OpenBLAS sgemm). Target >= 0.8x. The
  kernel is the default schedule, ``--schedule JSON``, or the best of ``--tune N`` trials.
  ``ops.fp8_matmul`` (weights packed on every call, what the training loop pays) is timed too.
- ``quantize``: fp32 -> FP8 stochastic rounding, the AVX2 kernel (``ops.quantize_fp8``) versus the
  numpy reference (``bitsearch.numerics.quantize``), GB/s of fp32 input. Target >= 1 GB/s.

    .venv/bin/python experiments/bench_fp8.py [--tune 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import bitsearch as bs
import bitsearch.ops as ops
from bitsearch.cost.compare import time_interleaved
from bitsearch.numerics import quantize
from bitsearch.space.fp8_schedule import Fp8Schedule
from bitsearch.targets import missing_features
from bitsearch.workloads import fp8_dtype, fp8_mismatch

RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench_fp8"


def fp8_operand(rng: np.random.Generator, shape: tuple[int, ...], fmt: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32).astype(fp8_dtype(fmt))


def timed(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    with threadpool_limits(1):
        stats = time_interleaved(candidates, repeats=repeats, min_time=0.05)
    return {name: s.median for name, s in stats.items()}


def targets() -> list[str]:
    """AVX2 always; the AVX-512 (zmm) variant too where this CPU runs it."""
    return ["x86_64-avx2"] + ([] if missing_features("x86_64-avx512") else ["x86_64-avx512"])


def bench_gemv(n: int, k: int, fmt: str, repeats: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(1)
    wl = bs.Fp8Dense(1, n, k, afmt=fmt, wfmt=fmt)
    a, b = fp8_operand(rng, wl.x_shape, fmt), fp8_operand(rng, wl.w_shape, fmt)
    wf, af = np.ascontiguousarray(b.astype(np.float32)), a.astype(np.float32)[0]
    candidates: dict[str, Callable[[], object]] = {"numpy-f32": lambda: wf @ af}
    schedules = {}
    for target in targets():
        kern = bs.build(wl, target=target)
        wp = kern.pack_weights(b)
        out = np.empty((1, n), np.float32)
        problem = fp8_mismatch(wl, a, b, kern(a, wp))
        if problem:
            raise RuntimeError(f"gemv {fmt} {target}: {problem}")
        candidates[target] = lambda kern=kern, wp=wp, out=out: kern(a, wp, out=out)
        schedules[target] = kern.schedule.to_dict()
    t = timed(candidates, repeats)
    return [{"group": "gemv", "target": target, "shape": [1, n, k], "formats": f"{fmt}x{fmt}",
             "how": "default schedule", "schedule": schedules[target], "fp8_s": t[target],
             "numpy_f32_s": t["numpy-f32"], "speedup": t["numpy-f32"] / t[target], "target_ratio": 2.5,
             "fp8_weight_GBps": n * k / t[target] / 1e9} for target in schedules]


def gemm_kernel(wl: bs.Fp8Dense, target: str, args: argparse.Namespace) -> tuple[object, str]:
    if args.tune:
        res = bs.tune(wl, target=target, trials=args.tune, storage="sqlite:///:memory:", progress=False,
                      seed=0)
        return bs.build(wl, res.best_schedule, target), f"best of {args.tune} tuning trials"
    if args.schedule:
        return bs.build(wl, Fp8Schedule.from_json(args.schedule), target), "hand-picked (--schedule)"
    return bs.build(wl, target=target), "default schedule"


def bench_gemm(m: int, n: int, k: int, fmt: str, args: argparse.Namespace) -> list[dict[str, object]]:
    rng = np.random.default_rng(2)
    wl = bs.Fp8Dense(m, n, k, afmt=fmt, wfmt=fmt)
    a, b = fp8_operand(rng, wl.x_shape, fmt), fp8_operand(rng, wl.w_shape, fmt)
    af, bf = a.astype(np.float32), np.ascontiguousarray(b.astype(np.float32))
    candidates: dict[str, Callable[[], object]] = {"numpy-f32": lambda: af @ bf.T}
    info = {}
    for target in targets():
        kern, how = gemm_kernel(wl, target, args)
        wp = kern.pack_weights(b)
        out = np.empty((m, n), np.float32)
        problem = fp8_mismatch(wl, a, b, kern(a, wp))
        if problem:
            raise RuntimeError(f"gemm {fmt} {target}: {problem}")
        candidates[target] = lambda kern=kern, wp=wp, out=out: kern(a, wp, out=out)
        info[target] = (how, kern.schedule.to_dict())
    ops.fp8_matmul(a, b)  # build and cache outside the timing
    candidates["ops.fp8_matmul"] = lambda: ops.fp8_matmul(a, b)
    t = timed(candidates, args.repeats)
    return [{"group": "gemm", "target": target, "shape": [m, n, k], "formats": f"{fmt}x{fmt}", "how": how,
             "schedule": schedule, "fp8_s": t[target], "ops_fp8_matmul_s": t["ops.fp8_matmul"],
             "numpy_f32_s": t["numpy-f32"], "speedup": t["numpy-f32"] / t[target], "target_ratio": 0.8,
             "fp8_GMACps": wl.macs / t[target] / 1e9} for target, (how, schedule) in info.items()]


def bench_quantize(size: int, fmt: str, repeats: int) -> dict[str, object]:
    x = (np.random.default_rng(3).standard_normal(size) * 10).astype(np.float32)
    got = ops.quantize_fp8(x, fmt, rounding="stochastic", seed=11)
    want = quantize(x, fmt, rounding="stochastic", seed=11)
    if not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
        raise RuntimeError(f"quantize {fmt}: kernel and specification disagree")
    t = timed({"kernel": lambda: ops.quantize_fp8(x, fmt, rounding="stochastic", seed=11),
               "numpy": lambda: quantize(x, fmt, rounding="stochastic", seed=11)}, repeats)
    return {"group": "quantize", "shape": [size], "formats": fmt, "kernel_s": t["kernel"],
            "numpy_s": t["numpy"], "kernel_GBps": x.nbytes / t["kernel"] / 1e9,
            "numpy_GBps": x.nbytes / t["numpy"] / 1e9, "speedup": t["numpy"] / t["kernel"],
            "target": "x86_64-avx2", "target_ratio": 1.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gemv", type=int, default=4096, help="GEMV weights are GEMV x GEMV (default 4096)")
    p.add_argument("--gemm", type=int, default=1024, help="GEMM is GEMM^3 (default 1024)")
    p.add_argument("--quant-size", type=int, default=1 << 22, help="fp32 values to quantize (default 4M)")
    p.add_argument("--schedule", help="GEMM schedule as JSON (Fp8Schedule knobs)")
    p.add_argument("--tune", type=int, default=0, help="tune the GEMM this many trials first")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--save", action="store_true", help=f"also write {RESULTS}/bench_fp8.json")
    args = p.parse_args(argv)
    rows = []
    try:
        for fmt in ("e5m2", "e4m3"):
            rows += bench_gemv(args.gemv, args.gemv, fmt, args.repeats)
        rows += bench_gemm(args.gemm, args.gemm, args.gemm, "e5m2", args)
        for fmt in ("e5m2", "e4m3"):
            rows.append(bench_quantize(args.quant_size, fmt, args.repeats))
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("one thread, medians of interleaved repeats (shared machine: expect +-15 % drift)")
    print(f"{'group':9} {'isa':7} {'shape':15} {'formats':10} {'ours ms':>8} {'numpy ms':>9} {'ratio':>6} "
          f"{'target':>9}  note")
    for r in rows:
        ours = r.get("fp8_s", r.get("kernel_s"))
        base = r.get("numpy_f32_s", r.get("numpy_s"))
        note = (f"{r['kernel_GBps']:.2f} GB/s (numpy {r['numpy_GBps']:.3f})" if r["group"] == "quantize"
                else f"{r.get('how', 'default schedule')} {json.dumps(r['schedule'])}")
        if r["group"] == "gemm":
            note += f"; ops.fp8_matmul {r['ops_fp8_matmul_s'] * 1e3:.2f} ms"
        goal = f">={r['target_ratio']}" + (" GB/s" if r["group"] == "quantize" else "x")
        ratio = r["kernel_GBps"] if r["group"] == "quantize" else r["speedup"]
        isa = str(r["target"]).removeprefix("x86_64-")
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['group']:9} {isa:7} {shape:15} {r['formats']:10} {ours * 1e3:8.3f} "
              f"{base * 1e3:9.3f} {ratio:6.2f} {goal:>9}  {note}")
    record = {"machine": platform.processor() or platform.machine(), "threads": 1, "rows": rows}
    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_fp8.json").write_text(json.dumps(record, indent=2))
    if args.json:
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
