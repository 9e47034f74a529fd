"""The loader lifts initializer payloads out of the file in place: same arrays as onnx, same
checks as the checker, one-line errors on damaged files."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from conftest import model_path
from onnx import TensorProto, helper, numpy_helper

from aimcc.errors import AimccError
from aimcc.frontend.load import load_onnx
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
