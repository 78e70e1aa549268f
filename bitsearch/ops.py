"""numpy-facing FP8 operators backed by bitsearch kernels: what the FP8 training loop calls.

``fp8_matmul(a, b)``: float32 ``a @ b.T`` of two FP8 matrices (any mix of E5M2 / E4M3), through
a :class:`~bitsearch.asm.kernel.Kernel` built once per (shape, formats) and cached.
``quantize_fp8(x, fmt, ...)``: fp32 -> FP8 with the AVX2 quantize kernel, bit for bit the
specification of :func:`bitsearch.numerics.quantize` (nearest = ml_dtypes' cast, stochastic =
the counter-based scheme). ``quantize(x, fmt, ...)``: the kernel for FP8 arrays large enough to
repay its call, the numpy specification otherwise (what the FP8 training loop calls).

Example:
    >>> import numpy as np, bitsearch.ops as ops
    >>> a = ops.quantize_fp8(np.full((2, 3), 1.5, np.float32), "e5m2")
    >>> b = ops.quantize_fp8(np.ones((4, 3), np.float32), "e4m3")
    >>> ops.fp8_matmul(a, b).tolist()
    [[4.5, 4.5, 4.5, 4.5], [4.5, 4.5, 4.5, 4.5]]
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from bitsearch.asm.kernel import Kernel, LoadedCode
from bitsearch.asm.x86_64.encode import encode
from bitsearch.asm.x86_64.fp8_quantize import emit_quantize, quantize_table
from bitsearch.build import build, default_schedule_of
from bitsearch.numerics.fp8 import check_seed, fmix32
from bitsearch.numerics.fp8 import quantize as reference_quantize
from bitsearch.paths import cache_dir
from bitsearch.space.fp8_schedule import Fp8Schedule
from bitsearch.targets import TARGETS, missing_features
from bitsearch.tune import best_trial, default_study_name, storage_url
from bitsearch.workloads import FP8_FORMATS, Fp8Dense, fp8_dtype

MAX_CACHED_KERNELS = 64
# Arrays from these sizes on go to the AVX2 quantize kernel (below them the call overhead of the
# kernel outweighs numpy); KERNEL_DISPATCH = False forces the numpy specification.
KERNEL_DISPATCH = True
KERNEL_MIN_SIZE = {"stochastic": 256, "nearest": 4096}

_lock = threading.Lock()
_kernels: OrderedDict[tuple, Any] = OrderedDict()
_quantizers: dict[tuple, LoadedCode] = {}
_config: dict[str, Any] = {"storage": None, "target": None}  # None: the best this CPU runs


def _fmt_of(name: str, array: object) -> str:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of an FP8 dtype, got {type(array).__name__}")
    for fmt in FP8_FORMATS:
        if array.dtype == fp8_dtype(fmt):
            return fmt
    raise ValueError(f"{name} must have dtype float8_e5m2 or float8_e4m3fn (ml_dtypes), got {array.dtype}")


def configure(*, storage: str | None = None, target: str | None = None) -> None:
    """Where :func:`fp8_matmul` looks for tuned schedules: with ``storage`` (an Optuna URL), a new
    shape uses the best trial of the study ``bitsearch.tune`` names after it
    (``fp8-dense-MxNxK-AFMTxWFMT-TARGET``) when that study exists and has one, else the default
    schedule. ``target`` None: ``x86_64-avx512`` where the CPU has it (zmm GEMM), else
    ``x86_64-avx2``. Clears the kernel cache."""
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
    with _lock:
        _config.update(storage=storage, target=target)
        _kernels.clear()


def _target() -> str:
    if _config["target"] is not None:
        return _config["target"]
    return "x86_64-avx2" if missing_features("x86_64-avx512") else "x86_64-avx512"


def _schedule_for(workload: Fp8Dense) -> object | None:
    storage = _config["storage"]
    if storage is None:
        return None
    import optuna

    try:
        study = optuna.load_study(study_name=default_study_name(workload, _target()),
                                  storage=storage_url(storage))
    except (KeyError, ValueError):
        return None
    best = best_trial(study)
    return Fp8Schedule.from_json(best.user_attrs["schedule"]) if best is not None else None


def _disk_key(workload: Fp8Dense, schedule: Fp8Schedule, target: str) -> Path:
    """Where the kernel of (workload, schedule, target) is cached across processes: keyed by a hash
    that includes the source of everything that makes it (emitter, lowering, kernel class), so a
    changed emitter never reuses stale code."""
    h = hashlib.sha256()
    package = Path(__file__).parent
    sources = [*sorted((package / "asm" / "x86_64").glob("fp8*.py")),
               package / "asm" / "x86_64" / "encode.py", package / "asm" / "kernel.py",
               package / "lowerings" / "fp8_x86.py", package / "lowerings" / "plans.py"]
    for part in (*(f.read_bytes() for f in sources), json.dumps(workload.to_dict(), sort_keys=True).encode(),
                 schedule.to_json().encode(), target.encode()):
        h.update(part)
        h.update(b"\0")
    return cache_dir() / "fp8" / f"{h.hexdigest()[:32]}.pkl"


def _build_cached(workload: Fp8Dense, schedule: Fp8Schedule | None, target: str) -> Kernel:
    """Build, or load the kernel a previous process built (PeachPy takes about half a second per
    kernel; the training loop meets the same few shapes in every run)."""
    schedule = schedule or default_schedule_of(workload, target)
    path = _disk_key(workload, schedule, target)
    try:
        with open(path, "rb") as f:
            kern = pickle.load(f)
        if isinstance(kern, Kernel) and kern.workload == workload and kern.schedule == schedule:
            return kern
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, ImportError):
        pass
    kern = build(workload, schedule, target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(kern, f)
        os.replace(tmp, path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass  # a read-only cache only costs the rebuild
    return kern


def fp8_kernel(workload: Fp8Dense) -> Any:
    """The cached kernel of ``workload``: built on first use (or loaded from the on-disk cache
    under ``$BITSEARCH_CACHE``), least recently used evicted from memory."""
    key = (workload, _target(), _config["storage"])
    with _lock:
        kern = _kernels.get(key)
        if kern is not None:
            _kernels.move_to_end(key)
            return kern
    kern = _build_cached(workload, _schedule_for(workload), _target())
    with _lock:
        _kernels[key] = kern
        while len(_kernels) > MAX_CACHED_KERNELS:
            _kernels.popitem(last=False)
    return kern


def fp8_matmul(a: np.ndarray, b: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """y = a @ b.T as float32 [m, n]; a FP8 [m, k], b FP8 [n, k] (ml_dtypes ``float8_e5m2`` or
    ``float8_e4m3fn``, any mix), FP32 accumulation: within
    :func:`bitsearch.workloads.fp8_tolerance` of the exact result; NaN/inf propagate (IEEE).

    Example:
        >>> import numpy as np, ml_dtypes
        >>> a = np.array([[1, 2, 3]], ml_dtypes.float8_e4m3fn)
        >>> fp8_matmul(a, a).tolist()
        [[14.0]]
    """
    afmt, wfmt = _fmt_of("a", a), _fmt_of("b", b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a and b must be 2-D, got shapes {a.shape} and {b.shape}")
    (m, k), (n, kb) = a.shape, b.shape
    if k != kb:
        raise ValueError(f"a [m, k] and b [n, k] must agree in k, got shapes {a.shape} and {b.shape}")
    if not m or not n or not k:
        return np.zeros((m, n), np.float32)  # an empty sum is 0
    kern = fp8_kernel(Fp8Dense(m, n, k, afmt=afmt, wfmt=wfmt))
    return kern(np.ascontiguousarray(a), np.ascontiguousarray(b), threads=threads)


def _quantizer(fmt: str, rounding: str, saturate: bool) -> Any:
    key = (fmt, rounding, saturate)
    with _lock:
        if key in _quantizers:
            return _quantizers[key].function
    # RuntimeError on a CPU without AVX2
    code = LoadedCode(encode(emit_quantize(fmt, rounding, saturate)), "x86_64-avx2")
    with _lock:
        _quantizers[key] = code  # owns the executable memory: keep it
    return code.function


def quantize_fp8(x: np.ndarray | float, fmt: str, rounding: str = "nearest", seed: int | None = None,
                 saturate: bool = False) -> np.ndarray:
    """Round ``x`` (converted to float32) to FP8 (``"e5m2"`` | ``"e4m3"``) with the AVX2 kernel.

    Same contract and results, bit for bit, as :func:`bitsearch.numerics.quantize` (see the
    stochastic-rounding specification in :mod:`bitsearch.numerics.fp8`): element ``i`` (flat
    C order) rounds up iff ``fmix32(i ^ fmix32(seed)) < frac * 2**32``; ``seed=None`` draws one
    from OS entropy; ``saturate`` clips overflow to +-max (else +-inf, NaN for E4M3).

    Example:
        >>> import numpy as np
        >>> quantize_fp8(np.array([1.1, -7e4], np.float32), "e5m2", saturate=True).astype(float).tolist()
        [1.0, -57344.0]
    """
    if fmt not in FP8_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FP8_FORMATS)}, got {fmt!r}")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    xa = np.asarray(x)
    if xa.dtype.kind not in "fiub" and xa.dtype.name not in ("float8_e5m2", "float8_e4m3fn", "bfloat16"):
        raise ValueError(f"x: expected a real numeric array, got dtype {xa.dtype}")
    x32 = np.ascontiguousarray(xa, dtype=np.float32)
    size = x32.size
    if rounding == "stochastic" and size >= 2**32:
        raise ValueError(f"x has {size} elements: stochastic rounding indexes them with uint32")
    key = fmix32(check_seed(seed)) if rounding == "stochastic" else 0
    fn = _quantizer(fmt, rounding, bool(saturate))
    flat = x32.reshape(-1)
    out = np.empty(size, np.uint8)
    body = size - size % 8
    if body:
        table = quantize_table(fmt, key, 0)
        fn(flat.ctypes.data, out.ctypes.data, body, table.ctypes.data)
    if size % 8:  # the last < 8 elements through a zero-padded block, with their own counters
        pad = np.zeros(8, np.float32)
        pad[: size - body] = flat[body:]
        tail = np.empty(8, np.uint8)
        table = quantize_table(fmt, key, body)
        fn(pad.ctypes.data, tail.ctypes.data, 8, table.ctypes.data)
        out[body:] = tail[: size - body]
    return out.view(fp8_dtype(fmt)).reshape(xa.shape)  # (ascontiguousarray makes 0-d arrays 1-d)


def kernel_quantizer(fmt: str, rounding: str, size: int) -> Any:
    """:func:`quantize_fp8` when it should quantize ``size`` values to ``fmt``, else None."""
    if not KERNEL_DISPATCH or fmt not in FP8_FORMATS or size < KERNEL_MIN_SIZE[rounding]:
        return None
    return None if missing_features("x86_64-avx2") else quantize_fp8


def quantize(x: np.ndarray | float, fmt: str, rounding: str = "nearest", seed: int | None = None,
             saturate: bool = False) -> np.ndarray:
    """:func:`bitsearch.numerics.quantize`, through the AVX2 kernel for FP8 arrays large enough
    to repay its call (same specification, bit for bit).

    Example:
        >>> import numpy as np
        >>> quantize(np.full(5000, 1.1, np.float32), "e5m2").astype(float)[:2].tolist()
        [1.0, 1.0]
    """
    fast = kernel_quantizer(fmt, rounding, np.size(x)) if rounding in KERNEL_MIN_SIZE else None
    if fast is not None:
        return fast(x, fmt, rounding=rounding, seed=seed, saturate=saturate)
    return reference_quantize(x, fmt, rounding=rounding, seed=seed, saturate=saturate)


__all__ = ["configure", "fp8_kernel", "fp8_matmul", "kernel_quantizer", "quantize", "quantize_fp8"]
