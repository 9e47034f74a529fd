"""Read an ONNX file (with external data) and fix its dynamic input dimensions."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from aimcc.errors import AimccError, first_line

DEFAULT_BATCH = 1
DEFAULT_SEQUENCE = 128
_SHAPE_SPEC = re.compile(r"^([^=]+)=(\d+(?:x\d+)*)$")


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check a model; every failure is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except DecodeError:
        raise AimccError(f"{path}: not an ONNX model (protobuf does not parse)") from None
    if not model.graph.node:
        raise AimccError(f"{path}: the graph has no nodes (not an ONNX model?)")
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    try:  # the checker parses the bytes again in C++; by path it would also re-read the file
        onnx.checker.check_model(str(path) if external else data)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise AimccError(f"{path}: invalid ONNX model: {first_line(exc)}") from None
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise AimccError(f"{path}: cannot load external data: {first_line(exc)}") from None
    return model


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


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: old exporters also list initializers as graph inputs."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def fix_input_shapes(
    model: onnx.ModelProto, specs: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Static shape of every input: from ``specs``, else batch (axis 0) 1 and other dims 128.

    Dims sharing a symbolic name get the same value, so ``--input-shape input_ids=2x64`` also
    fixes ``attention_mask`` when both use ``batch`` and ``sequence``.
    """
    inputs = graph_inputs(model)
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
