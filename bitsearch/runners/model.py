"""The ``model`` runner: verify exactly, report llvm-mca modeled seconds instead of a timing.

So that a study can search schedules for a CPU that is not here (the Cortex-A53, no board
needed), or rank schedules without timing noise. Verification is the real thing -- the job runs
in the harness, natively for this host's architecture (:class:`~bitsearch.runners.LocalRunner`)
and under ``qemu-aarch64 -cpu cortex-a53`` for AArch64 (:class:`~bitsearch.runners.qemu.QemuRunner`)
-- and only the time comes from :class:`bitsearch.cost.mca.McaModel`.

The model reads the listings and loop counts a kernel's jobs carry (``Job.functions``, declared
by ``reads_listings``) and the cost-model CPU of ``Job.target``; a job of bare bytes can be
verified (``timing=False``) but not modeled. Modeled results carry one "time" (the model is
deterministic) and ``timing=Timing.MODELED``.

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

from collections.abc import Iterable

from bitsearch.cost.mca import McaError, McaModel
from bitsearch.records import ErrorClass, Job, MachineCode, RunResult, Timing
from bitsearch.runners.base import BaseRunner
from bitsearch.runners.local import LocalRunner
from bitsearch.runners.qemu import QemuRunner
from bitsearch.targets import host_arch


class ModelRunner(BaseRunner):
    """Verifies jobs in the harness (natively or under qemu) and reports modeled seconds.

    ``verifier`` overrides the runner that executes the jobs (default: LocalRunner for this
    host's architecture, QemuRunner for AArch64 elsewhere); ``target`` forces the cost model's
    target (default: the job's own); ``models`` maps targets to preconfigured
    :class:`McaModel` instances (e.g. a fixed ``clock_hz``).
    """

    timing = Timing.MODELED  # bitsearch.tune keeps modeled and measured studies apart
    reads_listings = True

    def __init__(
        self,
        *,
        verifier: BaseRunner | None = None,
        target: str | None = None,
        models: dict[str, McaModel] | None = None,
    ) -> None:
        if verifier is not None and verifier.timing is Timing.MODELED:
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
            if arch == host_arch():
                self._verifiers[arch] = LocalRunner()
            elif arch == "aarch64":
                self._verifiers[arch] = QemuRunner()
            else:
                raise ValueError(f"ModelRunner cannot execute {arch} code on this {host_arch()} host")
        return self._verifiers[arch]

    def run(self, job: Job, *, timing: bool = True) -> RunResult:
        """Run ``job`` for outputs; if ``timing``, model the time of its functions."""
        if timing and not (job.functions and (self.target or job.target)):
            raise ValueError(
                "ModelRunner models a kernel's listings, which this job lacks: make jobs with "
                "Kernel.job() (they carry functions and target), or pass run_codes() the codes")
        return self.run_codes(job.functions, job, target=self.target or job.target, timing=timing)

    def run_codes(
        self, codes: Iterable[MachineCode], job: Job, *, target: str, timing: bool = True
    ) -> RunResult:
        """Verify ``job``; if ``timing``, times = [modeled seconds of calling each code once]."""
        codes = tuple(codes)
        result = self.verifier_for(job.arch).run(job, timing=False)
        result.timing = Timing.MEASURED  # no times from the emulator are passed on
        if result.error is not ErrorClass.NONE or not timing:
            return result
        try:
            seconds = self.model(self.target or target).seconds(codes)
        except (McaError, ValueError) as exc:
            return RunResult(error=ErrorClass.RUNTIME_ERROR,
                             message=f"cost model: {exc} (the candidate ran correctly)")
        return RunResult(outputs=result.outputs, times=[seconds], timing=Timing.MODELED)


__all__ = ["ModelRunner"]
