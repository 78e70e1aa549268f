"""``Kernel``: the machine code of one (workload, schedule, target), callable from numpy.

Stages, each its own type: ``Schedule`` -> emitted PeachPy functions -> :class:`MachineCode`
(position-independent bytes + listing) -> :class:`Kernel` (loaded lazily into executable memory,
callable through ctypes, which releases the GIL so ``threads=`` runs row blocks in parallel).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitsearch.numerics.packing import PackedLayout
from bitsearch.runners.base import Buffer, Call, Job
from bitsearch.space.schedule import Schedule
from bitsearch.workloads import Dense

PACK_SIGNATURE = ctypes.CFUNCTYPE(
    ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64
)
GEMM_SIGNATURE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_uint64, ctypes.c_uint64,
)

C_PROTOTYPES = {
    "pack": "uint32_t {name}(const uint8_t *x, uint8_t *xp, int32_t *rowsum, "
    "uint64_t row_begin, uint64_t row_end)",
    "gemm": "void {name}(const uint8_t *xp, const uint8_t *wp, int32_t *y, "
    "const int32_t *rowsum, uint64_t row_begin, uint64_t row_end)",
}


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool, grown on demand: starting threads on every call costs more than a
    small GEMM."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max(workers, os.cpu_count() or 1), thread_name_prefix="bitsearch")
        return _POOL


@dataclass(frozen=True)
class LoopCount:
    """How often the body of the loop headed by ``label`` (a label in the listing) runs in one full
    call over the whole problem: what a static cost model multiplies its per-iteration cycles by."""

    label: str
    executions: int


@dataclass(frozen=True)
class MachineCode:
    """Position-independent bytes of one function (entry at offset 0) and its GNU listing.

    ``loops`` (optional) gives the execution counts of the listing's loops for static cost models
    (see :mod:`bitsearch.cost`); emitters that know their trip counts fill it in."""

    name: str
    code: bytes
    listing: str
    loops: tuple[LoopCount, ...] = ()


@dataclass(frozen=True)
class PackedWeights:
    """Weights packed once for a kernel: uint8 [n, row_bytes] in ``layout``."""

    data: np.ndarray
    layout: PackedLayout


@dataclass
class Kernel:
    """A built bit-serial dense kernel: ``y = kernel(x, w)`` with int32 y [m, n].

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> wl = bs.Dense(8, 8, 100, abits=1, wbits=1, mode="bipolar")
        >>> kern = bs.build(wl)
        >>> x = np.ones((8, 100), np.uint8); w = np.zeros((8, 100), np.uint8)
        >>> int(kern(x, kern.pack_weights(w))[0, 0])
        -100
    """

    workload: Dense
    schedule: Schedule
    target: str
    pack: MachineCode
    gemm: MachineCode
    x_layout: PackedLayout  # anything with .row_bytes and .pack(values) -> uint8 [rows, row_bytes]
    w_layout: PackedLayout
    x_row_stride: int
    _loaded: tuple | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # -- inputs --------------------------------------------------------------------------------
    def pack_weights(self, w: np.ndarray) -> PackedWeights:
        """Pack a weight matrix uint8 [n, k] once, for any number of calls."""
        w = self.workload.check_w(w)
        return PackedWeights(self.w_layout.pack(w), self.w_layout)

    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        """x as the packing code reads it: contiguous rows of ``x_row_stride`` bytes (values are
        range-checked by the packing code itself, see ``workload.check_packed``)."""
        x = self.workload.check_x(x, check_range=False)
        if self.x_row_stride != x.shape[1] * x.itemsize:
            padded = np.zeros((x.shape[0], self.x_row_stride // x.itemsize), x.dtype)
            padded[:, : x.shape[1]] = x
            x = padded
        return x

    def _weights(self, w: np.ndarray | PackedWeights) -> np.ndarray:
        if isinstance(w, PackedWeights):
            if w.layout != self.w_layout or w.data.shape != (self.workload.n, self.w_layout.row_bytes):
                raise ValueError(
                    f"packed weights were made for {w.layout}, this kernel reads {self.w_layout}"
                )
            return w.data
        return self.pack_weights(w).data

    # -- running in this process ----------------------------------------------------------------
    @property
    def listing(self) -> str:
        return self.pack.listing + "\n" + self.gemm.listing

    def _functions(self) -> tuple:
        with self._lock:
            if self._loaded is None:
                from bitsearch.targets import missing_features

                missing = missing_features(self.target)
                if missing:
                    raise RuntimeError(
                        f"this CPU cannot run {self.target} code (it lacks {', '.join(sorted(missing))}); "
                        "build for another target or run it on another machine"
                    )
                from peachpy.loader import Loader

                loaders = []
                pointers = []
                for code, signature in ((self.pack, PACK_SIGNATURE), (self.gemm, GEMM_SIGNATURE)):
                    loader = Loader(len(code.code))
                    loader.copy_code(code.code)
                    loaders.append(loader)
                    pointers.append(signature(loader.code_address))
                self._loaded = (loaders, *pointers)
            return self._loaded[1:]

    def row_blocks(self, threads: int) -> list[tuple[int, int]]:
        """Split rows into ``threads`` ranges that start on the register-tile grid."""
        mr, m = self.schedule.mr, self.workload.m
        tiles = -(-m // mr)
        threads = max(1, min(threads, tiles))
        bounds = [round(i * tiles / threads) * mr for i in range(threads + 1)]
        return [(lo, min(hi, m)) for lo, hi in itertools.pairwise(bounds) if lo < min(hi, m)]

    def __call__(
        self,
        x: np.ndarray,
        w: np.ndarray | PackedWeights,
        *,
        threads: int = 1,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """y = op(x, w) as int32 [m, n]; ``w`` raw uint8 [n, k] or from :meth:`pack_weights`.

        ``threads`` splits the rows over that many threads (ctypes releases the GIL); ``out``
        (C-contiguous int32 [m, n]) receives y instead of a new array, which saves the page faults
        of a fresh allocation on every call."""
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if self._emulated():
            return self._call_emulated(x, w, out)
        wl = self.workload
        wp = self._weights(w)
        x = self.prepare_x(x)
        xp = np.empty((wl.m, self.x_layout.row_bytes), np.uint8)
        rowsum = np.empty(wl.m, np.int32)
        if out is None:
            y = np.empty((wl.m, wl.n), np.int32)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.shape != (wl.m, wl.n)
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous int32 array of shape {(wl.m, wl.n)}")
        else:
            y = out
        pack, gemm = self._functions()
        ptrs = [a.ctypes.data for a in (x, xp, rowsum, wp, y)]

        # Pack everything first: out-of-range values must be rejected before the GEMM runs.
        def run_pack(block: tuple[int, int]) -> int:
            return pack(ptrs[0], ptrs[1], ptrs[2], *block)

        def run_gemm(block: tuple[int, int]) -> None:
            gemm(ptrs[1], ptrs[3], ptrs[4], ptrs[2], *block)

        blocks = self.row_blocks(threads)
        if len(blocks) == 1:
            seen = run_pack(blocks[0])
            self.workload.check_packed(seen)
            run_gemm(blocks[0])
        else:
            pool = _thread_pool(len(blocks))
            seen = 0
            for value in pool.map(run_pack, blocks):
                seen |= value
            self.workload.check_packed(seen)
            list(pool.map(run_gemm, blocks))
        return y


    # -- another architecture: run the job under qemu ---------------------------------------------
    @property
    def arch(self) -> str:
        """"x86_64" or "aarch64": the architecture of this kernel's machine code."""
        from bitsearch.targets import target_arch

        return target_arch(self.target)

    def _emulated(self) -> bool:
        from bitsearch.targets import runs_natively

        return not runs_natively(self.target)

    def _call_emulated(self, x: np.ndarray, w: np.ndarray | PackedWeights,
                       out: np.ndarray | None) -> np.ndarray:
        """One harness job (pack, then GEMM) under ``qemu-aarch64 -cpu cortex-a53``. The job
        cannot stop between its calls, so x is range-checked here instead of from pack's OR."""
        from bitsearch.runners.base import ErrorClass
        from bitsearch.runners.qemu import QemuRunner

        wl = self.workload
        x = wl.check_x(x)
        if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.int32
                                or out.shape != (wl.m, wl.n) or not out.flags.c_contiguous
                                or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous int32 array of shape {(wl.m, wl.n)}")
        result = QemuRunner().run(self.job(x, w), timing=False)
        if result.error is not ErrorClass.NONE:
            raise RuntimeError(f"{self.target} kernel failed under qemu: {result.error.name}: "
                               f"{result.message}")
        y = self.output_from(result.outputs[self.OUTPUT_BUFFER]).copy()
        if out is None:
            return y
        out[...] = y
        return out

    # -- running elsewhere ------------------------------------------------------------------------
    def job(self, x: np.ndarray, w: np.ndarray) -> Job:
        """A runner job: pack x, then the GEMM, over all rows; outputs in buffers 2 (y)."""
        wl = self.workload
        buffers = (
            Buffer.input(self.prepare_x(x)),
            Buffer.out(wl.m * self.x_layout.row_bytes),
            Buffer.out(4 * wl.m),
            Buffer.input(self._weights(w)),
            Buffer.out(4 * wl.m * wl.n),
        )
        calls = (
            Call(0, (("buf", 0), ("buf", 1), ("buf", 2), ("int", 0), ("int", wl.m))),
            Call(1, (("buf", 1), ("buf", 3), ("buf", 4), ("buf", 2), ("int", 0), ("int", wl.m))),
        )
        return Job(code=(self.pack.code, self.gemm.code), buffers=buffers, calls=calls, arch=self.arch)

    OUTPUT_BUFFER = 4

    def output_from(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, np.int32).reshape(self.workload.m, self.workload.n)

    # -- export ---------------------------------------------------------------------------------
    def header(self, prefix: str = "bitsearch") -> str:
        wl, s = self.workload, self.schedule
        lines = [
            "/* Generated by bitsearch: " + str(wl) + " */",
            "/* schedule: " + s.to_json() + " */",
            "#pragma once",
            "#include <stdint.h>",
            f"#define {prefix.upper()}_M {wl.m}",
            f"#define {prefix.upper()}_N {wl.n}",
            f"#define {prefix.upper()}_K {wl.k}",
            f"#define {prefix.upper()}_X_ROW_STRIDE {self.x_row_stride} /* bytes per x row */",
            f"#define {prefix.upper()}_XP_ROW_BYTES {self.x_layout.row_bytes}",
            f"#define {prefix.upper()}_WP_ROW_BYTES {self.w_layout.row_bytes}",
            "/* Packs x rows [row_begin, row_end); returns the OR of all bytes read. */",
            C_PROTOTYPES["pack"].format(name=f"{prefix}_pack") + ";",
            "/* y = op(x, w) for rows [row_begin, row_end); row_begin a multiple of the tile rows "
            f"({s.mr}). Weights are packed by Kernel.pack_weights. */",
            C_PROTOTYPES["gemm"].format(name=f"{prefix}_gemm") + ";",
            "",
        ]
        return "\n".join(lines)

    def assembly_source(self, prefix: str = "bitsearch") -> str:
        """GNU assembler source that reproduces the exact bytes (``.byte``), one symbol each."""
        return byte_source({"pack": self.pack, "gemm": self.gemm}, prefix)

    def export(self, directory: str | Path, prefix: str = "bitsearch") -> dict[str, Path]:
        """Write ``prefix``.o, .h, .S (exact bytes), .s (listing) and .json (schedule)."""
        return export_files(self, directory, prefix, arch=self.arch)


# -- export, shared by every kernel class ---------------------------------------------------------
def byte_source(functions: dict[str, MachineCode], prefix: str) -> str:
    """GNU assembler source reproducing each function's exact bytes (``.byte``) as ``prefix_name``."""
    out = [".text"]
    for part, code in functions.items():
        name = f"{prefix}_{part}"
        out += [".p2align 5", f".globl {name}", f".type {name}, @function", f"{name}:"]
        for i in range(0, len(code.code), 16):
            out.append("  .byte " + ", ".join(str(b) for b in code.code[i : i + 16]))
        out.append(f".size {name}, .-{name}")
    out.append('.section .note.GNU-stack,"",@progbits')
    return "\n".join(out) + "\n"


def export_files(
    kernel: object, directory: str | Path, prefix: str, *, arch: str = "x86_64"
) -> dict[str, Path]:
    """Write ``prefix``.o, .h, .S, .s and .json of ``kernel`` (anything with ``header``,
    ``assembly_source``, ``listing``, ``workload``, ``schedule`` and ``target``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {ext: directory / f"{prefix}.{ext}" for ext in ("o", "h", "S", "s", "json")}
    paths["h"].write_text(kernel.header(prefix))
    paths["S"].write_text(kernel.assembly_source(prefix))
    paths["s"].write_text(kernel.listing)
    paths["json"].write_text(json.dumps(
        {"workload": kernel.workload.to_dict(), "schedule": kernel.schedule.to_dict(),
         "target": kernel.target}, indent=2))
    if arch == "aarch64":  # cross-assemble: GNU as takes the .byte source directly
        compiler = shutil.which("aarch64-linux-gnu-as")
        if compiler is None:
            raise RuntimeError("exporting an AArch64 object file needs aarch64-linux-gnu-as "
                               "(Debian/Ubuntu: apt-get install binutils-aarch64-linux-gnu)")
        flags = []
    else:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise RuntimeError("exporting an object file needs a C compiler (cc or gcc) on PATH")
        flags = ["-c"]
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([compiler, *flags, str(paths["S"]), "-o", str(Path(tmp) / "k.o")],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"assembling {paths['S']} failed: {result.stderr.strip()}")
        shutil.move(str(Path(tmp) / "k.o"), paths["o"])
    return paths
