"""Small queries the rewrite patterns share: who produced a value, is it constant, what is it."""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import FloatAttr, IntegerAttr
from xdsl.ir import Operation, SSAValue

from aimcc.ir import CompileContext
from aimcc.ir.graph import NodeOp, WeightOp, key_of
from aimcc.ir.types import tensor_type


def node(value: SSAValue | None, *op_types: str) -> NodeOp | None:
    """The `graph.node` of one of ``op_types`` that produced ``value``, if any."""
    if value is None:
        return None
    owner = value.owner
    if isinstance(owner, NodeOp) and owner.op_type.data in op_types:
        return owner
    return None


def const(ctx: CompileContext, value: SSAValue | None) -> np.ndarray | None:
    """The array behind ``value`` when it is a weight."""
    key = key_of(value) if value is not None else None
    return ctx.weights[key] if key is not None else None


def scalar(ctx: CompileContext, value: SSAValue | None) -> float | None:
    """The value of a one-element constant."""
    array = const(ctx, value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def int_attr(op: NodeOp, name: str, default: int) -> int:
    attr = op.params.data.get(name)
    return attr.value.data if isinstance(attr, IntegerAttr) else default


def float_attr(op: NodeOp, name: str, default: float) -> float:
    attr = op.params.data.get(name)
    return attr.value.data if isinstance(attr, FloatAttr) else default


def only_use(value: SSAValue) -> Operation | None:
    """The single operation using ``value``, or None when it has several uses or none."""
    return value.get_user_of_unique_use()


def other_operand(op: Operation, value: SSAValue) -> SSAValue | None:
    """For a binary op using ``value``, the other operand."""
    if len(op.operands) != 2:
        return None
    a, b = op.operands
    return b if a is value else a if b is value else None


def add_weight(ctx: CompileContext, hint: str, array: np.ndarray) -> WeightOp:
    """A new weight op for a tensor computed at compile time."""
    array = np.ascontiguousarray(array)
    return WeightOp(ctx.weights.add(hint, array), tensor_type(array.shape, str(array.dtype)))
