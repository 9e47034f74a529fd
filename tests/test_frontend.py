"""ONNX loading, input shapes and import: external data, dynamic dims, folding."""

from __future__ import annotations

import mmap
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import model_path, node_test_array, onnxruntime_outputs, relative_error

from aimcc.backends.aimcb import write_binary
from aimcc.compiler import SOURCE_SHA256_ATTR, compile_model
from aimcc.errors import AimccError
from aimcc.frontend import fold
from aimcc.frontend.load import fix_input_shapes, load_onnx, parse_input_shapes
from aimcc.frontend.proto import attrs_from_node
from aimcc.ir.cluster import CallOp, ViewOp
from aimcc.runtime import load
from aimcc.runtime.onnx_meta import ELEM_TYPES


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
    kinds = {op.callee.data for op in comp.module.walk() if isinstance(op, CallOp)}
    kinds |= {f"onnx.{op.view.data}" for op in comp.module.walk() if isinstance(op, ViewOp)}
    assert kinds  # the calls and views are there
    assert not {"onnx.Shape", "onnx.ConstantOfShape", "onnx.Range", "onnx.Concat"} & kinds


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "op", "attrs"),
    [
        ((2, 3, 5), (5, 4), "MatMul", {}),  # -> 2x3x4
        ((5,), (2, 5, 4), "MatMul", {}),  # -> 2x4
        ((2, 3, 5), (5,), "MatMul", {}),  # -> 2x3
        ((3, 5), (4, 5), "Gemm", {"transB": 1}),  # -> 3x4
        ((5, 3), (5, 4), "Gemm", {"transA": 1}),  # -> 3x4
    ],
)
def test_products_of_inputs_get_their_types_without_computing(
    tmp_path: Path, a_shape: tuple, b_shape: tuple, op: str, attrs: dict
) -> None:
    """Non-constant MatMul/Gemm are shape-inferred on an emptied contraction: same types as
    onnxruntime's outputs, and a length mismatch is still the op's own error."""
    inputs = [
        onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, list(a_shape)),
        onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, list(b_shape)),
    ]
    node = onnx.helper.make_node(op, ["a", "b"], ["y"], **attrs)
    rank = np.matmul(np.empty(a_shape), np.empty(b_shape)).ndim if op == "MatMul" else 2
    out = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["d"] * rank)
    graph = onnx.helper.make_graph([node], "g", inputs, [out])
    opsets = [onnx.helper.make_opsetid("", 17)]
    onnx.save(
        onnx.helper.make_model(graph, opset_imports=opsets, ir_version=8), tmp_path / "m.onnx"
    )
    comp = compile_model(tmp_path / "m.onnx", "digital")
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.standard_normal(a_shape, np.float32),
        "b": rng.standard_normal(b_shape, np.float32),
    }
    write_binary(comp, tmp_path / "m.aimcb")
    got = load(tmp_path / "m.aimcb").run(feeds)["y"]
    want = onnxruntime_outputs(tmp_path / "m.onnx", feeds)[0]
    assert got.shape == want.shape and relative_error(got, want) < 1e-5

    bad = onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [7, 4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["y"])], "g", [inputs[0], bad], [out]
    )
    onnx.save(
        onnx.helper.make_model(graph, opset_imports=opsets, ir_version=8), tmp_path / "bad.onnx"
    )
    with pytest.raises(AimccError, match=r"node '0' \(MatMul\): .*with input shapes"):
        compile_model(tmp_path / "bad.onnx", "digital")


def _fold_cases() -> list[Any]:
    """ONNX backend node tests of the ops the importer evaluates with numpy."""
    from onnx.backend.test.loader import load_node_model_tests

    ops = set(fold.EXACT) | set(fold.TYPED)
    return [
        c
        for c in load_node_model_tests()
        if c.model is not None
        and len(c.model.graph.node) == 1
        and c.model.graph.node[0].op_type in ops
        and not c.model.graph.initializer
    ]


FOLD_CASES = _fold_cases()


def test_fold_ops_are_library_ops() -> None:
    """numpy evaluates only ops the runtime's op library (the definition) also runs."""
    from aimcc.runtime.onnx_ops import supported_ops

    assert (set(fold.EXACT) | set(fold.TYPED)) <= set(supported_ops())
    covered = {c.model.graph.node[0].op_type for c in FOLD_CASES}
    assert (set(fold.EXACT) | set(fold.TYPED)) - covered == set()  # each is compared below


@pytest.mark.parametrize("case", FOLD_CASES, ids=[c.name for c in FOLD_CASES])
def test_fold_agrees_with_op_library(case: Any) -> None:
    """Where numpy folds, its results are the op library's bits; where it types, its types are
    the library's; where the library refuses, numpy defers to it (so the error is the
    library's)."""
    from aimcc.runtime.onnx_ops import run_op, to_numpy, to_torch

    node = case.model.graph.node[0]
    attrs = attrs_from_node(node)
    names = [i.name for i in case.model.graph.input]
    for inputs, _ in case.data_sets:
        feeds = dict(zip(names, (node_test_array(i) for i in inputs), strict=True))
        args = [feeds[n] if n else None for n in node.input]
        if any(a is not None and a.dtype.name not in ELEM_TYPES.values() for a in args):
            continue  # validation refuses other types before the importer runs
        try:
            want = run_op(node.op_type, [None if a is None else to_torch(a) for a in args], attrs)
            want = [to_numpy(w) for w in want][: len(node.output)]
        except Exception:
            want = None
        for constant in (True, False):
            try:
                got = fold.evaluate(node.op_type, args, attrs, constant)[: len(node.output)]
            except fold.Defer:
                continue
            assert want is not None, f"numpy accepts what the op library refuses ({constant=})"
            for g, w in zip(got, want, strict=True):
                assert (g.dtype, g.shape) == (w.dtype, w.shape)
                if constant and node.op_type in fold.EXACT:  # folded: the same bits
                    assert np.ascontiguousarray(g).tobytes() == np.ascontiguousarray(w).tobytes()


def test_external_data_is_mapped_and_compiles_to_the_same_binary(tmp_path: Path) -> None:
    """A model saved with external data gives the binary the single-file model gives, and its
    weights are views of the mapped data file (issue #10: it was copied twice)."""
    single = model_path("bert")
    model = onnx.load(str(single))
    ext = tmp_path / "ext" / "bert.onnx"
    ext.parent.mkdir()
    onnx.save(model, str(ext), save_as_external_data=True, location="w.bin", size_threshold=0)
    loaded = load_onnx(ext)
    big = [a for a in loaded.initializers.values() if a.nbytes >= 4096]
    assert big
    for array in big:
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        base = base.obj if isinstance(base, memoryview) else base
        assert isinstance(base, mmap.mmap), "an external tensor was copied"
    assert sum(a.nbytes for a in big) > 0.9 * (ext.parent / "w.bin").stat().st_size

    tracemalloc.start()
    load_onnx(ext)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.1 * (ext.parent / "w.bin").stat().st_size, peak

    compiled = compile_model(single, "hybrid"), compile_model(ext, "hybrid")
    digest = compiled[0].module.attributes[SOURCE_SHA256_ATTR]
    compiled[1].module.attributes[SOURCE_SHA256_ATTR] = digest  # the .onnx files differ
    for comp, name in zip(compiled, ("single", "ext"), strict=True):
        write_binary(comp, tmp_path / f"{name}.aimcb")
    assert (tmp_path / "single.aimcb").read_bytes() == (tmp_path / "ext.aimcb").read_bytes()
