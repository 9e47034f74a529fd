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

from collections import defaultdict
from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from aimcc.cost.model import ANALOG, tcdm_parts
from aimcc.cost.pipeline import cluster_overflow
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.cluster import CallOp
from aimcc.passes.schedule import SPLIT_ATTR, column_split, splittable, stage_builder


@dataclass(frozen=True)
class SplitPass(ModulePass):
    name = "split"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        arch = ctx.arch
        capacity = arch.cluster.tcdm_kib * 1024
        # Split until a chunk of one row per core fits (a smaller chunk idles cores); refuse
        # only when even one token does not fit and nothing splits further.
        rows = arch.cluster.compute_cores
        done: set[str] = set()
        while True:
            builder = stage_builder(op, arch)
            if builder is None:
                return
            by_unit = defaultdict(list)
            for s in builder.stages:
                if s.kind != ANALOG:
                    by_unit[s.unit.partition(".")[0]].append(s)
            failing = next(
                (
                    (unit, stages, *cluster_overflow(stages, builder.tokens, arch, rows))
                    for unit, stages in by_unit.items()
                    if unit not in done and cluster_overflow(stages, builder.tokens, arch, rows)[0]
                ),
                None,
            )
            if failing is None:
                return
            unit, stages, need, what = failing
            options = []
            for s in stages:
                owner = builder.owner[s.name]
                parts = column_split(owner)
                limit = min(_columns(owner), arch.system_clusters)
                if splittable(owner) and parts < limit:
                    width = tcdm_parts(s, 1, arch)[2]
                    options.append((width, s.name, owner, min(2 * parts, limit)))
            if not options and not cluster_overflow(stages, builder.tokens, arch)[0]:
                done.add(unit)  # one token fits: smaller chunks, not a refusal
                continue
            if not options:
                need, what = cluster_overflow(stages, builder.tokens, arch)
                kinds = ", ".join(sorted({s.kind for s in stages}))
                raise AimccError(
                    f"{unit}: {what} needs {need} B of TCDM, the cluster has {capacity} B, and "
                    f"none of its kernels splits further by columns ({kinds})"
                )
            _, _, owner, parts = max(options, key=lambda o: o[:2])
            if isinstance(owner, CallOp):
                owner.split = IntegerAttr(parts, i64)
            else:
                owner.attributes[SPLIT_ATTR] = IntegerAttr(parts, i64)


def _columns(op: object) -> int:
    """Output columns per token of one part as split now (the narrowest kernel's): a split
    deals at most that many more parts."""
    if isinstance(op, AccumulateOp) and op.kernel is not None:
        return op.kernel.column_part(column_split(op)).columns
    if isinstance(op, CallOp) and op.kernels.data:
        return min(k.columns for k in op.part_kernels)
    return 1
