"""`digital`: kernels for the RISC-V clusters, one generic op named by kernel kind.

Kernels are library calls with fixed semantics (like linalg's named ops); the kind decides the
operands and attributes, checked by the verifier against :data:`KERNELS`.
"""

from __future__ import annotations

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, TensorType
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    var_operand_def,
    var_result_def,
)
from xdsl.utils.exceptions import VerifyException

# kind -> (operand count range, required attributes). "onnx.<OpType>" kinds run any ONNX op.
KERNELS: dict[str, tuple[range, tuple[str, ...]]] = {
    "matmul": (range(2, 3), ()),
    "lora": (range(4, 5), ("scale",)),  # (x, y, A, B) -> y + scale * x @ A @ B
    "bias_add": (range(2, 3), ()),
    "attention": (range(3, 5), ("scale",)),  # (q, kt, v[, mask])
    "layer_norm": (range(2, 4), ("epsilon",)),
    "rms_norm": (range(2, 3), ("epsilon",)),
    "gelu_erf": (range(1, 2), ()),
    "gelu_tanh": (range(1, 2), ()),
    "silu": (range(1, 2), ()),
    "embedding": (range(2, 3), ()),  # (table, ids)
    "rope": (range(3, 4), ()),  # (x, cos, sin)
}


@irdl_op_definition
class KernelOp(IRDLOperation):
    """One kernel call on a RISC-V cluster; ``cluster`` is set by placement."""

    name = "digital.kernel"

    kind = prop_def(StringAttr)
    params = prop_def(DictionaryAttr)
    cluster = opt_prop_def(IntegerAttr)
    args = var_operand_def()
    outs = var_result_def(TensorType)

    def __init__(
        self,
        kind: str,
        args: list[SSAValue],
        result_types: list[Attribute],
        attributes: dict[str, Attribute] | None = None,
    ):
        super().__init__(
            operands=[args],
            result_types=[result_types],
            properties={"kind": StringAttr(kind), "params": DictionaryAttr(attributes or {})},
        )

    def verify_(self) -> None:
        kind = self.kind.data
        if kind.startswith("onnx."):
            return
        if kind not in KERNELS:
            raise VerifyException(f"digital.kernel: unknown kind '{kind}'")
        arity, required = KERNELS[kind]
        if len(self.args) not in arity:
            raise VerifyException(f"digital.kernel '{kind}': {len(self.args)} operands")
        missing = [a for a in required if a not in self.params.data]
        if missing:
            raise VerifyException(f"digital.kernel '{kind}': missing attribute '{missing[0]}'")


Digital = Dialect("digital", [KernelOp], [])
