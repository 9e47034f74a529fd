"""The loader lifts initializer payloads out of the file in place: same arrays as onnx, same
checks as the checker, one-line errors on damaged files."""

from __future__ import annotations

import mmap
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import model_path
from onnx import TensorProto, helper, numpy_helper

from aimcc.errors import AimccError
from aimcc.frontend.load import load_onnx
from aimcc.frontend.proto import attrs_from_node
from aimcc.frontend.wire import WireError, split_payloads


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "lora_layer_128"])
def test_initializers_equal_onnx(name: str) -> None:
    reference = onnx.load(str(model_path(name)))
    loaded = load_onnx(model_path(name))
    assert list(loaded.initializers) == [t.name for t in reference.graph.initializer]
    for tensor in reference.graph.initializer:
        expected = numpy_helper.to_array(tensor)
        got = loaded.initializers[tensor.name]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    # the skeleton is the model without payloads: everything else is what protobuf parsed
    for tensor in reference.graph.initializer:
        tensor.ClearField("raw_data")
    skeleton = loaded.proto
    for tensor in skeleton.graph.initializer:
        tensor.ClearField("raw_data")
    assert skeleton.SerializeToString() == reference.SerializeToString()


def test_split_payloads_finds_raw_data_spans() -> None:
    data = model_path("lora_layer_128").read_bytes()
    skeleton, spans = split_payloads(data)
    model = onnx.load_from_string(data)
    assert len(spans) == len(model.graph.initializer)
    for tensor, span in zip(model.graph.initializer, spans, strict=True):
        assert span is not None and data[span[0] : span[1]] == tensor.raw_data
    assert len(skeleton) < len(data) - sum(e - s for s, e in spans if s is not None) + 64


@pytest.mark.parametrize(
    "data",
    [b"\x3a\x10short", b"\x3a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x3b", b"\x00\x01"],
    ids=["length-past-end", "overlong-varint", "group", "field-zero"],
)
def test_malformed_wire_is_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        split_payloads(data)


def _model(initializers: list[TensorProto], inputs_too: bool = False) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    extra = [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in initializers]
    node = helper.make_node("MatMul", ["x", initializers[0].name], ["y"])
    graph = helper.make_graph([node], "g", [x, *(extra if inputs_too else [])], [y], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _raw(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def test_initializers_listed_as_inputs_still_check(tmp_path: Path) -> None:
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    onnx.save(_model([_raw("w", w)], inputs_too=True), tmp_path / "m.onnx")
    np.testing.assert_array_equal(load_onnx(tmp_path / "m.onnx").initializers["w"], w)


def test_packed_types_go_through_onnx(tmp_path: Path) -> None:
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    b16 = helper.make_tensor(
        "b16", TensorProto.BFLOAT16, [2], np.array([1.5, -2], ml_dtypes.bfloat16).tobytes(), True
    )
    onnx.save(_model([_raw("w", w), b16]), tmp_path / "m.onnx")
    loaded = load_onnx(tmp_path / "m.onnx").initializers
    assert loaded["b16"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(loaded["b16"].astype(np.float32), [1.5, -2])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: setattr(t, "raw_data", t.raw_data[:-4]), r"'w' has 60 bytes of data.*need 64"),
        (lambda t: t.float_data.append(1.0), "'w' has both raw and typed data"),
    ],
    ids=["short-payload", "raw-and-typed"],
)
def test_bad_payloads_are_one_line_errors(tmp_path: Path, damage, message: str) -> None:
    tensor = _raw("w", np.zeros((4, 4), np.float32))
    damage(tensor)
    (tmp_path / "m.onnx").write_bytes(_model([tensor]).SerializeToString())
    with pytest.raises(AimccError, match=message):
        load_onnx(tmp_path / "m.onnx")


def test_duplicate_initializers_are_refused(tmp_path: Path) -> None:
    w = np.zeros((4, 4), np.float32)
    (tmp_path / "m.onnx").write_bytes(_model([_raw("w", w), _raw("w", w)]).SerializeToString())
    with pytest.raises(AimccError, match="initializer 'w' is defined twice"):
        load_onnx(tmp_path / "m.onnx")


def test_graph_errors_still_reach_the_checker(tmp_path: Path) -> None:
    model = _model([_raw("w", np.zeros((4, 4), np.float32))])
    model.graph.node[0].input[0] = "nowhere"
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(AimccError, match=r"invalid ONNX model: .*nowhere"):
        load_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("cut", [1, 100, -3])
def test_truncated_files_are_refused(tmp_path: Path, cut: int) -> None:
    data = model_path("lora_layer_128").read_bytes()
    (tmp_path / "m.onnx").write_bytes(data[:cut])
    with pytest.raises(AimccError, match=r"m\.onnx: not an ONNX model"):
        load_onnx(tmp_path / "m.onnx")


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(AimccError, match="not an ONNX model"):
        load_onnx(tmp_path / "m.onnx")


RUNTIME_TYPES = [
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
    TensorProto.BOOL,
]


@pytest.mark.parametrize("raw", [False, True], ids=["typed-fields", "raw-data"])
@pytest.mark.parametrize("elem_type", RUNTIME_TYPES, ids=TensorProto.DataType.Name)
def test_every_runtime_type_decodes_as_onnx_does(tmp_path: Path, elem_type: int, raw: bool) -> None:
    """Initializers and tensor attributes in typed fields or raw_data, decoded without onnx's
    Python package, equal onnx's own decoding."""
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    values = np.array([0, 1, 3, 7, 100, 1], np.float64)
    array = (values > 2) if dtype == np.bool_ else values.astype(dtype)
    if raw:
        tensor = helper.make_tensor("t", elem_type, [2, 3], array.tobytes(), raw=True)
    else:
        tensor = helper.make_tensor("t", elem_type, [2, 3], array.reshape(-1).tolist())
    const = helper.make_node("Constant", [], ["c"], value=tensor)
    w = _raw("w", np.zeros((4, 4), np.float32))
    model = _model([w, tensor])
    model.graph.node.append(const)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    loaded = load_onnx(tmp_path / "m.onnx")
    expected = numpy_helper.to_array(tensor)
    for got in (loaded.initializers["t"], attrs_from_node(loaded.proto.graph.node[1])["value"]):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def _external_model(tmp_path: Path) -> Path:
    w = _raw("w", np.arange(16, dtype=np.float32).reshape(4, 4))
    path = tmp_path / "m.onnx"
    onnx.save(
        _model([w]), str(path), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    return path


def test_external_data_is_a_view_of_its_file(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    w = load_onnx(path).initializers["w"]
    np.testing.assert_array_equal(w, np.arange(16, dtype=np.float32).reshape(4, 4))
    base = w
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: _set(t, "length", "60"), "60 bytes at offset 0.*need 64"),
        (lambda t: _set(t, "offset", "8"), "w.bin has 64 bytes, the tensor needs 64 at offset 8"),
        (lambda t: _set(t, "offset", "x"), "bad external_data entry"),
        (lambda t: _set(t, "location", "../w.bin"), "invalid ONNX model|outside the model"),
    ],
    ids=["length", "past-end", "bad-offset", "outside"],
)
def test_bad_external_data_is_a_one_line_error(tmp_path: Path, damage, message: str) -> None:
    path = _external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    damage(model.graph.initializer[0])
    path.write_bytes(model.SerializeToString())
    with pytest.raises(AimccError, match=message):
        load_onnx(path)


def _set(tensor: TensorProto, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    tensor.external_data.add(key=key, value=value)
