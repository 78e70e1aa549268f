"""``build``: workload + schedule + target -> verified-shape, loadable :class:`Kernel`."""

from __future__ import annotations

from bitsearch.asm.kernel import Kernel, MachineCode
from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.space.schedule import Schedule, default_schedule
from bitsearch.targets import TARGETS
from bitsearch.workloads import Dense, IntDense


def _encode(function: object) -> MachineCode:
    from peachpy.x86_64.abi import system_v_x86_64_abi

    abi_function = function.finalize(system_v_x86_64_abi)
    encoded = abi_function.encode()
    if encoded.code_section.relocations or len(encoded.const_section.content):
        raise RuntimeError(f"{function.name}: emitted code is not position-independent")
    return MachineCode(
        name=function.name,
        code=bytes(encoded.code_section.content),
        listing=abi_function.format(assembly_format="gas"),
    )


def build(
    workload: Dense | IntDense,
    schedule: Schedule | IntSchedule | None = None,
    target: str = "x86_64-avx2",
) -> Kernel:
    """Emit, encode and wrap the kernel of ``workload`` under ``schedule`` for ``target``.

    ``schedule=None`` takes :func:`bitsearch.space.default_schedule` (for an
    :class:`~bitsearch.workloads.IntDense` baseline: an :class:`IntSchedule` from
    :func:`default_int_schedule`). An invalid schedule, or one of the wrong type for the workload,
    raises ``ValueError`` naming the problem before any code is emitted.

    Example:
        >>> import numpy as np, bitsearch as bs
        >>> wl = bs.Dense(3, 5, 40, abits=2, wbits=2, mode="and")
        >>> kern = bs.build(wl, bs.Schedule(mr=1, nr=2, popcount="scalar"))
        >>> x = np.full((3, 40), 3, np.uint8); w = np.full((5, 40), 2, np.uint8)
        >>> int(kern(x, w)[2, 4])
        240
    """
    if not isinstance(workload, Dense | IntDense):
        raise ValueError(f"workload must be a bitsearch.Dense or IntDense, got {type(workload).__name__}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
    if isinstance(workload, IntDense):
        return _build_int(workload, schedule, target)
    if schedule is None:
        schedule = default_schedule(workload, target)
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a bitsearch.Schedule, got {type(schedule).__name__}")
    schedule.check(workload, target)
    from bitsearch.asm.x86_64.dense import Geometry, emit_dense

    return _kernel(workload, schedule, target, emit_dense(workload, schedule),
                   Geometry.of(workload, schedule))


def _build_int(workload: IntDense, schedule: object, target: str) -> Kernel:
    if schedule is None:
        schedule = default_int_schedule(workload)
    if not isinstance(schedule, IntSchedule):
        raise ValueError(
            f"an IntDense workload needs a bitsearch IntSchedule, got {type(schedule).__name__}")
    schedule.check(workload)
    from bitsearch.asm.x86_64.intgemm import IntGeometry, emit_int_dense

    return _kernel(workload, schedule, target, emit_int_dense(workload, schedule),
                   IntGeometry.of(workload, schedule))


def _kernel(workload: object, schedule: object, target: str, functions: tuple, geometry: object) -> Kernel:
    pack, gemm = functions
    return Kernel(workload=workload, schedule=schedule, target=target, pack=_encode(pack),
                  gemm=_encode(gemm),
                  x_layout=geometry.x, w_layout=geometry.w, x_row_stride=geometry.x_row_stride)
