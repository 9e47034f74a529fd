"""place: give every programmed slice a physical tile and every kernel a RISC-V cluster.

Tiles are numbered in program order. Each tile is paired with one cluster (the HARP system), so
a layer's digital work (its LoRA, bias, partial sums, and the kernels that follow it up to the
next layer) runs on the cluster paired with the layer's first tile. Digital matmuls (digital
target) start a new stage on the next cluster, round robin.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, ProgramOp
from aimcc.ir.digital import KernelOp


@dataclass(frozen=True)
class PlacePass(ModulePass):
    name = "place"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        programs = [o for o in op.walk() if isinstance(o, ProgramOp)]
        available = ctx.arch.tile.count
        if len(programs) > available:
            raise AimccError(
                f"the model needs {len(programs)} tiles of {ctx.arch.tile.rows}x"
                f"{ctx.arch.tile.cols}, architecture '{ctx.arch.name}' has {available} "
                f"(use a larger chip, e.g. --set tile.count={len(programs)} "
                f"--set cluster.count={len(programs)})"
            )
        for tile_id, program in enumerate(programs):
            program.tile_id = IntegerAttr(tile_id, i64)
        clusters = ctx.arch.cluster.count
        current, next_stage = 0, 0
        for o in op.walk():
            if isinstance(o, AccumulateOp):
                first = o.partials[0].owner.operands[1].owner
                assert isinstance(first, ProgramOp) and first.tile_id is not None
                current = first.tile_id.value.data % clusters
            elif isinstance(o, KernelOp):
                if o.kind.data == "matmul":
                    current, next_stage = next_stage % clusters, next_stage + 1
                o.cluster = IntegerAttr(current, i64)
