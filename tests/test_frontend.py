"""ONNX loading, input shapes and import: external data, dynamic dims, folding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import model_path, onnxruntime_outputs, relative_error

from aimcc.backends.aimcb import write_binary
from aimcc.compiler import compile_model
from aimcc.errors import AimccError
from aimcc.frontend.load import fix_input_shapes, load_onnx, parse_input_shapes
from aimcc.runtime import load


def test_external_data_files_are_read(tmp_path: Path) -> None:
    model = onnx.load(str(model_path("lora_layer_512x128")))
    path = tmp_path / "ext.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, location="ext.data", size_threshold=1024
    )
    assert (tmp_path / "ext.data").stat().st_size > 200_000
    comp = compile_model(path, "hybrid", input_shapes={"x": (2, 16, 512)})
    write_binary(comp, tmp_path / "ext.aimcb")
    x = np.random.default_rng(0).standard_normal((2, 16, 512)).astype(np.float32)
    out = load(tmp_path / "ext.aimcb").run({"x": x})["y"]
    assert relative_error(out, onnxruntime_outputs(path, {"x": x})[0]) < 1e-4


def test_missing_external_data_is_a_clear_error(tmp_path: Path) -> None:
    model = onnx.load(str(model_path("lora_layer_128")))
    onnx.save(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    (tmp_path / "w.bin").unlink()
    with pytest.raises(AimccError, match=r"m\.onnx: invalid ONNX model: .*w\.bin"):
        load_onnx(tmp_path / "m.onnx")


def test_dynamic_dims_default_and_follow_symbols() -> None:
    model = load_onnx(model_path("bert"))
    assert fix_input_shapes(model, {}) == {
        "input_ids": (1, 128),
        "attention_mask": (1, 128),
        "token_type_ids": (1, 128),
    }
    shapes = fix_input_shapes(model, parse_input_shapes(["input_ids=4x32"]))
    assert shapes["attention_mask"] == (4, 32) and shapes["token_type_ids"] == (4, 32)


def test_wrong_rank_is_refused() -> None:
    with pytest.raises(AimccError, match="rank 3 given"):
        fix_input_shapes(load_onnx(model_path("bert")), {"input_ids": (1, 2, 3)})


def test_compiled_shape_is_what_runs(tmp_path: Path) -> None:
    comp = compile_model(model_path("gpt2"), "hybrid", input_shapes={"input_ids": (2, 24)})
    write_binary(comp, tmp_path / "g.aimcb")
    exe = load(tmp_path / "g.aimcb")
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 1000, (2, 24)),
        "attention_mask": np.ones((2, 24), np.int64),
    }
    feeds["attention_mask"][1, 20:] = 0  # padding in the second sequence
    out = exe.run(feeds)["logits"]
    assert out.shape == (2, 24, 1000)
    assert relative_error(out, onnxruntime_outputs(model_path("gpt2"), feeds)[0]) < 1e-4


def test_shape_computation_is_folded_away() -> None:
    comp = compile_model(model_path("bert"), "hybrid")
    kinds = {op.kind.data for op in comp.module.walk() if hasattr(op, "kind")}
    assert not {"onnx.Shape", "onnx.ConstantOfShape", "onnx.Range", "onnx.Concat"} & kinds
