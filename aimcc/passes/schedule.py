"""schedule: derive the cost model's stages from the placed IR, pick chunks and a pipeline.

Every analog layer (``aimc.accumulate`` over its MVMs) becomes an ``analog_mvm`` stage on the
unit ``tile:<first tile id>`` (a layer's tiles run in parallel), plus an ``accumulate`` stage
on the paired cluster when rows of tiles give partial sums. Every ``digital.kernel`` becomes
the stages of its arithmetic on ``cluster:<cluster>``: ``lora`` is X.A then .B + add,
``attention`` is QK^T, softmax (the scale and mask folded in) and .V, ``embedding`` a gather,
``rope`` and generic ``onnx.*`` kernels elementwise work over their largest operand. Views
(reshape, transpose, slice, ...) cost nothing: a strided DMA reads through them, so their
consumers depend on the views' producers directly.

A value is *per token* when the sequence length appears among its leading dims; its stage is
then chunked over the sequence, otherwise it runs once (``T`` rows). The chosen strategy and
chunk per layer go into the module attribute ``aimc.schedule``, which the backend copies into
the binary; :func:`recorded_schedule` replays that decision into the full timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from aimcc.arch import Arch
from aimcc.cost import Schedule, Stage, replay, schedule
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, MvmOp, ProgramOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import AbsentOp, WeightOp
from aimcc.ir.types import shape_of

SCHEDULE_ATTR = "aimc.schedule"
# Column split of a kernel or accumulation (the split pass decides it): part j of c runs on
# the cluster c after the op's own, on 1/c of the columns (heads for rope, elements for
# elementwise ONNX kernels).
SPLIT_ATTR = "split"
SPLIT_DIM = {
    "accumulate": "N",
    "bias_add": "N",
    "gelu_erf": "N",
    "gelu_tanh": "N",
    "silu": "N",
    "matmul": "N",
    "elementwise": "elements",
}
# Replicas of an analog layer (the replicate pass decides them): the first tile of each copy
# beside the original; copy j holds the layer's slices, in the order of its partials, on the
# tiles from its first on. Chunk k of the layer's tokens runs on copy k mod (replicas + 1).
REPLICAS_ATTR = "replicas"
# Head split of an attention kernel (the head-split pass decides it): the kernel parameter
# holding one cluster per group of heads; heads H*j/g .. H*(j+1)/g run on cluster j.
HEAD_CLUSTERS = "head_clusters"
PIPELINES = ("auto", "serial", "intra", "cross", "both")
# Generic kernels that only re-index their input: a strided DMA reads through them.
VIEWS = frozenset(
    f"onnx.{op}"
    for op in (
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Identity",
        "Expand",
        "Slice",
        "Split",
    )
)
ELEMENTWISE_ONNX = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log"}
    | {"Sigmoid", "Tanh", "Erf", "Relu", "Cast", "Where", "Equal", "Less", "Greater", "Not"}
    | {"And", "Or", "Min", "Max", "Clip"}
)
_ELEMENTWISE_OPS = {"rope": 3}  # x * cos + rotate(x) * sin; generic kernels: 1 per element


@dataclass(frozen=True)
class SchedulePass(ModulePass):
    name = "schedule"

    pipeline: str = "auto"
    clusters_per_tile: int = 1
    tokens: int = 0  # 0: the sequence the model was compiled for

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        if self.pipeline not in PIPELINES:
            raise AimccError(f"--pipeline {self.pipeline}: use one of {', '.join(PIPELINES)}")
        if not ctx.arch.link.chips:  # parsed IR placed before: the chips its tiles span
            tiles = [o.tile_id for o in op.walk() if isinstance(o, ProgramOp) and o.tile_id]
            if tiles:
                last = max(t.value.data for t in tiles)
                ctx.arch = ctx.arch.with_chips(1 + last // ctx.arch.tile.count)
        stages, tokens = module_stages(op, ctx.arch, self.tokens)
        if not stages:
            return
        asked = (stages, tokens, self.pipeline, self.clusters_per_tile)
        if ctx.searched is not None and ctx.searched[:4] == asked:
            found = ctx.searched[4]  # searched already (replicate, which changed nothing)
        else:
            found = schedule(
                stages,
                tokens,
                ctx.arch,
                strategy=self.pipeline,
                clusters_per_tile=self.clusters_per_tile,
            )
        op.attributes[SCHEDULE_ATTR] = _attribute(found)
        ctx.schedule = found


def module_stages(module: ModuleOp, arch: Arch, tokens: int = 0) -> tuple[list[Stage], int]:
    """The cost stages of a placed module in program order, and the tokens to schedule."""
    builder = stage_builder(module, arch, tokens)
    return (builder.stages, builder.tokens) if builder else ([], 0)


def stage_builder(module: ModuleOp, arch: Arch, tokens: int = 0) -> _StageBuilder | None:
    """The stages of a placed module with the op each came from (``owner``)."""
    main = next((o for o in module.walk() if isinstance(o, func.FuncOp)), None)
    if main is None:
        return None
    compiled, seq = _compiled_tokens(main)
    builder = _StageBuilder(arch, compiled, seq, tokens or compiled)
    for o in main.body.block.ops:
        if isinstance(o, AccumulateOp):
            builder.analog(o)
        elif isinstance(o, KernelOp):
            builder.kernel(o)
    return builder


def splittable(op: Operation) -> bool:
    """Whether an op's stage splits by columns: accumulations, row-wise elementwise kernels
    and matmuls (by output columns), rope and elementwise ONNX kernels (by elements). Norms,
    softmax and attention reduce over a row or a head and are not split."""
    if isinstance(op, AccumulateOp):
        return True
    kind = op.kind.data if isinstance(op, KernelOp) else ""
    return kind in SPLIT_DIM or kind == "rope" or kind.removeprefix("onnx.") in ELEMENTWISE_ONNX


def column_split(op: Operation) -> int:
    """The column split the split pass recorded on a kernel or accumulation (1: none)."""
    attr = op.attributes.get(SPLIT_ATTR)
    return attr.value.data if isinstance(attr, IntegerAttr) else 1


def replica_firsts(op: Operation) -> list[int]:
    """The first tile of each replica the replicate pass recorded on an accumulation."""
    attr = op.attributes.get(REPLICAS_ATTR)
    if not isinstance(attr, ArrayAttr):
        return []
    return [a.value.data for a in attr.data if isinstance(a, IntegerAttr)]


def head_clusters(op: Operation) -> list[int]:
    """The clusters of a kernel's head groups (attention split by the head-split pass); a
    kernel not split runs on its one cluster."""
    attr = op.params.data.get(HEAD_CLUSTERS) if isinstance(op, KernelOp) else None
    if isinstance(attr, ArrayAttr):
        return [a.value.data for a in attr.data if isinstance(a, IntegerAttr)]
    cluster = op.cluster if isinstance(op, KernelOp) else None
    return [cluster.value.data] if cluster is not None else []


def split_dims(kind: str, dims: dict[str, int], parts: int) -> list[dict[str, int]]:
    """The dims of each column part of a stage: the split dim dealt as evenly as it goes."""
    key = SPLIT_DIM[kind]
    total = dims[key]
    # "parts": the part receives its share of its input (a matmul part reads all of it)
    share = {"parts": parts} if kind != "matmul" else {}
    return [
        {**dims, key: total * (j + 1) // parts - total * j // parts, **share} for j in range(parts)
    ]


def recorded_schedule(module: ModuleOp, arch: Arch) -> Schedule | None:
    """The timeline of the schedule the pass recorded (None if the module has none)."""
    attr = module.attributes.get(SCHEDULE_ATTR)
    if not isinstance(attr, DictionaryAttr):
        return None
    d = attr.data
    tokens = _int(d["tokens"])
    stages, _ = module_stages(module, arch, tokens)
    chunks = d["chunks"]
    assert isinstance(chunks, DictionaryAttr)
    return replay(
        stages,
        tokens,
        arch,
        strategy=_str(d["strategy"]),
        clusters_per_tile=_int(d["clusters_per_tile"]),
        chunk_per_layer={int(k): _int(v) for k, v in chunks.data.items()},
    )


def _attribute(s: Schedule) -> DictionaryAttr:
    """The decision (replayable) and its results, times in whole ns and energy in whole pJ."""

    def whole(x: float) -> IntegerAttr:
        return IntegerAttr(round(x), i64)

    return DictionaryAttr(
        {
            "strategy": StringAttr(s.strategy),
            "clusters_per_tile": IntegerAttr(s.clusters_per_tile, i64),
            "tokens": IntegerAttr(s.tokens, i64),
            "chunks": DictionaryAttr(
                {str(k): IntegerAttr(v, i64) for k, v in s.chunk_per_layer.items()}
            ),
            "makespan_ns": whole(s.makespan_ns),
            "energy_pj": whole(s.energy_nj * 1e3),
            "busy_bound_ns": whole(s.busy_bound_ns),
            "critical_path_ns": whole(s.critical_path_ns),
            "chain_bound_ns": whole(s.chain_bound_ns),
        }
    )


def _int(attr: object) -> int:
    assert isinstance(attr, IntegerAttr)
    return attr.value.data


def _str(attr: object) -> str:
    assert isinstance(attr, StringAttr)
    return attr.data


def _compiled_tokens(main: func.FuncOp) -> tuple[int, int]:
    """(token vectors, sequence length): from the first analog or matmul input (batch x seq x
    K), else from the function's first input."""
    for o in main.body.block.ops:
        x = None
        if isinstance(o, AccumulateOp):
            mvm = o.partials[0].owner
            assert isinstance(mvm, MvmOp)
            x = mvm.x
        elif isinstance(o, KernelOp) and o.kind.data == "matmul":
            x = o.args[0]
        if x is not None:
            lead = shape_of(x)[:-1]
            return math.prod(lead), lead[-1] if lead else 1
    # no linear layer: the first input, token ids [batch, seq] or features [batch, seq, K]
    args = main.body.block.args
    shape = shape_of(args[0]) if args else ()
    lead = shape[:2] if len(shape) >= 2 else shape
    return max(1, math.prod(lead)), lead[-1] if lead else 1


class _StageBuilder:
    """Turns ops into stages, tracking which stages produce each SSA value."""

    def __init__(self, arch: Arch, compiled: int, seq: int, tokens: int):
        self.arch, self.compiled, self.seq, self.tokens = arch, compiled, seq, tokens
        self.stages: list[Stage] = []
        self.producers: dict[SSAValue, tuple[str, ...]] = {}
        self.names: set[str] = set()
        self.owner: dict[str, Operation] = {}  # stage -> the op it came from
        self.parts: dict[SSAValue, int] = {}  # values produced in column parts: how many

    def per_token(self, shape: tuple[int, ...]) -> bool:
        """The sequence is among the leading dims and every token has the same share."""
        numel = math.prod(shape)
        return self.seq in shape[:-1] and numel % self.compiled == 0 and numel > 0

    def rows(self, shape: tuple[int, ...]) -> dict[str, int]:
        """No ``T`` for per-token values (chunked); else the leading dims run once."""
        return {} if self.per_token(shape) else {"T": max(1, math.prod(shape[:-1]))}

    def deps(self, *values: SSAValue, part: tuple[int, int] = (0, 1)) -> tuple[str, ...]:
        """Producers of ``values``; part j of c reads only part j of a value split alike."""
        j, c = part
        found = []
        for v in values:
            names = self.producers.get(v, ())
            found += [names[j]] if c > 1 and self.parts.get(v) == c else names
        return tuple(dict.fromkeys(found))

    def split(
        self,
        op: Operation,
        hint: str,
        kind: str,
        dims: dict[str, int],
        args: list[SSAValue],
        cluster: int,
        after: tuple[str, ...] = (),
    ) -> tuple[str, ...]:
        """The stage of ``op``, in its recorded column parts on consecutive clusters."""
        parts = column_split(op) if kind in SPLIT_DIM else 1
        names = []
        for j, part in enumerate(split_dims(kind, dims, parts) if parts > 1 else [dims]):
            unit = f"cluster:{(cluster + j) % self.arch.system_clusters}"
            name = self.add(
                hint if j == 0 else f"{hint}/{j}",
                kind,
                part,
                (*after, *self.deps(*args, part=(j, parts))),
                unit,
            )
            self.owner[name] = op
            names.append(name)
        return tuple(names)

    def add(
        self,
        hint: str,
        kind: str,
        dims: dict[str, int],
        deps: tuple[str, ...],
        unit: str,
        replicas: tuple[str, ...] = (),
    ) -> str:
        name, n = hint, 1
        while name in self.names:
            name, n = f"{hint}#{n}", n + 1
        self.names.add(name)
        self.stages.append(Stage(name, kind, dims, deps, unit, replicas))
        return name

    def analog(self, acc: AccumulateOp) -> None:
        """The layer's tiles as one ``analog_mvm`` stage per chip they are on (tiles of a
        layer that spans chips send their partials over the links), then the partial sums."""
        mvm = acc.partials[0].owner
        assert isinstance(mvm, MvmOp)
        if mvm.program.tile_id is None:
            raise AimccError("schedule: tiles are not placed (run 'place' first)")
        by_chip: dict[int, list[int]] = {}
        for p in acc.partials:
            tile_id = p.owner.operands[1].owner.tile_id
            assert tile_id is not None, "place numbers every tile"
            by_chip.setdefault(tile_id.value.data // self.arch.tile.count, []).append(
                tile_id.value.data
            )
        tile = mvm.program.tile_id.value.data
        x, hint = mvm.x, acc.result.name_hint or f"layer{tile}"
        n = shape_of(acc.result)[-1]
        analog: list[str] = []
        replicas = tuple(f"tile:{first}" for first in replica_firsts(acc))
        if replicas and len(by_chip) > 1:
            raise AimccError(f"schedule: layer {hint} spans chips and cannot be replicated")
        for i, tiles in enumerate(by_chip.values()):
            # the first chip's share stands for the layer's output; another chip's tiles
            # produce their columns' partials (what crosses the link)
            width = n if i == 0 else min(n, len(tiles) * self.arch.tile.cols)
            dims = {"K": shape_of(x)[-1], "N": width, "tiles": len(tiles)}
            name = self.add(
                hint if i == 0 else f"{hint}@chip{tiles[0] // self.arch.tile.count}",
                "analog_mvm",
                {**dims, **self.rows(shape_of(x))},
                self.deps(x),
                f"tile:{tiles[0]}",
                replicas,
            )
            self.owner[name] = acc
            analog.append(name)
        rows, _ = acc.grid_shape
        names: tuple[str, ...] = tuple(analog)
        if rows > 1:  # partial sums of the rows of tiles, on the paired cluster(s)
            dims = {"N": n, "P": rows, **self.rows(shape_of(acc.result))}
            cluster = self.arch.cluster_of_tile(tile)
            names = self.split(acc, f"{hint}.acc", "accumulate", dims, [], cluster, names)
            if len(names) > 1:
                self.parts[acc.result] = len(names)
        self.producers[acc.result] = names

    def kernel(self, op: KernelOp) -> None:
        kind = op.kind.data
        args = [a for a in op.args if not isinstance(a.owner, WeightOp | AbsentOp | ProgramOp)]
        if kind in VIEWS:
            for r in op.outs:
                self.producers[r] = self.deps(*args)
            return
        if op.cluster is None:
            raise AimccError(f"schedule: kernel '{kind}' has no cluster (run 'place' first)")
        cluster = op.cluster.value.data
        unit = f"cluster:{cluster}"
        before = len(self.stages)
        out = op.outs[0]
        hint = out.name_hint or kind.removeprefix("onnx.").lower()
        shape = shape_of(out)
        rows = self.rows(shape)
        if kind == "lora":
            x, y, a, b = op.args
            k, r = shape_of(a)
            xa = self.add(f"{hint}.xa", "lora_xa", {"K": k, "R": r, **rows}, self.deps(x), unit)
            dims = {"R": r, "N": shape_of(b)[-1], **rows}
            names: tuple[str, ...] = (
                self.add(hint, "lora_b_add", dims, (*self.deps(y), xa), unit),
            )
        elif kind == "attention":
            names = self.attention(op, hint)
        elif kind == "matmul":
            dims = {"K": shape_of(op.args[0])[-1], "N": shape[-1], **rows}
            names = self.split(op, hint, "matmul", dims, args, cluster)
        elif kind == "embedding":
            table, ids = op.args
            dims = {"N": shape_of(table)[-1], **rows}
            names = (self.add(hint, "gather", dims, self.deps(ids), unit),)
        elif kind in ("bias_add", "layer_norm", "rms_norm", "gelu_erf", "gelu_tanh", "silu"):
            dims = {"N": shape[-1], **rows}
            names = self.split(op, hint, kind, dims, args, cluster)
        else:  # rope and generic ONNX kernels: per-element work over the largest operand
            largest = max((shape_of(v) for v in [*args, *op.outs]), key=math.prod)
            if self.per_token(largest):
                dims = {"elements": math.prod(largest) // self.compiled}
            else:
                dims = {"elements": largest[-1] if largest else 1, **self.rows(largest)}
            dims["ops"] = _ELEMENTWISE_OPS.get(kind, 1)
            names = self.split(op, hint, "elementwise", dims, args, cluster)
        for stage in self.stages[before:]:
            self.owner.setdefault(stage.name, op)
        for r in op.outs:
            self.producers[r] = names
            if len(names) > 1 and kind != "attention":  # head groups are not column parts
                self.parts[r] = len(names)

    def attention(self, op: KernelOp, hint: str) -> tuple[str, ...]:
        """QK^T, softmax with scale and mask, then .V: one row per (head, query); a head split
        gives each group of heads its three stages on its cluster (group j named
        ``hint/j``), each receiving its heads' share of q, k and v (dim ``parts``); the
        consumer gathers the groups' outputs (one transfer per group and chunk)."""
        q, kt, v = op.args[:3]
        mask = op.args[3:]
        qs = shape_of(q)
        heads = qs[-3] if len(qs) >= 3 else 1
        clusters = head_clusters(op)
        groups = len(clusters)
        if heads % groups:
            raise AimccError(f"schedule: {heads} heads do not split into {groups} equal groups")
        dims = {"S": shape_of(kt)[-1], "D": qs[-1], "H": heads // groups}
        if self.per_token(qs):
            if dims["S"] == self.seq:  # keys of the whole (rescheduled) sequence
                dims["S"] = self.tokens * self.seq // self.compiled
        else:
            dims["T"] = max(1, math.prod(qs[:-1]) // heads)
        if groups > 1:
            dims["parts"] = groups
        rows = {"T": dims["T"]} if "T" in dims else {}
        softmax_dims = {"N": dims["S"], "H": dims["H"], **rows}
        names = []
        for j, cluster in enumerate(clusters):
            unit, name = f"cluster:{cluster}", hint if j == 0 else f"{hint}/{j}"
            # The scheduler reads every dependency after the first whole: keep the queries
            # first even when queries and keys come from one producer (a fused QKV projection).
            qk = self.add(f"{name}.qk", "qk", dims, (*self.deps(q), *self.deps(kt)), unit)
            p = self.add(f"{name}.softmax", "softmax", softmax_dims, (qk, *self.deps(*mask)), unit)
            names.append(self.add(name, "av", dims, (p, *self.deps(v)), unit))
        return tuple(names)
