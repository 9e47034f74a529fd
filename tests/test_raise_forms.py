"""Forms exporters write that raise must recognise, built as small ONNX graphs and checked
against onnxruntime: int8 dequantised weights, transposed Gemm weights, tied heads, the
decomposed LayerNorm of old opsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import onnxruntime_outputs, relative_error
from onnx import TensorProto, helper, numpy_helper

from aimcc.backends.aimcb import write_binary
from aimcc.compiler import compile_model
from aimcc.report import placement_stats
from aimcc.runtime import load

RNG = np.random.default_rng(0)


def build(
    tmp_path: Path,
    nodes: list,
    inits: dict[str, np.ndarray],
    inputs: dict,
    out: str,
    opset: int = 17,
    out_rank: int = 3,
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [f"d{i}" for i in range(out_rank)])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.save(model, path)
    return path


def compile_run_compare(path: Path, feeds: dict[str, np.ndarray], tmp_path: Path):
    comp = compile_model(path, "hybrid")
    write_binary(comp, tmp_path / "m.aimcb")
    out = next(iter(load(tmp_path / "m.aimcb").run(feeds).values()))
    assert relative_error(out, onnxruntime_outputs(path, feeds)[0]) < 1e-4
    return placement_stats(comp)


X = {"x": (TensorProto.FLOAT, [2, 8, 32])}


def feeds() -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((2, 8, 32)).astype(np.float32)}


def test_int8_weight_dequantised_with_cast_and_scale(tmp_path: Path) -> None:
    q = RNG.integers(-127, 128, (32, 16)).astype(np.int8)
    nodes = [
        helper.make_node("Cast", ["wq"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["wf", "s"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    path = build(tmp_path, nodes, {"wq": q, "s": np.array(0.01, np.float32)}, X, "y")
    stats = compile_run_compare(path, feeds(), tmp_path)
    assert stats.analog_layers == 1 and stats.analog_weights == 32 * 16


def test_dequantize_linear_weight(tmp_path: Path) -> None:
    q = RNG.integers(0, 255, (32, 16)).astype(np.uint8)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    inits = {"wq": q, "s": np.array(0.02, np.float32), "zp": np.array(128, np.uint8)}
    stats = compile_run_compare(build(tmp_path, nodes, inits, X, "y"), feeds(), tmp_path)
    assert stats.analog_layers == 1


def test_gemm_with_transposed_weight_alpha_and_beta(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)]
    inits = {
        "w": RNG.standard_normal((16, 32)).astype(np.float32),
        "c": RNG.standard_normal(16).astype(np.float32),
    }
    x2d = {"x": (TensorProto.FLOAT, [8, 32])}
    stats = compile_run_compare(
        build(tmp_path, nodes, inits, x2d, "y", out_rank=2),
        {"x": RNG.standard_normal((8, 32)).astype(np.float32)},
        tmp_path,
    )
    # beta * c is the layer's bias: fused into the tiles (fuse-bias), no kernel left
    assert stats.analog_layers == 1 and not stats.kernels


def test_tied_embedding_and_head(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["h"]),
        helper.make_node("Transpose", ["emb"], ["embt"], perm=[1, 0]),
        helper.make_node("MatMul", ["h", "embt"], ["y"]),
    ]
    inits = {"emb": RNG.standard_normal((50, 32)).astype(np.float32)}
    ids = {"ids": (TensorProto.INT64, [1, 8])}
    stats = compile_run_compare(
        build(tmp_path, nodes, inits, ids, "y"), {"ids": RNG.integers(0, 50, (1, 8))}, tmp_path
    )
    assert stats.analog_layers == 1 and stats.kernels["embedding"] == 1


def test_decomposed_layer_norm(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["v"], axes=[-1]),
        helper.make_node("Add", ["v", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "b"], ["y"]),
    ]
    inits = {
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-5, np.float32),
        "g": RNG.standard_normal(32).astype(np.float32),
        "b": RNG.standard_normal(32).astype(np.float32),
    }
    stats = compile_run_compare(build(tmp_path, nodes, inits, X, "y", opset=13), feeds(), tmp_path)
    assert stats.kernels == {"layer_norm": 1}
