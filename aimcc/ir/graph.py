"""`graph`: imported ONNX nodes on statically shaped tensors.

One generic op carries any ONNX node (op type plus attributes); weights are referenced by key into
the weight store kept beside the module, never printed into the IR.
"""

from __future__ import annotations

from xdsl.dialects.builtin import (
    DictionaryAttr,
    NoneType,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

NAME_ATTR = "onnx.name"  # func argument/result attribute keeping the ONNX input/output name


@irdl_attr_definition
class TensorRefAttr(ParametrizedAttribute):
    """A tensor-valued ONNX attribute, stored in the weight store under ``key``."""

    name = "graph.ref"

    key: StringAttr

    def __init__(self, key: str):
        super().__init__(StringAttr(key))


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A static tensor (initializer or folded constant) named by its weight-store key."""

    name = "graph.weight"

    key = prop_def(StringAttr)
    result = result_def(TensorType)

    assembly_format = "$key attr-dict `:` type($result)"
    traits = traits_def(Pure())

    def __init__(self, key: str, result_type: TensorType):
        super().__init__(properties={"key": StringAttr(key)}, result_types=[result_type])


@irdl_op_definition
class AbsentOp(IRDLOperation):
    """Stands for an omitted optional ONNX input, so operand positions keep their meaning."""

    name = "graph.absent"

    result = result_def(NoneType)

    assembly_format = "attr-dict"
    traits = traits_def(Pure())

    def __init__(self):
        super().__init__(result_types=[NoneType()])


@irdl_op_definition
class NodeOp(IRDLOperation):
    """Any ONNX node of the default domain: op type, attributes, operands and typed results."""

    name = "graph.node"

    op_type = prop_def(StringAttr)
    params = prop_def(DictionaryAttr)
    node_name = opt_prop_def(StringAttr)
    scope = opt_prop_def(StringAttr)  # the torch module path the exporter recorded, if any
    args = var_operand_def()
    outs = var_result_def(TensorType)

    traits = traits_def(Pure())  # ONNX ops of the default domain are side-effect free

    def __init__(
        self,
        op_type: str,
        args: list,
        result_types: list[Attribute],
        attributes: dict[str, Attribute],
        node_name: str = "",
        scope: str = "",
    ):
        props: dict[str, Attribute] = {
            "op_type": StringAttr(op_type),
            "params": DictionaryAttr(attributes),
        }
        if node_name:
            props["node_name"] = StringAttr(node_name)
        if scope:
            props["scope"] = StringAttr(scope)
        super().__init__(operands=[args], result_types=[result_types], properties=props)

    def verify_(self) -> None:
        if not self.op_type.data or not self.op_type.data[0].isupper():
            raise VerifyException(f"graph.node: bad ONNX op type '{self.op_type.data}'")


def key_of(value: SSAValue) -> str | None:
    """The weight-store key of a value produced by `graph.weight`, else None."""
    owner = value.owner
    return owner.key.data if isinstance(owner, WeightOp) else None


Graph = Dialect("graph", [WeightOp, AbsentOp, NodeOp], [TensorRefAttr])
