"""schedule: derive the cost model's stages from the placed IR, pick chunks and a pipeline.

Every analog layer (``aimc.accumulate`` over its MVMs) becomes an ``analog_mvm`` stage on the
unit ``tile:<first tile id>`` (a layer's tiles run in parallel; a fused bias is in their
post-processing), plus the stage of its ``accumulate`` kernel on the cluster placement chose
when rows of tiles give partial sums. Every ``cluster.call`` (after ``lower-cluster``) becomes
one stage per kernel on ``cluster:<cluster>``, chained in order, each costed by the kernel
attribute (``KernelAttr.stage``); a call no kernel computes is costed as elementwise work over
its largest operand. Views (``cluster.view``) cost nothing: a strided DMA reads through them,
so their consumers depend on the views' producers directly.

A kernel is *per token* when its tokens are the sequence's; its stage is then chunked over the
sequence, otherwise it runs once (``T`` rows). The chosen strategy and
chunk per layer go into the module attribute ``aimc.schedule``, which the backend copies into
the binary; :func:`recorded_schedule` replays that decision into the full timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import (
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
from aimcc.cost.model import SEQUENCE_MIXING
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, MvmOp, ProgramOp
from aimcc.ir.attrs import int_list
from aimcc.ir.cluster import CallOp, KernelAttr, ViewOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.types import shape_of

SCHEDULE_ATTR = "aimc.schedule"
# Column split of a call or accumulation (the split pass decides it): part j of c runs on
# the cluster c after the op's own, on 1/c of the columns (KernelAttr.column_part).
SPLIT_ATTR = "split"
# Replicas of an analog layer (the replicate pass decides them): the first tile of each copy
# beside the original; copy j holds the layer's slices, in the order of its partials, on the
# tiles from its first on. Chunk k of the layer's tokens runs on copy k mod (replicas + 1).
REPLICAS_ATTR = "replicas"
# Head split of an attention (the head-split pass decides it): the kernel parameter holding
# one cluster per group of heads; heads H*j/g .. H*(j+1)/g run on cluster j.
HEAD_CLUSTERS = "head_clusters"
PIPELINES = ("auto", "serial", "intra", "cross", "both")


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
        elif isinstance(o, CallOp):
            builder.call(o)
        elif isinstance(o, ViewOp):
            builder.view(o)
        elif isinstance(o, KernelOp):
            raise AimccError(f"schedule: '{o.kind.data}' is not lowered (run 'lower-cluster')")
    return builder


def splittable(op: Operation) -> bool:
    """Whether an op's stages split by output columns: accumulations and calls whose every
    kernel does (bias, activations, matmuls, elementwise kernels); norms, softmax and
    attention reduce over a row or a head and are not split."""
    if isinstance(op, AccumulateOp):
        return op.kernel is not None
    return isinstance(op, CallOp) and op.column_splittable


def column_split(op: Operation) -> int:
    """The column split the split pass recorded on a call or accumulation (1: none)."""
    attr = op.attributes.get(SPLIT_ATTR) or op.properties.get(SPLIT_ATTR)
    return attr.value.data if isinstance(attr, IntegerAttr) else 1


def replica_firsts(op: Operation) -> list[int]:
    """The first tile of each replica the replicate pass recorded on an accumulation."""
    return int_list(op.attributes.get(REPLICAS_ATTR)) or []


def head_clusters(op: Operation) -> list[int]:
    """The clusters of a kernel's or call's head groups (attention split by the head-split
    pass); one not split runs on its one cluster."""
    if not isinstance(op, KernelOp | CallOp):
        return []
    groups = int_list(op.params.data.get(HEAD_CLUSTERS))
    if groups is not None:
        return groups
    return [op.cluster.value.data] if op.cluster is not None else []


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
        elif isinstance(o, CallOp) and o.callee.data == "matmul":
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
        self.kernel_of: dict[str, KernelAttr] = {}  # stage -> the kernel it runs

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
        if rows > 1:  # partial sums of the rows of tiles, on the cluster placement chose
            if acc.kernel is None or acc.cluster is None:
                raise AimccError("schedule: partial sums without a kernel (run 'lower-cluster')")
            parts, first = column_split(acc), acc.cluster.value.data
            part = acc.kernel.column_part(parts)  # every part's (the largest) kernel
            sums = []
            for j in range(parts):
                kind, dims = self.kernel_stage(part)
                if parts > 1:
                    dims["parts"] = parts
                unit = f"cluster:{(first + j) % self.arch.system_clusters}"
                hint_j = f"{hint}.acc" if j == 0 else f"{hint}.acc/{j}"
                sums.append(self.add(hint_j, kind, dims, names, unit))
                self.owner[sums[-1]] = acc
                self.kernel_of[sums[-1]] = part
            names = tuple(sums)
            if len(names) > 1:
                self.parts[acc.result] = len(names)
        self.producers[acc.result] = names

    def view(self, op: ViewOp) -> None:
        """No stage: the consumers' transfers read through the view."""
        for r in op.outs:
            self.producers[r] = self.deps(*op.args)

    def call(self, op: CallOp) -> None:
        """One stage per kernel of the call (on each of its clusters), chained in order; a
        kernel also depends on the producers of the operands it reads."""
        cluster = op.cluster.value.data
        out = op.outs[0]
        hint = out.name_hint or op.callee.data.removeprefix("onnx.").lower()
        if not op.kernels.data:
            names = self.unsupported(op, hint, f"cluster:{cluster}")
        else:
            names = self.kernels(op, hint)
        for r in op.outs:
            self.producers[r] = names
            if op.parts > 1:
                self.parts[r] = len(names)

    def kernels(self, op: CallOp, hint: str) -> tuple[str, ...]:
        """A head split (attention) runs its kernels once per group of heads on the group's
        cluster (group j named ``hint/j``, each reading its heads' share: dim ``parts``); a
        column split once per part on consecutive clusters (part j reads part j of a value
        split alike); the consumer gathers the groups' or parts' outputs."""
        groups, parts = head_clusters(op), op.parts
        if parts > 1:
            first = op.cluster.value.data
            units = [((first + j) % self.arch.system_clusters, (j, parts)) for j in range(parts)]
        else:
            units = [(c, (0, 1)) for c in groups]
        kernels, reads = op.part_kernels, op.kernel_reads()
        names = []
        for j, (cluster, part) in enumerate(units):
            unit, name = f"cluster:{cluster}", hint if j == 0 else f"{hint}/{j}"
            last: tuple[str, ...] = ()
            for i, (kernel, read) in enumerate(zip(kernels, reads, strict=True)):
                kind, dims = self.kernel_stage(kernel)
                split_share = parts > 1 and kind != "matmul"
                if len(units) > 1 and (split_share or kind in SEQUENCE_MIXING):
                    dims["parts"] = len(units)  # the part receives its share of its input
                deps = (*last, *self.deps(*(op.args[r] for r in read), part=part))
                stage = name if i == len(kernels) - 1 else f"{name}.{kernel.kind.data}"
                last = (self.add(stage, kind, dims, deps, unit),)
                self.owner[last[0]] = op
                self.kernel_of[last[0]] = kernel
            names.append(last[0])
        return tuple(names)

    def kernel_stage(self, kernel: KernelAttr) -> tuple[str, dict[str, int]]:
        """The kernel's stage: chunked when its tokens are the sequence's, or rows of each
        token of it (the keys of qk/av then follow a rescheduled sequence length)."""
        tokens = kernel.tokens
        per = tokens if tokens in (self.compiled, self.seq) else None
        if per is None and tokens % self.compiled == 0:
            per = self.compiled
        kind, dims = kernel.stage(per)
        if per and kind in SEQUENCE_MIXING and dims["S"] == self.seq:
            dims["S"] = self.tokens * self.seq // self.compiled
        return kind, dims

    def unsupported(self, op: CallOp, hint: str, unit: str) -> tuple[str, ...]:
        """A call no kernel computes (``unsupported``): per-element work over its largest
        operand, so the schedule still accounts for it."""
        largest = max((shape_of(v) for v in [*op.args, *op.outs]), key=math.prod)
        if self.per_token(largest):
            dims = {"elements": math.prod(largest) // self.compiled, "ops": 1}
        else:
            dims = {"elements": largest[-1] if largest else 1, "ops": 1, **self.rows(largest)}
        name = self.add(hint, "elementwise", dims, self.deps(*op.args), unit)
        self.owner[name] = op
        return (name,)
