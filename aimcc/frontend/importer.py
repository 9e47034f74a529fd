"""Import an ONNX graph into the `graph` dialect with static tensor types.

One walk over the nodes does three jobs with the runtime's own op library, so the compiler and
the runtime cannot disagree on semantics:
- a node whose inputs are all constant is evaluated (constant folding: shape arithmetic,
  transposed or dequantised weights, masks and position tables all become plain weights);
- any other node is evaluated on zero-filled stand-ins for the graph inputs, which gives its
  result shapes and dtypes (one run of the model on zeros; torch's "meta" tensors would avoid
  the arithmetic but cost seconds of one-time initialisation per process);
- only nodes that the graph outputs depend on are emitted.

:mod:`aimcc.frontend.fold` evaluates the nodes numpy gives the same answer for; the others go
to the op library, and torch is imported only then (the common models need none of it).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from aimcc.errors import AimccError, first_line
from aimcc.frontend import fold
from aimcc.frontend.load import LoadedModel, graph_inputs
from aimcc.frontend.proto import (
    ModelProto,
    NodeProto,
    ValueInfoProto,
    attrs_from_node,
    np_dtype,
    type_name,
)
from aimcc.frontend.validate import check_input_sizes, memory_limit
from aimcc.ir.attrs import int_array
from aimcc.ir.graph import NAME_ATTR, AbsentOp, NodeOp, TensorRefAttr, WeightOp
from aimcc.ir.types import tensor_type
from aimcc.ir.weights import WeightStore
from aimcc.runtime.onnx_meta import ELEM_TYPES

if TYPE_CHECKING:
    import torch

_Op = TypeVar("_Op", bound=Operation)
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
OPSET13_AXIS_OPS = ("Softmax", "LogSoftmax", "Hardmax")
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def import_graph(
    loaded: LoadedModel, input_shapes: dict[str, tuple[int, ...]]
) -> tuple[ModuleOp, WeightStore]:
    """Fold, infer and import ``loaded`` as ``func.func @main`` in a module."""
    model = loaded.proto
    graph = model.graph
    opset = _check_opsets(model)
    weights = WeightStore()
    values: dict[str, np.ndarray] = dict(loaded.initializers)
    constant: set[str] = set(values)
    inputs = graph_inputs(model)
    check_input_sizes(input_shapes, model)
    limit, held = memory_limit(), 0
    for inp in inputs:
        dtype = np_dtype(inp.type.tensor_type.elem_type)
        values[inp.name] = np.zeros(input_shapes[inp.name], dtype)

    needed = _live_nodes(graph)
    for index, node in enumerate(graph.node):
        if index not in needed:
            continue
        where = f"node '{node.name or index}' ({node.op_type})"
        if node.domain not in ("", "ai.onnx") or not _supported(node.op_type):
            domain = f" in domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
            raise AimccError(f"{where}: unsupported ONNX op '{node.op_type}'{domain}")
        if node.op_type in OPSET13_AXIS_OPS and opset < 13:
            _check_legacy_axis(node, values[node.input[0]].ndim, where)
        try:
            attrs = attrs_from_node(node)
        except (ValueError, NotImplementedError) as exc:
            raise AimccError(f"{where}: unsupported attribute: {exc}") from None
        args = []
        for name in node.input:
            if name and name not in values:
                raise AimccError(f"{where}: input '{name}' is not defined before use")
            args.append(values[name] if name else None)
        foldable = node.op_type not in NONDETERMINISTIC and all(
            name == "" or name in constant for name in node.input
        )
        try:
            outs = _evaluate(node.op_type, args, attrs, foldable)
            foldable = foldable or node.op_type in ("Shape", "Size")  # static shapes are known
        except AimccError:
            raise
        except Exception as exc:  # an op rejecting its inputs: report it where it happened
            reason = first_line(exc)
            if isinstance(exc, MemoryError) or "can't allocate memory" in reason:
                reason = "out of memory: its result does not fit this machine"
            raise AimccError(
                f"{where}: {reason} (with input shapes {_shapes(input_shapes)}; see --input-shape)"
            ) from None
        held += sum(out.nbytes for out in outs)
        if held > limit:
            raise AimccError(
                f"{where}: the model's values need more than {limit / 2**30:.3g} GiB by here, "
                f"more than fit this machine (with input shapes {_shapes(input_shapes)}; "
                "see --input-shape)"
            )
        for name, out in zip(node.output, outs, strict=False):
            if name:
                values[name] = out
                if foldable:
                    constant.add(name)

    for info in (*graph.value_info, *graph.output):  # declared types must be the computed ones
        declared = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0
        computed = values[info.name].dtype.name if info.name in values else None
        if declared and computed is not None and ELEM_TYPES.get(declared) != computed:
            raise AimccError(
                f"value '{info.name}' is declared {type_name(declared)} but computes {computed}"
            )
    module = _build_module(model, inputs, needed, values, constant, weights)
    return module, weights


def _supported(op_type: str) -> bool:
    if op_type in fold.EXACT or op_type in fold.TYPED:
        return True
    from aimcc.runtime.onnx_ops import supported_ops

    return op_type in supported_ops()


def _evaluate(
    op_type: str, args: list[np.ndarray | None], attrs: dict[str, Any], constant: bool
) -> list[np.ndarray]:
    """The node's results: with numpy where that gives the op library's answer, else with the
    op library (the first such node imports torch)."""
    try:
        return fold.evaluate(op_type, args, attrs, constant)
    except fold.Defer:
        pass
    from aimcc.runtime.onnx_ops import run_op, to_numpy, to_torch

    tensors = [None if a is None else to_torch(a) for a in args]
    if not constant and op_type in _CONTRACTED_AXES:
        tensors = _without_contraction(op_type, tensors, attrs)
    return [to_numpy(out) for out in run_op(op_type, tensors, attrs)]


def _build_module(
    model: ModelProto,
    inputs: list[ValueInfoProto],
    needed: set[int],
    values: dict[str, np.ndarray],
    constant: set[str],
    weights: WeightStore,
) -> ModuleOp:
    graph = model.graph
    arg_types = [_type_of(values[i.name]) for i in inputs]
    block = Block(arg_types=arg_types)
    ssa: dict[str, SSAValue] = {}
    for inp, arg in zip(inputs, block.args, strict=True):
        arg.name_hint = _hint(inp.name)
        ssa[inp.name] = arg
    absent: list[SSAValue] = []

    def value_of(name: str) -> SSAValue:
        if not name:
            if not absent:
                absent.append(_emit(block, AbsentOp()).result)
            return absent[0]
        if name not in ssa:  # a constant: becomes a weight on first use
            op = _emit(block, WeightOp(weights.add(name, values[name]), _type_of(values[name])))
            op.result.name_hint = _hint(name)
            ssa[name] = op.result
        return ssa[name]

    for index, node in enumerate(graph.node):
        if index not in needed or all(o in constant for o in node.output if o):
            continue
        operands = [value_of(name) for name in node.input]
        results = [o for o in node.output if o]
        attrs = _xdsl_attrs(attrs_from_node(node), node.name or node.op_type, weights)
        types = [_type_of(values[o]) for o in results]
        op = _emit(block, NodeOp(node.op_type, operands, types, attrs, node.name, _scope(node)))
        for name, result in zip(results, op.outs, strict=True):
            result.name_hint = _hint(name)
            ssa[name] = result
    outputs = [value_of(o.name) for o in graph.output]
    block.add_op(func.ReturnOp(*outputs))
    function = func.FuncOp(
        "main",
        (arg_types, [v.type for v in outputs]),
        Region(block),
        arg_attrs=ArrayAttr([DictionaryAttr({NAME_ATTR: StringAttr(i.name)}) for i in inputs]),
        res_attrs=ArrayAttr(
            [DictionaryAttr({NAME_ATTR: StringAttr(o.name)}) for o in graph.output]
        ),
    )
    return ModuleOp([function])


def _scope(node: NodeProto) -> str:
    """The torch module a node came from, as torch's dynamo exporter records it in the node's
    metadata (a Python list literal of nested scopes ending in the op's own name); layer names
    for adapters come from it."""
    for entry in node.metadata_props:
        if entry.key == SCOPES_KEY:
            try:
                scopes = ast.literal_eval(entry.value)  # literals only: never executes code
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return ""
            if isinstance(scopes, list) and len(scopes) >= 2 and isinstance(scopes[-2], str):
                return scopes[-2]
    return ""


def _without_contraction(
    op_type: str, args: list[torch.Tensor | None], attrs: dict[str, Any]
) -> list[torch.Tensor | None]:
    """The inputs of a MatMul or Gemm with the contracted axis emptied, when the lengths agree:
    the op then gives its result's shape and dtype for the cost of filling it (the values of
    non-constant tensors are never used, and these products were half the import time)."""
    a, b = args[0], args[1]
    assert a is not None and b is not None
    a_axis, b_axis = _CONTRACTED_AXES[op_type](a, b, attrs)
    if a.shape[a_axis] != b.shape[b_axis]:
        return args  # the op reports the mismatch
    return [a.narrow(a_axis, 0, 0), b.narrow(b_axis, 0, 0), *args[2:]]


# op type -> (contracted axis of A, of B)
_CONTRACTED_AXES: dict[
    str, Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], tuple[int, int]]
] = {
    "MatMul": lambda a, b, attrs: (-1, -2 if b.ndim > 1 else 0),
    "Gemm": lambda a, b, attrs: (
        0 if attrs.get("transA", 0) else 1,
        1 if attrs.get("transB", 0) else 0,
    ),
}


def _emit(block: Block, op: _Op) -> _Op:
    block.add_op(op)
    return op


def _shapes(input_shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in input_shapes.items())


def _check_opsets(model: ModelProto) -> int:
    """The default domain's opset version, checked against the supported range."""
    version = 0
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            version = opset.version
            if not 7 <= version <= 23:
                raise AimccError(f"unsupported ONNX opset {version} (supported: 7 to 23)")
    if model.graph.sparse_initializer:
        raise AimccError("sparse initializers are not supported")
    return version


def _check_legacy_axis(node: NodeProto, rank: int, where: str) -> None:
    """Before opset 13 these ops flattened the input from ``axis`` on; only the last axis agrees."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if axis not in (-1, rank - 1):
        raise AimccError(
            f"{where}: opset < 13 semantics on axis {axis} of a rank-{rank} input "
            "are not supported (upgrade the model to opset 13+)"
        )


def _live_nodes(graph: Any) -> set[int]:
    """Indices of the nodes the graph outputs depend on."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    live: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        index = producer.get(stack.pop())
        if index is not None and index not in live:
            live.add(index)
            stack.extend(n for n in graph.node[index].input if n)
    return live


def _xdsl_attrs(attrs: dict[str, Any], where: str, weights: WeightStore) -> dict[str, Attribute]:
    out: dict[str, Attribute] = {}
    for name, value in sorted(attrs.items()):
        out[name] = _xdsl_attr(value, f"{where}.{name}", weights)
    return out


def _xdsl_attr(value: Any, hint: str, weights: WeightStore) -> Attribute:
    if isinstance(value, bool | int | np.integer):
        return IntegerAttr(int(value), i64)
    if isinstance(value, float | np.floating):
        return FloatAttr(float(value), Float32Type())
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, np.ndarray):
        return TensorRefAttr(weights.add(hint, value))
    if isinstance(value, list | tuple):
        if all(isinstance(v, bool | int | np.integer) for v in value):
            return int_array(value)  # ONNX ints (and an empty list): array<i64: ...>
        return ArrayAttr([_xdsl_attr(v, hint, weights) for v in value])
    raise AimccError(f"{hint}: unsupported attribute value of type {type(value).__name__}")


def _type_of(t: np.ndarray) -> Attribute:
    return tensor_type(tuple(t.shape), t.dtype.name)


def _hint(name: str) -> str | None:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    return cleaned if cleaned and not cleaned[0].isdigit() else None
