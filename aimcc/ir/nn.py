"""`nn`: the transformer parts the raise pass recognises, independent of where they will run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    Float32Type,
    FloatAttr,
    FunctionType,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from aimcc.ir.types import parse_typed_operands, shape_of


def f32(value: float) -> FloatAttr:
    return FloatAttr(value, Float32Type())


def _expect(cond: bool, op: IRDLOperation, what: str) -> None:
    if not cond:
        raise VerifyException(f"{op.name}: {what}")


@irdl_op_definition
class LinearOp(IRDLOperation):
    """y = x @ weight (+ bias) (+ lora_scale * x @ lora_a @ lora_b): one static-weight layer.

    The adapter stays attached to its layer so partitioning can place both halves together
    (analog weight, digital LoRA) or merge them (fully-analog baseline).
    """

    name = "nn.linear"

    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    lora_a = opt_operand_def(TensorType)
    lora_b = opt_operand_def(TensorType)
    lora_scale = opt_prop_def(FloatAttr)
    layer = opt_prop_def(StringAttr)  # a stable name from the ONNX file: adapters attach by it
    digital = opt_prop_def(UnitAttr)  # keep on the clusters (e.g. a task head swapped per task)
    result = result_def(TensorType)

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    traits = traits_def(Pure())
    # %y = nn.linear %x, %w bias %b lora(%a, %b) {lora_scale = 2.0 : f32, layer = "proj"}
    #      : (x, w, b, a, b types) -> type   (a custom format: two optional groups of operands
    # whose types follow in one list are ambiguous to the declarative format)

    def __init__(
        self,
        x: SSAValue,
        weight: SSAValue,
        result_type: Attribute,
        bias: SSAValue | None = None,
        lora: tuple[SSAValue, SSAValue, float] | None = None,
        layer: str | None = None,
        digital: bool = False,
    ):
        a, b, scale = lora if lora else (None, None, None)
        props: dict[str, Attribute] = {"lora_scale": f32(scale)} if lora else {}
        if layer:
            props["layer"] = StringAttr(layer)
        if digital:
            props["digital"] = UnitAttr()
        super().__init__(
            operands=[x, weight, bias, a, b], result_types=[result_type], properties=props
        )

    @classmethod
    def parse(cls, parser: Parser) -> LinearOp:
        names = [parser.parse_unresolved_operand()]
        parser.parse_punctuation(",")
        names.append(parser.parse_unresolved_operand())
        has_bias = parser.parse_optional_keyword("bias") is not None
        if has_bias:
            names.append(parser.parse_unresolved_operand())
        has_lora = parser.parse_optional_keyword("lora") is not None
        if has_lora:
            parser.parse_punctuation("(")
            names.append(parser.parse_unresolved_operand())
            parser.parse_punctuation(",")
            names.append(parser.parse_unresolved_operand())
            parser.parse_punctuation(")")
        operands, result, attrs = parse_typed_operands(parser, names, "nn.linear")
        values = iter(operands)
        x, weight = next(values), next(values)
        bias = next(values) if has_bias else None
        a, b = (next(values), next(values)) if has_lora else (None, None)
        props = {k: v for k, v in attrs.items() if k in cls.get_irdl_definition().properties}
        others = {k: v for k, v in attrs.items() if k not in props}
        return cls.build(
            operands=[x, weight, bias, a, b],
            result_types=[result],
            properties=props,
            attributes=others,
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.x)
        printer.print_string(", ")
        printer.print_operand(self.weight)
        if self.bias is not None:
            printer.print_string(" bias ")
            printer.print_operand(self.bias)
        if self.lora_a is not None and self.lora_b is not None:
            printer.print_string(" lora(")
            printer.print_operand(self.lora_a)
            printer.print_string(", ")
            printer.print_operand(self.lora_b)
            printer.print_string(")")
        props = {k: v for k, v in self.properties.items() if k != "operandSegmentSizes"}
        printer.print_op_attributes({**props, **self.attributes})
        printer.print_string(" : ")
        printer.print_attribute(
            FunctionType.from_lists([o.type for o in self.operands], [self.result.type])
        )

    @property
    def layer_name(self) -> str | None:
        return self.layer.data if self.layer is not None else None

    def with_operands(
        self,
        x: SSAValue | None = None,
        bias: SSAValue | None = None,
        lora: tuple[SSAValue, SSAValue, float] | None = None,
        result_type: Attribute | None = None,
        digital: bool = False,
    ) -> LinearOp:
        """A copy with some operands replaced, keeping the weight and name (and placement,
        unless ``digital`` moves it to the clusters)."""
        old_lora = None
        if self.lora_a is not None and self.lora_b is not None and self.lora_scale is not None:
            old_lora = (self.lora_a, self.lora_b, self.lora_scale.value.data)
        return LinearOp(
            x or self.x,
            self.weight,
            result_type or self.result.type,
            bias or self.bias,
            lora or old_lora,
            self.layer_name,
            digital or self.digital is not None,
        )

    def verify_(self) -> None:
        w = shape_of(self.weight)
        _expect(len(w) == 2, self, f"weight must be 2-D [K, N], got {w}")
        k, n = w
        _expect(
            shape_of(self.x)[-1:] == (k,), self, f"input {shape_of(self.x)} does not end in K={k}"
        )
        _expect(shape_of(self.result) == (*shape_of(self.x)[:-1], n), self, "result shape mismatch")
        if self.bias is not None:
            _expect(shape_of(self.bias) == (n,), self, f"bias must be [{n}]")
        has_lora = (self.lora_a is not None, self.lora_b is not None, self.lora_scale is not None)
        _expect(len(set(has_lora)) == 1, self, "lora_a, lora_b and lora_scale go together")
        if self.lora_a is not None and self.lora_b is not None:
            a, b = shape_of(self.lora_a), shape_of(self.lora_b)
            _expect(len(a) == 2 and a[0] == k, self, f"lora_a must be [{k}, R], got {a}")
            _expect(b == (a[1], n), self, f"lora_b must be [{a[1]}, {n}], got {b}")


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """softmax(scale * q @ kt + mask) @ v over the last two axes (heads folded into the batch)."""

    name = "nn.attention"

    q = operand_def(TensorType)
    kt = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    scale = prop_def(FloatAttr)
    result = result_def(TensorType)

    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$q `,` $kt `,` $v (`mask` $mask^)? attr-dict `:` `(` type($q) `,` type($kt) `,` "
        "type($v) (`,` type($mask)^)? `)` `->` type($result)"
    )

    def __init__(
        self,
        q: SSAValue,
        kt: SSAValue,
        v: SSAValue,
        mask: SSAValue | None,
        scale: float,
        result_type: Attribute,
    ):
        super().__init__(
            operands=[q, kt, v, mask], result_types=[result_type], properties={"scale": f32(scale)}
        )

    def verify_(self) -> None:
        q, kt, v = shape_of(self.q), shape_of(self.kt), shape_of(self.v)
        _expect(min(len(q), len(kt), len(v)) >= 2, self, "q, kt, v need at least 2 dims")
        _expect(q[-1] == kt[-2], self, f"q {q} and kt {kt} disagree on the head dim")
        _expect(kt[-1] == v[-2], self, f"kt {kt} and v {v} disagree on the key length")


@irdl_op_definition
class LayerNormOp(IRDLOperation):
    """Normalise over the last axis, then scale by gamma and shift by beta."""

    name = "nn.layer_norm"

    T: ClassVar = VarConstraint("T", base(TensorType))
    x = operand_def(T)
    gamma = operand_def(TensorType)
    beta = opt_operand_def(TensorType)
    epsilon = prop_def(FloatAttr)
    result = result_def(T)

    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$x `,` $gamma (`,` $beta^)? attr-dict `:` type($x) `,` type($gamma) (`,` type($beta)^)?"
    )

    def __init__(self, x: SSAValue, gamma: SSAValue, beta: SSAValue | None, epsilon: float):
        super().__init__(
            operands=[x, gamma, beta], result_types=[x.type], properties={"epsilon": f32(epsilon)}
        )

    def verify_(self) -> None:
        n = shape_of(self.x)[-1:]
        _expect(shape_of(self.gamma) == n, self, f"gamma must be {n}")
        if self.beta is not None:
            _expect(shape_of(self.beta) == n, self, f"beta must be {n}")


@irdl_op_definition
class RmsNormOp(IRDLOperation):
    """x / sqrt(mean(x^2) + epsilon) * gamma over the last axis."""

    name = "nn.rms_norm"

    T: ClassVar = VarConstraint("T", base(TensorType))
    x = operand_def(T)
    gamma = operand_def(TensorType)
    epsilon = prop_def(FloatAttr)
    result = result_def(T)

    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$x `,` $gamma attr-dict `:` type($x) `,` type($gamma)"

    def __init__(self, x: SSAValue, gamma: SSAValue, epsilon: float):
        super().__init__(
            operands=[x, gamma], result_types=[x.type], properties={"epsilon": f32(epsilon)}
        )

    def verify_(self) -> None:
        _expect(
            shape_of(self.gamma) == shape_of(self.x)[-1:], self, "gamma must match the last axis"
        )


ACTIVATIONS = ("gelu_erf", "gelu_tanh", "silu")


@irdl_op_definition
class ActivationOp(IRDLOperation):
    """An elementwise activation recognised from any of its exported forms."""

    name = "nn.activation"

    T: ClassVar = VarConstraint("T", base(TensorType))
    x = operand_def(T)
    kind = prop_def(StringAttr)
    result = result_def(T)

    traits = traits_def(Pure())
    assembly_format = "$kind $x attr-dict `:` type($x)"

    def __init__(self, x: SSAValue, kind: str):
        super().__init__(operands=[x], result_types=[x.type], properties={"kind": StringAttr(kind)})

    def verify_(self) -> None:
        _expect(self.kind.data in ACTIVATIONS, self, f"unknown activation '{self.kind.data}'")


@irdl_op_definition
class EmbeddingOp(IRDLOperation):
    """Row gather from a static table: digital, since a gather is not a matrix-vector product."""

    name = "nn.embedding"

    table = operand_def(TensorType)
    ids = operand_def(TensorType)
    result = result_def(TensorType)

    traits = traits_def(Pure())
    assembly_format = "$table `[` $ids `]` attr-dict `:` functional-type(operands, results)"

    def __init__(self, table: SSAValue, ids: SSAValue, result_type: Attribute):
        super().__init__(operands=[table, ids], result_types=[result_type])

    def verify_(self) -> None:
        t = shape_of(self.table)
        _expect(len(t) == 2, self, f"table must be 2-D, got {t}")
        _expect(shape_of(self.result) == (*shape_of(self.ids), t[1]), self, "result shape mismatch")


@irdl_op_definition
class RopeOp(IRDLOperation):
    """Rotary position embedding: x * cos + rotate_half(x) * sin."""

    name = "nn.rope"

    T: ClassVar = VarConstraint("T", base(TensorType))
    x = operand_def(T)
    cos = operand_def(TensorType)
    sin = operand_def(TensorType)
    result = result_def(T)

    traits = traits_def(Pure())
    assembly_format = "$x `,` $cos `,` $sin attr-dict `:` type($x) `,` type($cos) `,` type($sin)"

    def __init__(self, x: SSAValue, cos: SSAValue, sin: SSAValue, result_type: Attribute):
        super().__init__(operands=[x, cos, sin], result_types=[result_type])

    def verify_(self) -> None:
        _expect(shape_of(self.x)[-1] % 2 == 0, self, "the rotated axis must have even length")


NN_OPS: Sequence[type[IRDLOperation]] = (
    LinearOp,
    AttentionOp,
    LayerNormOp,
    RmsNormOp,
    ActivationOp,
    EmbeddingOp,
    RopeOp,
)
NN = Dialect("nn", list(NN_OPS), [])
