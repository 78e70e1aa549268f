"""Plain records passed between the stages of a measurement, and the runner interface.

A runner executes a :class:`Job` -- self-contained machine-code blobs, buffers and a sequence of
calls -- in a native harness in another process (or on another machine) and returns a
:class:`RunResult`. Runners know nothing about workloads or bit widths: verification against a
reference happens in :mod:`bitsearch.measure`.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field

import numpy as np


class ErrorClass(enum.Enum):
    """Why a candidate failed; ``NONE`` when it was built, verified and timed."""

    NONE = "NONE"
    BUILD_ERROR = "BUILD_ERROR"  # statically invalid schedule or emitter failure
    RUNTIME_ERROR = "RUNTIME_ERROR"  # crash, illegal instruction, out-of-bounds write
    TIMEOUT = "TIMEOUT"  # did not finish within the runner's time limit
    WRONG_ANSWER = "WRONG_ANSWER"  # ran, but the outputs differ from the reference


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
    """Everything a harness needs: code blobs (entry at offset 0), buffers and a call sequence."""

    code: tuple[bytes, ...]
    buffers: tuple[Buffer, ...]
    calls: tuple[Call, ...]
    arch: str = "x86_64"  # "x86_64" | "aarch64": which harness build runs it


@dataclass
class RunResult:
    """Outputs of the first (verification) run of the call sequence and the timed repeats."""

    error: ErrorClass = ErrorClass.NONE
    message: str = ""
    outputs: dict[int, bytes] = field(default_factory=dict)  # buffer index -> bytes
    times: list[float] = field(default_factory=list)  # seconds per call sequence, one per repeat
    emulated: bool = False  # timed under an emulator: not a speed
    modeled: bool = False  # times from a static cost model (runners.model), not a measurement


class BaseRunner(abc.ABC):
    """Runs jobs in a native harness and classifies failures; never raises for a bad candidate."""

    @abc.abstractmethod
    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` once for outputs, then (if ``timing``) time it. Never raises for bad code."""
