"""onnx's protobuf classes, checker and op schemas without ``import onnx``.

``import onnx`` runs the package's ``__init__``, which imports ml_dtypes (0.8-1.2 s, for
bfloat16 helpers the compiler does not use). The parts the frontend needs are two modules of the
package that import nothing of it: the generated protobuf classes (``onnx.onnx_ml_pb2``) and the
C++ extension with the checker and the schemas (``onnx.onnx_cpp2py_export``). They are loaded
here under their own names, so a later ``import onnx`` in the same process (tests, ``eval``) finds
and reuses them: one set of classes, one registration of the extension's types.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from aimcc.runtime.onnx_meta import ELEM_TYPES


def _submodule(name: str) -> ModuleType:
    """``onnx.<name>`` loaded from onnx's folder without running ``onnx/__init__.py``."""
    full = f"onnx.{name}"
    if full in sys.modules:
        return sys.modules[full]
    package = importlib.util.find_spec("onnx")  # finds the folder; runs nothing
    if package is None or not package.submodule_search_locations:
        raise ImportError("onnx is not installed")
    spec = importlib.machinery.PathFinder.find_spec(full, list(package.submodule_search_locations))
    if spec is None or spec.loader is None:
        raise ImportError(f"{full} not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module


_pb = _submodule("onnx_ml_pb2")
_C = _submodule("onnx_cpp2py_export")

ModelProto = _pb.ModelProto
GraphProto = _pb.GraphProto
NodeProto = _pb.NodeProto
TensorProto = _pb.TensorProto
AttributeProto = _pb.AttributeProto
ValueInfoProto = _pb.ValueInfoProto
ValidationError = _C.checker.ValidationError
SchemaError = _C.defs.SchemaError
get_schema = _C.defs.get_schema


def check_model(model: bytes | str) -> None:
    """onnx.checker.check_model: serialized bytes, or a path (which resolves external data)."""
    if isinstance(model, str):
        _C.checker.check_model_path(model, False, False, False)
    else:
        _C.checker.check_model(model, False, False, False)


def type_name(elem_type: int) -> str:
    """The ONNX name of an element type (FLOAT, BFLOAT16, ...)."""
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"code {elem_type}"


def np_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of an element type the runtime holds (bfloat16: ml_dtypes', imported
    only then)."""
    name = ELEM_TYPES[elem_type]
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


# Typed field holding each element type's values when there is no raw_data (onnx.proto: 16-bit
# and smaller types are stored in int32_data, float16/bfloat16 as their bit patterns).
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data",
}
TYPED_FIELDS = (
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
)


def tensor_array(tensor: Any) -> np.ndarray:
    """A TensorProto held in the message (raw_data or typed field) as a numpy array. External
    data is the loader's job (it maps the files)."""
    if tensor.data_type not in ELEM_TYPES:
        raise ValueError(f"element type {type_name(tensor.data_type)} is not supported")
    dtype, shape = np_dtype(tensor.data_type), tuple(tensor.dims)
    count = math.prod(shape)
    if tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise ValueError(
                f"{len(raw)} bytes of data, its shape {list(shape)} and type {dtype} need "
                f"{count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype).reshape(shape)  # little-endian, as this machine
    field = _TYPED_FIELD.get(tensor.data_type, "int32_data")
    values = getattr(tensor, field)
    if len(values) != count:
        raise ValueError(f"{len(values)} values in {field}, its shape {list(shape)} needs {count}")
    if dtype.name in ("float16", "bfloat16"):  # stored as bit patterns
        return np.array(values, np.uint16).view(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


# Graph and sparse attributes stay protos: no kernel reads them, but decoding must not fail so
# that the importer reaches its "unsupported ONNX op" error for If/Loop/Scan.
_ATTR_DECODERS: dict[int, Callable[[Any], Any]] = {
    AttributeProto.FLOAT: lambda a: a.f,
    AttributeProto.INT: lambda a: a.i,
    AttributeProto.STRING: lambda a: a.s.decode(),
    AttributeProto.TENSOR: lambda a: tensor_array(a.t),
    AttributeProto.GRAPH: lambda a: a.g,
    AttributeProto.SPARSE_TENSOR: lambda a: a.sparse_tensor,
    AttributeProto.FLOATS: lambda a: list(a.floats),
    AttributeProto.INTS: lambda a: list(a.ints),
    AttributeProto.STRINGS: lambda a: [s.decode() for s in a.strings],
    AttributeProto.TENSORS: lambda a: [tensor_array(t) for t in a.tensors],
    AttributeProto.GRAPHS: lambda a: list(a.graphs),
}


def attrs_from_node(node: Any) -> dict[str, Any]:
    """A node's attributes as python values (tensors as numpy arrays), the form the op
    library takes.

    Split without split sizes divides into as many parts as the node has outputs, a fact only
    the node knows, so it is recorded here as ``num_outputs``.
    """
    attrs = {}
    for a in node.attribute:
        decode = _ATTR_DECODERS.get(a.type)
        if decode is None:
            raise ValueError(f"attribute '{a.name}' has type code {a.type}")
        attrs[a.name] = decode(a)
    if node.op_type == "Split" and "num_outputs" not in attrs and "split" not in attrs:
        attrs["num_outputs"] = len(node.output)
    return attrs
