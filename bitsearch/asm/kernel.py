"""``Kernel``: the machine code of one (workload, schedule, target) and its ``CallPlan``.

Stages, each its own type: ``Schedule`` -> emitted functions -> :class:`~bitsearch.records.MachineCode`
(position-independent bytes, listing, declared :class:`~bitsearch.records.Signature`) ->
:class:`Kernel` (loaded lazily into executable memory, callable through ctypes, which releases
the GIL so ``threads=`` runs blocks in parallel).

One ``Kernel`` class serves every operator and target. What differs is data: the
:class:`CallPlan` (the buffers, the calls in order, the row range each phase splits over threads,
the output) and the :class:`Operands` (how x becomes the bytes the first function reads and how
w is packed). The ctypes signatures, the C header and the runner :class:`~bitsearch.records.Job`
are all derived from the plan and the functions' declared signatures.
"""

from __future__ import annotations

import abc
import ctypes
import dataclasses
import functools
import itertools
import json
import operator
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bitsearch.records import Buffer, Call, ErrorClass, Job, MachineCode, Signature
from bitsearch.runners.qemu import QemuRunner
from bitsearch.targets import get_target, missing_features, runs_natively

# -- the call plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """First row of the block a thread runs, times ``scale`` (e.g. output positions per row)."""

    scale: int = 1


@dataclass(frozen=True)
class End:
    """One past the last row of the block a thread runs, times ``scale``."""

    scale: int = 1


ArgValue = str | int | Begin | End  # a buffer name, a constant, or the bounds of the block


@dataclass(frozen=True)
class Step:
    """One call: ``function`` (a key of ``Kernel.functions``) with its arguments."""

    function: str
    args: tuple[ArgValue, ...]


@dataclass(frozen=True)
class Phase:
    """Steps run in order on each block of rows [0, rows); blocks start on multiples of ``grain``
    and go to different threads. With ``checks_input`` the first step returns the OR of the
    input bytes it read, which the workload checks (out-of-range values) before the next phase."""

    steps: tuple[Step, ...]
    rows: int
    grain: int = 1
    checks_input: bool = False

    def blocks(self, threads: int) -> list[tuple[int, int]]:
        """Split the rows into at most ``threads`` ranges that start on the ``grain`` grid."""
        tiles = -(-self.rows // self.grain)
        threads = max(1, min(threads, tiles))
        bounds = [round(i * tiles / threads) * self.grain for i in range(threads + 1)]
        return [(lo, min(hi, self.rows)) for lo, hi in itertools.pairwise(bounds)
                if lo < min(hi, self.rows)]


Role = Literal["x", "w", "y", "scratch", "const"]


@dataclass(frozen=True)
class BufferSpec:
    """A buffer of the plan. ``x``: the prepared input; ``w``: one array of the packed weights;
    ``y``: the output; ``scratch``: written and read by the kernel within a call; ``const``:
    data fixed at build time (``CallPlan.constants``)."""

    name: str
    nbytes: int
    role: Role
    doc: str = ""


@dataclass(frozen=True)
class CallPlan:
    """How a kernel is called: its buffers, its phases, its output, and header macros."""

    buffers: tuple[BufferSpec, ...]
    phases: tuple[Phase, ...]
    out_dtype: str
    out_shape: tuple[int, ...]
    constants: dict[str, np.ndarray] = field(default_factory=dict, compare=False)
    macros: tuple[tuple[str, int, str], ...] = ()  # (NAME, value, comment) for the C header

    def buffer(self, role: Role) -> BufferSpec:
        return next(b for b in self.buffers if b.role == role)

    def index(self, name: str) -> int:
        return next(i for i, b in enumerate(self.buffers) if b.name == name)

    def steps(self) -> list[tuple[Phase, Step]]:
        return [(phase, step) for phase in self.phases for step in phase.steps]


# -- operands ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedWeights:
    """Weights packed once for a kernel: the ``w`` buffers of its plan, by name, and the key of
    the format they were packed in (a kernel refuses weights packed for another format)."""

    arrays: dict[str, np.ndarray]
    key: Any

    @functools.cached_property
    def pointers(self) -> dict[str, int]:
        """Addresses of the arrays (computed once: the weights outlive many calls)."""
        return {name: a.ctypes.data for name, a in self.arrays.items()}

    @property
    def data(self) -> np.ndarray:
        """The packed weight rows (the first ``w`` buffer)."""
        return next(iter(self.arrays.values()))


class Operands(abc.ABC):
    """How a kernel's operands become its input buffers (one implementation per operand layout)."""

    workload: Any

    @property
    @abc.abstractmethod
    def key(self) -> Any:
        """Identifies the packed-weights format (compared by value)."""

    @abc.abstractmethod
    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        """x as the first function reads it (values are range-checked by that function)."""

    @abc.abstractmethod
    def pack_w(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """The ``w`` buffers of checked weights, by name."""


@dataclass(frozen=True)
class RowOperands(Operands):
    """GEMM operands: x rows padded to ``x_row_stride`` bytes, w packed row by row by
    ``w_layout`` (anything with ``.pack(values)`` and ``.row_bytes``) into the buffer ``wp``."""

    workload: Any
    x_layout: Any
    w_layout: Any
    x_row_stride: int

    @property
    def key(self) -> Any:
        return self.w_layout

    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        x = self.workload.check_x(x, check_range=False)
        if self.x_row_stride != x.shape[1] * x.itemsize:
            padded = np.zeros((x.shape[0], self.x_row_stride // x.itemsize), x.dtype)
            padded[:, : x.shape[1]] = x
            x = padded
        return x

    def pack_w(self, w: np.ndarray) -> dict[str, np.ndarray]:
        return {"wp": self.w_layout.pack(w)}


# -- loading -------------------------------------------------------------------------------------
_CTYPES = {"uint64_t": ctypes.c_uint64, "uint32_t": ctypes.c_uint32, "int64_t": ctypes.c_int64,
           "int32_t": ctypes.c_int32, "void": None}


def c_function_type(signature: Signature) -> Any:
    """The ctypes function type of a declared signature (pointers as ``void *``)."""
    def ctype(spelling: str) -> Any:
        if spelling.endswith("*"):
            return ctypes.c_void_p
        if spelling not in _CTYPES:
            raise ValueError(f"no ctypes type for C type {spelling!r}")
        return _CTYPES[spelling]

    return ctypes.CFUNCTYPE(ctype(signature.returns), *(ctype(a.ctype) for a in signature.args))


class LoadedCode:
    """Machine code copied into executable memory and callable through ctypes (the mapping lives
    as long as this object)."""

    def __init__(self, code: MachineCode, target: str) -> None:
        missing = missing_features(target)
        if missing:
            raise RuntimeError(
                f"this CPU cannot run {target} code (it lacks {', '.join(sorted(missing))}); "
                "build for another target or run it on another machine")
        if code.signature is None:
            raise ValueError(f"{code.name}: the emitter declared no signature; cannot call it")
        from peachpy.loader import Loader  # PeachPy is needed only to run code in this process

        self._loader = Loader(len(code.code))
        self._loader.copy_code(code.code)
        self.function = c_function_type(code.signature)(self._loader.code_address)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool, grown on demand: starting threads on every call costs more than a
    small GEMM."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max(workers, os.cpu_count() or 1), thread_name_prefix="bitsearch")
        return _POOL


def _check_threads(threads: object) -> None:
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")


# Argument kinds of a compiled step: a pointer, the block's first or end row (times a scale), an int.
_POINTER, _BEGIN, _END, _INT = range(4)


class _Program:
    """A plan resolved for fast calls in this process: each step's ctypes function with its
    arguments pre-classified, the constants' addresses, the blocks of each thread count."""

    def __init__(self, plan: CallPlan, functions: dict[str, Callable[..., Any]]) -> None:
        def kind(arg: ArgValue) -> tuple[int, Any]:
            if isinstance(arg, str):
                return (_POINTER, arg)
            if isinstance(arg, Begin):
                return (_BEGIN, arg.scale)
            if isinstance(arg, End):
                return (_END, arg.scale)
            return (_INT, arg)

        self.phases = [(phase, [(functions[s.function], [kind(a) for a in s.args]) for s in phase.steps])
                       for phase in plan.phases]
        self.x, self.y = plan.buffer("x").name, plan.buffer("y").name
        self.constants = {name: a.ctypes.data for name, a in plan.constants.items()}
        self._arrays = plan.constants  # kept alive with their addresses
        self._blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def blocks(self, index: int, threads: int) -> list[tuple[int, int]]:
        key = (index, threads)
        if key not in self._blocks:
            self._blocks[key] = self.phases[index][0].blocks(threads)
        return self._blocks[key]

    def run(self, pointers: dict[str, int], threads: int, check_input: Callable[[int], None]) -> None:
        for index, (phase, steps) in enumerate(self.phases):
            def run(block: tuple[int, int], steps: list = steps) -> int:
                lo, hi = block
                first = None
                for function, args in steps:
                    result = function(*[pointers[v] if k == _POINTER else lo * v if k == _BEGIN
                                        else hi * v if k == _END else v for k, v in args])
                    if first is None:
                        first = result or 0
                return first

            blocks = self.blocks(index, threads)
            if len(blocks) == 1:
                seen = run(blocks[0])
            else:
                seen = functools.reduce(operator.or_, thread_pool(len(blocks)).map(run, blocks), 0)
            if phase.checks_input:  # out-of-range inputs are rejected before anything reads them
                check_input(seen)


# -- the kernel ----------------------------------------------------------------------------------
@dataclass
class Kernel:
    """A built kernel: ``y = kernel(x, w)``.

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> wl = bs.Dense(8, 8, 100, abits=1, wbits=1, mode="bipolar")
        >>> kern = bs.build(wl)
        >>> x = np.ones((8, 100), np.uint8); w = np.zeros((8, 100), np.uint8)
        >>> int(kern(x, kern.pack_weights(w))[0, 0])
        -100
    """

    workload: Any
    schedule: Any
    target: str
    functions: dict[str, MachineCode]
    plan: CallPlan
    operands: Operands
    _loaded: dict[str, LoadedCode] | None = field(default=None, repr=False, compare=False)
    _compiled: _Program | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # Scratch buffers of finished calls: a fresh multi-megabyte allocation per call would cost its
    # page faults every time. One set per concurrent call.
    _spare: list = field(default_factory=list, repr=False, compare=False)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {len(code.code)} B" for name, code in self.functions.items())
        return f"Kernel({self.workload}, {self.schedule.to_json()}, {self.target}: {sizes})"

    def __getstate__(self) -> dict[str, Any]:  # pickled without its loaded code, lock and scratch
        return {**self.__dict__, "_loaded": None, "_compiled": None, "_lock": None, "_spare": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def replace_function(self, name: str, **changes: Any) -> Kernel:
        """A copy whose function ``name`` has ``changes`` (``code=``, ``loops=``, ...) -- e.g. to
        inject a fault and see the measurement classify it."""
        functions = {**self.functions, name: dataclasses.replace(self.functions[name], **changes)}
        return dataclasses.replace(self, functions=functions, _loaded=None, _compiled=None, _spare=[])

    # -- inputs --------------------------------------------------------------------------------
    def pack_weights(self, w: np.ndarray) -> PackedWeights:
        """Pack the weights once, for any number of calls."""
        arrays = self.operands.pack_w(self.workload.check_w(w))
        return PackedWeights({k: np.ascontiguousarray(v) for k, v in arrays.items()}, self.operands.key)

    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        """x as the first function reads it (values are range-checked by that function)."""
        return self.operands.prepare_x(x)

    def _weights(self, w: np.ndarray | PackedWeights) -> PackedWeights:
        if isinstance(w, PackedWeights):
            if w.key != self.operands.key:
                raise ValueError(f"packed weights were made for {w.key}, this kernel reads "
                                 f"{self.operands.key}")
            return w
        return self.pack_weights(w)

    def _output(self, out: np.ndarray | None) -> np.ndarray:
        dtype, shape = np.dtype(self.plan.out_dtype), self.plan.out_shape
        if out is None:
            return np.empty(shape, dtype)
        if (not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != shape
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writeable C-contiguous {dtype} array of shape {shape}")
        return out

    # -- running in this process ----------------------------------------------------------------
    @property
    def listing(self) -> str:
        return "\n".join(code.listing for code in self.functions.values())

    @property
    def arch(self) -> str:
        """"x86_64" or "aarch64": the architecture of this kernel's machine code."""
        return get_target(self.target).arch

    def loaded(self) -> dict[str, Callable[..., Any]]:
        """The functions as ctypes callables (loaded on first use; RuntimeError if this CPU
        cannot run them)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = {name: LoadedCode(code, self.target) for name, code in self.functions.items()}
            return {name: code.function for name, code in self._loaded.items()}

    def __call__(
        self,
        x: np.ndarray,
        w: np.ndarray | PackedWeights,
        *,
        threads: int = 1,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """y = op(x, w); ``w`` raw or from :meth:`pack_weights`.

        ``threads`` splits each phase's rows over that many threads (ctypes releases the GIL);
        ``out`` (C-contiguous, of the output's dtype and shape) receives y instead of a new array,
        which saves the page faults of a fresh allocation on every call. On a host of another
        architecture the kernel runs under its target's emulator (``threads`` is then ignored)."""
        _check_threads(threads)
        program = self._program()
        if program is None:
            return self._call_emulated(x, w, out)
        packed = self._weights(w)
        xb = self.prepare_x(x)
        y = self._output(out)
        with self._lock:  # scratch of a finished call, with its pointers
            scratch = self._spare.pop() if self._spare else self._scratch()
        try:
            pointers = {**program.constants, **packed.pointers, **scratch[1],
                        program.x: xb.ctypes.data, program.y: y.ctypes.data}
            program.run(pointers, threads, self.workload.check_packed)
        finally:
            with self._lock:
                self._spare.append(scratch)
        return y

    def _scratch(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        arrays = {b.name: np.empty(b.nbytes, np.uint8) for b in self.plan.buffers if b.role == "scratch"}
        return arrays, {name: a.ctypes.data for name, a in arrays.items()}

    def _program(self) -> _Program | None:
        """The plan compiled for calls in this process (None: the code runs under an emulator)."""
        program = self._compiled
        if program is None:
            if not runs_natively(self.target):
                return None
            functions = self.loaded()
            with self._lock:
                if self._compiled is None:
                    self._compiled = _Program(self.plan, functions)
                program = self._compiled
        return program

    def _call_emulated(self, x: np.ndarray, w: np.ndarray | PackedWeights,
                       out: np.ndarray | None) -> np.ndarray:
        """One harness job under the target's emulator. The job cannot stop between its calls, so
        x is range-checked here instead of from the first function's OR."""
        self.workload.check_x(x)
        y = self._output(out)
        target = get_target(self.target)
        result = QemuRunner(cpu=target.emulator_cpu).run(self.job(x, w), timing=False)
        if result.error is not ErrorClass.NONE:
            raise RuntimeError(f"{self.target} kernel failed under qemu: {result.error.name}: "
                               f"{result.message}")
        y[...] = self.output(result.outputs)
        return y

    # -- running elsewhere ------------------------------------------------------------------------
    def job(self, x: np.ndarray, w: np.ndarray | PackedWeights) -> Job:
        """A runner job: every step of every phase over all rows, in plan order."""
        packed = self._weights(w)
        inputs = {self.plan.buffer("x").name: self.prepare_x(x), **packed.arrays, **self.plan.constants}
        buffers = tuple(Buffer.input(inputs[b.name]) if b.name in inputs else Buffer.out(b.nbytes)
                        for b in self.plan.buffers)
        names = list(self.functions)

        def arg(a: ArgValue, rows: int) -> tuple[str, int]:
            if isinstance(a, str):
                return ("buf", self.plan.index(a))
            if isinstance(a, Begin):
                return ("int", 0)
            if isinstance(a, End):
                return ("int", rows * a.scale)
            return ("int", a)

        calls = tuple(Call(names.index(s.function), tuple(arg(a, p.rows) for a in s.args))
                      for p, s in self.plan.steps())
        return Job(code=tuple(c.code for c in self.functions.values()), buffers=buffers, calls=calls,
                   arch=self.arch, functions=tuple(self.functions.values()), target=self.target)

    @property
    def output_index(self) -> int:
        """The index of the output among the job's buffers."""
        return self.plan.index(self.plan.buffer("y").name)

    def output(self, outputs: dict[int, bytes]) -> np.ndarray:
        """y from a runner's output buffers (``RunResult.outputs``)."""
        raw = outputs[self.output_index]
        return np.frombuffer(raw, self.plan.out_dtype).reshape(self.plan.out_shape)

    # -- export ---------------------------------------------------------------------------------
    def header(self, prefix: str = "bitsearch") -> str:
        """C declarations: buffer sizes, the call order and one prototype per function, all
        derived from the plan and the emitters' declared signatures."""
        check_prefix(prefix)
        up = prefix.upper()
        lines = [f"/* Generated by bitsearch: {self.workload} on {self.target} */",
                 f"/* schedule: {self.schedule.to_json()} */",
                 "#pragma once", "#include <stdint.h>", "#ifdef __cplusplus", 'extern "C" {', "#endif"]
        lines += [f"#define {up}_{name} {value}" + (f" /* {doc} */" if doc else "")
                  for name, value, doc in self.plan.macros]
        for b in self.plan.buffers:
            doc = f"{b.role}" + (f": {b.doc}" if b.doc else "")
            lines.append(f"#define {up}_{b.name.upper()}_BYTES {b.nbytes} /* {doc} */")
        lines.append("/* Call order (rows split over threads per phase; every call of a phase on the "
                     "same rows):")
        for i, phase in enumerate(self.plan.phases, 1):
            calls = "; ".join(f"{prefix}_{s.function}({', '.join(_describe(a, phase.rows) for a in s.args)})"
                              for s in phase.steps)
            lines.append(f"   phase {i}, rows [0, {phase.rows}) on multiples of {phase.grain}: {calls}")
        lines.append("*/")
        for name, code in self.functions.items():
            lines.append(code.signature.prototype(f"{prefix}_{name}") + ";")
        lines += ["#ifdef __cplusplus", "}", "#endif", ""]
        return "\n".join(lines)

    def assembly_source(self, prefix: str = "bitsearch") -> str:
        """GNU assembler source that reproduces the exact bytes (``.byte``), one symbol each."""
        return byte_source(self.functions, check_prefix(prefix))

    def export(self, directory: str | Path, prefix: str = "bitsearch") -> dict[str, Path]:
        """Write ``prefix``.o, .h, .S (exact bytes), .s (listing) and .json (schedule)."""
        return export_files(self, directory, prefix)


def _describe(arg: ArgValue, rows: int) -> str:
    if isinstance(arg, str):
        return arg
    if isinstance(arg, Begin | End):
        what = "begin" if isinstance(arg, Begin) else "end"
        return what if arg.scale == 1 else f"{what}*{arg.scale}"
    return str(arg)


# -- export ---------------------------------------------------------------------------------------
def check_prefix(prefix: str) -> str:
    """``prefix`` if it makes valid C symbols and file names, else a ValueError."""
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"prefix must be a C identifier (letters, digits, _; not starting with a "
                         f"digit), got {prefix!r}")
    return prefix


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


def export_files(kernel: Kernel, directory: str | Path, prefix: str) -> dict[str, Path]:
    """Write ``prefix``.o, .h, .S, .s and .json of ``kernel``; the prefix and the tools are
    checked before anything is written."""
    check_prefix(prefix)
    if kernel.arch == "aarch64":  # cross-assemble: GNU as takes the .byte source directly
        compiler, flags = shutil.which("aarch64-linux-gnu-as"), []
        if compiler is None:
            raise RuntimeError("exporting an AArch64 object file needs aarch64-linux-gnu-as "
                               "(Debian/Ubuntu: apt-get install binutils-aarch64-linux-gnu)")
    else:
        compiler, flags = shutil.which("cc") or shutil.which("gcc"), ["-c"]
        if compiler is None:
            raise RuntimeError("exporting an object file needs a C compiler (cc or gcc) on PATH")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {ext: directory / f"{prefix}.{ext}" for ext in ("o", "h", "S", "s", "json")}
    paths["h"].write_text(kernel.header(prefix))
    paths["S"].write_text(kernel.assembly_source(prefix))
    paths["s"].write_text(kernel.listing)
    paths["json"].write_text(json.dumps(
        {"workload": kernel.workload.to_dict(), "schedule": kernel.schedule.to_dict(),
         "target": kernel.target}, indent=2))
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([compiler, *flags, str(paths["S"]), "-o", str(Path(tmp) / "k.o")],
                                capture_output=True, text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"assembling {paths['S']} failed: {result.stderr.strip()}")
        shutil.move(str(Path(tmp) / "k.o"), paths["o"])
    return paths


__all__ = ["Begin", "BufferSpec", "CallPlan", "End", "Kernel", "LoadedCode", "Operands", "PackedWeights",
           "Phase", "RowOperands", "Step", "byte_source", "c_function_type", "check_prefix",
           "export_files", "thread_pool"]
