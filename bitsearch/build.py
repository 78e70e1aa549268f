"""``build``: workload + schedule + target -> verified-shape, loadable :class:`Kernel`."""

from __future__ import annotations

from bitsearch.asm.kernel import Kernel, MachineCode
from bitsearch.space.int_schedule import IntSchedule, default_int_schedule
from bitsearch.space.schedule import NeonSchedule, Schedule, default_neon_schedule, default_schedule
from bitsearch.targets import TARGETS, target_arch
from bitsearch.workloads import Conv2d, Dense, Fp8Dense, IntConv2d, IntDense


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
        loops=tuple(getattr(function, "bitsearch_loops", ())),  # set by emitters that count loops
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
    if isinstance(workload, Fp8Dense):  # float32 outputs: its own Kernel subclass and schedule
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
        from bitsearch.asm.x86_64.fp8_kernel import build_fp8

        return build_fp8(workload, schedule, target)
    if isinstance(workload, Conv2d | IntConv2d):  # NHWC convolutions: their own ConvKernel
        return _build_conv(workload, schedule, target)
    if not isinstance(workload, Dense | IntDense):
        raise ValueError(f"workload must be a bitsearch.Dense or IntDense, got {type(workload).__name__}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; available: {', '.join(TARGETS)}")
    if target_arch(target) == "aarch64":
        return _build_neon(workload, schedule, target)
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


def _build_neon(workload: Dense | IntDense, schedule: object, target: str) -> Kernel:
    """AArch64: the NEON emitters' GNU text, encoded by :func:`bitsearch.asm.aarch64.assemble`."""
    from bitsearch.asm.aarch64.neon_common import to_machine_code

    if isinstance(workload, IntDense):
        if schedule is None:
            schedule = default_int_schedule(workload, target)
        if not isinstance(schedule, IntSchedule):
            raise ValueError(
                f"an IntDense workload needs a bitsearch IntSchedule, got {type(schedule).__name__}")
        schedule.check(workload, target)
        from bitsearch.asm.aarch64.neon_int import NeonIntGeometry, emit_neon_int

        functions, geometry = emit_neon_int(workload, schedule), NeonIntGeometry.of(workload)
    else:
        if schedule is None:
            schedule = default_neon_schedule(workload, target)
        if not isinstance(schedule, NeonSchedule):
            raise ValueError(f"target {target} needs a bitsearch NeonSchedule, got {type(schedule).__name__}")
        schedule.check(workload, target)
        from bitsearch.asm.aarch64.neon_dense import NeonGeometry, emit_neon_dense

        functions, geometry = emit_neon_dense(workload, schedule), NeonGeometry.of(workload, schedule)
    pack, gemm = (to_machine_code(f) for f in functions)
    return Kernel(workload=workload, schedule=schedule, target=target, pack=pack, gemm=gemm,
                  x_layout=geometry.x, w_layout=geometry.w, x_row_stride=geometry.x_row_stride)


def _build_conv(workload: Conv2d | IntConv2d, schedule: object, target: str) -> object:
    """A :class:`~bitsearch.asm.x86_64.conv_kernel.ConvKernel` (x86-64 targets only)."""
    from bitsearch.space.conv_schedule import (
        ConvSchedule,
        IntConvSchedule,
        default_conv_schedule,
        default_int_conv_schedule,
    )

    if target not in TARGETS or target_arch(target) != "x86_64":
        x86 = [t for t in TARGETS if target_arch(t) == "x86_64"]
        raise ValueError(f"convolutions build for {', '.join(x86)}; got target {target!r}")
    kind = IntConvSchedule if isinstance(workload, IntConv2d) else ConvSchedule
    if schedule is None:
        schedule = (default_int_conv_schedule if kind is IntConvSchedule else default_conv_schedule)(
            workload, target)
    if type(schedule) is not kind:
        raise ValueError(f"a {type(workload).__name__} workload needs a bitsearch {kind.__name__}, "
                         f"got {type(schedule).__name__}")
    schedule.check(workload, target)
    from bitsearch.asm.x86_64.conv_kernel import build_conv

    return build_conv(workload, schedule, target)
