#!/usr/bin/env python3
"""FP8 mixed-precision training (Mellempudi et al. 2019) at CPU scale: the full recipe and its ablations.

Recipes (same hyperparameters for all, per dataset/model):
- ``fp32``: everything FP32.
- ``fp8``: E5M2 weights/activations (nearest) and errors/weight gradients (stochastic rounding), FP32
  accumulation, FP16 master weights with stochastic rounding, enhanced loss scaling, FP32 first/last layer.
- ``fp8-no-sr``: the same with round-to-nearest-even gradients.
- ``fp8-no-ls``: the same without loss scaling.
- ``e4m3-fwd``: E4M3 forward (weights, activations), E5M2 backward.

Datasets (offline): scikit-learn digits (8x8x1) and locally generated MNIST-1D (40 samples); models: an
MLP (3 hidden layers: 2 FP8 layers between the FP32 first and last) and a small im2col CNN (3x3 on digits,
1x5 on MNIST-1D). Every FP8 GEMM goes through ``bitsearch.train.fp8_matmul`` (``bitsearch.ops.fp8_matmul``
when importable, else an exact numpy stand-in; the run records say which).

Each finished run is written at once to ``results/fp8_training/runs/*.json`` and skipped when the script
is re-run with the same settings (``--fresh`` redoes them); ``summary.json`` (mean/std over seeds) and one
PNG of curves per dataset/model are rewritten as runs complete.

    .venv/bin/python experiments/fp8_training.py                        # everything, 3 seeds
    .venv/bin/python experiments/fp8_training.py --datasets digits --models mlp --seeds 1 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from threadpoolctl import threadpool_limits

from bitsearch.train import FloorSchedule, TrainConfig, fp8_recipes, gemm_backend, train
from bitsearch.train.data import load

# Tuned on FP32 (same for every recipe): lr, batch size, weight decay, default epochs.
HPARAMS: dict[tuple[str, str], dict] = {
    ("digits", "mlp"): dict(lr=0.1, batch_size=64, weight_decay=5e-4, epochs=20),
    ("digits", "cnn"): dict(lr=0.1, batch_size=64, weight_decay=5e-4, epochs=15),
    ("mnist1d", "mlp"): dict(lr=0.1, batch_size=32, weight_decay=2e-3, epochs=20),
    ("mnist1d", "cnn"): dict(lr=0.05, batch_size=32, weight_decay=1e-4, epochs=12),
}
RECIPES = ["fp32", "fp8", "fp8-no-sr", "fp8-no-ls", "e4m3-fwd"]
# Optional (--recipes): no loss scaling AND nearest gradients (underflow unmitigated), and plain dynamic
# loss scaling without the floor schedule.
EXTRA_RECIPES = ["fp8-rne-no-ls", "fp8-dynamic"]


def recipes_for(epochs: int) -> dict:
    r = fp8_recipes(floor_schedule(epochs))
    full = r["fp8"]
    r["fp8-rne-no-ls"] = full.replace(name="fp8-rne-no-ls", stochastic_grads=False, loss_scaling="none")
    r["fp8-dynamic"] = full.replace(name="fp8-dynamic", loss_scaling="dynamic")
    return r


def floor_schedule(epochs: int) -> FloorSchedule:
    """Enhanced loss scaling: the minimum scale steps up as gradients shrink during training."""
    return FloorSchedule(milestones=((0, 2.0**8), (epochs / 3, 2.0**10), (2 * epochs / 3, 2.0**12)))


def run_key(ds: str, model: str, recipe: str, seed: int) -> str:
    return f"{ds}-{model}-{recipe}-s{seed}"


def summarize(runs: list[dict]) -> dict:
    """Mean/std over seeds of the final figures, per dataset/model/recipe."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(f"{r['dataset']}/{r['model']}/{r['recipe']}", []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        acc = np.array([r["history"]["test_acc"][-1] for r in rs])
        loss = np.array([r["history"]["test_loss"][-1] for r in rs])
        out[key] = {
            "seeds": sorted(r["seed"] for r in rs),
            "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std()),
            "test_loss_mean": float(loss.mean()), "test_loss_std": float(loss.std()),
            "skipped_steps_mean": float(np.mean([r["history"]["skipped_steps"][-1] for r in rs])),
            "final_loss_scale": [r["history"]["loss_scale"][-1] for r in rs],
            "gemm_backend": sorted({r["history"]["gemm_backend"] for r in rs}),
            "seconds_mean": float(np.mean([r["seconds"] for r in rs])),
        }
    return out


def plot(runs: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for ds, model in sorted({(r["dataset"], r["model"]) for r in runs}):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for name in RECIPES + EXTRA_RECIPES:
            rs = [r for r in runs if (r["dataset"], r["model"], r["recipe"]) == (ds, model, name)]
            if not rs:
                continue
            for ax, field, log in zip(axes, ("train_loss", "test_acc", "loss_scale"), (True, False, True),
                                      strict=True):
                n = min(len(r["history"][field]) for r in rs)
                v = np.array([r["history"][field][:n] for r in rs], dtype=np.float64)
                ep = np.arange(1, n + 1)
                ax.plot(ep, v.mean(0), label=f"{name} (n={len(rs)})")
                ax.fill_between(ep, v.min(0), v.max(0), alpha=0.2)
                ax.set_yscale("log" if log else "linear")
        for ax, title in zip(axes, ("train loss", "test accuracy (%)", "loss scale"), strict=True):
            ax.set_title(f"{ds} / {model}: {title}")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[1].legend()
        fig.tight_layout()
        path = out_dir / f"{ds}_{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,mnist1d")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (0 .. N-1)")
    ap.add_argument("--epochs", type=int, default=None, help="override the per-dataset default")
    ap.add_argument("--out", type=Path, default=Path("results/fp8_training"))
    ap.add_argument("--fresh", action="store_true", help="redo runs that already have a result file")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    args = ap.parse_args(argv)
    datasets, models = args.datasets.split(","), args.models.split(",")
    recipes = args.recipes.split(",")
    for name in recipes:
        if name not in RECIPES + EXTRA_RECIPES:
            ap.error(f"--recipes: unknown {name!r}; choose from {RECIPES + EXTRA_RECIPES}")
    for ds in datasets:
        for model in models:
            if (ds, model) not in HPARAMS:
                ap.error(f"no hyperparameters for {ds}/{model}; datasets digits,mnist1d; models mlp,cnn")
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        ap.error("--seeds and --epochs must be >= 1")
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    backend = gemm_backend()
    console.print(f"FP8 GEMM backend: [bold]{backend}[/bold]")

    todo = []
    for ds in datasets:
        for model in models:
            hp = dict(HPARAMS[(ds, model)])
            epochs = args.epochs or hp.pop("epochs")
            hp.pop("epochs", None)
            for name in recipes:
                recipe = recipes_for(epochs)[name]
                for seed in range(args.seeds):
                    cfg = TrainConfig(model=model, epochs=epochs, seed=seed, **hp)
                    todo.append((ds, model, recipe, cfg))

    def settings(recipe, cfg) -> dict:  # a run is redone when any of these change (the GEMM path too)
        return {"recipe": asdict(recipe), "config": asdict(cfg),
                "gemm_backend": backend if recipe.fp8 else "fp32-numpy"}

    def all_runs() -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]

    with threadpool_limits(1), Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                        TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                        console=console) as bar:
        overall = bar.add_task("runs", total=len(todo), info="")
        for ds, model, recipe, cfg in todo:
            path = runs_dir / f"{run_key(ds, model, recipe.name, cfg.seed)}.json"
            want = json.loads(json.dumps(settings(recipe, cfg)))
            if path.exists() and not args.fresh:
                old = json.loads(path.read_text())
                if old.get("settings") == want:
                    bar.advance(overall)
                    continue
            t0 = time.perf_counter()
            hist = train(load(ds), recipe, cfg, progress=bar)
            rec = {"dataset": ds, "model": model, "recipe": recipe.name, "seed": cfg.seed,
                   "seconds": time.perf_counter() - t0, "settings": want, "history": hist.to_dict()}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec))
            tmp.replace(path)  # atomic: a finished run is never lost or half-written
            (args.out / "summary.json").write_text(json.dumps(summarize(all_runs()), indent=1))
            bar.update(overall, info=f"last: {path.stem} acc {hist.test_acc[-1]:.1f}%")
            bar.advance(overall)

    selected = [r for r in all_runs() if r["dataset"] in datasets and r["model"] in models
                and r["recipe"] in recipes and r["seed"] < args.seeds]
    summary = summarize(selected)
    (args.out / "summary.json").write_text(json.dumps(summarize(all_runs()), indent=1))
    pngs = plot(selected, args.out)

    table = Table(title="FP8 training: final test accuracy / loss (mean ± std over seeds)")
    for col in ("dataset/model", "recipe", "acc %", "Δ vs fp32", "test loss", "skipped", "s/run", "GEMM"):
        table.add_column(col)
    for key, s in summary.items():
        ds, model, name = key.split("/")
        ref = summary.get(f"{ds}/{model}/fp32")
        delta = s["test_acc_mean"] - ref["test_acc_mean"] if ref else math.nan
        table.add_row(f"{ds}/{model}", name, f"{s['test_acc_mean']:.2f} ± {s['test_acc_std']:.2f}",
                      f"{delta:+.2f}", f"{s['test_loss_mean']:.3f} ± {s['test_loss_std']:.3f}",
                      f"{s['skipped_steps_mean']:.0f}", f"{s['seconds_mean']:.1f}",
                      ",".join(s["gemm_backend"]))
    Console(width=150).print(table)
    print(f"wrote {args.out / 'summary.json'} and {', '.join(str(p) for p in pngs)}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
