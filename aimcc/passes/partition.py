"""partition: decide what runs on analog tiles and what on the RISC-V clusters.

Targets:
- ``hybrid``: static-weight linears on tiles; LoRA, biases and everything else digital
  (the AHWA-LoRA deployment: analog weights fixed, adapters digital);
- ``aimc``: as hybrid but each LoRA adapter merged into its analog weights (the fully-analog
  baseline the paper compares against);
- ``digital``: every op a kernel on the clusters (the digital baseline).

``digital`` (option) keeps the linears it names on the clusters under any target: the
projections most sensitive to analog noise (``aimcc sensitivity``; the compiler's
``--sensitivity S.json --keep-digital K`` / ``--error-budget E`` choose them, docs/SENSITIVITY.md).
Patterns as ``--digital-layers``: comma-separated names, dot-suffixes or globs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Attribute, Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from aimcc.adapters import listing, matches, split_pattern
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import MatmulOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import NodeOp, key_of
from aimcc.ir.nn import (
    ActivationOp,
    AttentionOp,
    EmbeddingOp,
    LayerNormOp,
    LinearOp,
    RmsNormOp,
    RopeOp,
)
from aimcc.passes.matching import add_weight, const

TARGETS = ("hybrid", "aimc", "digital")
TARGET_ATTR = "aimc.target"  # module attribute: the target partition mapped the model for


@dataclass
class PartitionLinear(RewritePattern):
    ctx: CompileContext
    target: str
    digital: tuple[str, ...] = ()

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: LinearOp, rewriter: PatternRewriter) -> None:
        new_ops: list[Operation] = []
        weight = op.weight
        lora = op.lora_a is not None and op.lora_b is not None and op.lora_scale is not None
        if self.target == "aimc" and lora:
            merged = add_weight(self.ctx, f"{key_of(op.weight)}+lora", self._merged(op))
            new_ops.append(merged)
            weight, lora = merged.result, False
        name = op.layer_name
        named: dict[str, Attribute] = {"layer": StringAttr(name)} if name else {}
        keep = op.digital is not None or any(matches(p, name or "") for p in self.digital)
        if self.target == "digital" or keep:
            y: Operation = KernelOp("matmul", [op.x, weight], [op.result.type], named)
        else:
            y = MatmulOp(op.x, weight, op.result.type, name)
        new_ops.append(y)
        if lora:
            assert op.lora_a is not None and op.lora_b is not None and op.lora_scale is not None
            y = KernelOp(
                "lora",
                [op.x, y.results[0], op.lora_a, op.lora_b],
                [op.result.type],
                {"scale": op.lora_scale, **named},
            )
            new_ops.append(y)
        if op.bias is not None:
            y = KernelOp("bias_add", [y.results[0], op.bias], [op.result.type], named)
            new_ops.append(y)
        rewriter.replace(op, new_ops, [y.results[0]])

    def _merged(self, op: LinearOp) -> np.ndarray:
        w, a, b = (const(self.ctx, v) for v in (op.weight, op.lora_a, op.lora_b))
        assert w is not None and a is not None and b is not None, "nn.linear weights are constant"
        assert op.lora_scale is not None
        delta = op.lora_scale.value.data * (a.astype(np.float64) @ b.astype(np.float64))
        return (w.astype(np.float64) + delta).astype(w.dtype)


class KernelsForTheRest(RewritePattern):
    """Every other `nn` op and every generic ONNX node becomes a digital kernel."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        params: dict[str, Attribute] = {}
        if isinstance(op, NodeOp):
            kind, params = f"onnx.{op.op_type.data}", dict(op.params.data)
        elif isinstance(op, AttentionOp):
            kind, params = "attention", {"scale": op.scale}
        elif isinstance(op, LayerNormOp | RmsNormOp):
            kind = "layer_norm" if isinstance(op, LayerNormOp) else "rms_norm"
            params = {"epsilon": op.epsilon}
        elif isinstance(op, ActivationOp):
            kind = op.kind.data
        elif isinstance(op, EmbeddingOp):
            kind = "embedding"
        elif isinstance(op, RopeOp):
            kind = "rope"
        else:
            return
        kernel = KernelOp(kind, list(op.operands), [r.type for r in op.results], params)
        rewriter.replace(op, kernel, list(kernel.results))


@dataclass(frozen=True)
class PartitionPass(ModulePass):
    """Map `nn` and `graph` ops onto `aimc` (analog) and `digital` (RISC-V) ops."""

    name = "partition"

    target: str = "hybrid"
    digital: str = ""  # linears kept on the clusters (patterns, as --digital-layers)

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        if self.target not in TARGETS:
            raise AimccError(f"unknown target '{self.target}' (choose {', '.join(TARGETS)})")
        patterns = tuple(split_pattern(self.digital))
        names = [o.layer_name or "" for o in op.walk() if isinstance(o, LinearOp)]
        for item in patterns:
            if not any(matches(item, n) for n in names):
                raise AimccError(
                    f"partition: digital '{item}' matches no linear layer (layers: "
                    f"{listing(names)})"
                )
        pattern = PartitionLinear(ctx, self.target, patterns)
        walker = PatternRewriteWalker(pattern, apply_recursively=False)
        walker.rewrite_module(op)
        PatternRewriteWalker(KernelsForTheRest(), apply_recursively=False).rewrite_module(op)
        op.attributes[TARGET_ATTR] = StringAttr(self.target)  # hybrid and aimc IR can look alike
