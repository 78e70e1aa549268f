"""Plain records passed between the stages of a build and a measurement (the bottom layer).

``MachineCode`` is what an emitter produces: position-independent bytes, their listing, loop
counts for static cost models and the function's ``Signature`` (declared once, by the emitter;
ctypes types, C prototypes and runner jobs are all derived from it). A ``Job`` is what a runner
executes: code blobs, buffers and a sequence of calls; a ``RunResult`` is what comes back, its
failures classified by :class:`ErrorClass`.

Example:
    >>> sig = Signature((Arg("x", "const uint8_t*"), Arg("n", "uint64_t")), returns="uint32_t")
    >>> sig.prototype("demo_pack")
    'uint32_t demo_pack(const uint8_t *x, uint64_t n)'
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


# -- machine code ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg:
    """One argument of a generated function: its name and C type (``const uint8_t*``, ``uint64_t``)."""

    name: str
    ctype: str

    @property
    def is_pointer(self) -> bool:
        return self.ctype.endswith("*")

    def declaration(self) -> str:
        return f"{self.ctype[:-1]} *{self.name}" if self.is_pointer else f"{self.ctype} {self.name}"


@dataclass(frozen=True)
class Signature:
    """The C signature of a generated function (integer-class arguments only: pointers and
    64-bit integers, passed in registers by the System V and AAPCS64 ABIs)."""

    args: tuple[Arg, ...]
    returns: str = "void"

    def prototype(self, name: str) -> str:
        return f"{self.returns} {name}({', '.join(a.declaration() for a in self.args)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)


@dataclass(frozen=True)
class LoopCount:
    """How often the body of the loop headed by ``label`` (a label in the listing) runs in one full
    call over the whole problem: what a static cost model multiplies its per-iteration cycles by."""

    label: str
    executions: int


@dataclass(frozen=True)
class MachineCode:
    """Position-independent bytes of one function (entry at offset 0), its GNU listing and its
    signature.

    ``loops`` (optional) gives the execution counts of the listing's loops for static cost models
    (see :mod:`bitsearch.cost`); emitters that know their trip counts fill it in."""

    name: str
    code: bytes
    listing: str
    loops: tuple[LoopCount, ...] = ()
    signature: Signature | None = None


# -- measurement -------------------------------------------------------------------------------
class ErrorClass(enum.Enum):
    """Why a candidate failed; ``NONE`` when it was built, verified and timed (as TVM's
    ``MeasureErrorNo``: precise enough to act on)."""

    NONE = "NONE"
    INVALID_SCHEDULE = "INVALID_SCHEDULE"  # the static checks reject it; the message says why
    BUILD_ERROR = "BUILD_ERROR"  # the emitter or the assembler failed on a valid schedule
    BUILD_TIMEOUT = "BUILD_TIMEOUT"  # emitting took longer than the build time limit
    RUNTIME_ERROR = "RUNTIME_ERROR"  # crash, illegal instruction, out-of-bounds write
    TIMEOUT = "TIMEOUT"  # running did not finish within the runner's time limit
    WRONG_ANSWER = "WRONG_ANSWER"  # ran, but the outputs differ from the reference


class Timing(enum.Enum):
    """What a runner's times are: a measurement on the real CPU, an emulator's (not a speed), or
    a static cost model's."""

    MEASURED = "measured"
    EMULATED = "emulated"
    MODELED = "modeled"


@dataclass(frozen=True)
class Buffer:
    """A buffer argument. Inputs carry their bytes; outputs only a size (zero-filled)."""

    data: bytes | None = None  # contents of an input buffer
    nbytes: int = 0  # size of an output buffer
    output: bool = False

    @classmethod
    def input(cls, array: np.ndarray) -> Buffer:
        return cls(data=np.ascontiguousarray(array).tobytes(), nbytes=array.nbytes)

    @classmethod
    def out(cls, nbytes: int) -> Buffer:
        return cls(nbytes=nbytes, output=True)


@dataclass(frozen=True)
class Call:
    """Call ``code[code_index]`` with integer-class arguments: ("buf", i) or ("int", value)."""

    code_index: int
    args: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Job:
    """Everything a harness needs: code blobs (entry at offset 0), buffers and a call sequence.

    ``functions`` and ``target`` (optional) carry the listings, loop counts and target of the
    code for runners that read more than bytes (the static cost model)."""

    code: tuple[bytes, ...]
    buffers: tuple[Buffer, ...]
    calls: tuple[Call, ...]
    arch: str = "x86_64"  # "x86_64" | "aarch64": which harness build runs it
    functions: tuple[MachineCode, ...] = ()
    target: str = ""


@dataclass
class RunResult:
    """Outputs of the first (verification) run of the call sequence and the timed repeats."""

    error: ErrorClass = ErrorClass.NONE
    message: str = ""
    outputs: dict[int, bytes] = field(default_factory=dict)  # buffer index -> bytes
    times: list[float] = field(default_factory=list)  # seconds per call sequence, one per repeat
    timing: Timing = Timing.MEASURED

    @property
    def emulated(self) -> bool:
        return self.timing is Timing.EMULATED

    @property
    def modeled(self) -> bool:
        return self.timing is Timing.MODELED


__all__ = ["Arg", "Buffer", "Call", "ErrorClass", "Job", "LoopCount", "MachineCode", "RunResult",
           "Signature", "Timing"]
