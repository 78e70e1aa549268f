"""A static cost model: llvm-mca cycles per loop body, times how often each body runs.

A kernel's :class:`~bitsearch.asm.kernel.MachineCode` carries its GNU listing and ``loops``: one
:class:`~bitsearch.asm.kernel.LoopCount` per loop (head label, executions of the body over one
full call). The listing is cut into regions -- each loop's body *without* the bodies of loops
nested in it, plus the straight-line rest -- and llvm-mca simulates each region in steady state
(``-iterations``, default 100). Then

    modeled cycles = sum over loops (cycles per iteration of its region x executions) + rest cycles
    modeled seconds = modeled cycles / clock

The clock is 1.2 GHz for the Cortex-A53 (Raspberry Pi 3B, see limits.md) and, for x86-64, the
measured core clock (:func:`bitsearch.cost.clock.core_clock_hz`; the highest value measured on
this host so far, so that a loaded moment does not rescale a study's modeled seconds). The
model ignores caches and branch mispredictions: it ranks schedules, it does not predict wall
time exactly.

llvm-mca results are cached by a hash of (triple, cpu, iterations, region text), in memory and
on disk under ``$BITSEARCH_CACHE/mca`` (default ``~/.cache/bitsearch/mca``).

Listing syntax understood: PeachPy's AT&T "gas" listings (numeric local labels ``38: # L_row_0:``,
branches ``jnz 38b # L_row_0``) and plain GNU labels (``loop:``, ``b.ne loop``) for AArch64.
Directives and ``#`` preprocessor lines are dropped; branch targets are replaced by one dummy
symbol (llvm-mca ignores control flow).

Example:
    >>> from bitsearch.records import LoopCount, MachineCode
    >>> body = "\\taddq %rax, %rax\\n" * 2 + "\\tdecq %rcx\\n\\tjnz 1b # L_top\\n"
    >>> listing = "1: # L_top:\\n" + body + "\\tret\\n"
    >>> code = MachineCode("chain", b"", listing, (LoopCount("L_top", 1000),))
    >>> cost = McaModel(target="x86_64-avx2", clock_hz=1e9).cost(code)
    >>> round(cost.regions[0].cycles_per_iteration)  # two dependent 1-cycle ADDs per iteration
    2
    >>> 1.9e-6 < cost.seconds(1e9) < 2.2e-6
    True
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bitsearch.cost.clock import core_clock_hz
from bitsearch.paths import cache_dir
from bitsearch.records import LoopCount, MachineCode
from bitsearch.targets import TargetDef, get_target

DUMMY_TARGET = "bs_target"
# The llvm triple of each architecture; the llvm cpu and the clock come from the TargetDef
# (LLVM 14 has no znver4: the AVX-512 target is modeled as Ice Lake server).
TRIPLES: dict[str, str] = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-linux-gnu"}

_X86_BRANCH = re.compile(r"^(j[a-z]+|loop[a-z]*|jrcxz|jecxz)$")
_A64_BRANCH = re.compile(r"^(b|bl|b\.[a-z]+|cbn?z|tbn?z)$")
_NUMERIC_LABEL = re.compile(r"^(\d+):\s*(?:#\s*([A-Za-z_.$][\w.$]*):?)?\s*$")
_NAMED_LABEL = re.compile(r"^([A-Za-z_.$][\w.$]*):\s*(?:(?://|#).*)?$")
_LOCAL_REF = re.compile(r"^(\d+)[bf]$")


class McaError(RuntimeError):
    """llvm-mca is missing or could not model a listing (not the candidate's fault)."""


@dataclass(frozen=True)
class Region:
    """Instructions that run ``executions`` times per call: a loop body (nested loops' bodies
    excluded) or, with ``label`` None, the straight-line rest (once)."""

    label: str | None
    executions: int
    instructions: tuple[str, ...]


@dataclass(frozen=True)
class RegionCost:
    label: str | None
    executions: int
    instructions: int
    cycles_per_iteration: float  # llvm-mca steady state: total cycles / iterations

    @property
    def cycles(self) -> float:
        return self.cycles_per_iteration * self.executions


@dataclass(frozen=True)
class CodeCost:
    """Modeled cycles of one function over one full call, region by region."""

    name: str
    cpu: str
    regions: tuple[RegionCost, ...]

    @property
    def cycles(self) -> float:
        return sum(r.cycles for r in self.regions)

    def seconds(self, clock_hz: float) -> float:
        return self.cycles / clock_hz


# --------------------------------------------------------------------------------------------
# Listing -> regions


@dataclass(frozen=True)
class _Insn:
    text: str  # for llvm-mca, branch target replaced
    target: str | None  # branch target label name, if a branch


def _strip_comment(line: str, arch: str) -> str:
    return line.split("//" if arch == "aarch64" else "#", 1)[0].strip()


def parse_listing(listing: str, arch: str) -> tuple[list[_Insn], dict[str, int]]:
    """(instructions, {label name: index of the first instruction after it})."""
    insns: list[_Insn] = []
    labels: dict[str, int] = {}
    numeric: dict[str, str] = {}  # PeachPy local label number -> name from its comment
    raw = listing.splitlines()
    for line in raw:
        m = _NUMERIC_LABEL.match(line.strip())
        if m and m.group(2):
            numeric[m.group(1)] = m.group(2)
    branch = _A64_BRANCH if arch == "aarch64" else _X86_BRANCH
    for line in raw:
        s = line.strip()
        if not s:
            continue
        m = _NUMERIC_LABEL.match(s)
        if m:
            name = m.group(2) or m.group(1)
            labels[name] = len(insns)
            continue
        m = _NAMED_LABEL.match(s)
        if m:
            labels[m.group(1)] = len(insns)
            continue
        if s.startswith(("#", "//", ";")):
            continue
        text = _strip_comment(s, arch)
        if not text or text.startswith("."):
            continue
        parts = text.split(None, 1)
        target = None
        if branch.match(parts[0].lower()) and len(parts) > 1:
            operands = [o.strip() for o in parts[1].split(",")]
            token = operands[-1]
            local = _LOCAL_REF.match(token)
            if local:
                target = numeric.get(local.group(1), local.group(1))
            elif not token.startswith(("%", "*", "#")) and re.match(r"^[A-Za-z_.$][\w.$]*$", token):
                target = token
            if target is not None:
                operands[-1] = DUMMY_TARGET
                text = f"{parts[0]} {', '.join(operands)}"
        insns.append(_Insn(text, target))
    return insns, labels


def regions(listing: str, loops: Iterable[LoopCount], arch: str) -> list[Region]:
    """Cut ``listing`` into one region per loop (its body without nested loops' bodies, in
    listing order) and the straight-line rest (last, label None; omitted if empty).

    A loop's body runs from its head label to the last branch back to it. Raises ValueError for
    a loop label missing from the listing, a loop without a backward branch, overlapping
    (non-nested) loops, and for a backward branch whose target has no LoopCount -- an uncounted
    loop would silently be modeled as running once.
    """
    insns, labels = parse_listing(listing, arch)
    spans: dict[str, tuple[int, int, int]] = {}  # label -> (first, last inclusive, executions)
    for loop in loops:
        if not isinstance(loop, LoopCount):
            raise ValueError(f"loops must hold LoopCount records, got {loop!r}")
        if loop.executions < 0:
            raise ValueError(f"loop {loop.label!r}: negative executions {loop.executions}")
        if loop.label not in labels:
            raise ValueError(f"loop label {loop.label!r} is not in the listing")
        head = labels[loop.label]
        ends = [i for i, ins in enumerate(insns) if ins.target == loop.label and i >= head]
        if not ends:
            raise ValueError(f"loop {loop.label!r} has no branch back to its head")
        if loop.label in spans:
            raise ValueError(f"loop label {loop.label!r} is counted twice")
        spans[loop.label] = (head, max(ends), loop.executions)
    for i, ins in enumerate(insns):
        backward = ins.target is not None and ins.target in labels and labels[ins.target] <= i
        if backward and ins.target not in spans:
            raise ValueError(
                f"backward branch to {ins.target!r} (a loop) has no LoopCount: "
                "the listing's loop counts are incomplete")
    items = sorted(spans.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
    for name, (f0, l0, _) in items:
        for other, (f1, l1, _) in items:
            if name != other and f0 < f1 <= l0 < l1:
                raise ValueError(f"loops {name!r} and {other!r} overlap without nesting")
    owner: list[str | None] = [None] * len(insns)
    # Outer loops first, inner ones overwrite: each instruction belongs to its innermost loop.
    for name, (first, last, _) in sorted(spans.items(), key=lambda kv: kv[1][1] - kv[1][0], reverse=True):
        for i in range(first, last + 1):
            owner[i] = name
    out = [
        Region(name, execs, tuple(ins.text for i, ins in enumerate(insns) if owner[i] == name))
        for name, (_, _, execs) in items
    ]
    rest = tuple(ins.text for i, ins in enumerate(insns) if owner[i] is None)
    if rest:
        out.append(Region(None, 1, rest))
    return out


# --------------------------------------------------------------------------------------------
# llvm-mca


_memo: dict[str, float] = {}
_memo_lock = threading.Lock()


def _cache_file(key: str) -> Path:
    return cache_dir() / "mca" / f"{key}.json"


@functools.cache
def _measured_clock() -> float:
    """This host's core clock: the highest of now and every earlier measurement (kept under the
    cache directory). Contention on a shared machine only ever lowers a measurement, and modeled
    seconds must stay comparable across the processes that add trials to one study."""
    path = cache_dir() / "mca" / "clock_hz.json"
    best = core_clock_hz()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        best = max(best, float(json.loads(path.read_text())["clock_hz"]))
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"clock_hz": best}))
        os.replace(tmp, path)
    return best


class McaModel:
    """llvm-mca cost model of one target; see the module docstring.

    ``clock_hz`` defaults to 1.2 GHz on AArch64 and to the measured core clock on x86-64;
    ``cpu`` overrides the llvm cpu (e.g. ``"znver2"``); ``llvm_mca`` names the binary.
    ``runs`` counts llvm-mca invocations (cache misses) of this instance.
    """

    def __init__(
        self,
        *,
        target: str | TargetDef = "x86_64-avx2",
        cpu: str | None = None,
        clock_hz: float | None = None,
        llvm_mca: str = "llvm-mca",
        iterations: int = 100,
        disk_cache: bool = True,
        timeout: float = 120.0,
    ) -> None:
        target = get_target(target)
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        if clock_hz is not None and not clock_hz > 0:
            raise ValueError(f"clock_hz must be positive, got {clock_hz}")
        self.target = target.name
        self.triple = TRIPLES[target.arch]
        self.cpu = cpu or target.cost_model_cpu
        self.arch = target.arch
        self._clock_hz = clock_hz or target.clock_hz
        self.iterations = int(iterations)
        self.disk_cache = disk_cache
        self.timeout = float(timeout)
        self.runs = 0
        path = shutil.which(llvm_mca)
        if path is None:
            raise McaError(f"{llvm_mca!r} not found on PATH (Debian/Ubuntu: apt-get install llvm)")
        self.llvm_mca = path

    def __repr__(self) -> str:
        return f"McaModel(target={self.target!r}, cpu={self.cpu!r}, clock_hz={self._clock_hz})"

    @property
    def clock_hz(self) -> float:
        if self._clock_hz is None:
            self._clock_hz = _measured_clock()  # a native target: this host's clock
        return self._clock_hz

    def cost(self, code: MachineCode) -> CodeCost:
        """Modeled cycles of one call of ``code`` (raises ValueError for inconsistent loops,
        McaError if llvm-mca fails)."""
        parts = regions(code.listing, code.loops, self.arch)
        texts = ["\n".join(r.instructions) + "\n" for r in parts]
        cycles = self._cycles_per_iteration(texts)
        return CodeCost(
            name=code.name,
            cpu=self.cpu,
            regions=tuple(
                RegionCost(r.label, r.executions, len(r.instructions), c)
                for r, c in zip(parts, cycles, strict=True)
            ),
        )

    def seconds(self, codes: Iterable[MachineCode]) -> float:
        """Modeled seconds of calling each of ``codes`` once (e.g. a kernel's pack and GEMM)."""
        return sum(self.cost(c).cycles for c in codes) / self.clock_hz

    # -- llvm-mca, cached ----------------------------------------------------------------------
    def _key(self, text: str) -> str:
        h = hashlib.sha256(f"{self.triple}\0{self.cpu}\0{self.iterations}\0{text}".encode())
        return h.hexdigest()[:32]

    def _cycles_per_iteration(self, texts: list[str]) -> list[float]:
        keys = [self._key(t) for t in texts]
        found: dict[str, float] = {}
        with _memo_lock:
            for k in keys:
                if k in _memo:
                    found[k] = _memo[k]
        if self.disk_cache:
            for k in keys:
                if k not in found:
                    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                        found[k] = float(json.loads(_cache_file(k).read_text())["cycles_per_iteration"])
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            found.update(self._run(missing))
        with _memo_lock:
            _memo.update(found)
        return [found[k] for k in keys]

    def _run(self, texts: dict[str, str]) -> dict[str, float]:
        """One llvm-mca run over all ``texts``, one code region each."""
        self.runs += 1
        names = list(texts)
        source = "".join(
            f"# LLVM-MCA-BEGIN r{i}\n{texts[k]}# LLVM-MCA-END r{i}\n" for i, k in enumerate(names)
        )
        with tempfile.NamedTemporaryFile("w", suffix=".s", prefix="bitsearch-mca-", delete=False) as f:
            f.write(source)
            path = f.name
        try:
            cmd = [self.llvm_mca, "-json", f"-mtriple={self.triple}", f"-mcpu={self.cpu}",
                   f"-iterations={self.iterations}", path]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise McaError(f"llvm-mca did not finish within {self.timeout:g} s") from None
        finally:
            os.unlink(path)
        # llvm-mca 14 reports an instruction it cannot parse on stderr and drops it, exit status 0.
        if proc.returncode != 0 or "error:" in proc.stderr:
            raise McaError(f"llvm-mca ({self.cpu}) failed: {proc.stderr.strip()[-1500:]}")
        try:
            report = json.loads(proc.stdout)
            by_name = {r["Name"]: r["SummaryView"] for r in report["CodeRegions"]}
            out = {}
            for i, k in enumerate(names):
                summary = by_name[f"r{i}"]
                out[k] = float(summary["TotalCycles"]) / float(summary["Iterations"])
        except (ValueError, KeyError, TypeError) as exc:
            raise McaError(f"unexpected llvm-mca output ({exc!r}): {proc.stdout[:500]}") from None
        if self.disk_cache:
            for k, value in out.items():
                dest = _cache_file(k)
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dest.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps({"cycles_per_iteration": value, "cpu": self.cpu}))
                    os.replace(tmp, dest)
                except OSError:
                    pass  # the cache is an optimisation
        return out


__all__ = ["TRIPLES", "CodeCost", "McaError", "McaModel", "Region", "RegionCost",
           "parse_listing", "regions"]
