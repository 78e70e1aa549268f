"""The ``model`` runner: verify exactly, report llvm-mca modeled seconds instead of a timing.

So that a study can search schedules for a CPU that is not here (the Cortex-A53, no board
needed), or rank schedules without timing noise. Verification is the real thing -- the job runs
in the harness, natively for this host's architecture (:class:`~bitsearch.runners.LocalRunner`)
and under ``qemu-aarch64 -cpu cortex-a53`` for AArch64 (:class:`~bitsearch.runners.qemu.QemuRunner`)
-- and only the time comes from :class:`bitsearch.cost.mca.McaModel`.

Design: a bare :class:`~bitsearch.runners.Job` holds bytes, not the listing and loop counts the
model reads, so the model runner is driven one level up. It implements ``run_kernel(kernel, job,
timing=...)``, which :func:`bitsearch.measure.run_candidate` calls instead of ``run`` whenever a
runner has it; ``run_codes`` takes the :class:`~bitsearch.asm.kernel.MachineCode` records
directly. ``run(job, timing=False)`` verifies only; ``run(job, timing=True)`` is a ValueError.
Modeled results carry one "time" (the model is deterministic) and ``modeled=True``.

A failure of the model itself (llvm-mca cannot parse an instruction, loop counts missing from
the kernel's MachineCode) is recorded as a RUNTIME_ERROR whose message starts with
"cost model:", so a tuning run goes on; it is not the candidate's fault, and the message says so.

Example:
    >>> import bitsearch as bs
    >>> from bitsearch.measure import measure
    >>> res = measure(bs.Dense(16, 16, 300), bs.Schedule(mr=2, nr=3), runner=ModelRunner())
    >>> res.error.name, res.modeled, res.stats.median > 0
    ('NONE', True, True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from bitsearch.asm.kernel import MachineCode
from bitsearch.cost.mca import McaError, McaModel
from bitsearch.runners import _harness
from bitsearch.runners.base import BaseRunner, ErrorClass, Job, RunResult


def kernel_codes(kernel: Any) -> tuple[MachineCode, ...]:
    """The MachineCode records of a kernel, in field order (pack, gemm for a dense Kernel)."""
    if dataclasses.is_dataclass(kernel):
        codes = tuple(getattr(kernel, f.name) for f in dataclasses.fields(kernel)
                      if isinstance(getattr(kernel, f.name), MachineCode))
        if codes:
            return codes
    raise ValueError(f"{type(kernel).__name__} has no MachineCode fields to model")


class ModelRunner(BaseRunner):
    """Verifies jobs in the harness (natively or under qemu) and reports modeled seconds.

    ``verifier`` overrides the runner that executes the jobs (default: LocalRunner for this
    host's architecture, QemuRunner for AArch64 elsewhere); ``target`` forces the cost model's
    target (default: the kernel's own); ``models`` maps targets to preconfigured
    :class:`McaModel` instances (e.g. a fixed ``clock_hz``).
    """

    modeled = True  # bitsearch.tune keeps modeled and measured studies apart

    def __init__(
        self,
        *,
        verifier: BaseRunner | None = None,
        target: str | None = None,
        models: dict[str, McaModel] | None = None,
    ) -> None:
        if verifier is not None and getattr(verifier, "modeled", False):
            raise ValueError("the verifier of a ModelRunner must execute jobs, not model them")
        self.verifier = verifier
        self.target = target
        self._models: dict[str, McaModel] = dict(models or {})
        self._verifiers: dict[str, BaseRunner] = {}

    def __repr__(self) -> str:
        return f"ModelRunner(verifier={self.verifier!r}, target={self.target!r})"

    def model(self, target: str) -> McaModel:
        """The cost model of ``target`` (made on first use)."""
        if target not in self._models:
            self._models[target] = McaModel(target=target)
        return self._models[target]

    def verifier_for(self, arch: str) -> BaseRunner:
        if self.verifier is not None:
            return self.verifier
        if arch not in self._verifiers:
            if arch == _harness.host_arch():
                from bitsearch.runners.local import LocalRunner

                self._verifiers[arch] = LocalRunner()
            elif arch == "aarch64":
                from bitsearch.runners.qemu import QemuRunner

                self._verifiers[arch] = QemuRunner()
            else:
                host = _harness.host_arch()
                raise ValueError(f"ModelRunner cannot execute {arch} code on this {host} host")
        return self._verifiers[arch]

    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Verification only: the job alone has no listing to model (see :meth:`run_kernel`)."""
        if timing:
            raise ValueError(
                "ModelRunner models a kernel's machine code, which a bare Job lacks: call "
                "run_kernel(kernel, job) or run_codes(codes, job, target=...) (bitsearch.measure does)"
            )
        return self._verify(job)

    def run_kernel(self, kernel: Any, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` (made by ``kernel``) for outputs; if ``timing``, model ``kernel``'s time."""
        return self.run_codes(kernel_codes(kernel), job, target=self.target or kernel.target,
                              timing=timing)

    def run_codes(
        self, codes: Iterable[MachineCode], job: Job, *, target: str, timing: bool = True
    ) -> RunResult:
        """Verify ``job``; if ``timing``, times = [modeled seconds of calling each code once]."""
        codes = tuple(codes)
        result = self._verify(job)
        if result.error is not ErrorClass.NONE or not timing:
            return result
        try:
            seconds = self.model(self.target or target).seconds(codes)
        except (McaError, ValueError) as exc:
            return RunResult(error=ErrorClass.RUNTIME_ERROR,
                             message=f"cost model: {exc} (the candidate ran correctly)")
        return RunResult(outputs=result.outputs, times=[seconds], modeled=True)

    def _verify(self, job: Job) -> RunResult:
        result = self.verifier_for(job.arch).run(job, timing=False)
        result.emulated = False  # no times from the emulator are passed on
        return result


__all__ = ["ModelRunner", "kernel_codes"]
