"""``ConvKernel``: the machine code of one convolution, callable from numpy like a dense ``Kernel``.

Same public behaviour as :class:`bitsearch.asm.kernel.Kernel` (``pack_weights``, ``__call__(x, w,
threads=, out=)``, ``job()``, ``output_from``, ``listing``, ``export``) over NHWC tensors; the
call runs the functions of :mod:`bitsearch.asm.x86_64.conv` in order: pack (padded image), then
per block of output positions gather, GEMM and the bipolar border fix.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitsearch.asm.kernel import MachineCode, _thread_pool, byte_source, export_files
from bitsearch.asm.x86_64.conv import ConvLayout, border_classes, border_corrections
from bitsearch.runners.base import Buffer, Call, Job
from bitsearch.workloads import Conv2d, IntConv2d

_U64 = ctypes.c_uint64
_P = ctypes.c_void_p
SIGNATURES = {
    "pack": ctypes.CFUNCTYPE(ctypes.c_uint32, _P, _P, _P, _U64, _U64),
    "gather": ctypes.CFUNCTYPE(None, _P, _P, _P, _P, _U64, _U64),
    "gemm": ctypes.CFUNCTYPE(None, _P, _P, _P, _P, _U64, _U64),
    "fix": ctypes.CFUNCTYPE(None, _P, _P, _P, _U64, _U64),
}
C_PROTOTYPES = {
    "pack": "uint32_t {name}(const void *x, uint8_t *img, int32_t *pixsum, uint64_t prow_begin, "
            "uint64_t prow_end)",
    "gather": "void {name}(const uint8_t *img, uint8_t *xp, const int32_t *pixsum, int32_t *rowsum, "
              "uint64_t pos_begin, uint64_t pos_end)",
    "gemm": "void {name}(const uint8_t *xp, const uint8_t *wp, int32_t *y, const int32_t *rowsum, "
            "uint64_t row_begin, uint64_t row_end)",
    "fix": "void {name}(int32_t *y, const int32_t *corr, const int32_t *cls, uint64_t pos_begin, "
           "uint64_t pos_end)",
}
# Buffer indices of a job (and of the in-process call).
X, IMG, PIXSUM, XP, ROWSUM, WP, Y, CORR, CLS = range(9)


@dataclass(frozen=True)
class PackedConvWeights:
    """Weights packed once for a convolution kernel: GEMM rows plus the bipolar border
    corrections (int32 [classes, cout]; one zero row when there is nothing to correct)."""

    data: np.ndarray
    corr: np.ndarray
    key: str  # the kernel layout they were made for


@dataclass
class ConvKernel:
    """A built convolution: ``y = kernel(x, w)`` with int32 y [batch, out_h, out_w, cout].

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> cv = bs.Conv2d(h=6, w=5, cin=3, cout=4, kernel=3, stride=2, abits=2, mode="bipolar")
        >>> kern = bs.build(cv)
        >>> x = np.full(cv.x_shape, 3, np.uint8); w = np.ones(cv.w_shape, np.uint8)
        >>> bool((kern(x, kern.pack_weights(w)) == bs.reference(cv, x, w)).all())
        True
    """

    workload: Conv2d | IntConv2d
    schedule: object
    target: str
    functions: dict[str, MachineCode]
    layout: ConvLayout
    _loaded: dict | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # Scratch buffers (image, im2col rows, sums) of finished calls: a fresh multi-megabyte
    # allocation per call would cost its page faults every time. One set per concurrent call.
    _spare: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        conv = self.workload
        if "fix" in self.functions:
            self.cls, self._class_sets = border_classes(conv)
        else:
            self.cls, self._class_sets = np.zeros(conv.gemm_m, np.int32), [frozenset()]

    # -- geometry -------------------------------------------------------------------------------
    @property
    def implicit(self) -> bool:
        return self.layout.lowering == "implicit"

    @property
    def gemm_rows(self) -> int:
        """Rows of the GEMM's row range: output positions (im2col) or output rows (implicit)."""
        c = self.workload
        return c.batch * c.out_h if self.implicit else c.gemm_m

    def _key(self) -> str:
        return json.dumps({"workload": self.workload.to_dict(), "lowering": self.layout.lowering,
                           "w": repr(self.layout.gemm_w)}, sort_keys=True)

    def _sizes(self) -> dict[int, int]:
        lay, c = self.layout, self.workload
        unipolar = isinstance(c, Conv2d) and c.mode == "unipolar"
        return {
            IMG: lay.image_bytes,
            PIXSUM: 4 * lay.image_rows * lay.wp if unipolar else 4,
            XP: c.gemm_m * lay.x_row_bytes if "gather" in self.functions and lay.x_row_bytes else 4,
            ROWSUM: 4 * c.gemm_m,
        }

    # -- inputs ---------------------------------------------------------------------------------
    def pack_weights(self, w: np.ndarray) -> PackedConvWeights:
        """Pack weights [cout, kh, kw, cin] once, for any number of calls."""
        w = self.workload.check_w(w)
        data = self.layout.pack_w_rows(w)
        if isinstance(self.workload, Conv2d) and "fix" in self.functions:
            corr = border_corrections(self.workload, w, self._class_sets)
        else:
            corr = np.zeros((1, self.workload.cout), np.int32)
        return PackedConvWeights(np.ascontiguousarray(data), corr, self._key())

    def _weights(self, w: np.ndarray | PackedConvWeights) -> PackedConvWeights:
        if isinstance(w, PackedConvWeights):
            if w.key != self._key():
                raise ValueError("packed weights were made for another convolution kernel layout")
            return w
        return self.pack_weights(w)

    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        """x as the pack function reads it: flat bytes after ``lead`` zero bytes (range checked by
        the pack function itself)."""
        x = self.workload.check_x(x, check_range=False)
        flat = x.reshape(-1).view(np.uint8)
        if not self.layout.lead:
            return flat
        out = np.zeros(self.layout.lead + flat.size, np.uint8)
        out[self.layout.lead :] = flat
        return out

    # -- running in this process ----------------------------------------------------------------
    @property
    def listing(self) -> str:
        return "\n".join(code.listing for code in self.functions.values())

    def _functions(self) -> dict:
        with self._lock:
            if self._loaded is None:
                from peachpy.loader import Loader

                from bitsearch.targets import missing_features

                missing = missing_features(self.target)
                if missing:
                    raise RuntimeError(
                        f"this CPU cannot run {self.target} code (it lacks {', '.join(sorted(missing))}); "
                        "build for another target or run it on another machine")
                loaded = {}
                for name, code in self.functions.items():
                    loader = Loader(len(code.code))
                    loader.copy_code(code.code)
                    loaded[name] = (loader, SIGNATURES[name](loader.code_address))
                self._loaded = loaded
            return {name: fn for name, (_, fn) in self._loaded.items()}

    def blocks(self, threads: int) -> list[tuple[int, int]]:
        """GEMM row ranges for ``threads`` threads (im2col: on the register-tile grid)."""
        unit = 1 if self.implicit else self.schedule.mr
        rows = self.gemm_rows
        tiles = -(-rows // unit)
        threads = max(1, min(threads, tiles))
        bounds = [round(i * tiles / threads) * unit for i in range(threads + 1)]
        return [(lo, min(hi, rows)) for lo, hi in itertools.pairwise(bounds) if lo < min(hi, rows)]

    def _positions(self, block: tuple[int, int]) -> tuple[int, int]:
        if not self.implicit:
            return block
        ow = self.workload.out_w
        return block[0] * ow, block[1] * ow

    def __call__(
        self,
        x: np.ndarray,
        w: np.ndarray | PackedConvWeights,
        *,
        threads: int = 1,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """y as int32 [batch, out_h, out_w, cout]; ``w`` raw or from :meth:`pack_weights`;
        ``threads`` splits the image rows, then the output positions; ``out`` receives y."""
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        c = self.workload
        wp = self._weights(w)
        xb = self.prepare_x(x)
        if out is None:
            y = np.empty(c.y_shape, np.int32)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.shape != c.y_shape
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous int32 array of shape {c.y_shape}")
        else:
            y = out
        with self._lock:
            scratch = self._spare.pop() if self._spare else {
                index: np.empty(nbytes, np.uint8) for index, nbytes in self._sizes().items()}
        try:
            return self._run(xb, wp, y, scratch, threads)
        finally:
            with self._lock:
                self._spare.append(scratch)

    def _run(self, xb: np.ndarray, wp: PackedConvWeights, y: np.ndarray, scratch: dict,
             threads: int) -> np.ndarray:
        c, lay = self.workload, self.layout
        bufs = {X: xb, WP: wp.data, Y: y, CORR: wp.corr, CLS: self.cls, **scratch}
        p = {i: a.ctypes.data for i, a in bufs.items()}
        fns = self._functions()
        gemm_x = p[IMG] if self.implicit else p[XP]

        def pack(block: tuple[int, int]) -> int:
            return fns["pack"](p[X], p[IMG], p[PIXSUM], *block)

        def rest(block: tuple[int, int]) -> None:
            pos = self._positions(block)
            if "gather" in fns:
                fns["gather"](p[IMG], p[XP], p[PIXSUM], p[ROWSUM], *pos)
            fns["gemm"](gemm_x, p[WP], p[Y], p[ROWSUM], *block)
            if "fix" in fns:
                fns["fix"](p[Y], p[CORR], p[CLS], *pos)

        rows = lay.image_rows
        blocks = self.blocks(threads)
        if len(blocks) == 1:
            seen = pack((0, rows))
            c.check_packed(seen)
            rest(blocks[0])
            return y
        pool = _thread_pool(len(blocks))
        n = len(blocks)
        image_blocks = [(rows * i // n, rows * (i + 1) // n) for i in range(n)]
        seen = 0
        for value in pool.map(pack, [b for b in image_blocks if b[0] < b[1]]):
            seen |= value
        c.check_packed(seen)
        list(pool.map(rest, blocks))
        return y

    # -- running elsewhere ------------------------------------------------------------------------
    OUTPUT_BUFFER = Y

    def job(self, x: np.ndarray, w: np.ndarray | PackedConvWeights) -> Job:
        """A runner job: pack, gather, GEMM, fix over everything; y in buffer ``OUTPUT_BUFFER``."""
        c = self.workload
        wp = self._weights(w)
        sizes = self._sizes()
        buffers = [
            Buffer.input(self.prepare_x(x)), Buffer.out(sizes[IMG]), Buffer.out(sizes[PIXSUM]),
            Buffer.out(sizes[XP]), Buffer.out(sizes[ROWSUM]), Buffer.input(wp.data),
            Buffer.out(4 * int(np.prod(c.y_shape))), Buffer.input(wp.corr), Buffer.input(self.cls),
        ]
        names = list(self.functions)
        calls = [Call(names.index("pack"), (("buf", X), ("buf", IMG), ("buf", PIXSUM), ("int", 0),
                                            ("int", self.layout.image_rows)))]
        if "gather" in names:
            calls.append(Call(names.index("gather"), (("buf", IMG), ("buf", XP), ("buf", PIXSUM),
                                                      ("buf", ROWSUM), ("int", 0), ("int", c.gemm_m))))
        calls.append(Call(names.index("gemm"), (("buf", IMG if self.implicit else XP), ("buf", WP),
                                                ("buf", Y), ("buf", ROWSUM), ("int", 0),
                                                ("int", self.gemm_rows))))
        if "fix" in names:
            calls.append(Call(names.index("fix"), (("buf", Y), ("buf", CORR), ("buf", CLS), ("int", 0),
                                                   ("int", c.gemm_m))))
        return Job(code=tuple(self.functions[n].code for n in names), buffers=tuple(buffers),
                   calls=tuple(calls))

    def output_from(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, np.int32).reshape(self.workload.y_shape)

    # -- export ---------------------------------------------------------------------------------
    def header(self, prefix: str = "bitsearch") -> str:
        c, lay = self.workload, self.layout
        up = prefix.upper()
        lines = [
            "/* Generated by bitsearch: " + str(c) + " */",
            "/* schedule: " + self.schedule.to_json() + " */",
            "#pragma once",
            "#include <stdint.h>",
            f"#define {up}_IMAGE_ROWS {lay.image_rows} /* pack rows: batch * padded height */",
            f"#define {up}_IMAGE_BYTES {lay.image_bytes}",
            f"#define {up}_X_LEAD {lay.lead} /* zero bytes before x */",
            f"#define {up}_POSITIONS {c.gemm_m}",
            f"#define {up}_GEMM_ROWS {self.gemm_rows}",
            f"#define {up}_XP_ROW_BYTES {lay.x_row_bytes}",
            f"#define {up}_WP_ROW_BYTES {lay.w_row_bytes}",
            "/* Call order: pack over all image rows, then gather, gemm, fix (those present). */",
        ]
        if "fix" in self.functions:
            lines.append(f"#define {up}_BORDER_CLASSES {len(self._class_sets)} /* rows of corr: "
                         "PackedConvWeights.corr; cls: ConvKernel.cls (int32 per position) */")
        for name in self.functions:
            lines.append(C_PROTOTYPES[name].format(name=f"{prefix}_{name}") + ";")
        return "\n".join(lines) + "\n"

    def assembly_source(self, prefix: str = "bitsearch") -> str:
        """GNU assembler source that reproduces the exact bytes (``.byte``), one symbol each."""
        return byte_source(self.functions, prefix)

    def export(self, directory: str | Path, prefix: str = "bitsearch") -> dict[str, Path]:
        """Write ``prefix``.o, .h, .S (exact bytes), .s (listing) and .json (schedule)."""
        return export_files(self, directory, prefix)


def build_conv(conv: Conv2d | IntConv2d, schedule: object, target: str) -> ConvKernel:
    """Emit and encode every function of a checked schedule (``bitsearch.build`` calls this)."""
    from bitsearch.asm.x86_64.conv import emit_conv
    from bitsearch.build import _encode

    functions = {name: _encode(fn) for name, fn in emit_conv(conv, schedule).items()}
    return ConvKernel(workload=conv, schedule=schedule, target=target, functions=functions,
                      layout=ConvLayout.of(conv, schedule))


__all__ = ["ConvKernel", "PackedConvWeights", "build_conv"]
