#!/usr/bin/env python3
"""ResNet-18 figure: per-layer speed-up of tuned 1-/2-bit convolutions over an int16 baseline and peers.

For each layer (C2..C12 of the seed paper, batch 1, NHWC, TensorFlow SAME padding) and precision
(A1W1, A2W1, A2W2; ``and`` mode), in two phases:

1. Tune: our bit-serial conv (``bs.tune(bs.Conv2d)``, ``--trials``) and our int16 conv baseline
   (``bs.IntConv2d``, ``--int16-trials``, once per layer). Studies live in ``--storage`` (an SQLite
   file under results/ by default) as ``{prefix}-{layer}-{precision}-{target}`` and
   ``{prefix}-{layer}-int16-{target}``; a rerun tops each study up to its budget, so an
   interrupted run resumes and nothing measured is lost.
2. Time side by side, interleaved (``time_interleaved``), per layer, precision and thread count:
   ``ours`` (tuned kernel, activation packing included, weights packed once), ``ours-int16``,
   ``numpy-f32`` (im2col + matmul) and, with the ``peers`` extra, ``torch-f32`` (channels_last
   conv2d), ``torch-int8-fbgemm`` (quantized conv, prepacked weights; activations already quint8,
   output left quint8: neither conversion timed) and ``tvm-bitserial`` (TVM 0.27's generic
   ``bitserial_conv2d_nhwc``). Ours and int16 are checked bit for bit on random and all-maximal
   inputs, numpy/torch float32 and TVM bit for bit, fbgemm within one 8-bit output step (it
   requantizes: a different operator) -- all before any timing; a peer that is missing or wrong
   is skipped with the reason printed and recorded.

Outputs: a table, ``results/<name>.csv`` and ``.json``, and ``results/<name>-<T>t.png`` per thread
count (one panel per precision; bars = our speed-up over each baseline per layer, log scale,
geomeans in the legend). Timings on a shared machine drift: read ratios within one run.

    .venv/bin/python experiments/resnet18_figure.py --quick                 # about a minute
    .venv/bin/python experiments/resnet18_figure.py                         # full figure (see README)
    .venv/bin/python experiments/resnet18_figure.py --layers C2 C12 --precisions A1W1 --trials 20
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Interleaved timing on few cores: the idle workers of one library (OpenMP in torch, OpenBLAS, TVM's
# pool) must not keep spinning while the next contender runs, or they steal its cores. Before the
# libraries load; ours blocks on a condition variable anyway.
for _key, _value in {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4",
                     "TVM_THREAD_POOL_SPIN_COUNT": "0"}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/_peers.py

import _peers  # noqa: E402

import bitsearch as bs  # noqa: E402
from bitsearch.cost.compare import time_interleaved  # noqa: E402
from bitsearch.tune import storage_url  # noqa: E402
from bitsearch.workloads import RESNET18_LAYERS, resnet18_layer  # noqa: E402

PRECISIONS = {"A1W1": (1, 1), "A2W1": (2, 1), "A2W2": (2, 2)}
BASELINES = ("ours-int16", "torch-int8-fbgemm", "tvm-bitserial", "numpy-f32")  # the figure's bars
TARGETS = {"A1W1": {"ours-int16": 3.0, "torch-int8-fbgemm": 2.0}}  # the paper's headline, 1 thread
DEFAULT_STORAGE = "sqlite:///results/resnet18_figure.db"
QUICK = {"layers": ["C11"], "precisions": ["A1W1"], "trials": 2, "int16_trials": 2, "threads": [1],
         "repeats": 3, "min_time": 0.005}


@dataclass(frozen=True, kw_only=True)
class Job:
    """One study to top up: the workload, its name, and how many trials it still needs."""

    layer: str
    label: str  # A1W1 | A2W1 | A2W2 | int16
    workload: bs.Conv2d | bs.IntConv2d
    study: str
    budget: int
    done: int = 0

    @property
    def todo(self) -> int:
        return max(0, self.budget - self.done)


@dataclass(kw_only=True)
class LayerRun:
    """What phase 2 times for one (layer, precision): the contenders and the reasons for skips."""

    layer: str
    precision: str
    workload: bs.Conv2d
    contenders: dict[str, _peers.Contender] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, Any] = field(default_factory=dict)


def study_name(prefix: str, layer: str, label: str, target: str) -> str:
    return f"{prefix}-{layer}-{label}-{target}"


def finished_trials(study: str, storage: str) -> int:
    """Trials already measured (complete or failed) in a stored study; 0 if it does not exist."""
    try:
        s = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return len(s.get_trials(deepcopy=False, states=states))


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for layer in args.layers:
        if args.int16_trials:
            jobs.append(Job(layer=layer, label="int16", workload=resnet18_layer(layer, dtype="int16"),
                            study=study_name(args.study_prefix, layer, "int16", args.target),
                            budget=args.int16_trials))
        for prec in args.precisions:
            a, w = PRECISIONS[prec]
            if args.trials:
                jobs.append(Job(layer=layer, label=prec, workload=resnet18_layer(layer, abits=a, wbits=w),
                                study=study_name(args.study_prefix, layer, prec, args.target),
                                budget=args.trials))
    return jobs


def tune_all(jobs: list[Job], args: argparse.Namespace, bar: Progress) -> None:
    """Phase 1: top every study up to its budget (a rerun resumes; finished studies are skipped)."""
    jobs = [replace(j, done=finished_trials(j.study, args.storage_url)) for j in jobs]
    task = bar.add_task("tune", total=sum(j.todo for j in jobs) or 1)
    if not any(j.todo for j in jobs):
        bar.update(task, completed=1, description="tune: nothing to do" if jobs
                   else "tune: none (default schedules)")
    for job in jobs:
        if not job.todo:
            continue
        bar.update(task, description=f"{job.layer} {job.label}: {job.todo} trials ({job.study})")
        start = time.perf_counter()
        res = bs.tune(job.workload, target=args.target, trials=job.todo, storage=args.storage_url,
                      study_name=job.study, progress=False)
        best = f"{res.best_seconds * 1e3:.3f} ms" if res.best_seconds else "no valid schedule"
        bar.console.print(f"tuned {job.layer} {job.label}: {job.todo} trials in "
                          f"{time.perf_counter() - start:.0f} s, best {best}")
        bar.advance(task, job.todo)


def load_kernel(study: str, workload: object, args: argparse.Namespace, tuned: bool) -> bs.Kernel:
    if not tuned:
        return bs.build(workload, None, args.target)
    kern = bs.load(study, args.storage_url)
    if kern.workload != workload:
        raise ValueError(f"study {study!r} tunes {kern.workload}, not {workload}")
    return kern


def verified_call(name: str, kern: bs.Kernel, cv: object, x: np.ndarray, w: np.ndarray,
                  adversarial: list[tuple[np.ndarray, np.ndarray]]) -> Callable[[int], object]:
    """``kern`` checked bit for bit on (x, w) and the adversarial operands, as a call of threads."""
    for xa, wa in [(x, w), *adversarial]:
        if not np.array_equal(kern(xa, kern.pack_weights(wa)), bs.reference(cv, xa, wa)):
            raise RuntimeError(f"{name} ({kern.schedule.to_json()}) disagrees with the reference on {cv}")
    wp = kern.pack_weights(w)
    return lambda threads: kern(x, wp, threads=threads)


def prepare(layer: str, prec: str, args: argparse.Namespace, rng: np.random.Generator) -> LayerRun:
    """Build and verify every contender of one (layer, precision)."""
    a, wb = PRECISIONS[prec]
    cv = resnet18_layer(layer, abits=a, wbits=wb)
    run = LayerRun(layer=layer, precision=prec, workload=cv)
    x = rng.integers(0, cv.amax + 1, cv.x_shape, dtype=np.uint8)
    w = rng.integers(0, cv.wmax + 1, cv.w_shape, dtype=np.uint8)
    want = bs.reference(cv, x, w)
    full = [(np.full(cv.x_shape, cv.amax, np.uint8), np.full(cv.w_shape, cv.wmax, np.uint8))]

    kern = load_kernel(study_name(args.study_prefix, layer, prec, args.target), cv, args, args.trials > 0)
    ours = verified_call("ours", kern, cv, x, w, full)
    run.contenders["ours"] = _threaded("ours", ours, "exact (random and all-maximal inputs)")
    run.schedules["ours"] = kern.schedule.to_dict()

    icv = resnet18_layer(layer, dtype="int16")
    try:
        ikern = load_kernel(study_name(args.study_prefix, layer, "int16", args.target), icv, args,
                            args.int16_trials > 0)
        x16, w16 = x.astype(np.int16), w.astype(np.int16)
        # Same values as the bit-serial operands: its answer must equal ours bit for bit.
        if not np.array_equal(ikern(x16, ikern.pack_weights(w16)), want):
            raise RuntimeError("ours-int16 disagrees with the bit-serial reference")
        extreme = (np.full(icv.x_shape, -(2**15), np.int16), np.full(icv.w_shape, 2**15 - 1, np.int16))
        i16 = verified_call("ours-int16", ikern, icv, x16, w16, [extreme])
        run.contenders["ours-int16"] = _threaded("ours-int16", i16, "exact (random and extreme int16)")
        run.schedules["ours-int16"] = ikern.schedule.to_dict()
    except (ValueError, NotImplementedError) as exc:
        run.skipped["ours-int16"] = f"not available: {exc}"

    names = args.peers if not args.no_peers else ("numpy-f32",)
    ready, skipped = _peers.build_peers(cv, x, w, want, names=tuple(names), mcpu=args.tvm_mcpu)
    run.contenders.update({c.name: c for c in ready})
    run.skipped.update(skipped)
    if args.no_peers:
        run.skipped.update({n: "--no-peers" for n in _peers.PEERS if n != "numpy-f32"})
    return run


def _threaded(name: str, call: Callable[[int], object], check: str) -> _peers.Contender:
    """A contender whose thread count is a call argument, set per round."""
    state = {"threads": 1}

    def set_threads(n: int) -> None:
        state["threads"] = n

    return _peers.Contender(name=name, run=lambda: call(state["threads"]), check=check,
                            set_threads=set_threads)


def time_layer(run: LayerRun, threads: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    for c in run.contenders.values():
        c.set_threads(threads)
    with threadpool_limits(threads):
        stats = time_interleaved({n: c.run for n, c in run.contenders.items()}, repeats=args.repeats,
                                 min_time=args.min_time)
    cv = run.workload
    ours = stats["ours"].median
    return [{"layer": run.layer, "precision": run.precision, "threads": threads, "impl": name,
             "median_ms": st.median * 1e3, "min_ms": st.min * 1e3, "iqr_ms": st.iqr * 1e3,
             "gmac_per_s": cv.macs / st.median / 1e9, "ours_speedup": st.median / ours}
            for name, st in stats.items()]


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Geomean over layers of ours' speed-up, per precision, thread count and baseline."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r["impl"] == "ours":
            continue
        out.setdefault(r["precision"], {}).setdefault(str(r["threads"]), {}).setdefault(r["impl"], [])
        out[r["precision"]][str(r["threads"])][r["impl"]].append(r["ours_speedup"])
    return {p: {t: {impl: geomean(v) for impl, v in d.items()} for t, d in by_t.items()}
            for p, by_t in out.items()}


SHORT = {"ours-int16": "int16", "torch-int8-fbgemm": "fbgemm", "tvm-bitserial": "TVM", "numpy-f32": "np f32"}


def plot(rows: list[dict[str, Any]], geo: dict[str, Any], precisions: list[str], layers: list[str],
         threads: int, path: Path) -> None:
    """Paper-style bars: one panel per precision, per layer our speed-up over each baseline (log y),
    the geomeans under each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panel_width = max(4.0, 0.55 * len(layers) + 1.5)
    fig, axes = plt.subplots(1, len(precisions), figsize=(panel_width * len(precisions), 4.2), sharey=True,
                             squeeze=False)
    width = 0.8 / len(BASELINES)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, prec in zip(axes[0], precisions, strict=True):
        means = []
        for i, base in enumerate(BASELINES):
            ys = {r["layer"]: r["ours_speedup"] for r in rows
                  if r["precision"] == prec and r["threads"] == threads and r["impl"] == base}
            xs = [j + (i - (len(BASELINES) - 1) / 2) * width for j, lay in enumerate(layers) if lay in ys]
            ax.bar(xs, [ys[lay] for lay in layers if lay in ys], width, color=colors[i], label=f"over {base}")
            g = geo.get(prec, {}).get(str(threads), {}).get(base)
            means.append(f"{SHORT[base]} {g:.2f}x" if g else f"{SHORT[base]} -")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(layers)), layers)
        ax.set_title(f"{prec}, {threads} thread{'s' if threads > 1 else ''}")
        ax.set_xlabel("geomean: " + ", ".join(means[:2]) + "\n" + ", ".join(means[2:]), fontsize=8)
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0][0].set_ylabel("speed-up of our tuned kernel")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(BASELINES), fontsize=8, frameon=False)
    fig.suptitle("ResNet-18 convolutions: our tuned bit-serial kernel over baselines "
                 "(ratios within one interleaved run)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'layer':<6}{'prec':<6}{'thr':>4}  {'impl':<19}{'median ms':>11}{'min ms':>10}{'IQR ms':>9}"
          f"{'GMAC/s':>9}{'ours is':>10}")
    for r in rows:
        print(f"{r['layer']:<6}{r['precision']:<6}{r['threads']:>4}  {r['impl']:<19}{r['median_ms']:>11.4f}"
              f"{r['min_ms']:>10.4f}{r['iqr_ms']:>9.4f}{r['gmac_per_s']:>9.1f}{r['ours_speedup']:>9.2f}x")


def print_geomeans(geo: dict[str, Any]) -> None:
    print("geomean over layers of ours' speed-up (time of baseline / time of ours):")
    for prec, by_t in geo.items():
        for t, by_impl in sorted(by_t.items()):
            parts = []
            for impl, g in by_impl.items():
                goal = TARGETS.get(prec, {}).get(impl) if t == "1" else None
                tag = f" (target >= {goal:g}x: {'met' if g >= goal else 'MISSED'})" if goal else ""
                parts.append(f"{impl} {g:.2f}x{tag}")
            print(f"  {prec} {t} thread(s): " + "; ".join(parts))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="+", default=list(RESNET18_LAYERS), metavar="CN",
                   help="ResNet-18 layers (default: C2..C12)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--trials", type=int, default=40, help="tuning budget per layer and precision "
                   "(0: default schedule, no tuning)")
    p.add_argument("--int16-trials", type=int, default=20, help="tuning budget of the int16 baseline "
                   "per layer (0: default schedule)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--target", default="x86_64-avx2", choices=bs.TARGETS)
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage (default {DEFAULT_STORAGE})")
    p.add_argument("--study-prefix", default="r18", help="studies are PREFIX-LAYER-PRECISION-TARGET")
    p.add_argument("--peers", nargs="+", default=list(_peers.PEERS), choices=_peers.PEERS)
    p.add_argument("--no-peers", action="store_true", help="numpy float32 only (no torch, no TVM)")
    p.add_argument("--tvm-mcpu", default=None, help="LLVM CPU of the TVM build (default: znver3 for "
                   "x86_64-avx2 -- the same ISA as ours -- else this machine's CPU)")
    p.add_argument("--repeats", type=int, default=11, help="interleaved timing rounds")
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timed sample")
    p.add_argument("--out", default="results", help="output directory")
    p.add_argument("--name", default=None, help="output file stem (default resnet18_figure[-quick])")
    p.add_argument("--seed", type=int, default=0, help="seed of the operands")
    p.add_argument("--quick", action="store_true", help="tiny run: " + ", ".join(f"{k}={v}" for k, v in
                                                                             QUICK.items()))
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.quick:  # the quick configuration; its studies and files do not mix with the figure's
        for key, value in QUICK.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
        if args.study_prefix == "r18":
            args.study_prefix = "r18quick"
    args.name = args.name or ("resnet18_figure-quick" if args.quick else "resnet18_figure")
    unknown = [lay for lay in args.layers if lay not in RESNET18_LAYERS]
    if unknown:
        p.error(f"unknown layers {unknown}; valid: {', '.join(RESNET18_LAYERS)}")
    for flag in ("trials", "int16_trials"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag.replace('_', '-')} must be >= 0")
    if any(t < 1 for t in args.threads) or args.repeats < 1:
        p.error("--threads and --repeats must be positive")
    if args.tvm_mcpu is None and args.target == "x86_64-avx2":
        args.tvm_mcpu = "znver3"
    args.storage_url = storage_url(args.storage, create=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(max(args.threads)))  # TVM sizes its pool once
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    runs: list[LayerRun] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        try:
            tune_all(plan_jobs(args), args, bar)
        except ValueError as exc:
            console.print(f"error: {exc}")
            return 2
        pairs = [(lay, prec) for lay in args.layers for prec in args.precisions]
        task = bar.add_task("time", total=len(pairs) * len(args.threads))
        for layer, prec in pairs:
            bar.update(task, description=f"time {layer} {prec}: checking contenders")
            try:
                run = prepare(layer, prec, args, rng)
            except ValueError as exc:
                console.print(f"error: {exc}")
                return 2
            runs.append(run)
            for name, reason in run.skipped.items():
                bar.console.print(f"{layer} {prec}: {name} skipped ({reason})")
            for threads in args.threads:
                bar.update(task, description=f"time {layer} {prec}, {threads} thread(s)")
                rows += time_layer(run, threads, args)
                bar.advance(task)

    print_table(rows)
    geo = summarize(rows)
    print_geomeans(geo)
    checks = {c.name: c.check for r in runs for c in r.contenders.values()}
    notes = {c.name: c.note for r in runs for c in r.contenders.values() if c.note}
    print("checks before timing: " + "; ".join(f"{k}: {v}" for k, v in checks.items()))
    for k, v in notes.items():
        print(f"note {k}: {v}")
    with open(out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pngs = []
    for threads in args.threads:
        path = out / f"{args.name}-{threads}t.png"
        plot(rows, geo, args.precisions, args.layers, threads, path)
        pngs.append(str(path))
    report = {
        "config": {k: v for k, v in vars(args).items() if k not in ("storage_url",)},
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "seconds": time.perf_counter() - started,
        "checks": checks, "notes": notes,
        "layers": [{"layer": r.layer, "precision": r.precision, "workload": r.workload.to_dict(),
                    "schedules": r.schedules, "skipped": r.skipped} for r in runs],
        "results": rows, "geomean_speedup": geo, "targets": TARGETS,
    }
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / args.name}.csv, .json and {', '.join(pngs)} in {report['seconds']:.0f} s; "
          "timings on a shared machine drift: compare ratios within this run only")
    if args.json:
        print(json.dumps({k: report[k] for k in ("config", "geomean_speedup", "results")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
