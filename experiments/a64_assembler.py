#!/usr/bin/env python3
"""How fast is the project's A64 assembler, next to GNU as?

Texts: the NEON emitters' GEMM and packing kernels for a few schedules (when
``bitsearch.asm.aarch64.neon_dense`` is present) and one random line per form of the encoder's
table. For each: lines, our ``assemble`` cold (parse caches cleared) and warm (the tuner
re-assembles similar text), and ``aarch64-linux-gnu-as`` + ``objcopy`` as processes (the
fallback it replaces); the bytes must agree. Prints a table, writes
results/a64_assembler/a64_assembler.json. The machine is shared: read ratios, not absolutes.

    .venv/bin/python experiments/a64_assembler.py            # a few seconds
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bitsearch.asm.aarch64 import assemble
from bitsearch.asm.aarch64.assembler import _encode_cached, _parse_statement
from bitsearch.asm.aarch64.forms import TABLE
from bitsearch.asm.aarch64.operands import parse_operand


def gnu(text: str) -> tuple[bytes, float]:
    """Bytes and seconds of GNU as + objcopy on ``text``."""
    gas, objcopy = shutil.which("aarch64-linux-gnu-as"), shutil.which("aarch64-linux-gnu-objcopy")
    if gas is None or objcopy is None:
        raise RuntimeError("needs aarch64-linux-gnu-as and aarch64-linux-gnu-objcopy")
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, raw = Path(tmp) / "k.s", Path(tmp) / "k.o", Path(tmp) / "k.bin"
        src.write_text(text + "\n")
        t0 = time.perf_counter()
        subprocess.run([gas, "-o", str(obj), str(src)], check=True, capture_output=True)
        subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(raw)], check=True)
        return raw.read_bytes(), time.perf_counter() - t0


def best_of(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def texts() -> list[tuple[str, str]]:
    out = []
    try:
        from bitsearch.asm.aarch64.neon_dense import emit_neon_dense
        from bitsearch.space.schedule import NeonSchedule
        from bitsearch.workloads import Dense

        for mr, nr, ku in ((1, 4, 1), (2, 4, 4), (4, 4, 8)):
            sched = NeonSchedule(mr=mr, nr=nr, k_unroll=ku, chains=4).normalized()
            pack, gemm = emit_neon_dense(Dense(64, 64, 4096, abits=2, wbits=2, mode="unipolar"), sched)
            out.append((f"gemm {mr}x{nr} unroll {ku}", gemm.text()))
            if not any(name.startswith("pack") for name, _ in out):
                out.append(("pack A2", pack.text()))
    except Exception as e:  # the emitters are optional here (another module, still evolving)
        print(f"(NEON emitter texts skipped: {type(e).__name__}: {e})", file=sys.stderr)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_a64_encoder import batch  # the test suite's per-form operand samplers

    out.append(("every form x1 (random)", "\n".join(batch(random.Random(0), list(TABLE.forms), 1))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("results/a64_assembler"))
    args = ap.parse_args()
    rows = []
    print(f"{'text':28s} {'lines':>6s} {'cold ms':>8s} {'warm ms':>8s} {'us/line':>8s} {'GNU as ms':>10s} "
          f"{'GNU/cold':>8s}")
    for name, text in texts():
        lines = sum(1 for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("//"))

        def cold(text: str = text) -> bytes:
            _parse_statement.cache_clear()
            _encode_cached.cache_clear()
            parse_operand.cache_clear()
            return assemble(text)

        code = cold()
        theirs, _ = gnu(text)
        if code != theirs:
            raise SystemExit(f"{name}: bytes differ from GNU as")
        t_cold = best_of(cold, args.repeats)
        t_warm = best_of(lambda text=text: assemble(text), args.repeats)
        t_gnu = min(gnu(text)[1] for _ in range(args.repeats))
        rows.append({"text": name, "lines": lines, "cold_s": t_cold, "warm_s": t_warm, "gnu_as_s": t_gnu,
                     "bytes": len(code)})
        print(f"{name:28s} {lines:6d} {1e3 * t_cold:8.2f} {1e3 * t_warm:8.2f} {1e6 * t_cold / lines:8.1f} "
              f"{1e3 * t_gnu:10.2f} {t_gnu / t_cold:8.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "note": "best of --repeats; shared machine, +-15 % drift"}
    (args.out / "a64_assembler.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
