"""place: give every programmed slice a physical tile and every kernel a RISC-V cluster.

Tiles are numbered in program order, chip after chip. Each tile is paired with one cluster (the
HARP system), so a layer's digital work (its LoRA, bias, partial sums, and the kernels that
follow it up to the next layer) runs on the cluster paired with the layer's first tile. Digital
matmuls (digital target) start a new stage on the next cluster, round robin.

A model that needs more tiles than one chip has is cut into pipeline stages, one per chip: the
layers are dealt out in program order, and a layer that no longer fits the rest of a chip
starts on the next one (a layer larger than a chip spans whole chips). ``arch.link.chips`` 0
takes the fewest chips that hold the model, and placement records the count in the
context's architecture; a fixed count that is too small is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.passes import ModulePass

from aimcc.arch import Arch
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, MvmOp, ProgramOp
from aimcc.ir.digital import KernelOp

if TYPE_CHECKING:  # the passes load no ONNX files: IR users need none of the frontend
    from aimcc.frontend.load import LoadedModel


@dataclass(frozen=True)
class PlacePass(ModulePass):
    name = "place"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        layers = [
            [m.program for m in (p.owner for p in o.partials) if isinstance(m, MvmOp)]
            for o in op.walk()
            if isinstance(o, AccumulateOp)
        ]
        first_ids = place_layers([len(layer) for layer in layers], ctx.arch)
        chips = 1 + (first_ids[-1] + len(layers[-1]) - 1) // ctx.arch.tile.count if layers else 1
        check_chips(sum(map(len, layers)), chips, ctx.arch)
        how = "fixed" if ctx.arch.link.chips else "automatic"
        ctx.arch = ctx.arch.with_chips(ctx.arch.link.chips or chips)
        op.attributes["aimc.chips"] = StringAttr(how)
        for first, programs in zip(first_ids, layers, strict=True):
            for offset, program in enumerate(programs):
                program.tile_id = IntegerAttr(first + offset, i64)
        if any(p.tile_id is None for p in op.walk() if isinstance(p, ProgramOp)):
            raise AimccError("place: a programmed tile feeds no accumulation")
        clusters = ctx.arch.system_clusters
        current, next_stage = 0, 0
        for o in op.walk():
            if isinstance(o, AccumulateOp):
                first = o.partials[0].owner.operands[1].owner
                assert isinstance(first, ProgramOp) and first.tile_id is not None
                current = ctx.arch.cluster_of_tile(first.tile_id.value.data)
                o.cluster = IntegerAttr(current, i64)  # adds its partial sums (rows > 1)
            elif isinstance(o, KernelOp):
                if o.kind.data == "matmul":
                    current, next_stage = next_stage % clusters, next_stage + 1
                o.cluster = IntegerAttr(current, i64)


def place_layers(sizes: list[int], arch: Arch) -> list[int]:
    """The first tile id of each layer (``sizes`` tiles each, program order): a layer that does
    not fit the rest of its chip starts on the next chip."""
    per_chip, firsts, next_id = arch.tile.count, [], 0
    for size in sizes:
        room = per_chip - next_id % per_chip
        if size > room and next_id % per_chip:
            next_id += room
        firsts.append(next_id)
        next_id += size
    return firsts


def check_chips(tiles: int, chips: int, arch: Arch, at_least: bool = False) -> None:
    """Refuse, in one line, a fixed chip count (``arch.link.chips``) that holds fewer tiles
    than the model needs."""
    fixed = arch.link.chips
    if fixed and chips > fixed:
        need = f"at least {tiles}" if at_least else str(tiles)
        raise AimccError(
            f"the model needs {need} tiles of {arch.tile.rows}x{arch.tile.cols}, "
            f"{chips} chips of '{arch.name}' ({arch.tile.count} tiles each) in pipeline order; "
            f"--chips {fixed} gives {fixed * arch.tile.count} (use --chips {chips}, or leave "
            "--chips out for the fewest that fit)"
        )


def precheck(model: LoadedModel, arch: Arch, target: str) -> None:
    """Before import: refuse a fixed chip count that cannot hold even the tiles of the weight
    matrices the graph multiplies directly (MatMul/Gemm with a 2-D initializer), a lower
    bound on what placement will need, so the refusal comes before the expensive stages.
    Chained products ``MatMul(MatMul(x, A), B)`` are left out: a LoRA adapter runs digitally
    (hybrid) or merges into its base weight (aimc)."""
    if not arch.link.chips or target == "digital":
        return
    shapes = {name: a.shape for name, a in model.initializers.items()}
    linear = {}
    for node in model.proto.graph.node:
        shape = shapes.get(node.input[1], ()) if len(node.input) > 1 else ()
        if node.op_type in ("MatMul", "Gemm") and len(shape) == 2:
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            linear[node.output[0]] = (node.input[0], shape[::-1] if transposed else shape)
    chained = {x for x, _ in linear.values() if x in linear}
    sizes = [
        math.ceil(k / arch.tile.rows) * math.ceil(n / arch.tile.cols)
        for out, (x, (k, n)) in linear.items()
        if out not in chained and x not in linear
    ]
    if sizes:
        last = place_layers(sizes, arch)[-1] + sizes[-1] - 1
        check_chips(sum(sizes), 1 + last // arch.tile.count, arch, at_least=True)
