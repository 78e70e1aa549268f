"""``Fp8Schedule``: one point of the schedule space of the FP8 GEMM (:class:`~bitsearch.Fp8Dense`).

The kernel is BLAS-like (see :mod:`bitsearch.asm.x86_64.fp8_gemm`): activations are decoded to FP32
rows by a packing kernel on every call; weights are packed once into column panels of ``8 * nr``
columns, either still as FP8 bytes (``decode="kernel"``: decoded with VCVTPH2PS inside the inner
loop, 4x less memory traffic) or decoded to FP32 while packing (``decode="pack"``: the inner loop
is plain FMA). Per K step one FP32 activation per row is broadcast and multiplied with ``nr``
weight vectors: every lane of an accumulator is one output, no horizontal sums.

Like :class:`bitsearch.space.Schedule` it is frozen, hashable and round-trips through JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitsearch.space.schedule import ANY_COUNT, YMM_REGISTERS, KnobRecord, check_knob, check_x86_extents
from bitsearch.targets import TargetDef, get_target
from bitsearch.workloads import Fp8Dense

FP8_DECODES: tuple[str, ...] = ("kernel", "pack")
FP8_LOOP_ORDERS: tuple[str, ...] = ("mn", "nm")
FP8_K_UNROLLS: tuple[int, ...] = (1, 2, 4, 8)
FP8_KC_GRANULE = 16  # K elements
FP8_A_GRANULE = 16  # activation rows are padded to this many elements (see asm/x86_64/fp8.py)
FP8_PANEL_PAD = 32  # zero bytes after the weight panels


def vector_registers(target: str | TargetDef, nr: int) -> int:
    """Vector registers the FP8 GEMM may allocate: AVX2's 16 ymm; with AVX-512 all 32 zmm when
    ``nr >= 2`` (a second weight register then takes a copy of an upper-bank accumulator for the
    partial stores at the matrix edge, which use VEX instructions that only reach registers 0-15)."""
    return 32 if get_target(target).has("avx512f") and nr >= 2 else YMM_REGISTERS


@dataclass(frozen=True)
class Fp8Schedule(KnobRecord):
    """How to compute an :class:`~bitsearch.workloads.Fp8Dense` layer on x86-64 AVX2 + FMA + F16C
    (``x86_64-avx512``: the same knobs on zmm vectors, 16 output columns per vector).

    Attributes:
        decode: ``kernel`` (weight panels hold FP8 bytes, decoded in the inner loop) or ``pack``
            (weights decoded to FP32 panels when packed).
        mr: rows of a per register tile.
        nr: vectors of output columns per tile (8 per ymm, 16 per zmm on ``x86_64-avx512``).
        k_unroll: K steps per iteration of the innermost loop.
        loop_order: ``mn`` walks column panels innermost (the activation tile stays in L1, the
            weights stream), ``nm`` row tiles innermost (a weight panel block stays in L1).
        kc: K cache block in elements (0 = none; a multiple of 16). The first block stores y,
            the others add to it.

    Example:
        >>> s = Fp8Schedule(mr=4, nr=3, decode="pack")
        >>> Fp8Schedule.from_json(s.to_json()) == s
        True
    """

    decode: str = "kernel"
    mr: int = 4
    nr: int = 2
    k_unroll: int = 2
    loop_order: str = "nm"
    kc: int = 0

    KIND = "fp8 schedule"

    def normalized(self) -> Fp8Schedule:
        return self

    def ymm_registers(self, wfmt: str) -> int:
        """Vector registers the emitter allocates: accumulators, weight vectors, the broadcast
        activation, and for in-kernel decoding a zero (E5M2) or a zero, a temporary and the
        sign fix-up constant (E4M3)."""
        extra = 0
        if self.decode == "kernel":
            extra = 1 if wfmt == "e5m2" else 3
        return self.mr * self.nr + self.nr + 1 + extra

    def check(self, workload: object, target: str | TargetDef = "x86_64-avx2") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload``."""
        if not isinstance(workload, Fp8Dense):
            raise ValueError(f"an Fp8Schedule computes an Fp8Dense workload, not {type(workload).__name__}")
        if get_target(target).arch != "x86_64":
            raise ValueError(f"no FP8 kernels for target {str(target)!r}")
        check_knob("decode", self.decode, FP8_DECODES)
        check_knob("mr", self.mr, range(1, 15))
        check_knob("nr", self.nr, range(1, 15))
        check_knob("k_unroll", self.k_unroll, FP8_K_UNROLLS)
        check_knob("loop_order", self.loop_order, FP8_LOOP_ORDERS)
        check_knob("kc", self.kc, ANY_COUNT[::FP8_KC_GRANULE],
                   f"0 or a positive multiple of {FP8_KC_GRANULE}")
        need, have = self.ymm_registers(workload.wfmt), vector_registers(target, self.nr)
        if need > have:
            raise ValueError(
                f"register tile {self.mr}x{self.nr} (decode={self.decode}, weights {workload.wfmt}) "
                f"needs {need} vector registers; {target} offers {have} here")
        check_x86_extents(workload, lambda wl: self.gemm_extents(wl, target))

    def gemm_extents(self, workload: Fp8Dense,
                     target: str | TargetDef = "x86_64-avx2") -> list[tuple[str, int]]:
        """Byte extents the x86-64 emitter (bitsearch.asm.x86_64.fp8_gemm) encodes as immediates or
        displacements (its own check at emission): activations decoded to FP32 rows of K padded to
        16 (16 more when the stride would be a multiple of 512 bytes); weights in column panels of
        ``vector * nr`` (the last rounded up to a vector), FP8 bytes or FP32 values, E4M3 decoded
        in the kernel with one NaN-mask float per column, 32 bytes of padding."""
        k, n = workload.k, workload.n
        elems = -(-k // FP8_A_GRANULE) * FP8_A_GRANULE
        x_row = 4 * (elems + FP8_A_GRANULE if 4 * elems % 512 == 0 else elems)
        vector = 16 if get_target(target).has("avx512f") else 8
        panel, es = vector * self.nr, 1 if self.decode == "kernel" else 4
        nan_mask = self.decode == "kernel" and workload.wfmt == "e4m3"

        def region(width: int) -> int:
            return k * width * es + (4 * width if nan_mask else 0)

        edge = -(-(n % panel) // vector) * vector
        w_buffer = n // panel * region(panel) + (region(edge) if edge else 0) + FP8_PANEL_PAD
        return [("a register tile of decoded x rows (mr * x row bytes)", self.mr * x_row),
                ("a register tile of y rows (4 * mr * n bytes)", 4 * self.mr * n),
                ("the decoded x buffer (m * x row bytes)", workload.m * x_row),
                ("the packed w buffer", w_buffer)]


def default_fp8_schedule(workload: object, target: str | TargetDef = "x86_64-avx2") -> Fp8Schedule:
    """A sound, fast starting point. One row (GEMV, memory bound): decode in the kernel (4x less
    weight traffic) with a wide 1 x 7 tile (E4M3: 1 x 6, decoded in pairs of vectors), enough
    independent FMA chains to hide the latency. Otherwise: weights decoded while packing and a
    4 x 3 tile (12 accumulators) over K blocks of 256, the weight panel block held in L1 (``nm``)."""
    m = getattr(workload, "m", 2)
    wfmt = getattr(workload, "wfmt", "e5m2")
    if m == 1:
        return Fp8Schedule(decode="kernel", mr=1, nr=7 if wfmt == "e5m2" else 6, k_unroll=4,
                           loop_order="mn")
    return Fp8Schedule(decode="pack", mr=min(4, m), nr=3, k_unroll=4, loop_order="nm",
                       kc=256 if getattr(workload, "k", 0) > 256 else 0)


__all__ = ["FP8_DECODES", "Fp8Schedule", "default_fp8_schedule", "vector_registers"]
