"""raise: recognise the transformer parts exporters emit and rewrite them into `nn` ops.

Patterns match graph structure and constant values, never node or tensor names, so they hold for
any exporter: linear layers (MatMul/Gemm with a constant weight; transposed, tied and dequantised
weights are already constants after the frontend's folding), their bias and LoRA branch,
attention, LayerNorm, RMSNorm, activations (recognised by evaluating the candidate elementwise
region, so every written form of GELU and SiLU is found), embeddings and rotary embeddings.
Whatever is not recognised stays a `graph.node`, which runs as a generic digital kernel.
Names only label what was found: each linear keeps one (`layer_name`) for adapters to attach by.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from aimcc.ir import CompileContext
from aimcc.ir.attrs import int_list
from aimcc.ir.graph import AbsentOp, NodeOp, key_of
from aimcc.ir.nn import (
    ActivationOp,
    AttentionOp,
    EmbeddingOp,
    LayerNormOp,
    LinearOp,
    RmsNormOp,
    RopeOp,
)
from aimcc.ir.types import dtype_of, shape_of
from aimcc.passes.matching import (
    add_weight,
    const,
    float_attr,
    int_attr,
    node,
    only_use,
    other_operand,
    scalar,
)

if TYPE_CHECKING:
    import torch

FLOAT_TYPES = ("float32", "float16", "bfloat16", "float64")


def _is_float(value: SSAValue) -> bool:
    return dtype_of(value.type) in FLOAT_TYPES


@dataclass
class _Pattern(RewritePattern):
    ctx: CompileContext


class RaiseLinear(_Pattern):
    """MatMul(x, W) and Gemm(x, W, C) with constant W -> nn.linear."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        kind = op.op_type.data
        if kind not in ("MatMul", "Gemm") or len(op.args) < 2:
            return
        x, w = op.args[0], op.args[1]
        weight = const(self.ctx, w)
        if weight is None or weight.ndim != 2 or const(self.ctx, x) is not None:
            return
        if len(shape_of(x)) < 2 or not _is_float(x) or str(weight.dtype) not in FLOAT_TYPES:
            return
        new_ops: list[Operation] = []
        bias = None
        if kind == "Gemm":
            if int_attr(op, "transA", 0):
                return
            alpha, beta = float_attr(op, "alpha", 1.0), float_attr(op, "beta", 1.0)
            if int_attr(op, "transB", 0) or alpha != 1.0:
                w_op = add_weight(
                    self.ctx,
                    "gemm_weight",
                    (weight.T if int_attr(op, "transB", 0) else weight) * np.float32(alpha),
                )
                new_ops.append(w_op)
                w = w_op.result
            if len(op.args) == 3 and not isinstance(op.args[2].owner, AbsentOp):
                c = const(self.ctx, op.args[2])
                n = shape_of(w)[1]
                if c is None or c.size != n:
                    return
                b_op = add_weight(self.ctx, "gemm_bias", c.reshape(n) * np.float32(beta))
                new_ops.append(b_op)
                bias = b_op.result
        linear = LinearOp(x, w, op.outs[0].type, bias, layer=layer_name(op, op.args[1]))
        rewriter.replace(op, [*new_ops, linear], [linear.result])


def layer_name(op: NodeOp, weight: SSAValue) -> str:
    """A stable name for the layer of MatMul/Gemm ``op``, from what the exporter left: the torch
    module scope (dynamo metadata), the node's scope path (legacy exporter: ``/a/b/MatMul``),
    the weight initializer's name (``a.b.weight``), else the weight's key. peft's wrapper
    module (``<layer>.base_layer``) is named after the layer it wraps. Adapters attach by it."""
    scope = op.scope.data if op.scope is not None else ""
    node_name = op.node_name.data if op.node_name is not None else ""
    if not scope and node_name.startswith("/"):
        scope = ".".join(node_name.strip("/").split("/")[:-1])
    if not scope:
        scope = (key_of(weight) or "").removesuffix(".weight")
    return scope.removesuffix(".base_layer")


class FuseBias(_Pattern):
    """Add(nn.linear(x), b) with constant b of the output width -> the linear's bias."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "Add":
            return
        for value in op.args:
            lin = value.owner
            if not isinstance(lin, LinearOp) or lin.bias is not None or lin.lora_a is not None:
                continue
            b = other_operand(op, value)
            c = const(self.ctx, b)
            n = shape_of(lin.weight)[1]
            if c is None or c.size != n or c.shape[-1:] != (n,) or only_use(value) is not op:
                continue
            if op.outs[0].type != lin.result.type:
                continue
            if c.ndim != 1:
                b_op = add_weight(self.ctx, "bias", c.reshape(n))
                rewriter.insert(b_op)
                b = b_op.result
            fused = lin.with_operands(bias=b)
            rewriter.replace(op, fused, [fused.result])
            rewriter.erase(lin)
            return


class FuseLora(_Pattern):
    """Add(linear(x), s * linear_B(linear_A(x))) with a low inner rank -> linear with LoRA.

    The base may also be a linear on a flattened 2-D view of x reshaped back
    (``Reshape(Gemm(Reshape(x)))``, GPT-2's Conv1D under peft), while the LoRA branch runs on x
    itself: the fused linear then runs on x, and the views and the 2-D linear go.
    """

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "Add":
            return
        for base_value in op.args:
            base, x, views = self._base(base_value)
            if base is None or x is None:
                continue
            delta = other_operand(op, base_value)
            scale = 1.0
            if (mul := node(delta, "Mul")) is not None:
                for v in mul.args:
                    s = scalar(self.ctx, other_operand(mul, v))
                    if s is not None and isinstance(v.owner, LinearOp):
                        scale, delta = s, v
                        break
            lin_b = delta.owner if delta is not None else None
            if not isinstance(lin_b, LinearOp) or not _plain(lin_b):
                continue
            lin_a = lin_b.x.owner
            if not isinstance(lin_a, LinearOp) or not _plain(lin_a) or lin_a.x is not x:
                continue
            k, n = shape_of(base.weight)
            r = shape_of(lin_a.weight)[1]
            if shape_of(lin_b.weight) != (r, n) or not 2 * r <= min(k, n):
                continue
            if op.outs[0].type != base.result.type and not views:
                continue
            fused = base.with_operands(
                x=x, lora=(lin_a.weight, lin_b.weight, scale), result_type=op.outs[0].type
            )
            rewriter.replace(op, fused, [fused.result])
            for dead in views:  # outer view, 2-D linear, inner view (each now unused)
                if all(not r.uses for r in dead.results):
                    rewriter.erase(dead)
            return

    @staticmethod
    def _base(value: SSAValue) -> tuple[LinearOp | None, SSAValue | None, list[Operation]]:
        """The base linear behind ``value``, the input the LoRA branch must share, and the
        views to drop when the base runs on a flattened view."""
        owner = value.owner
        if isinstance(owner, LinearOp):
            return (owner, owner.x, []) if owner.lora_a is None else (None, None, [])
        outer = node(value, "Reshape")
        lin = outer.args[0].owner if outer is not None else None
        if outer is None or not isinstance(lin, LinearOp) or lin.lora_a is not None:
            return None, None, []
        inner = node(lin.x, "Reshape")
        if inner is None or only_use(lin.result) is not outer:
            return None, None, []
        x = inner.args[0]
        if shape_of(outer.outs[0])[:-1] != shape_of(x)[:-1] or dtype_of(x.type) != dtype_of(
            lin.x.type
        ):
            return None, None, []
        return lin, x, [outer, lin, inner]


def _plain(lin: LinearOp) -> bool:
    return lin.bias is None and lin.lora_a is None


class RaiseAttention(_Pattern):
    """MatMul(softmax(scale * q @ kt + mask), v) -> nn.attention."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "Softmax":
            return
        rank = len(shape_of(op.outs[0]))
        if int_attr(op, "axis", -1) not in (-1, rank - 1):
            return
        scores, mask, scale = op.args[0], None, 1.0
        if (add := node(scores, "Add")) is not None:
            for v in add.args:
                if node(v, "MatMul", "Mul", "Div") is not None:
                    scores, mask = v, other_operand(add, v)
                    break
            else:
                return
        if (mul := node(scores, "Mul")) is not None:
            for v in mul.args:
                if (s := scalar(self.ctx, other_operand(mul, v))) is not None:
                    scores, scale = v, s
                    break
        elif (div := node(scores, "Div")) is not None and (s := scalar(self.ctx, div.args[1])):
            scores, scale = div.args[0], 1.0 / s
        matmul = node(scores, "MatMul")
        if matmul is None or any(const(self.ctx, v) is not None for v in matmul.args):
            return
        probs = _skip_nan_guard(op.outs[0])
        consumer = only_use(probs)
        if not isinstance(consumer, NodeOp) or consumer.op_type.data != "MatMul":
            return
        if consumer.args[0] is not probs:
            return
        q, kt = matmul.args
        attention = AttentionOp(q, kt, consumer.args[1], mask, scale, consumer.outs[0].type)
        if shape_of(attention.result) != shape_of(consumer.outs[0]):
            return
        rewriter.replace(consumer, attention, [attention.result])


def _skip_nan_guard(probs: SSAValue) -> SSAValue:
    """sdpa exports guard softmax with Where(IsNaN(p), 0, p): look through it."""
    users = [use.operation for use in probs.uses]
    isnan = next((u for u in users if isinstance(u, NodeOp) and u.op_type.data == "IsNaN"), None)
    where = next((u for u in users if isinstance(u, NodeOp) and u.op_type.data == "Where"), None)
    if len(users) == 2 and isnan and where and where.args[0] is isnan.outs[0]:
        return where.outs[0] if where.args[2] is probs else probs
    return probs


class RaiseLayerNorm(_Pattern):
    """LayerNormalization over the last axis with constant scale and bias -> nn.layer_norm."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "LayerNormalization":
            return
        x = op.args[0]
        if int_attr(op, "axis", -1) not in (-1, len(shape_of(x)) - 1):
            return
        if any(r.uses for r in op.outs[1:]) or const(self.ctx, op.args[1]) is None:
            return
        beta = op.args[2] if len(op.args) > 2 else None
        if beta is not None and isinstance(beta.owner, AbsentOp):
            beta = None
        if beta is not None and const(self.ctx, beta) is None:
            return
        norm = LayerNormOp(x, op.args[1], beta, float_attr(op, "epsilon", 1e-5))
        rewriter.replace(op, norm, [norm.result, *[None] * (len(op.outs) - 1)])


class RaiseRmsNorm(_Pattern):
    """x / sqrt(mean(x^2, last axis) + eps) * gamma, in its decomposed forms -> nn.rms_norm."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "ReduceMean" or not _reduces_last_axis(self.ctx, op):
            return
        square = op.args[0]
        if (pow_ := node(square, "Pow")) is not None and scalar(self.ctx, pow_.args[1]) == 2.0:
            x = pow_.args[0]
        elif (mul := node(square, "Mul")) is not None and mul.args[0] is mul.args[1]:
            x = mul.args[0]
        else:
            return
        add = only_use(op.outs[0])
        if not isinstance(add, NodeOp) or add.op_type.data != "Add":
            return
        eps = scalar(self.ctx, other_operand(add, op.outs[0]))
        root = only_use(add.outs[0])
        if eps is None or not isinstance(root, NodeOp) or root.op_type.data != "Sqrt":
            return
        user = only_use(root.outs[0])
        if isinstance(user, NodeOp) and user.op_type.data == "Reciprocal":
            user = only_use(user.outs[0])
            if not isinstance(user, NodeOp) or user.op_type.data != "Mul" or x not in user.args:
                return
        elif not (isinstance(user, NodeOp) and user.op_type.data == "Div" and user.args[0] is x):
            return
        normed = user.outs[0]
        scale_op = only_use(normed)
        n = shape_of(x)[-1]
        gamma = None
        if isinstance(scale_op, NodeOp) and scale_op.op_type.data == "Mul":
            g = other_operand(scale_op, normed)
            c = const(self.ctx, g)
            if c is not None and c.size == n and scale_op.outs[0].type == x.type:
                gamma, user = (g if c.ndim == 1 else None), scale_op
                if gamma is None:
                    g_op = add_weight(self.ctx, "rms_gamma", c.reshape(n))
                    rewriter.insert(g_op, InsertPoint.before(user))
                    gamma = g_op.result
        if gamma is None:
            g_op = add_weight(self.ctx, "rms_gamma", np.ones(n, dtype=np.float32))
            rewriter.insert(g_op, InsertPoint.before(user))
            gamma = g_op.result
        if user.outs[0].type != x.type:
            return
        norm = RmsNormOp(x, gamma, eps)
        rewriter.replace(user, norm, [norm.result])


def _reduces_last_axis(ctx: CompileContext, op: NodeOp) -> bool:
    """A Reduce* node over the last axis only, keeping the reduced dim."""
    if not int_attr(op, "keepdims", 1):
        return False
    rank = len(shape_of(op.args[0]))
    axes = int_list(op.params.data.get("axes"))
    if axes is None and len(op.args) > 1 and (c := const(ctx, op.args[1])) is not None:
        axes = [int(a) for a in c.reshape(-1)]
    if axes is None:
        return False
    return axes in ([-1], [rank - 1])


class RaiseCenteredRmsNorm(_Pattern):
    """rms_norm(x - mean(x)) * gamma + beta is LayerNorm (the decomposed form of old exports)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: RmsNormOp, rewriter: PatternRewriter) -> None:
        sub = node(op.x, "Sub")
        if sub is None or only_use(sub.outs[0]) is None:
            return
        x, mean = sub.args
        reduce = node(mean, "ReduceMean")
        if reduce is None or reduce.args[0] is not x:
            return
        if not _reduces_last_axis(self.ctx, reduce):
            return
        beta = None
        add = only_use(op.result)
        if isinstance(add, NodeOp) and add.op_type.data == "Add":
            b = other_operand(add, op.result)
            c = const(self.ctx, b)
            if c is not None and c.shape == shape_of(op.gamma) and add.outs[0].type == x.type:
                beta = b
        norm = LayerNormOp(x, op.gamma, beta, op.epsilon.value.data)
        rewriter.replace(add if beta is not None else op, norm, [norm.result])


ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Sqrt",
    "Neg",
    "Reciprocal",
    "Exp",
}


@functools.cache
def _probes() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Probe points and each activation's values on them (torch is imported on first use:
    IR that is already raised compiles without it)."""
    import torch

    probe = torch.linspace(-6.0, 6.0, 97)
    return probe, {
        "gelu_erf": 0.5 * probe * (1.0 + torch.erf(probe / math.sqrt(2.0))),
        "gelu_tanh": 0.5
        * probe
        * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (probe + 0.044715 * probe**3))),
        "silu": probe * torch.sigmoid(probe),
    }


class RaiseActivation(_Pattern):
    """Gelu ops, and any elementwise region around Erf/Tanh/Sigmoid computing GELU or SiLU.

    The region's function is evaluated on probe points and compared with each activation, so
    every algebraic form an exporter writes is recognised.
    """

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        kind = op.op_type.data
        if kind == "Gelu":
            approx = op.params.data.get("approximate")
            name = (
                "gelu_tanh"
                if isinstance(approx, StringAttr) and approx.data == "tanh"
                else ("gelu_erf")
            )
            act = ActivationOp(op.args[0], name)
            rewriter.replace(op, act, [act.result])
            return
        if kind not in ("Erf", "Tanh", "Sigmoid"):
            return
        for x in self._inputs_above(op):
            region = self._region(x)
            if op not in region:
                continue
            exits = [r for r in region if any(u.operation not in region for u in r.outs[0].uses)]
            if len(exits) != 1 or exits[0].outs[0].type != x.type:
                continue
            found = self._identify(x, region, exits[0])
            if found:
                act = ActivationOp(x, found)
                rewriter.replace(exits[0], act, [act.result])
                return

    def _inputs_above(self, op: NodeOp) -> list[SSAValue]:
        """Candidate inputs: values in the elementwise cone above the anchor, nearest first."""
        chain: list[SSAValue] = []
        frontier = [op.args[0]]
        while frontier and len(chain) < 8:
            value = frontier.pop(0)
            if value in chain or const(self.ctx, value) is not None:
                continue
            chain.append(value)
            owner = value.owner
            if isinstance(owner, NodeOp) and owner.op_type.data in ELEMENTWISE:
                frontier.extend(owner.args)
        return chain

    def _region(self, x: SSAValue) -> list[NodeOp]:
        """Elementwise ops fed only by x, by the region and by scalar constants, in order."""
        region: list[NodeOp] = []
        inside = {x}
        frontier = [u.operation for u in x.uses]
        while frontier and len(region) < 12:
            op = frontier.pop(0)
            if op in region or not isinstance(op, NodeOp) or op.op_type.data not in ELEMENTWISE:
                continue
            if all(
                a in inside or ((c := const(self.ctx, a)) is not None and c.size == 1)
                for a in op.args
            ):
                if op.outs[0].type != x.type:
                    continue
                region.append(op)
                inside.add(op.outs[0])
                frontier.extend(u.operation for u in op.outs[0].uses)
        return sorted(region, key=_position)

    def _identify(self, x: SSAValue, region: list[NodeOp], exit_op: NodeOp) -> str | None:
        import torch

        from aimcc.runtime.onnx_ops import run_op

        probe, references = _probes()
        values: dict[SSAValue, torch.Tensor] = {x: probe}
        for op in region:
            args = [
                values.get(a)
                if a in values
                else torch.tensor(float(np.asarray(const(self.ctx, a)).reshape(())))
                for a in op.args
            ]
            values[op.outs[0]] = run_op(op.op_type.data, args, {})[0]
        out = values[exit_op.outs[0]]
        for name, reference in references.items():
            if torch.allclose(out, reference, rtol=1e-4, atol=1e-5):
                return name
        return None


def _position(op: Operation) -> int:
    block = op.parent_block()
    assert block is not None
    return block.get_operation_index(op)


class RaiseEmbedding(_Pattern):
    """Gather(constant table, ids) along axis 0 -> nn.embedding."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "Gather" or int_attr(op, "axis", 0) != 0:
            return
        table, ids = op.args
        t = const(self.ctx, table)
        if t is None or t.ndim != 2 or const(self.ctx, ids) is not None:
            return
        emb = EmbeddingOp(table, ids, op.outs[0].type)
        rewriter.replace(op, emb, [emb.result])


class RaiseRope(_Pattern):
    """x * cos + concat(-x[..., h:], x[..., :h]) * sin over the last axis -> nn.rope."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: NodeOp, rewriter: PatternRewriter) -> None:
        if op.op_type.data != "Concat" or len(op.args) != 2:
            return
        rank = len(shape_of(op.outs[0]))
        if int_attr(op, "axis", 0) not in (-1, rank - 1):
            return
        neg = node(op.args[0], "Neg")
        if neg is None:
            return
        upper, lower = node(neg.args[0], "Slice"), node(op.args[1], "Slice")
        if upper is None or lower is None or upper.args[0] is not lower.args[0]:
            return
        x = lower.args[0]
        half = shape_of(x)[-1] // 2
        if shape_of(lower.outs[0])[-1] != half or shape_of(upper.outs[0])[-1] != half:
            return
        if not self._starts_at(upper, half) or not self._starts_at(lower, 0):
            return
        rotated = op.outs[0]
        mul_sin = only_use(rotated)
        if not isinstance(mul_sin, NodeOp) or mul_sin.op_type.data != "Mul":
            return
        sin = other_operand(mul_sin, rotated)
        add = only_use(mul_sin.outs[0])
        if not isinstance(add, NodeOp) or add.op_type.data != "Add":
            return
        mul_cos = node(other_operand(add, mul_sin.outs[0]), "Mul")
        if mul_cos is None or x not in mul_cos.args or sin is None:
            return
        cos = other_operand(mul_cos, x)
        if cos is None or add.outs[0].type != x.type:
            return
        rope = RopeOp(x, cos, sin, x.type)
        rewriter.replace(add, rope, [rope.result])

    def _starts_at(self, op: NodeOp, start: int) -> bool:
        starts = const(self.ctx, op.args[1]) if len(op.args) > 1 else None
        axes = const(self.ctx, op.args[3]) if len(op.args) > 3 else None
        steps = const(self.ctx, op.args[4]) if len(op.args) > 4 else None
        if starts is None or starts.size != 1 or int(starts.reshape(())) != start:
            return False
        rank = len(shape_of(op.args[0]))
        if axes is not None and int(axes.reshape(-1)[0]) not in (-1, rank - 1):
            return False
        return steps is None or int(steps.reshape(-1)[0]) == 1


@dataclass(frozen=True)
class RaiseTransformerPass(ModulePass):
    """Rewrite recognised transformer parts into `nn` ops (see the module docstring)."""

    name = "raise"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        patterns = [
            RaiseLinear(ctx),
            FuseBias(ctx),
            FuseLora(ctx),
            RaiseAttention(ctx),
            RaiseLayerNorm(ctx),
            RaiseRmsNorm(ctx),
            RaiseCenteredRmsNorm(ctx),
            RaiseActivation(ctx),
            RaiseEmbedding(ctx),
            RaiseRope(ctx),
        ]
        PatternRewriteWalker(GreedyRewritePatternApplier(patterns)).rewrite_module(op)
