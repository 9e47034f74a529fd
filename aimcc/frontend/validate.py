"""Checks a model must pass before anything is evaluated on it.

onnx's checker checks the protobuf's structure; these add what the compiler and runtime rely
on and the checker leaves to run time: declared outputs, single static definitions, element
types the runtime holds, attributes the op's schema knows, and sizes the machine can hold.
Each failure is one line naming the value or node and what was expected.
"""

from __future__ import annotations

import math
import os
import resource

from aimcc.errors import AimccError
from aimcc.frontend.proto import (
    AttributeProto,
    ModelProto,
    NodeProto,
    SchemaError,
    TensorProto,
    get_schema,
    np_dtype,
    type_name,
)
from aimcc.runtime.onnx_meta import ELEM_TYPES

# Graph inputs fed to the runtime: no bfloat16 (feeds are numpy arrays, which have none).
INPUT_ELEM_TYPES = {t for t in ELEM_TYPES if t != TensorProto.BFLOAT16}
_ATTR_TYPE_NAMES = {v: k for k, v in AttributeProto.AttributeType.items()}


def memory_limit() -> int:
    """Bytes one model's values may take: half of physical memory, or of ``ulimit -v``."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    return min(limits) // 2


def check_graph(model: ModelProto) -> None:
    """Outputs, definitions, element types and attributes of the main graph."""
    graph = model.graph
    if not graph.output:
        raise AimccError("the graph declares no outputs")
    initializers = {t.name for t in graph.initializer}
    defined: dict[str, str] = {}

    def define(name: str, what: str) -> None:
        if name in defined:
            raise AimccError(f"value '{name}' is defined twice ({defined[name]} and {what})")
        defined[name] = what

    for inp in graph.input:
        if inp.name in initializers:  # old exporters list initializers as inputs too
            continue
        define(inp.name, "graph input")
        tensor = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if tensor is None:
            raise AimccError(f"input '{inp.name}': only tensor inputs are supported")
        if tensor.elem_type not in INPUT_ELEM_TYPES:
            supported = ", ".join(sorted(type_name(t).lower() for t in INPUT_ELEM_TYPES))
            raise AimccError(
                f"input '{inp.name}': element type {type_name(tensor.elem_type)} is not "
                f"supported (supported: {supported})"
            )
        for axis, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                raise AimccError(
                    f"input '{inp.name}': dimension {axis} is {dim.dim_value} (must be >= 0)"
                )
    for tensor in graph.initializer:
        defined[tensor.name] = "initializer"
        if tensor.data_type not in ELEM_TYPES:
            raise AimccError(
                f"initializer '{tensor.name}': element type {type_name(tensor.data_type)} "
                "is not supported by the aimcc runtime"
            )
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    for index, node in enumerate(graph.node):
        where = f"node '{node.name or index}' ({node.op_type})"
        for name in node.input:
            if name and name not in defined:
                raise AimccError(f"{where}: input '{name}' is not defined before use")
        _check_attributes(node, opsets, where)
        for name in node.output:
            if name:
                define(name, where)
    for out in graph.output:
        if out.name not in defined:
            raise AimccError(f"graph output '{out.name}' is not computed by any node")


def _check_attributes(node: NodeProto, opsets: dict[str, int], where: str) -> None:
    """Attribute names, types and required ones against the op's schema at the model's opset."""
    domain = node.domain or "ai.onnx"
    try:
        schema = get_schema(node.op_type, opsets.get(domain, 1), node.domain)
    except SchemaError:
        return  # an op onnx does not know: the importer names it as unsupported
    for attr in node.attribute:
        spec = schema.attributes.get(attr.name)
        if spec is None:
            allowed = ", ".join(sorted(schema.attributes)) or "none"
            raise AimccError(f"{where}: unknown attribute '{attr.name}' (allowed: {allowed})")
        expected = int(spec.type)
        if attr.type != expected and expected != AttributeProto.UNDEFINED:
            raise AimccError(
                f"{where}: attribute '{attr.name}' is {_ATTR_TYPE_NAMES.get(attr.type, attr.type)}"
                f", the schema wants {_ATTR_TYPE_NAMES.get(expected, expected)}"
            )
    given = {a.name for a in node.attribute}
    for name, spec in schema.attributes.items():
        if spec.required and name not in given:
            raise AimccError(f"{where}: required attribute '{name}' is missing")


def check_input_sizes(shapes: dict[str, tuple[int, ...]], model: ModelProto) -> None:
    """Refuse inputs that alone would not fit the machine, before anything is allocated."""
    limit = memory_limit()
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    for name, shape in shapes.items():
        itemsize = np_dtype(types[name]).itemsize
        size = math.prod(shape) * itemsize
        if size > limit:
            raise AimccError(
                f"input '{name}' of shape {'x'.join(map(str, shape))} needs {size / 2**30:.3g} "
                f"GiB; at most {limit / 2**30:.3g} GiB fit this machine (see --input-shape)"
            )
