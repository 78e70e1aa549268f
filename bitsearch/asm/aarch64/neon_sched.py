"""Straight-line code for the in-order Cortex-A53: virtual registers, linear-scan allocation and a
list scheduler.

An emitter describes a basic block as :class:`Op` records in a natural (dependency-respecting)
order, naming scratch vectors virtually (``%name``). :func:`allocate` maps them onto a pool of
physical registers (least-recently-freed first, so that the scheduler has room to move loads
up), and :func:`schedule` reorders the ops so that every operand is ready when its consumer
issues: the A53 issues in order, so a consumer placed too early stalls the whole pipe.

Machine model (llvm-mca's AArch64SchedA53, measured with llvm-mca 14): one SIMD op per cycle
with 6-cycle latency, loads 4 cycles and they do not dual-issue with SIMD, general-register ops
3 cycles. The scheduler assumes one op per cycle and greedy critical-path priority.

Example:
    >>> ops = [Op("ldr q{d_n}, [x0]", writes={"d": "%a"}, kind="load"),
    ...        Op("add {d}.16b, {d}.16b, {s}.16b", reads={"d": "v9", "s": "%a"}, writes={"d": "v9"}),
    ...        Op("movi {d}.16b, #0", writes={"d": "v8"})]
    >>> [op.render() for op in schedule(allocate(ops, ["v1"], "%"))]
    ['ldr q1, [x0]', 'movi v8.16b, #0', 'add v9.16b, v9.16b, v1.16b']
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace

LATENCY = {"simd": 6, "load": 4, "store": 1, "int": 3}


@dataclass(frozen=True)
class Op:
    """One instruction: ``template`` with ``{key}`` (register name, e.g. ``v5``) and ``{key_n}``
    (its number) fields; ``reads``/``writes`` map keys to registers (``%name``: virtual)."""

    template: str
    reads: dict[str, str] = field(default_factory=dict)
    writes: dict[str, str] = field(default_factory=dict)
    kind: str = "simd"

    def render(self) -> str:
        names = {**self.reads, **self.writes}
        fields = {k: v for k, v in names.items()}
        fields.update({f"{k}_n": v[1:] for k, v in names.items()})
        return self.template.format(**fields)


def memory_form(base: str, off: int, size: int) -> tuple[str, str] | None:
    """(``ldr``/``str`` or ``ldur``/``stur`` flavour, ``[base, #off]``) for an access of ``size``
    bytes at base + off, if an immediate offset encodes it."""
    if off % size == 0 and 0 <= off <= 4095 * size:
        return "", f"[{base}, #{off}]"
    if -256 <= off <= 255:
        return "u", f"[{base}, #{off}]"
    return None


def access(ops: list[Op], insn: str, base: str, off: int, size: int, reg: str, *, load: bool,
           new_gpr) -> None:
    """Append ``insn`` (``"ldr q{d_n},"``-style, the register under key ``d``) at base + off;
    through a fresh virtual general register (``new_gpr()``) when no immediate form encodes."""
    rw = ({}, {"d": reg}) if load else ({"d": reg}, {})
    kind = "load" if load else "store"
    form = memory_form(base, off, size)
    if form is not None:
        flavour, mem = form
        if flavour:
            insn = insn.replace("ldr", "ldur", 1) if load else insn.replace("str", "stur", 1)
        ops.append(Op(f"{insn} {mem}", reads=rw[0], writes=rw[1], kind=kind))
        return
    g = new_gpr()
    value = off & ((1 << 64) - 1)
    ops.append(Op(f"movz {{g}}, #{value & 0xFFFF}", writes={"g": g}, kind="int"))
    for i in range(1, 4):
        if (value >> (16 * i)) & 0xFFFF:
            ops.append(Op(f"movk {{g}}, #{(value >> (16 * i)) & 0xFFFF}, lsl #{16 * i}", reads={"g": g},
                          writes={"g": g}, kind="int"))
    ops.append(Op(f"add {{g}}, {{g}}, {base}", reads={"g": g}, writes={"g": g}, kind="int"))
    ops.append(Op(f"{insn} [{{g}}]", reads={"g": g, **rw[0]}, writes=rw[1], kind=kind))


def allocate(ops: list[Op], pool: list[str], prefix: str = "%") -> list[Op]:
    """Replace virtual registers named ``prefix...`` by registers of ``pool``: each value gets,
    at its definition, the free register released longest ago. Raises ``ValueError`` if the
    pool is too small."""
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for reg in (*op.reads.values(), *op.writes.values()):
            if reg.startswith(prefix):
                last_use[reg] = i
    free: list[tuple[int, int, str]] = [(-1, j, r) for j, r in enumerate(pool)]
    heapq.heapify(free)
    mapping: dict[str, str] = {}
    release: dict[int, list[str]] = {}
    out = []
    for i, op in enumerate(ops):
        for reg in op.writes.values():
            if reg.startswith(prefix) and reg not in mapping:
                if not free:
                    raise ValueError(f"register pool of {len(pool)} too small at op {i}: {op.template}")
                _, _, phys = heapq.heappop(free)
                mapping[reg] = phys
                release.setdefault(last_use[reg], []).append(reg)
        out.append(replace(op, reads={k: mapping.get(v, v) for k, v in op.reads.items()},
                           writes={k: mapping.get(v, v) for k, v in op.writes.items()}))
        for reg in release.pop(i, []):
            heapq.heappush(free, (i, pool.index(mapping[reg]), mapping[reg]))
    return out


def schedule(ops: list[Op]) -> list[Op]:
    """Reorder ``ops`` (physical registers) respecting RAW (with latency), WAR and WAW
    dependencies; greedy: among the ops whose inputs are ready, the one heading the longest
    latency path first; if none is ready, the one ready soonest."""
    n = len(ops)
    preds: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    writer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        for reg in set(op.reads.values()):
            if reg in writer:
                preds[i].append((writer[reg], LATENCY[ops[writer[reg]].kind]))
        for reg in set(op.writes.values()):
            for j in readers.get(reg, []):
                if j != i:
                    preds[i].append((j, 0))
            if reg in writer:
                preds[i].append((writer[reg], 1))
        for reg in set(op.reads.values()):
            readers.setdefault(reg, []).append(i)
        for reg in set(op.writes.values()):
            writer[reg] = i
            readers[reg] = []
    succs: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for i, ps in enumerate(preds):
        for j, lat in ps:
            succs[j].append((i, lat))
    prio = [0] * n
    for i in range(n - 1, -1, -1):
        prio[i] = max((lat + prio[j] for j, lat in succs[i]), default=LATENCY[ops[i].kind])
    waiting = [len(ps) for ps in preds]
    earliest = [0] * n
    avail = [i for i in range(n) if waiting[i] == 0]
    order: list[int] = []
    t = 0
    while avail:
        ready = [i for i in avail if earliest[i] <= t]
        if ready:
            pick = max(ready, key=lambda i: (prio[i], -i))
        else:
            pick = min(avail, key=lambda i: (earliest[i], -prio[i], i))
        avail.remove(pick)
        issue = max(t, earliest[pick])
        order.append(pick)
        t = issue + 1
        for j, lat in succs[pick]:
            earliest[j] = max(earliest[j], issue + lat)
            waiting[j] -= 1
            if waiting[j] == 0:
                avail.append(j)
    if len(order) != n:  # pragma: no cover - the dependencies of a list are acyclic
        raise RuntimeError("scheduler lost instructions")
    return [ops[i] for i in order]


__all__ = ["LATENCY", "Op", "access", "allocate", "memory_form", "schedule"]
