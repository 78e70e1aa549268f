#!/usr/bin/env python3
"""Search efficiency: how fast do Optuna samplers find the best schedule of an enumerable subspace?

1. Every valid schedule of a subspace (>= 300) is built, verified and timed once in the native
   harness; the measurements are cached in results/search_efficiency/ (rerun with --remeasure).
2. Each sampler (TPE, random, CMA-ES by default) searches that fixed landscape -- the objective
   looks the schedule up instead of re-timing it, so samplers are compared on identical values --
   for --budget trials, over --seeds seeds, through the same define-by-run ``Space.suggest`` the
   tuner uses. No expert schedules are enqueued: this measures the samplers alone.
3. Best-so-far curves (median and IQR band over seeds) go to a PNG, the figures to JSON. A short
   real ``bitsearch.tune`` run reports the tuner's own overhead per trial (measurement excluded).

    .venv/bin/python experiments/search_efficiency.py               # 1024^3 A1W1, about 4 minutes
    .venv/bin/python experiments/search_efficiency.py --m 256 --n 256 --k 512 --seeds 5 --budget 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from rich.progress import Progress

import bitsearch as bs
from bitsearch.measure import MeasureInput, Verifier, build_candidate, run_candidate
from bitsearch.runners import LocalRunner
from bitsearch.tune import make_sampler

SUBSPACE = {"popcount": "lut", "acc_bits": 8, "loop_order": "mn", "nc": 0}


def measure_all(space: bs.Space, cache_path: Path, remeasure: bool, times: int) -> dict[str, float | None]:
    """Seconds of every valid schedule (None for a failed one), cached on disk: the least of the
    medians of ``times`` independent measurements, in rounds over the whole space, so that one
    noisy moment of a shared machine cannot rank a schedule."""
    cache: dict[str, float | None] = {}
    if cache_path.exists() and not remeasure:
        cache = json.loads(cache_path.read_text())["median_s"]
    schedules = [s for s in space.enumerate() if s.to_json() not in cache]
    if schedules:
        runner = LocalRunner(min_time=0.01, repeats=10)
        verifier = Verifier(space.workload)
        kernels = {s: build_candidate(MeasureInput(space.workload, s)) for s in schedules}
        best: dict[str, float | None] = {}
        with Progress() as bar:
            task = bar.add_task(f"measuring {len(schedules)} schedules x {times}",
                                total=len(schedules) * times)
            for _ in range(times):
                for schedule, built in kernels.items():
                    result = run_candidate(built, runner, verifier=verifier)
                    key = schedule.to_json()
                    if not result.ok:
                        best[key] = None
                    elif best.get(key, 0.0) is not None:
                        best[key] = min(best.get(key) or float("inf"), result.stats.median)
                    bar.advance(task)
        cache.update(best)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps({"workload": space.workload.to_dict(), "fixed": space.fixed,
                                          "measurements": times, "median_s": cache}))
    return cache


def search(space: bs.Space, cache: dict[str, float | None], sampler: str, seed: int,
           budget: int) -> list[float]:
    """Best-so-far median seconds after each trial of one sampler run on the cached landscape."""
    study = optuna.create_study(sampler=make_sampler(sampler, seed), direction="minimize")
    best, curve = float("inf"), []
    for _ in range(budget):
        trial = study.ask()
        schedule = space.suggest(trial)
        value = cache.get(schedule.to_json()) if space.invalid_reason(schedule) is None else None
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
            best = min(best, value)
        curve.append(best)
    return curve


def tuner_overhead(workload: bs.Dense, trials: int) -> dict[str, float]:
    res = bs.tune(workload, trials=trials, storage="sqlite:///:memory:", progress=False,
                  runner=LocalRunner(min_time=0.002, repeats=10))
    overhead = [t.user_attrs["overhead_s"] for t in res.study.trials if "overhead_s" in t.user_attrs]
    return {"trials": len(overhead), "median_s": float(np.median(overhead)),
            "p90_s": float(np.percentile(overhead, 90)), "max_s": float(np.max(overhead))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--abits", type=int, default=1)
    p.add_argument("--wbits", type=int, default=1)
    p.add_argument("--mode", default="and", choices=bs.MODES)
    p.add_argument("--samplers", default="tpe,random,cmaes,gp",
                   help="comma-separated; cmaes/gp are skipped when their packages are missing")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--out", default="results/search_efficiency")
    p.add_argument("--remeasure", action="store_true", help="ignore the cached measurements")
    p.add_argument("--measurements", type=int, default=3,
                   help="independent measurements per schedule; the least median is kept (default 3)")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    wl = bs.Dense(args.m, args.n, args.k, abits=args.abits, wbits=args.wbits, mode=args.mode)
    space = bs.Space(wl, fixed=SUBSPACE)
    out = Path(args.out)
    slug = f"{wl.m}x{wl.n}x{wl.k}-a{wl.abits}w{wl.wbits}-{wl.mode}"
    cache = measure_all(space, out / f"cache-{slug}.json", args.remeasure, args.measurements)
    valid = {k: v for k, v in cache.items() if v is not None}
    best_key = min(valid, key=valid.__getitem__)
    optimum = valid[best_key]
    print(f"{wl}: {len(cache)} schedules in the subspace {SUBSPACE}, {len(valid)} measured OK; "
          f"exhaustive best {optimum * 1e3:.3f} ms = {best_key}")

    samplers = []
    for name in args.samplers.split(","):
        try:
            make_sampler(name)
            samplers.append(name)
        except ValueError as exc:
            print(f"  {name}: skipped ({exc})")
    curves: dict[str, np.ndarray] = {}
    for name in samplers:
        start = time.perf_counter()
        curves[name] = np.array([search(space, cache, name, seed, args.budget) for seed in range(args.seeds)])
        print(f"  {name}: {args.seeds} seeds x {args.budget} trials in {time.perf_counter() - start:.1f} s")

    def trials_to_within(curve: np.ndarray, tol: float) -> int | None:
        hit = np.nonzero(curve <= optimum * (1 + tol))[0]
        return int(hit[0]) + 1 if hit.size else None

    summary = {}
    within = {tol: int(sum(v <= optimum * (1 + tol) for v in valid.values())) for tol in (0.01, 0.02, 0.05)}
    print(f"schedules within 1/2/5 % of the best: {within[0.01]}/{within[0.02]}/{within[0.05]} "
          f"of {len(valid)}")
    print(f"{'sampler':<8}{'median trials to within':>26}{'best/optimum after':>24}{'mean ratio':>12}")
    print(f"{'':<8}{'5 %':>9}{'2 %':>8}{'1 %':>8}   {'10':>7}{'30':>7}{'60':>7}{'trials 1-60':>14}")
    for name, runs in curves.items():
        med = {}
        for tol in (0.05, 0.02, 0.01):
            hits = [trials_to_within(c, tol) for c in runs]
            med[tol] = float(np.median([h if h is not None else np.inf for h in hits]))
            summary.setdefault(name, {})[f"trials_to_within_{round(tol * 100)}pct"] = hits
            summary[name][f"median_trials_to_within_{round(tol * 100)}pct"] = med[tol]
        ratios = np.where(np.isfinite(runs), runs / optimum, 3.0)  # before a first valid trial: 3x
        at = {n: float(np.median(ratios[:, min(n, args.budget) - 1])) for n in (10, 30, 60, 100)}
        mean60 = float(ratios[:, : min(60, args.budget)].mean())
        summary[name].update(median_best_over_optimum_at=at, mean_ratio_trials_1_60=mean60)
        print(f"{name:<8}{med[0.05]:>9.0f}{med[0.02]:>8.0f}{med[0.01]:>8.0f}   "
              f"{at[10]:>7.3f}{at[30]:>7.3f}{at[60]:>7.3f}{mean60:>14.3f}")

    names = list(curves)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.array_equal(curves[a], curves[b]):
                print(f"note: {b} made exactly the choices of {a}: it hands knobs it cannot model "
                      "(categorical or conditional ones) to an independent random sampler")
    overhead = tuner_overhead(bs.Dense(256, 256, 512), trials=30)
    print(f"tuner overhead per trial (measurement excluded), {overhead['trials']} trials: "
          f"median {overhead['median_s'] * 1e3:.0f} ms, p90 {overhead['p90_s'] * 1e3:.0f} ms, "
          f"max {overhead['max_s'] * 1e3:.0f} ms")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.arange(1, args.budget + 1)
    tops = []
    for i, (name, runs) in enumerate(curves.items()):
        twin = next((o for o in list(curves)[:i] if np.array_equal(curves[o], runs)), None)
        rel = np.where(np.isfinite(runs), runs / optimum, np.nan)  # nan until a first valid trial
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mid = np.nanmedian(rel, axis=0)
            lo, hi = np.nanpercentile(rel, 25, axis=0), np.nanpercentile(rel, 75, axis=0)
        label = f"{name} (median of {args.seeds} seeds)" if twin is None else f"{name} (= {twin})"
        ax.plot(x, mid, label=label, ls="--" if twin else "-")
        ax.fill_between(x, lo, hi, alpha=0.2)
        tops.append(float(np.nanmax(mid[min(9, len(mid) - 1):])) if np.isfinite(mid).any() else 1.5)
    ax.axhline(1.05, color="grey", ls="--", lw=0.8, label="within 5 % of the exhaustive best")
    ax.set_xlabel("trial")
    ax.set_ylabel("best-so-far time / exhaustive best")
    ax.set_ylim(0.98, min(3.0, max(tops) * 1.05))
    ax.set_title(f"Search efficiency, {wl} ({len(valid)} schedules)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"search_efficiency-{slug}.png"
    fig.savefig(png, dpi=120)
    record = {"workload": wl.to_dict(), "subspace": SUBSPACE, "schedules": len(cache), "within": within,
              "valid_measured": len(valid), "optimum_s": optimum, "optimum_schedule": json.loads(best_key),
              "budget": args.budget, "seeds": args.seeds, "samplers": summary,
              "tuner_overhead": overhead, "curves_s": {k: v.tolist() for k, v in curves.items()}}
    (out / f"search_efficiency-{slug}.json").write_text(json.dumps(record))
    print(f"wrote {png} and {png.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
