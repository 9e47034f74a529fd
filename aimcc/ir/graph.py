"""`graph`: imported ONNX nodes on statically shaped tensors.

One generic op carries any ONNX node (op type plus attributes); weights are referenced by key into
the weight store kept beside the module. In text, a small weight also carries its value
(``graph.weight "key" : tensor<4xf32> = dense<...>``, see :mod:`aimcc.ir.text`), so a file is a
complete test case; large ones stay in an .npz beside the file.
"""

from __future__ import annotations

from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
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
from xdsl.parser import Parser
from xdsl.printer import Printer
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
    """A static tensor (initializer or folded constant) named by its weight-store key.

    ``value`` holds the tensor only in text (as memref.global's initial value:
    ``graph.weight "half" : tensor<f32> = dense<5.000000e-01>``): reading IR moves it into the
    weight store, printing puts small ones back (:mod:`aimcc.ir.text`); passes see keys only.
    """

    name = "graph.weight"

    key = prop_def(StringAttr)
    value = opt_prop_def(DenseIntOrFPElementsAttr)
    result = result_def(TensorType)

    traits = traits_def(Pure())

    def __init__(self, key: str, result_type: TensorType):
        super().__init__(properties={"key": StringAttr(key)}, result_types=[result_type])

    @classmethod
    def parse(cls, parser: Parser) -> WeightOp:
        key = parser.parse_str_literal(" (the weight's key)")
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        at = parser.pos
        typ = parser.parse_type()
        if not isinstance(typ, TensorType):
            parser.raise_error(f"graph.weight: expected a tensor type, got {typ}", at)
        props: dict[str, Attribute] = {"key": StringAttr(key)}
        if parser.parse_optional_punctuation("=") is not None:
            parser.parse_keyword("dense", " (a weight's value is a dense<...> literal)")
            props["value"] = parser.parse_dense_int_or_fp_elements_attr(typ)
        return cls.build(properties=props, attributes=attrs, result_types=[typ])

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.key.data)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)
        if self.value is not None:
            printer.print_string(" = ")
            self.value.print_without_type(printer)

    def verify_(self) -> None:
        if self.value is not None and self.value.get_type() != self.result.type:
            raise VerifyException(
                f"graph.weight '{self.key.data}': value of type {self.value.get_type()} for a "
                f"result of type {self.result.type}"
            )


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
