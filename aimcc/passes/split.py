"""split: spread digital work that does not fit one cluster's TCDM over more clusters.

Runs on lowered IR (``cluster.call``). Placement gives a layer the clusters paired with its
tiles, but runs its digital work on the first. When a cluster cannot hold the working set of
even one token (cost model: ``cluster_overflow``), the widest splittable call on it (an
accumulation of partial sums, an activation, a bias, an elementwise kernel, a digital matmul)
is split by output columns over that many consecutive clusters, doubling until every cluster
fits. The decision is recorded once, as ``split`` (parts) on the call or accumulation; its
kernels' column part (``KernelAttr.column_part``) is what the schedule, the manifest, the
RISC-V backend and the binary use. The runtime computes the same math: a split is a mapping
decision. Along tokens, the schedule's chunk size is the split (it follows the TCDM).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, replace

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from aimcc.cost.model import ANALOG, Stage, tcdm_parts
from aimcc.cost.pipeline import cluster_overflow
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.cluster import CallOp
from aimcc.passes.schedule import (
    SPLIT_ATTR,
    _StageBuilder,
    column_split,
    splittable,
    stage_builder,
)


@dataclass(frozen=True)
class SplitPass(ModulePass):
    name = "split"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        arch = ctx.arch
        capacity = arch.cluster.tcdm_kib * 1024
        # Split until a chunk of one row per core fits (a smaller chunk idles cores); refuse
        # only when even one token does not fit and nothing splits further.
        rows = arch.cluster.compute_cores
        builder = stage_builder(op, arch)
        if builder is None:
            return
        tokens = builder.tokens
        # The stages of each op, in program order; a decision re-derives only its op's stages
        # (a unit's TCDM depends on the kinds and dims of its stages, not on the others').
        by_op: dict[Operation, list[Stage]] = {}
        for stage in builder.stages:
            by_op.setdefault(builder.owner[stage.name], []).append(stage)
        position = {o: i for i, o in enumerate(by_op)}
        verdicts: dict[tuple[object, ...], tuple[int, str]] = {}

        def overflow(stages: list[Stage], t: int | None) -> tuple[int, str]:
            key = (t, *((s.name, s.kind, *s.dims.items()) for s in stages))
            if key not in verdicts:
                verdicts[key] = cluster_overflow(stages, tokens, arch, *(() if t is None else (t,)))
            return verdicts[key]

        # Each cluster's digital stages (and their ops) in program order. A cluster is checked
        # again only when a split changed its stages (dirty): the others still fit. The first
        # dirty cluster in program order (its first stage's) that overflows is split first:
        # the decisions of checking every cluster after every split, at a fraction of the cost.
        units: dict[str, dict[Operation, None]] = defaultdict(dict)

        def cluster_of(s: Stage) -> str | None:
            return None if s.kind == ANALOG else s.unit.partition(".")[0]

        def place(o: Operation, add: bool) -> set[str]:
            touched = {u for s in by_op[o] if (u := cluster_of(s)) is not None}
            for unit in touched:
                if add:
                    units[unit][o] = None
                else:
                    units[unit].pop(o, None)
            return touched

        def on(unit: str) -> list[tuple[Operation, Stage]]:
            ops = sorted(units[unit], key=position.__getitem__)
            return [(o, s) for o in ops for s in by_op[o] if cluster_of(s) == unit]

        def first(unit: str) -> tuple[int, int]:
            o = min(units[unit], key=position.__getitem__)
            return position[o], next(i for i, s in enumerate(by_op[o]) if cluster_of(s) == unit)

        # Dirty clusters in a heap by their first stage; an entry is stale once the cluster's
        # first stage moved or it was checked.
        firsts: dict[str, tuple[int, int]] = {}
        heap: list[tuple[tuple[int, int], str]] = []

        def touch(changed: set[str]) -> None:
            for unit in changed:
                if units[unit]:
                    firsts[unit] = first(unit)
                    heapq.heappush(heap, (firsts[unit], unit))
                else:
                    firsts.pop(unit, None)

        for o in by_op:
            place(o, True)
        touch(set(units))
        while True:
            failing = None
            while heap:
                at, unit = heap[0]
                if firsts.get(unit) == at:
                    staged = on(unit)
                    if overflow([s for _, s in staged], rows)[0]:
                        failing = unit, staged
                        break
                    del firsts[unit]  # fits: clean until a split changes it
                heapq.heappop(heap)
            if failing is None:
                return
            unit, staged = failing
            stages = [s for _, s in staged]
            options = []
            for o, s in staged:
                parts = column_split(o)
                limit = min(_columns(o), arch.system_clusters)
                if splittable(o) and parts < limit:
                    width = tcdm_parts(s, 1, arch)[2]
                    options.append((width, s.name, o, min(2 * parts, limit)))
            if not options and not overflow(stages, None)[0]:
                del firsts[unit]  # one token fits: smaller chunks, not a refusal
                heapq.heappop(heap)
                continue
            if not options:
                need, what = overflow(stages, None)
                kinds = ", ".join(sorted({s.kind for s in stages}))
                raise AimccError(
                    f"{unit}: {what} needs {need} B of TCDM, the cluster has {capacity} B, and "
                    f"none of its kernels splits further by columns ({kinds})"
                )
            _, _, chosen, parts = max(options, key=lambda o: o[:2])
            if isinstance(chosen, CallOp):
                chosen.split = IntegerAttr(parts, i64)
            else:
                chosen.attributes[SPLIT_ATTR] = IntegerAttr(parts, i64)
            changed = place(chosen, False)
            by_op[chosen] = _restaged(chosen, by_op[chosen], builder)
            touch(changed | place(chosen, True))


def _restaged(op: Operation, before: list[Stage], builder: _StageBuilder) -> list[Stage]:
    """The stages of ``op`` after its split changed, named as the whole module's stage list
    names them (part j of a stage named n: n/j)."""
    fresh = type(builder)(builder.arch, builder.compiled, builder.seq, builder.tokens)
    if isinstance(op, AccumulateOp):
        fresh.analog(op)
    else:
        assert isinstance(op, CallOp)
        fresh.call(op)
    names = {s.name: s.name for s in fresh.stages}
    for old, new in zip(before, fresh.stages, strict=False):  # the unsplit stages come first
        if "/" not in old.name and "/" not in new.name:
            names[new.name] = old.name
    for s in fresh.stages:
        base, _, part = s.name.partition("/")
        if part:
            names[s.name] = f"{names.get(base, base)}/{part}"
    return [replace(s, name=names[s.name]) for s in fresh.stages]


def _columns(op: object) -> int:
    """Output columns per token of one part as split now (the narrowest kernel's): a split
    deals at most that many more parts."""
    if isinstance(op, AccumulateOp) and op.kernel is not None:
        return op.kernel.column_part(column_split(op)).columns
    if isinstance(op, CallOp) and op.kernels.data:
        return min(k.columns for k in op.part_kernels)
    return 1
