"""``Kernel.export``: the files it writes, and a real C program linked against the object file."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bitsearch as bs

CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = [
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 host"),
    pytest.mark.skipif(CC is None or shutil.which("nm") is None, reason="needs cc and nm"),
]

C_MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "PREFIX.h"

static void *slurp(const char *path, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    void *buf = calloc(1, size + 1);
    if (fread(buf, 1, size + 1, f) != size) { fprintf(stderr, "%s: wrong size\n", path); exit(3); }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 4) return 1;
    const size_t M = UP_M, N = UP_N, K = UP_K;
    uint8_t *x_dense = slurp(argv[1], M * K);           /* uint8 [M, K] */
    uint8_t *wp = slurp(argv[2], N * UP_WP_ROW_BYTES);  /* packed by Kernel.pack_weights */
    uint8_t *x = calloc(M, UP_X_ROW_STRIDE);            /* rows padded to the stride */
    for (size_t r = 0; r < M; r++) memcpy(x + r * UP_X_ROW_STRIDE, x_dense + r * K, K);
    uint8_t *xp = malloc(M * UP_XP_ROW_BYTES);
    int32_t *rowsum = malloc(M * sizeof(int32_t));
    int32_t *y = malloc(M * N * sizeof(int32_t));
    uint32_t seen = PREFIX_pack(x, xp, rowsum, 0, M);
    printf("seen %u\n", seen);
    PREFIX_gemm(xp, wp, y, rowsum, 0, M);
    FILE *out = fopen(argv[3], "wb");
    if (fwrite(y, sizeof(int32_t), M * N, out) != M * N) return 4;
    fclose(out);
    return 0;
}
"""

CASES = [
    (bs.Dense(5, 7, 300, abits=2, wbits=3, mode="unipolar"),
     bs.Schedule(mr=2, nr=3, popcount="lut", layout="interleaved", k_unroll=2), "bitsearch"),
    (bs.Dense(3, 4, 77, abits=1, wbits=1, mode="bipolar"),
     bs.Schedule(mr=2, nr=2, popcount="scalar"), "xnor_layer"),
    (bs.Dense(4, 5, 520, abits=3, wbits=2, mode="and"),
     bs.Schedule(mr=1, nr=3, popcount="csa", loop_order="nm"), "and3x2"),
    (bs.Dense(3, 6, 130, abits=4, wbits=2, mode="unipolar"),
     bs.Schedule(mr=2, nr=2, popcount="lut", nibble_split=True, acc_bits=16), "split"),
]


def _symbols(obj: Path) -> dict[str, tuple[str, int, int]]:
    """name -> (type, value, size) from ``nm -S``."""
    out = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            value, size, kind, name = parts
            symbols[name] = (kind, int(value, 16), int(size, 16))
    return symbols


@pytest.mark.parametrize(("wl", "schedule", "prefix"), CASES, ids=[c[2] for c in CASES])
def test_export_end_to_end(tmp_path: Path, wl: bs.Dense, schedule: bs.Schedule, prefix: str) -> None:
    kern = bs.build(wl, schedule)
    out = tmp_path / "out"
    paths = kern.export(out, prefix=prefix)

    # -- the files ------------------------------------------------------------------------------
    assert set(paths) == {"o", "h", "S", "s", "json"}
    for ext, path in paths.items():
        assert path == out / f"{prefix}.{ext}"
        assert path.is_file() and path.stat().st_size > 0, ext
    meta = json.loads(paths["json"].read_text())
    assert meta["target"] == "x86_64-avx2"
    assert meta["workload"] == wl.to_dict()
    assert bs.Schedule.from_dict(meta["schedule"]) == schedule
    header = paths["h"].read_text()
    up = prefix.upper()
    for macro, value in (("M", wl.m), ("N", wl.n), ("K", wl.k), ("X_ROW_STRIDE", kern.operands.x_row_stride),
                         ("XP_ROW_BYTES", kern.operands.x_layout.row_bytes),
                         ("WP_ROW_BYTES", kern.operands.w_layout.row_bytes)):
        assert f"#define {up}_{macro} {value}" in header
    assert f"{prefix}_pack(" in header and f"{prefix}_gemm(" in header
    assert paths["s"].read_text() == kern.listing

    # -- the object: two global functions whose bytes are exactly the kernel's -----------------------
    symbols = _symbols(paths["o"])
    for part, code in (("pack", kern.functions["pack"].code), ("gemm", kern.functions["gemm"].code)):
        kind, value, size = symbols[f"{prefix}_{part}"]
        assert kind == "T", (part, kind)
        assert size == len(code)
    text = tmp_path / "text.bin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.text", str(paths["o"]), str(text)],
                   check=True)
    blob = text.read_bytes()
    for part, code in (("pack", kern.functions["pack"].code), ("gemm", kern.functions["gemm"].code)):
        _, value, size = symbols[f"{prefix}_{part}"]
        assert blob[value : value + size] == code, f"{part} bytes in the .o differ from the kernel"

    # -- a C program: pack x with the exported code, run the exported GEMM -----------------------
    main_c = tmp_path / "main.c"
    main_c.write_text(C_MAIN.replace("PREFIX", prefix).replace("UP_", f"{up}_"))
    exe = tmp_path / "main"
    build = subprocess.run(
        [CC, "-O1", "-Wall", "-Werror", f"-I{out}", str(main_c), str(paths["o"]), "-o", str(exe)],
        capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stderr

    rng = np.random.default_rng(wl.k)
    x = rng.integers(0, wl.amax + 1, wl.x_shape, dtype=np.uint8)
    w = rng.integers(0, wl.wmax + 1, wl.w_shape, dtype=np.uint8)
    x[0] = wl.amax  # an all-maximal row
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    (tmp_path / "wp.bin").write_bytes(kern.pack_weights(w).data.tobytes())
    run = subprocess.run(
        [str(exe), str(tmp_path / "x.bin"), str(tmp_path / "wp.bin"), str(tmp_path / "y.bin")],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    assert run.stdout.split() == ["seen", str(int(np.bitwise_or.reduce(x, axis=None)))]
    y = np.frombuffer((tmp_path / "y.bin").read_bytes(), np.int32).reshape(wl.m, wl.n)
    expected = bs.reference(wl, x, w)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(kern(x, w), expected)


def test_export_creates_directory_and_default_prefix(tmp_path: Path) -> None:
    wl = bs.Dense(2, 2, 40, abits=1, wbits=1, mode="and")
    kern = bs.build(wl, bs.Schedule(mr=1, nr=1, popcount="scalar"))
    target = tmp_path / "a" / "b"
    paths = kern.export(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"bitsearch.{ext}" for ext in ("o", "h", "S", "s", "json")
    )
    symbols = _symbols(paths["o"])
    assert symbols["bitsearch_pack"][0] == "T" and symbols["bitsearch_gemm"][0] == "T"
    assert paths["S"].read_text().count(".globl") == 2
