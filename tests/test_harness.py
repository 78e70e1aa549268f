"""The native harness and LocalRunner, driven with tiny hand-encoded x86-64 functions.

Every blob below was checked with ``objdump -D -b binary -mi386:x86-64``. Arguments arrive in
rdi, rsi, rdx, rcx, r8, r9 (SysV).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bitsearch.cost.stats import TimingStats
from bitsearch.runners import Buffer, Call, ErrorClass, Job, LocalRunner, RunResult, _harness

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="needs Linux")

IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
QEMU_AARCH64 = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
HAVE_AARCH64_CC = shutil.which("aarch64-linux-gnu-gcc") is not None


@pytest.fixture(autouse=True)
def _host_matches(request: pytest.FixtureRequest) -> None:
    """Tests named *aarch64* bring their own emulator; all others run x86-64 code natively."""
    if "aarch64" in request.node.name:
        if not (QEMU_AARCH64 and HAVE_AARCH64_CC):
            pytest.skip("needs qemu-aarch64 and aarch64-linux-gnu-gcc")
    elif not IS_X86_64:
        pytest.skip("hand-written x86-64 code needs an x86-64 host")


RET = b"\xc3"
# copy(src=rdi, dst=rsi, n=rdx): byte loop
COPY = bytes.fromhex(
    "4885d2"  # test rdx, rdx
    "740f"  # je done
    "8a07"  # loop: mov al, [rdi]
    "8806"  # mov [rsi], al
    "48ffc7"  # inc rdi
    "48ffc6"  # inc rsi
    "48ffca"  # dec rdx
    "75f1"  # jne loop
    "c3"  # done: ret
)
# sum5(dst=rdi, a..e=rsi, rdx, rcx, r8, r9): *(uint64_t *)dst = a + b + c + d + e
SUM5 = bytes.fromhex("4889f0 4801d0 4801c8 4c01c0 4c01c8 488907 c3")
STORE_AT = bytes.fromhex("c6043701 c3")  # mov byte [rdi + rsi], 1
STORE_BEFORE = bytes.fromhex("c647ff01 c3")  # mov byte [rdi - 1], 1
STORE_FIRST = bytes.fromhex("c60701 c3")  # mov byte [rdi], 1
LOAD_AT = bytes.fromhex("8a0437 c3")  # mov al, [rdi + rsi]
UD2 = b"\x0f\x0b"
SPIN = b"\xeb\xfe"  # jmp $
CLOBBER_RBX = bytes.fromhex("31db c3")  # xor ebx, ebx
SAVE_RBX = bytes.fromhex("53 31db 5b c3")  # push rbx; xor ebx, ebx; pop rbx
SET_DF = bytes.fromhex("fd c3")  # std
MOVE_SP = bytes.fromhex("59 50 51 c3")  # pop rcx; push rax; push rcx: rsp - 8 on return
DIV_ZERO = bytes.fromhex("31c9 48f7f1 c3")  # xor ecx, ecx; div rcx


@pytest.fixture(scope="module")
def runner() -> LocalRunner:
    return LocalRunner(timeout=10.0, min_time=0.001, repeats=10)


@pytest.fixture(scope="module")
def quick() -> LocalRunner:
    return LocalRunner(timeout=10.0)


def one_call(code: bytes, buffers: tuple[Buffer, ...], args) -> Job:
    return Job(code=(code,), buffers=buffers, calls=(Call(0, tuple(args)),))


def run_untimed(runner: LocalRunner, job: Job) -> RunResult:
    return runner.run(job, timing=False)


# ---------------------------------------------------------------------------------------------
# Correct code


def test_copy_outputs_and_timings(runner: LocalRunner) -> None:
    data = np.arange(1000, dtype=np.uint8) * 7
    job = one_call(
        COPY,
        (Buffer.input(data), Buffer.out(1000)),
        [("buf", 0), ("buf", 1), ("int", 1000)],
    )
    result = runner.run(job)
    assert result.error is ErrorClass.NONE, result.message
    assert set(result.outputs) == {1}
    assert result.outputs[1] == data.tobytes()
    assert len(result.times) == 10
    assert all(t > 0 for t in result.times)
    # 1000 byte copies take between ~0.1 us and ~1 ms on anything that runs this.
    stats = TimingStats.from_times(result.times)
    assert 1e-8 < stats.median < 1e-3
    assert not result.emulated


def test_untimed_run_has_no_times(quick: LocalRunner) -> None:
    job = one_call(
        COPY,
        (Buffer.input(np.array([1, 2, 3], np.uint8)), Buffer.out(3)),
        [("buf", 0), ("buf", 1), ("int", 3)],
    )
    result = run_untimed(quick, job)
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs == {1: b"\x01\x02\x03"}
    assert result.times == []


def test_six_arguments_and_call_sequence(quick: LocalRunner) -> None:
    # Two blobs, three calls; negative ints wrap to uint64; the last write to a buffer wins.
    job = Job(
        code=(SUM5, COPY),
        buffers=(Buffer.out(8), Buffer.out(8), Buffer.out(0)),
        calls=(
            Call(0, (("buf", 0), ("int", 1), ("int", 2), ("int", 3), ("int", 4), ("int", -20))),
            Call(1, (("buf", 0), ("buf", 1), ("int", 8))),
            Call(0, (("buf", 0), ("int", 2**64 - 1), ("int", 1))),
        ),
    )
    result = run_untimed(quick, job)
    assert result.error is ErrorClass.NONE, result.message
    assert np.frombuffer(result.outputs[0], np.uint64)[0] == 0
    assert np.frombuffer(result.outputs[1], np.int64)[0] == -10
    assert result.outputs[2] == b""


@pytest.mark.parametrize("n", [1, 63, 64, 4095, 4096, 4097, 10000])
def test_buffer_end_is_usable_up_to_the_last_byte(quick: LocalRunner, n: int) -> None:
    job = one_call(STORE_AT, (Buffer.out(n),), [("buf", 0), ("int", n - 1)])
    result = run_untimed(quick, job)
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs[0] == bytes(n - 1) + b"\x01"


def test_callee_saved_register_restored_is_fine(quick: LocalRunner) -> None:
    result = run_untimed(quick, one_call(SAVE_RBX, (), []))
    assert result.error is ErrorClass.NONE, result.message


# ---------------------------------------------------------------------------------------------
# Bad code: classified, never raised


def check_runtime_error(runner: LocalRunner, job: Job, *fragments: str) -> RunResult:
    result = runner.run(job, timing=False)
    assert result.error is ErrorClass.RUNTIME_ERROR, result
    for fragment in fragments:
        assert fragment in result.message, result.message
    assert result.outputs == {}
    return result


def test_illegal_instruction(quick: LocalRunner) -> None:
    check_runtime_error(quick, one_call(UD2, (), []), "SIGILL", "code 0 + 0x0")


def test_division_by_zero(quick: LocalRunner) -> None:
    check_runtime_error(quick, one_call(DIV_ZERO, (), []), "SIGFPE")


def test_running_off_the_end_of_the_code_traps(quick: LocalRunner) -> None:
    check_runtime_error(quick, one_call(b"\x90", (), []), "SIGTRAP")


def test_write_one_past_the_end_of_an_output(quick: LocalRunner) -> None:
    job = one_call(STORE_AT, (Buffer.out(100),), [("buf", 0), ("int", 100)])
    check_runtime_error(quick, job, "SIGSEGV", "guard page after output buffer 0", "1 byte(s)")


def test_read_past_the_end_of_an_input(quick: LocalRunner) -> None:
    job = one_call(
        LOAD_AT, (Buffer.out(4), Buffer.input(np.zeros(64, np.uint8))), [("buf", 1), ("int", 64)]
    )
    check_runtime_error(quick, job, "SIGSEGV", "input buffer 1")


def test_write_to_an_input(quick: LocalRunner) -> None:
    job = one_call(STORE_FIRST, (Buffer.input(np.zeros(16, np.uint8)),), [("buf", 0)])
    check_runtime_error(quick, job, "SIGSEGV", "inside input buffer 0")


def test_write_before_an_output_breaks_the_canary(quick: LocalRunner) -> None:
    job = one_call(STORE_BEFORE, (Buffer.out(8), Buffer.out(100)), [("buf", 1)])
    check_runtime_error(quick, job, "out-of-bounds write before buffer 1")


def test_write_before_a_page_sized_output_hits_the_front_guard(quick: LocalRunner) -> None:
    job = one_call(STORE_BEFORE, (Buffer.out(4096),), [("buf", 0)])
    check_runtime_error(quick, job, "SIGSEGV", "before output buffer 0")


def test_clobbered_callee_saved_register(quick: LocalRunner) -> None:
    check_runtime_error(quick, one_call(CLOBBER_RBX, (), []), "rbx")


def test_direction_flag_left_set(quick: LocalRunner) -> None:
    check_runtime_error(quick, one_call(SET_DF, (), []), "direction flag")


def test_stack_pointer_moved(quick: LocalRunner) -> None:
    check_runtime_error(quick, one_call(MOVE_SP, (), []), "stack pointer")


def test_infinite_loop_times_out() -> None:
    result = LocalRunner(timeout=0.5).run(one_call(SPIN, (), []))
    assert result.error is ErrorClass.TIMEOUT
    assert result.outputs == {}


def test_canary_checked_after_timing_too(runner: LocalRunner) -> None:
    # The verification run already catches it; asking for timings must not hide it.
    job = one_call(STORE_BEFORE, (Buffer.out(100),), [("buf", 0)])
    result = runner.run(job, timing=True)
    assert result.error is ErrorClass.RUNTIME_ERROR
    assert "out-of-bounds" in result.message


# ---------------------------------------------------------------------------------------------
# Our own mistakes raise


def test_malformed_jobs_raise(quick: LocalRunner) -> None:
    with pytest.raises(ValueError):
        quick.run(Job(code=(RET,), buffers=(), calls=(Call(1, ()),)))
    with pytest.raises(ValueError):
        quick.run(one_call(RET, (), [("buf", 0)]))
    with pytest.raises(ValueError):
        quick.run(one_call(RET, (), [("int", 0)] * 7))
    with pytest.raises(ValueError):
        quick.run(one_call(RET, (), [("float", 0)]))
    with pytest.raises(ValueError):
        quick.run(Job(code=(RET,), buffers=(), calls=(), arch="aarch64"))


def test_harness_usage_error_raises(tmp_path) -> None:
    job = one_call(RET, (), [])
    job_file = _harness.write_job(job, tmp_path)
    job_file.write_text(job_file.read_text() + "bogus record\n")
    binary = _harness.harness_binary()
    proc = subprocess.run(
        [str(binary), str(job_file), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == _harness.EXIT_HARNESS_ERROR
    with pytest.raises(RuntimeError, match="unknown record"):
        _harness.interpret(job, proc.returncode, proc.stdout, proc.stderr, tmp_path, timing=False)


def test_bad_core_raises() -> None:
    with pytest.raises(RuntimeError, match=r"sched_setaffinity|out of range"):
        LocalRunner(core=1023).run(one_call(RET, (), []), timing=False)


def test_pinned_run(quick: LocalRunner) -> None:
    core = min(os.sched_getaffinity(0))
    result = LocalRunner(core=core, min_time=0.0).run(one_call(RET, (), []))
    assert result.error is ErrorClass.NONE, result.message
    assert len(result.times) == 10


# ---------------------------------------------------------------------------------------------
# Protocol and build cache


def test_job_file_format(tmp_path) -> None:
    job = Job(
        code=(RET,),
        buffers=(Buffer.input(np.array([1, 2], np.uint16)), Buffer.out(5)),
        calls=(Call(0, (("buf", 0), ("buf", 1), ("int", -1))),),
    )
    path = _harness.write_job(job, tmp_path)
    assert path.read_text().splitlines() == [
        "version 1",
        "code 0 code0.bin 1",
        "buf 0 in buf0.bin 4",
        "buf 1 out 5",
        f"call 0 buf:0 buf:1 int:{2**64 - 1}",
    ]
    assert (tmp_path / "buf0.bin").read_bytes() == b"\x01\x00\x02\x00"
    assert (tmp_path / "code0.bin").read_bytes() == RET


def test_harness_binary_is_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BITSEARCH_CACHE", str(tmp_path))
    first = _harness.harness_binary()
    assert first.parent == tmp_path and os.access(first, os.X_OK)
    stamp = first.stat().st_mtime_ns

    def no_compile(*args, **kwargs):
        raise AssertionError("recompiled although the binary was cached")

    monkeypatch.setattr(_harness, "_compile", no_compile)
    assert _harness.harness_binary() == first  # in-process memo
    _harness.clear_memo()
    assert _harness.harness_binary() == first  # disk cache
    assert first.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    _harness.clear_memo()


def test_concurrent_builds_agree(tmp_path) -> None:
    # Two processes racing to build into an empty cache both end with the same working binary.
    code = "from bitsearch.runners import _harness; print(_harness.harness_binary())"
    env = {**os.environ, "BITSEARCH_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    paths = {proc.communicate(timeout=120)[0].strip().splitlines()[-1] for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(paths) == 1
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(paths.pop())]


def test_timing_stats() -> None:
    stats = TimingStats.from_times([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats == TimingStats(median=3.0, min=1.0, iqr=2.0, repeats=5)
    with pytest.raises(ValueError):
        TimingStats.from_times([])


# ---------------------------------------------------------------------------------------------
# The AArch64 build under qemu-user (skipped without the cross compiler and qemu). Times under
# an emulator are meaningless; this only checks that the harness is portable.

A64_RET = bytes.fromhex("c0035fd6")
A64_COPY = b"".join(  # copy(src=x0, dst=x1, n=x2)
    int(w, 16).to_bytes(4, "little")
    for w in ["b40000a2", "38401403", "38001423", "f1000442", "54ffffa1", "d65f03c0"]
)
A64_STORE_AT = b"".join(  # strb #1 at [x0 + x1]
    int(w, 16).to_bytes(4, "little") for w in ["52800022", "38216802", "d65f03c0"]
)
A64_CLOBBER_X19 = bytes.fromhex("130080d2") + A64_RET  # mov x19, #0
A64_CLOBBER_D9 = bytes.fromhex("e903679e") + A64_RET  # fmov d9, xzr
A64_SET_FZ = b"".join(  # FPCR.FZ = 1
    int(w, 16).to_bytes(4, "little") for w in ["d53b4401", "b2680021", "d51b4401", "d65f03c0"]
)
A64_MOVE_SP = bytes.fromhex("ff4300d1") + A64_RET  # sub sp, sp, #16
A64_UDF = bytes(4)


def run_aarch64(job: Job, tmp_path, *, timing: bool = False) -> RunResult:
    binary = _harness.harness_binary("aarch64")
    job_file = _harness.write_job(job, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = _harness.harness_args(job_file, out_dir, timing=timing, min_time=0.0, repeats=3)
    proc = subprocess.run(
        # -cpu cortex-a53: trap instructions the A53 lacks, as the qemu runner does.
        [QEMU_AARCH64, "-cpu", "cortex-a53", str(binary), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return _harness.interpret(
        job, proc.returncode, proc.stdout, proc.stderr, out_dir, timing=timing, repeats=3
    )


def a64_job(code: bytes, buffers=(), args=()) -> Job:
    return Job(code=(code,), buffers=tuple(buffers), calls=(Call(0, tuple(args)),), arch="aarch64")


def test_aarch64_copy(tmp_path) -> None:
    data = np.arange(300, dtype=np.uint16).astype(np.uint8)
    job = a64_job(
        A64_COPY, (Buffer.input(data), Buffer.out(300)), [("buf", 0), ("buf", 1), ("int", 300)]
    )
    result = run_aarch64(job, tmp_path, timing=True)
    assert result.error is ErrorClass.NONE, result.message
    assert result.outputs == {1: data.tobytes()}
    assert len(result.times) == 3


@pytest.mark.parametrize(
    ("code", "n", "fragment"),
    [
        (A64_STORE_AT, 100, "guard page after output buffer 0"),
        (A64_CLOBBER_X19, 0, "x19"),
        (A64_CLOBBER_D9, 0, "d9"),
        (A64_SET_FZ, 0, "FPCR"),
        (A64_MOVE_SP, 0, "stack pointer"),
        (A64_UDF, 0, "SIGILL"),
    ],
)
def test_aarch64_failures(tmp_path, code: bytes, n: int, fragment: str) -> None:
    job = a64_job(code, (Buffer.out(100),), [("buf", 0), ("int", n)])
    result = run_aarch64(job, tmp_path)
    assert result.error is ErrorClass.RUNTIME_ERROR
    assert fragment in result.message, result.message
