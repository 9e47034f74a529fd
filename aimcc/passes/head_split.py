"""head-split: spread each attention over clusters by heads.

Placement runs a block's attention (QK^T, softmax, .V for every head and query) on the one
cluster its V projection left it on, after every key is known, while the clusters paired
with the Q/K/V tiles sit idle: on bert_lora and MiniLM that one cluster is the latency. Heads
are independent, so this pass deals them out in equal contiguous groups: group 0 stays on the
kernel's cluster, the next go to the other clusters of the layers that produce q, k and v
(their tiles' clusters), then to free clusters of the chip (paired with no placed tile and
running no kernel). The decision is the kernel parameter ``head_clusters`` (one cluster per
group; heads ``H*j/g .. H*(j+1)/g`` on ``head_clusters[j]``), so the schedule (one
qk/softmax/av per group on its cluster, each group receiving its heads' share of q, k, v,
and the consumer gathering the groups' outputs), the kernel manifest and the runtime (which
runs the groups and concatenates) all read the same split.

``max_groups`` bounds the groups (0: one per head, as clusters allow; 1: no split). The
group count divides the head count, so every group has the same work.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import DictionaryAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from aimcc.arch import Arch
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, ProgramOp
from aimcc.ir.attrs import int_array
from aimcc.ir.cluster import VIEW_OPS
from aimcc.ir.digital import KernelOp
from aimcc.ir.types import shape_of
from aimcc.passes.schedule import HEAD_CLUSTERS, head_clusters

# Kernels between a projection's tiles and attention's operands (bias, adapter, rotary
# embedding, scaling, layout): q, k and v come from the layers found through these.
_ELEMENTWISE_ONNX = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log"}
    | {"Sigmoid", "Tanh", "Erf", "Relu", "Cast", "Where", "Equal", "Less", "Greater", "Not"}
    | {"And", "Or", "Min", "Max", "Clip"}
)
_PASS_THROUGH = {f"onnx.{o}" for o in VIEW_OPS | _ELEMENTWISE_ONNX} | {"bias_add", "lora", "rope"}


@dataclass(frozen=True)
class HeadSplitPass(ModulePass):
    name = "head-split"

    max_groups: int = 0  # 0: as many as heads (and clusters); 1: leave attention whole

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        if self.max_groups < 0:
            raise AimccError(f"head-split: max-groups must be 0 or more, is {self.max_groups}")
        arch = ctx.arch
        used = _used_clusters(op, arch)
        for kernel in [o for o in op.walk() if isinstance(o, KernelOp)]:
            if kernel.kind.data != "attention" or kernel.cluster is None:
                continue
            if head_clusters(kernel) != [kernel.cluster.value.data]:
                continue  # split already (textual IR from after this pass)
            heads = _heads(kernel)
            limit = heads if self.max_groups == 0 else min(heads, self.max_groups)
            if limit < 2:
                continue
            own = kernel.cluster.value.data
            chip = own // arch.cluster.count
            candidates = [own]
            for c in _projection_clusters(kernel, arch):
                if c not in candidates and c // arch.cluster.count == chip:
                    candidates.append(c)
            for c in range(chip * arch.cluster.count, (chip + 1) * arch.cluster.count):
                if len(candidates) >= limit:
                    break
                if c not in used and c not in candidates:
                    candidates.append(c)
            groups = max(g for g in range(1, min(limit, len(candidates)) + 1) if heads % g == 0)
            if groups < 2:
                continue
            chosen = candidates[:groups]
            used.update(chosen)
            heads_at = int_array(chosen)
            kernel.properties["params"] = DictionaryAttr(
                {**kernel.params.data, HEAD_CLUSTERS: heads_at}
            )


def _heads(kernel: KernelOp) -> int:
    q = shape_of(kernel.args[0])
    return q[-3] if len(q) >= 3 else 1


def _projection_clusters(kernel: KernelOp, arch: Arch) -> list[int]:
    """Clusters paired with the tiles of the layers q, k and v come from, in that order."""
    found: list[int] = []
    for start in kernel.args[:3]:
        stack: list[SSAValue] = [start]
        seen: set[SSAValue] = set()
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen.add(value)
            owner: Operation = value.owner  # type: ignore[assignment]
            if isinstance(owner, AccumulateOp):
                for p in owner.partials:
                    program = p.owner.operands[1].owner
                    if isinstance(program, ProgramOp) and program.tile_id is not None:
                        c = arch.cluster_of_tile(program.tile_id.value.data)
                        if c not in found:
                            found.append(c)
            elif isinstance(owner, KernelOp) and owner.kind.data in _PASS_THROUGH:
                stack.extend(owner.args)
    return found


def _used_clusters(module: ModuleOp, arch: Arch) -> set[int]:
    """Clusters paired with a placed tile or running a kernel: not free for attention."""
    used: set[int] = set()
    for o in module.walk():
        if isinstance(o, ProgramOp) and o.tile_id is not None:
            used.add(arch.cluster_of_tile(o.tile_id.value.data))
        elif isinstance(o, KernelOp) and o.cluster is not None:
            used.update(head_clusters(o))
    return used
