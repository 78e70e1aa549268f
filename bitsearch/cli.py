"""The ``bitsearch`` command.

    bitsearch demo                                   # default 1-bit kernel vs numpy float32
    bitsearch measure dense --m 256 --n 256 --k 512 --abits 1 --wbits 1 [--schedule JSON] [--json]
    bitsearch export dense --m 256 --n 256 --k 512 --out DIR [--schedule JSON]

Errors are one line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import bitsearch as bs


def _add_dense_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("op", choices=["dense"], help="operator (dense; conv2d comes later)")
    p.add_argument("--m", type=int, required=True, help="rows of x (batch)")
    p.add_argument("--n", type=int, required=True, help="rows of w (output features)")
    p.add_argument("--k", type=int, required=True, help="reduction length")
    p.add_argument("--abits", type=int, default=1, help="activation bits, 1..8 (default 1)")
    p.add_argument("--wbits", type=int, default=1, help="weight bits, 1..8 (default 1)")
    p.add_argument("--mode", default="and", choices=bs.MODES, help="value semantics (default and)")
    p.add_argument("--schedule", help="schedule as JSON; omitted knobs take their defaults")
    p.add_argument("--target", default="x86_64-avx2", choices=bs.TARGETS)


def _workload_and_schedule(args: argparse.Namespace) -> tuple[bs.Dense, bs.Schedule]:
    wl = bs.Dense(args.m, args.n, args.k, abits=args.abits, wbits=args.wbits, mode=args.mode)
    if not args.schedule:
        return wl, bs.default_schedule(wl)
    try:
        data = json.loads(args.schedule)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--schedule is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("--schedule must be a JSON object of knobs")
    return wl, bs.Schedule.from_dict(data)


def cmd_demo(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from bitsearch.cost.compare import time_interleaved

    wl = bs.Dense(1024, 1024, 1024, abits=1, wbits=1, mode="and")
    print(f"bitsearch demo: {wl}")
    kern = bs.build(wl)
    print(f"  default schedule {kern.schedule.to_json()}")
    print(f"  machine code: {len(kern.pack.code)} bytes packing + {len(kern.gemm.code)} bytes GEMM")
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
    from bitsearch.measure import measure
    from bitsearch.runners import LocalRunner

    wl, schedule = _workload_and_schedule(args)
    result = measure(wl, schedule, target=args.target, runner=LocalRunner(core=args.core))
    if args.json:
        print(json.dumps(result.to_dict()))
    elif result.ok:
        st = result.stats
        print(f"{wl}: {st.median * 1e3:.3f} ms median (min {st.min * 1e3:.3f}, IQR {st.iqr * 1e3:.3f}, "
              f"{st.repeats} repeats), {result.bit_macs_per_second / 1e9:.1f} G bit-MAC/s")
    else:
        print(f"{wl}: {result.error.value}: {result.message}")
    return 0 if result.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    wl, schedule = _workload_and_schedule(args)
    kern = bs.build(wl, schedule, args.target)
    paths = kern.export(args.out, prefix=args.prefix)
    for path in paths.values():
        print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bitsearch",
        description="Search-based superoptimizer for low-precision deep-learning operators.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="build the default 1-bit 1024^3 kernel, verify it, time it "
                          "beside numpy float32")
    demo.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds (default 15)")
    demo.set_defaults(func=cmd_demo)
    m = sub.add_parser("measure", help="build, verify and time one schedule in the native harness")
    _add_dense_args(m)
    m.add_argument("--core", type=int, help="pin the harness to this CPU core")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=cmd_measure)
    e = sub.add_parser("export", help="write .o, .h, .S, listing and schedule JSON of one kernel")
    _add_dense_args(e)
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--prefix", default="bitsearch", help="symbol and file prefix")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"bitsearch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
