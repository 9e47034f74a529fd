"""Tensor element types: the one mapping between numpy dtypes and xDSL element types."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.parser import Parser, UnresolvedOperand

from aimcc.errors import AimccError

_TO_XDSL: dict[str, Attribute] = {
    "float32": Float32Type(),
    "float16": Float16Type(),
    "bfloat16": BFloat16Type(),
    "float64": Float64Type(),
    "int64": IntegerType(64),
    "int32": IntegerType(32),
    "int16": IntegerType(16),
    "int8": IntegerType(8),
    "uint8": IntegerType(8, Signedness.UNSIGNED),
    "bool": IntegerType(1),
}
_FROM_XDSL = {v: k for k, v in _TO_XDSL.items()}


def tensor_type(shape: Sequence[int], dtype: str) -> TensorType:
    """A static tensor type for a numpy dtype name."""
    if dtype not in _TO_XDSL:
        raise AimccError(f"unsupported tensor element type '{dtype}'")
    return TensorType(_TO_XDSL[dtype], list(shape))


def dtype_of(typ: Attribute) -> str:
    """The numpy dtype name of a tensor type's elements."""
    assert isinstance(typ, TensorType)
    return _FROM_XDSL[typ.element_type]


def shape_of(value: SSAValue | Attribute) -> tuple[int, ...]:
    """The static shape of a tensor value or tensor type."""
    typ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


def parse_typed_operands(
    parser: Parser, names: list[UnresolvedOperand], op: str
) -> tuple[list[SSAValue], Attribute, dict[str, Attribute]]:
    """The tail of a custom op format, ``{attrs} : (operand types) -> result type``: the
    operands ``names`` resolved against it, the result type and the attribute dictionary."""
    attrs = parser.parse_optional_attr_dict()
    parser.parse_punctuation(":")
    at = parser.pos
    typ = parser.parse_function_type()
    if len(typ.inputs) != len(names) or len(typ.outputs) != 1:
        parser.raise_error(f"{op}: {len(names)} operands and one result, but the type is {typ}", at)
    return list(parser.resolve_operands(names, typ.inputs.data, at)), typ.outputs.data[0], attrs
