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

from bitsearch.space.schedule import YMM_REGISTERS, KnobRecord

FP8_DECODES: tuple[str, ...] = ("kernel", "pack")
FP8_LOOP_ORDERS: tuple[str, ...] = ("mn", "nm")
FP8_K_UNROLLS: tuple[int, ...] = (1, 2, 4, 8)
FP8_KC_GRANULE = 16  # K elements


def vector_registers(target: str, nr: int) -> int:
    """Vector registers the FP8 GEMM may allocate: AVX2's 16 ymm; with AVX-512 all 32 zmm when
    ``nr >= 2`` (a second weight register then takes a copy of an upper-bank accumulator for the
    partial stores at the matrix edge, which use VEX instructions that only reach registers 0-15)."""
    return 32 if target == "x86_64-avx512" and nr >= 2 else YMM_REGISTERS


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

    def check(self, workload: object, target: str = "x86_64-avx2") -> None:
        """Raise ``ValueError`` naming the problem if this schedule cannot compute ``workload``."""
        from bitsearch.workloads import Fp8Dense

        if not isinstance(workload, Fp8Dense):
            raise ValueError(f"an Fp8Schedule computes an Fp8Dense workload, not {type(workload).__name__}")
        if target not in ("x86_64-avx2", "x86_64-avx512"):
            raise ValueError(f"no FP8 kernels for target {target!r}")
        if self.decode not in FP8_DECODES:
            raise ValueError(f"schedule.decode must be one of {FP8_DECODES}, got {self.decode!r}")
        for name, value in (("mr", self.mr), ("nr", self.nr)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 14:
                raise ValueError(f"schedule.{name} must be an integer in 1..14, got {value!r}")
        if self.k_unroll not in FP8_K_UNROLLS or isinstance(self.k_unroll, bool):
            raise ValueError(f"schedule.k_unroll must be one of {FP8_K_UNROLLS}, got {self.k_unroll!r}")
        if self.loop_order not in FP8_LOOP_ORDERS:
            raise ValueError(
                f"schedule.loop_order must be one of {FP8_LOOP_ORDERS}, got {self.loop_order!r}")
        if (not isinstance(self.kc, int) or isinstance(self.kc, bool) or self.kc < 0
                or self.kc % FP8_KC_GRANULE):
            raise ValueError(
                f"schedule.kc must be 0 or a positive multiple of {FP8_KC_GRANULE}, got {self.kc!r}")
        need, have = self.ymm_registers(workload.wfmt), vector_registers(target, self.nr)
        if need > have:
            raise ValueError(
                f"register tile {self.mr}x{self.nr} (decode={self.decode}, weights {workload.wfmt}) "
                f"needs {need} vector registers; {target} offers {have} here")


def default_fp8_schedule(workload: object, target: str = "x86_64-avx2") -> Fp8Schedule:
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
