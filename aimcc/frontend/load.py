"""Read an ONNX file (with external data) and fix its dynamic input dimensions."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from aimcc.errors import AimccError, first_line
from aimcc.frontend.proto import (
    TYPED_FIELDS,
    ModelProto,
    TensorProto,
    ValidationError,
    ValueInfoProto,
    check_model,
    np_dtype,
    tensor_array,
)
from aimcc.frontend.validate import check_graph
from aimcc.frontend.wire import WireError, split_payloads
from aimcc.ir.weights import map_file
from aimcc.runtime.onnx_meta import ELEM_TYPES

DEFAULT_BATCH = 1
DEFAULT_SEQUENCE = 128
_SHAPE_SPEC = re.compile(r"^([^=]+)=(\d+(?:x\d+)*)$")


@dataclass
class LoadedModel:
    """A checked ONNX model: its protobuf (initializers without their ``raw_data``) and every
    initializer as an array. Payloads, in the .onnx file or in external data files, are
    copy-on-write views of the mapped files, so the files must not be truncated while the
    arrays are alive."""

    proto: ModelProto
    initializers: dict[str, np.ndarray]


# Types whose raw_data is the array's bytes in a numpy dtype (bfloat16 is ml_dtypes': decoded
# only when a model has it).
_PLAIN_DTYPES = {code: np.dtype(name) for code, name in ELEM_TYPES.items() if name != "bfloat16"}


def file_sha256(path: str | Path) -> str:
    """The model's identity: compile records it in the binary, eval checks its reference by
    it. The .onnx file's bytes only (external data files are not hashed)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_onnx(path: str | Path) -> LoadedModel:
    """Load and check a model; every failure is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    with path.open("rb") as f:
        try:
            whole = map_file(f.fileno())
            mapped = whole.base.obj  # the FileMap
        except ValueError:  # an empty file cannot be mapped
            raise AimccError(f"{path}: not an ONNX model (the file is empty)") from None
    try:
        skeleton, spans = split_payloads(mapped)
        proto = ModelProto.FromString(skeleton)
    except (WireError, DecodeError):
        raise AimccError(f"{path}: not an ONNX model (protobuf does not parse)") from None
    if not proto.graph.node:
        raise AimccError(f"{path}: the graph has no nodes (not an ONNX model?)")
    lifted: dict[str, np.ndarray] = {}
    names: set[str] = set()
    for tensor, span in zip(proto.graph.initializer, spans, strict=True):
        if tensor.name in names:
            raise AimccError(
                f"{path}: invalid ONNX model: initializer '{tensor.name}' is defined twice"
            )
        names.add(tensor.name)
        if span is None:
            continue
        if tensor.data_type in _PLAIN_DTYPES:
            lifted[tensor.name] = _payload(path, whole, span, tensor)
        else:  # packed or not a numpy type: onnx decodes it
            tensor.raw_data = mapped[span[0] : span[1]]
    external = [t for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    try:  # by path the checker re-reads the file, and resolves external data locations
        check_model(str(path) if external else _structure(proto, lifted).SerializeToString())
    except (ValidationError, ValueError) as exc:
        raise AimccError(f"{path}: invalid ONNX model: {first_line(exc)}") from None
    try:
        check_graph(proto)
    except AimccError as exc:
        raise AimccError(f"{path}: invalid ONNX model: {exc}") from None
    lifted.update(_external(path, external))
    initializers = {}
    for tensor in proto.graph.initializer:
        if tensor.name in lifted:
            initializers[tensor.name] = lifted[tensor.name]
            continue
        try:
            initializers[tensor.name] = tensor_array(tensor)
        except (ValueError, TypeError) as exc:
            raise AimccError(f"{path}: initializer '{tensor.name}': {first_line(exc)}") from None
    return LoadedModel(proto, initializers)


def _external(path: Path, tensors: list) -> dict[str, np.ndarray]:
    """External data as views of its files, each mapped once (copy-on-write, like the model
    file): nothing is read until used, nothing copied."""
    maps: dict[Path, np.ndarray] = {}  # the file's bytes (map_file)
    arrays = {}
    base = path.parent.resolve()
    for tensor in tensors:
        where = f"{path}: cannot load external data of '{tensor.name}'"
        info = {entry.key: entry.value for entry in tensor.external_data}
        try:
            file = (base / info["location"]).resolve()
            offset, dtype = int(info.get("offset", 0)), np_dtype(tensor.data_type)
            need = math.prod(tensor.dims) * dtype.itemsize
            length = int(info.get("length", need))
        except (KeyError, ValueError) as exc:
            raise AimccError(f"{where}: bad external_data entry {first_line(exc)}") from None
        if not file.is_relative_to(base):
            raise AimccError(f"{where}: {info['location']} is outside the model's folder")
        if length != need or offset < 0:
            raise AimccError(
                f"{where}: {length} bytes at offset {offset}, its shape {list(tensor.dims)} and "
                f"type {dtype} need {need}"
            )
        if need == 0:
            arrays[tensor.name] = np.zeros(tuple(tensor.dims), dtype)
            continue
        if file not in maps:
            try:
                with file.open("rb") as f:
                    maps[file] = map_file(f.fileno())
            except (OSError, ValueError) as exc:
                raise AimccError(f"{where}: {first_line(exc)}") from None
        if offset + need > len(maps[file]):
            raise AimccError(
                f"{where}: {info['location']} has {len(maps[file])} bytes, the tensor needs "
                f"{need} at offset {offset}"
            )
        view = maps[file][offset : offset + need].view(dtype)
        arrays[tensor.name] = view.reshape(tuple(tensor.dims))
    return arrays


def _payload(
    path: Path, mapped: np.ndarray, span: tuple[int, int], tensor: TensorProto
) -> np.ndarray:
    """The initializer's raw_data as an array viewing the mapping, checked as the checker would."""
    dtype, shape = _PLAIN_DTYPES[tensor.data_type], tuple(tensor.dims)
    start, end = span
    if any(len(getattr(tensor, name)) for name in TYPED_FIELDS):
        raise AimccError(
            f"{path}: invalid ONNX model: initializer '{tensor.name}' has both raw and typed data"
        )
    need = math.prod(shape) * dtype.itemsize
    if any(d < 0 for d in shape) or end - start != need:
        raise AimccError(
            f"{path}: invalid ONNX model: initializer '{tensor.name}' has {end - start} bytes "
            f"of data, its shape {list(shape)} and type {dtype} need {need}"
        )
    if need == 0:
        return np.zeros(shape, dtype)
    return mapped[start:end].view(dtype).reshape(shape)


def _structure(proto: ModelProto, lifted: dict[str, np.ndarray]) -> ModelProto:
    """What the checker sees: the model with each lifted initializer declared as a graph input
    instead (its payload was checked against its shape and type when it was viewed)."""
    check = ModelProto()
    check.CopyFrom(proto)
    graph = check.graph
    kept = [t for t in graph.initializer if t.name not in lifted]
    declared = {i.name for i in graph.input}
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for t in proto.graph.initializer:
        if t.name in lifted and t.name not in declared:
            info = graph.input.add()
            info.name = t.name
            tensor = info.type.tensor_type
            tensor.elem_type = t.data_type
            tensor.shape.SetInParent()
            for d in t.dims:
                tensor.shape.dim.add().dim_value = d
    return check


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=D0xD1...`` specs (``--input-shape``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        match = _SHAPE_SPEC.match(spec.strip())
        if not match:
            raise AimccError(
                f"bad --input-shape '{spec}': expected NAME=D0xD1..., e.g. input_ids=1x128"
            )
        dims = tuple(int(d) for d in match.group(2).split("x"))
        if 0 in dims:
            raise AimccError(f"bad --input-shape '{spec}': dimensions must be positive")
        shapes[match.group(1)] = dims
    return shapes


def graph_inputs(model: ModelProto) -> list[ValueInfoProto]:
    """The real inputs: old exporters also list initializers as graph inputs."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def fix_input_shapes(
    model: LoadedModel, specs: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Static shape of every input: from ``specs``, else batch (axis 0) 1 and other dims 128.

    Dims sharing a symbolic name get the same value, so ``--input-shape input_ids=2x64`` also
    fixes ``attention_mask`` when both use ``batch`` and ``sequence``.
    """
    inputs = graph_inputs(model.proto)
    names = [i.name for i in inputs]
    for name in specs:
        if name not in names:
            raise AimccError(f"--input-shape: no input named '{name}' (inputs: {', '.join(names)})")
    symbols: dict[str, int] = {}
    for inp in inputs:
        if inp.name in specs:
            dims = inp.type.tensor_type.shape.dim
            if len(dims) != len(specs[inp.name]):
                raise AimccError(
                    f"--input-shape {inp.name}: rank {len(specs[inp.name])} given, "
                    f"the model's input has rank {len(dims)}"
                )
            for dim, value in zip(dims, specs[inp.name], strict=True):
                if dim.HasField("dim_value") and dim.dim_value != value:
                    raise AimccError(
                        f"--input-shape {inp.name}: dimension {value} given where the model "
                        f"fixes {dim.dim_value}"
                    )
                if dim.dim_param:
                    symbols.setdefault(dim.dim_param, value)
    shapes: dict[str, tuple[int, ...]] = {}
    for inp in inputs:
        if not inp.type.HasField("tensor_type"):
            raise AimccError(f"input '{inp.name}': only tensor inputs are supported")
        if inp.name in specs:
            shapes[inp.name] = specs[inp.name]
            continue
        fixed = []
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                fixed.append(dim.dim_value)
            else:
                default = DEFAULT_BATCH if axis == 0 else DEFAULT_SEQUENCE
                fixed.append(
                    symbols.setdefault(dim.dim_param, default) if dim.dim_param else default
                )
        shapes[inp.name] = tuple(fixed)
    return shapes
