"""The core clock, measured: a chain of dependent 64-bit ADDs retires one per cycle on every
x86-64 core we target, so timing a long chain gives cycles per second under the current boost and
load -- what per-cycle figures (bit-MAC/cycle against limits.md) must be divided by."""

from __future__ import annotations

import ctypes
import functools
import time

CHAIN = 100  # dependent ADDs per loop iteration; the loop's DEC/JNZ run beside them


@functools.cache
def _spin() -> tuple[object, object]:
    from peachpy import Argument, uint64_t
    from peachpy.loader import Loader
    from peachpy.x86_64 import ADD, DEC, JNZ, LABEL, LOAD, RETURN, XOR, Function, Label, eax, rax, rcx, uarch
    from peachpy.x86_64.abi import system_v_x86_64_abi

    n = Argument(uint64_t, name="n")
    with Function("spin", (n,), None, target=uarch.zen) as fn:
        LOAD.ARGUMENT(rcx, n)
        XOR(eax, eax)
        top = Label("top")
        LABEL(top)
        for _ in range(CHAIN):
            ADD(rax, rcx)
        DEC(rcx)
        JNZ(top)
        RETURN()
    code = bytes(fn.finalize(system_v_x86_64_abi).encode().code_section.content)
    loader = Loader(len(code))
    loader.copy_code(code)
    return loader, ctypes.CFUNCTYPE(None, ctypes.c_uint64)(loader.code_address)


def core_clock_hz(iterations: int = 200_000, repeats: int = 15) -> float:
    """Cycles per second of the calling thread's core (best of ``repeats``)."""
    _, spin = _spin()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        spin(iterations)
        best = min(best, time.perf_counter() - start)
    return CHAIN * iterations / best
