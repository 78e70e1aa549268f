"""QemuRunner: AArch64 jobs in the static harness under qemu-aarch64 -cpu cortex-a53.

Blobs are hand-encoded A64 (checked with aarch64-linux-gnu-objdump); arguments arrive in x0..x5.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import bitsearch as bs
from bitsearch.runners import Buffer, Call, ErrorClass, Job, LocalRunner, make_runner
from bitsearch.runners._harness import host_arch
from bitsearch.runners.qemu import QemuRunner

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc")),
    reason="needs qemu-aarch64 (qemu-user) and aarch64-linux-gnu-gcc",
)


def words(*hexwords: str) -> bytes:
    return b"".join(int(w, 16).to_bytes(4, "little") for w in hexwords)


RET = words("d65f03c0")
COPY = words("b40000a2", "38401403", "38001423", "f1000442", "54ffffa1", "d65f03c0")  # (src, dst, n)
STORE_AT = words("52800022", "38216802", "d65f03c0")  # strb #1 at [x0 + x1]
CLOBBER_X19 = words("d2800013", "d65f03c0")  # mov x19, #0
SDOT = words("4e829420", "d65f03c0")  # sdot v0.4s, v1.16b, v2.16b: ARMv8.2 dot product, not on the A53
SPIN = words("14000000")  # b .


def job(code: bytes, buffers=(), args=()) -> Job:
    return Job(code=(code,), buffers=tuple(buffers), calls=(Call(0, tuple(args)),), arch="aarch64")


@pytest.fixture(scope="module")
def qemu() -> QemuRunner:
    return QemuRunner(timeout=60)


@pytest.mark.parametrize("n", [1, 255, 4096, 5000])
def test_copy_outputs_and_emulated_times(qemu: QemuRunner, n: int) -> None:
    data = (np.arange(n) * 7 % 256).astype(np.uint8)
    result = qemu.run(job(COPY, (Buffer.input(data), Buffer.out(n)), [("buf", 0), ("buf", 1), ("int", n)]))
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs == {1: data.tobytes()}
    assert len(result.times) == qemu.repeats and result.emulated and not result.modeled


@pytest.mark.parametrize(
    ("code", "args", "fragment"),
    [
        (STORE_AT, [("buf", 0), ("int", 100)], "guard page after output buffer 0"),
        (STORE_AT, [("buf", 0), ("int", -1)], "out-of-bounds write before buffer 0"),
        (CLOBBER_X19, [], "x19"),
        (SDOT, [], "SIGILL"),
    ],
)
def test_failures_are_classified(qemu: QemuRunner, code: bytes, args, fragment: str) -> None:
    result = qemu.run(job(code, (Buffer.out(100),), args), timing=False)
    assert result.error is ErrorClass.RUNTIME_ERROR
    assert fragment in result.message, result.message
    assert result.emulated


def test_the_a53_cpu_model_is_what_traps_dot_product() -> None:
    # The same SDOT runs on qemu's default ("max") CPU: SIGILL above comes from -cpu cortex-a53.
    result = QemuRunner(cpu="max").run(job(SDOT), timing=False)
    assert result.error is ErrorClass.NONE, result.message


def test_timeout_kills_the_emulator() -> None:
    result = QemuRunner(timeout=2).run(job(SPIN), timing=False)
    assert result.error is ErrorClass.TIMEOUT and "2 s" in result.message


def test_wrong_arch_and_missing_emulator(qemu: QemuRunner) -> None:
    with pytest.raises(ValueError, match="aarch64 code, not x86_64"):
        qemu.run(Job(code=(b"\xc3",), buffers=(), calls=()))
    with pytest.raises(RuntimeError, match="qemu-user"):
        QemuRunner(qemu="qemu-aarch64-definitely-missing")
    with pytest.raises(ValueError):
        QemuRunner(timeout=0)


def test_tune_refuses_emulated_times(qemu: QemuRunner) -> None:
    with pytest.raises(ValueError, match="emulator"):
        bs.tune(bs.Dense(8, 8, 64), trials=1, storage="sqlite:///:memory:", runner=qemu, progress=False)


def test_runner_factory() -> None:
    assert isinstance(make_runner("qemu", "aarch64"), QemuRunner)
    with pytest.raises(ValueError, match="aarch64 code"):
        make_runner("qemu", "x86_64")
    other = "aarch64" if host_arch() == "x86_64" else "x86_64"
    with pytest.raises(ValueError, match="local runner cannot run"):
        make_runner("local", other)
    assert isinstance(make_runner("local"), LocalRunner)
    with pytest.raises(ValueError, match="unknown runner"):
        make_runner("board")
