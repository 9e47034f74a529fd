"""fuse-bias: fold a linear layer's bias into its analog tiles' post-processing.

The tiles' periphery already applies a digital affine scale to every column after the ADC
(docs/REFERENCES.md "Analog tile", the DAC and ADC row); adding one constant per column
there costs no extra pass over the output. So a ``bias_add`` of a constant bias on an analog layer's
result, directly or after its LoRA (``lora`` is ``y + s * x A B``, linear in ``y``), is removed
and the weight becomes the ``bias`` operand of the ``aimc.accumulate`` (a small one prints its
value in text, as any weight: the IR after fuse-bias stays self-contained). The schedule,
the manifest, the RISC-V backend and the runtime all follow: no cluster stage, no kernel
call, no function; the runtime's analog step adds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import WeightOp
from aimcc.ir.types import shape_of


@dataclass(frozen=True)
class FuseBiasPass(ModulePass):
    name = "fuse-bias"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        for add in [o for o in op.walk() if isinstance(o, KernelOp)]:
            if add.kind.data != "bias_add" or len(add.args) != 2:
                continue
            y, bias = add.args
            if not isinstance(bias.owner, WeightOp) or len(shape_of(bias)) != 1:
                continue
            producer = y.owner
            if isinstance(producer, KernelOp) and producer.kind.data == "lora":
                if not y.has_one_use():
                    continue
                producer = producer.args[1].owner  # the layer's analog output the LoRA adds to
                if not isinstance(producer, AccumulateOp) or not producer.result.has_one_use():
                    continue
            if not isinstance(producer, AccumulateOp) or producer.bias is not None:
                continue
            if shape_of(bias)[0] != shape_of(producer.result)[-1]:
                continue
            add.outs[0].replace_all_uses_with(y)
            add.detach()
            add.erase()
            weight = bias.owner
            if weight.parent_block() is producer.parent_block() and not weight.is_before_in_block(
                producer
            ):  # a weight has no operands: it moves up to the layer that now reads it
                weight.detach()
                producer.parent_block().insert_op_before(weight, producer)
            producer.set_bias(bias)
