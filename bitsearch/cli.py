"""The ``bitsearch`` command.

    bitsearch demo                                   # default 1-bit kernel vs numpy float32
    bitsearch tune dense --m 1024 --n 1024 --k 1024 --abits 1 --wbits 1 --trials 100 \
        [--storage URL] [--study NAME] [--sampler tpe|random|cmaes|gp] [--fix KNOB=VALUE] [--json]
        [--runner local|model|ssh://user@host[:port]]     # model: llvm-mca seconds, verified exactly
    bitsearch space dense --m 256 --n 256 --k 512 [--fix KNOB=VALUE] [--json]
    bitsearch best --study NAME [--storage URL] [--json]
    bitsearch export --study NAME [--storage URL] --out DIR
    bitsearch measure dense --m 256 --n 256 --k 512 [--schedule JSON] [--json] [--runner SPEC]
    bitsearch export dense --m 256 --n 256 --k 512 --out DIR [--schedule JSON]
    bitsearch tune conv2d --layer C2 --abits 1 --wbits 1 --mode and --trials 20 [--json]
    bitsearch measure int-conv2d --h 14 --w 14 --cin 64 --cout 64 --kernel 3 --stride 1 --padding SAME

Errors are one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, NoReturn

import numpy as np

import bitsearch as bs
from bitsearch.cost.compare import time_interleaved
from bitsearch.lowerings import ARITHMETICS, OPERATORS, lowering_for
from bitsearch.measure import measure
from bitsearch.runners import LocalRunner, make_runner
from bitsearch.targets import TARGET_DEFS, get_target
from bitsearch.tune import SAMPLERS, best_trial, load_study, storage_url, study_workload
from bitsearch.workloads import FP8_FORMATS, INT_DTYPES, resnet18_layer

# Operators by their command-line name (int_dense -> int-dense), from the registry.
OPS: dict[str, type] = {op.replace("_", "-"): cls for op, cls in OPERATORS.items()}
DEFAULT_TARGET = "x86_64-avx2"
SHAPE_FIELDS = frozenset({"m", "n", "k", "h", "w", "cin", "cout"})
TARGET_HELP = "instruction set: " + "; ".join(f"{t.name} ({t.doc})" for t in TARGET_DEFS.values()) + (
    f" (default {DEFAULT_TARGET})")


def _add_dense_args(p: argparse.ArgumentParser, *, optional: bool = False) -> None:
    ops_help = ("dense (bit-serial), int-dense (our int16/int8 baseline), fp8-dense, conv2d (bit-serial) "
                "or int-conv2d (int16 baseline)")
    if optional:
        p.add_argument("op", nargs="?", choices=list(OPS), help=ops_help + "; instead of --study")
    else:
        p.add_argument("op", choices=list(OPS), help=ops_help)
    p.add_argument("--m", type=int, help="dense: rows of x (batch)")
    p.add_argument("--n", type=int, help="dense: rows of w (output features)")
    p.add_argument("--k", type=int, help="dense: reduction length")
    p.add_argument("--abits", type=int, default=1, help="dense: activation bits, 1..8 (default 1)")
    p.add_argument("--wbits", type=int, default=1, help="dense: weight bits, 1..8 (default 1)")
    p.add_argument("--mode", default="and", choices=bs.MODES, help="dense: value semantics (default and)")
    p.add_argument("--dtype", default="int16", choices=INT_DTYPES, help="int-dense: element type")
    p.add_argument("--afmt", default="e5m2", choices=FP8_FORMATS, help="fp8-dense: FP8 format of a")
    p.add_argument("--wfmt", default="e5m2", choices=FP8_FORMATS, help="fp8-dense: FP8 format of b")
    p.add_argument("--schedule", help="schedule as JSON; omitted knobs take their defaults")
    p.add_argument("--target", choices=bs.TARGETS, help=TARGET_HELP)
    p.add_argument("--arithmetic", choices=ARITHMETICS,
                   help="the lowering's arithmetic (default: the first registered for the operator and "
                   "target)")
    _add_conv_args(p)


def _add_conv_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("conv2d / int-conv2d (NHWC)")
    g.add_argument("--layer", help="a ResNet-18 layer of the seed paper: C2..C12 (instead of the geometry)")
    g.add_argument("--h", type=int, help="input height")
    g.add_argument("--w", type=int, help="input width")
    g.add_argument("--cin", type=int, help="input channels")
    g.add_argument("--cout", type=int, help="output channels")
    g.add_argument("--kernel", help="kernel size: K or KHxKW (default 3)")
    g.add_argument("--stride", help="stride: S or SHxSW (default 1)")
    g.add_argument("--padding", help="SAME (TensorFlow's, default), VALID, an int, or TOP,BOTTOM,LEFT,RIGHT")
    g.add_argument("--batch", type=int, default=1, help="batch size (default 1)")


def _int_or_pair(name: str, text: str) -> int | tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise ValueError(f"--{name} takes N or NxM, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    raise ValueError(f"--{name} takes N or NxM, got {text!r}")


def _padding(text: str) -> object:
    if text.upper() in ("SAME", "VALID"):
        return text.upper()
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--padding takes SAME, VALID, an int or TOP,BOTTOM,LEFT,RIGHT, got {text!r}") from None
    return values[0] if len(values) == 1 else tuple(values)


def _target(args: argparse.Namespace) -> str:
    return args.target or DEFAULT_TARGET


def _workload(args: argparse.Namespace) -> Any:
    """The operator's record from the options named like its fields (``--layer``: a ResNet-18
    layer of the seed paper instead of a convolution's geometry)."""
    cls = OPS[args.op]
    names = [f.name for f in dataclasses.fields(cls)]
    if args.layer:
        if "cin" not in names:
            raise ValueError(f"--layer names a convolution layer; {args.op} takes no --layer")
        geometry = [f"--{k}" for k in ("h", "w", "cin", "cout", "kernel", "stride", "padding")
                    if getattr(args, k) is not None]
        if geometry:
            raise ValueError(f"give --layer or the geometry, not both (got --layer and "
                             f"{', '.join(geometry)})")
        values = {k: getattr(args, k) for k in ("abits", "wbits", "mode", "dtype") if k in names}
        return resnet18_layer(args.layer, batch=args.batch, **values)
    parse = {"kernel": lambda t: _int_or_pair("kernel", t), "stride": lambda t: _int_or_pair("stride", t),
             "padding": _padding}
    values = {k: parse[k](v) if k in parse else v for k in names
              if (v := getattr(args, k, None)) is not None}
    required = [f"--{f.name}" for f in dataclasses.fields(cls)  # a shape is never defaulted
                if (f.default is dataclasses.MISSING or f.name in SHAPE_FIELDS) and f.name not in values]
    if required:
        if "cin" in names:
            raise ValueError(f"{args.op} needs --layer or the geometry (missing {', '.join(required)})")
        raise ValueError(f"{args.op} needs {', '.join(required)}")
    return cls(**values)


def _workload_and_schedule(args: argparse.Namespace) -> tuple[Any, Any]:
    """The workload and the schedule of ``--schedule`` (knobs it omits take the record's field
    defaults), or the default schedule."""
    wl = _workload(args)
    target = get_target(_target(args))
    lowering = lowering_for(wl, target, arithmetic=args.arithmetic)
    if not args.schedule:
        return wl, lowering.default(wl, target)
    try:
        data = json.loads(args.schedule)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--schedule is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("--schedule must be a JSON object of knobs")
    return wl, lowering.schedule_type.from_dict(data)


def _rate(record: dict[str, object], prefix: str = "") -> str:
    bit = record.get(f"{prefix}bit_macs_per_s")
    if bit is not None:
        return f"{float(bit) / 1e9:.1f} G bit-MAC/s"
    return f"{float(record.get(f'{prefix}macs_per_s') or 0) / 1e9:.1f} GMAC/s"


def cmd_demo(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    wl = bs.Dense(1024, 1024, 1024, abits=1, wbits=1, mode="and")
    print(f"bitsearch demo: {wl}")
    kern = bs.build(wl)
    print(f"  default schedule {kern.schedule.to_json()}")
    sizes = " + ".join(f"{len(code.code)} bytes {name}" for name, code in kern.functions.items())
    print(f"  machine code: {sizes}")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, 2, wl.w_shape, dtype=np.uint8)
    wp = kern.pack_weights(w)
    exact = np.array_equal(kern(x, wp), bs.reference(wl, x, w))
    print(f"  bit-exact against the numpy reference: {'yes' if exact else 'NO'}")
    if not exact:
        return 1
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    with threadpool_limits(1):
        stats = time_interleaved({"bitsearch": lambda: kern(x, wp), "numpy": lambda: xf @ wf.T},
                                 repeats=args.repeats)
    ours, ref = stats["bitsearch"], stats["numpy"]
    print("  one thread, median of interleaved repeats (activation packing included):")
    print(f"    bitsearch 1-bit  {ours.median * 1e3:8.2f} ms  {wl.bit_macs / ours.median / 1e9:7.1f} "
          "G bit-MAC/s")
    print(f"    numpy float32    {ref.median * 1e3:8.2f} ms  {wl.macs / ref.median / 1e9:7.1f} GMAC/s")
    print(f"    speed-up         {ref.median / ours.median:8.2f}x")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    wl, schedule = _workload_and_schedule(args)
    arch = get_target(_target(args)).arch
    runner = LocalRunner(core=args.core) if args.runner == "local" else make_runner(args.runner, arch)
    result = measure(wl, schedule, target=_target(args), runner=runner)
    if args.json:
        print(json.dumps(result.to_dict()))
    elif result.ok and result.modeled:
        print(f"{wl}: {result.stats.median * 1e3:.3f} ms modeled (llvm-mca, verified bit for bit), "
              f"{_rate(result.to_dict())}")
    elif result.ok and result.emulated:
        print(f"{wl}: verified bit for bit under qemu ({result.stats.median * 1e3:.3f} ms emulated: "
              "not a speed; use --runner model or ssh://user@board)")
    elif result.ok:
        st = result.stats
        print(f"{wl}: {st.median * 1e3:.3f} ms median (min {st.min * 1e3:.3f}, IQR {st.iqr * 1e3:.3f}, "
              f"{st.repeats} repeats), {_rate(result.to_dict())}")
    else:
        print(f"{wl}: {result.error.value}: {result.message}")
    return 0 if result.ok else 1


def _fixed(pairs: list[str] | None) -> dict[str, object]:
    fixed: dict[str, object] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--fix takes KNOB=VALUE, got {pair!r}")
        try:
            fixed[name] = json.loads(text)
        except json.JSONDecodeError:
            fixed[name] = text
    return fixed


def cmd_tune(args: argparse.Namespace) -> int:
    wl = _workload(args)
    result = bs.tune(wl, _target(args), trials=args.trials, storage=args.storage, study_name=args.study,
                     arithmetic=args.arithmetic,
                     sampler=args.sampler, seed=args.seed, fixed=_fixed(args.fix), progress=not args.quiet,
                     runner=args.runner)
    summary = result.to_dict()
    summary["storage"] = storage_url(args.storage, create=True)
    summary["timing"] = result.study.user_attrs.get("timing", "measured")
    if args.json:
        print(json.dumps(summary))
    elif result.best_schedule is None:
        print(f"study {summary['study']}: no valid schedule found in {summary['trials']} trials")
    else:
        print(f"study {summary['study']} in {summary['storage']}: {summary['trials']} trials, best "
              f"{result.best_seconds * 1e3:.3f} ms{' modeled' if summary['timing'] == 'modeled' else ''} "
              f"({_rate(summary, 'best_')}) with {result.best_schedule.to_json()}")
    return 0 if result.best_schedule is not None else 1


def cmd_space(args: argparse.Namespace) -> int:
    wl = _workload(args)
    info = bs.Space(wl, target=_target(args), fixed=_fixed(args.fix), arithmetic=args.arithmetic).describe()
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"schedule space of {wl} on {info['target']} (lowering {info['lowering']})")
    for knob in info["knobs"]:
        cond = f"  (only when {knob['when']})" if "when" in knob else ""
        fixed = f"  fixed = {knob['fixed']!r}" if "fixed" in knob else ""
        print(f"  {knob['name']:<13} {knob['choices']}{cond}{fixed}\n  {'':<13} {knob['doc']}")
    print("constraints:")
    for c in info["constraints"]:
        print(f"  - {c}")
    size = info["size"]
    print(f"size: {size['total']} distinct schedules, {size['valid']} valid for this workload")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.storage)
    wl, target = study_workload(study)
    best = best_trial(study)
    if best is None:
        raise ValueError(f"study {args.study!r} has no successful trial yet")
    info = {"study": args.study, "workload": wl.to_dict(), "target": target,
            "trials": len(study.get_trials(deepcopy=False)), "best_trial": best.number,
            "best_schedule": json.loads(best.user_attrs["schedule"]), "best_seconds": best.value,
            **{k: best.user_attrs[k] for k in ("min_s", "iqr_s", "macs_per_s", "bit_macs_per_s")
               if k in best.user_attrs}}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{wl} on {target}: best of {info['trials']} trials is #{best.number}, "
              f"{best.value * 1e3:.3f} ms median, schedule {best.user_attrs['schedule']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.study:
        if args.op:
            raise ValueError("give either --study or an operator with its shape, not both")
        _, target = study_workload(load_study(args.study, args.storage))
        if args.target is not None and args.target != target:
            raise ValueError(f"study {args.study!r} holds {target} kernels, not {args.target}; "
                             "omit --target or tune a study for that target")
        kern = bs.load(args.study, args.storage)
    elif args.op:
        wl, schedule = _workload_and_schedule(args)
        kern = bs.build(wl, schedule, _target(args))
    else:
        raise ValueError("export needs --study NAME or an operator (dense --m ... --n ... --k ...)")
    paths = kern.export(args.out, prefix=args.prefix)
    for path in paths.values():
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bitsearch: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bitsearch",
        description="Search-based superoptimizer for low-precision deep-learning operators.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    demo = sub.add_parser("demo", help="build the default 1-bit 1024^3 kernel, verify it, time it "
                          "beside numpy float32")
    demo.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds (default 15)")
    demo.set_defaults(func=cmd_demo)
    m = sub.add_parser("measure", help="build, verify and time one schedule in the native harness")
    _add_dense_args(m)
    m.add_argument("--core", type=int, help="pin the harness to this CPU core")
    m.add_argument("--runner", default="local", metavar="local|qemu|model|ssh://user@host[:port]",
                   help="where to verify and time (default local; model = llvm-mca modeled seconds)")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=cmd_measure)
    t = sub.add_parser("tune", help="search the schedule space with Optuna; each trial verified and timed")
    _add_dense_args(t)
    t.add_argument("--trials", type=int, default=50, help="trials to add to the study (default 50)")
    t.add_argument("--storage", help="Optuna storage URL or SQLite path (default sqlite:///studies/bitsearch.db)")
    t.add_argument("--study", help="study name (default derived from the workload); resumes if it exists")
    t.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="search strategy (default tpe)")
    t.add_argument("--seed", type=int, help="sampler seed")
    t.add_argument("--fix", action="append", metavar="KNOB=VALUE", help="pin a knob (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--runner", default="local", metavar="local|model|ssh://user@host[:port]",
                   help="where to verify and time (default local; model = llvm-mca modeled seconds)")
    t.add_argument("--json", action="store_true", help="last line: one JSON object with the result")
    t.set_defaults(func=cmd_tune)
    sp = sub.add_parser("space", help="knobs, constraints and size of the schedule space of a workload")
    _add_dense_args(sp)
    sp.add_argument("--fix", action="append", metavar="KNOB=VALUE", help="pin a knob (repeatable)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_space)
    b = sub.add_parser("best", help="the best trial of a stored study")
    b.add_argument("--study", required=True, help="study name")
    b.add_argument("--storage", help="Optuna storage URL or SQLite path (default sqlite:///studies/bitsearch.db)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_best)
    e = sub.add_parser("export", help="write .o, .h, .S, listing and schedule JSON of a study's best "
                       "kernel (--study) or of one schedule")
    _add_dense_args(e, optional=True)
    e.add_argument("--study", help="export the best kernel of this study")
    e.add_argument("--storage", help="storage of --study (default sqlite:///studies/bitsearch.db)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--prefix", default="bitsearch", help="symbol and file prefix (a C identifier)")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"bitsearch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitsearch: interrupted; finished trials are stored", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
