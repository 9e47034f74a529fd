"""Conformance of aimcc.runtime.onnx_ops against the ONNX backend node tests.

The expected outputs come from the ONNX reference implementations shipped with the onnx wheel; every
case whose graph uses only ops in ONNX_OPS runs, minus the explicit out-of-scope list below.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from conftest import node_test_array
from onnx.backend.base import Backend, BackendRep
from onnx.backend.test.loader import load_node_model_tests

from aimcc.errors import AimccError
from aimcc.frontend.proto import attrs_from_node
from aimcc.runtime.onnx_ops import (
    ONNX_OPS,
    run_op,
    supported_ops,
    to_numpy,
    to_torch,
)

# Cases of supported ops that are out of scope, each with the reason.
EXCLUDED: dict[str, str] = {
    # Element types the runtime does not carry (no torch dtype, or no faithful numpy round trip).
    r".*(FLOAT8|float8|FLOAT4|float4|INT4|int4|INT2|int2|e4m3|e5m2|e8m0).*": "float8/4-bit types",
    r".*(STRING|string).*": "string tensors",
    r".*(BFLOAT16|bfloat16|bf16).*": "bfloat16 (brief: out of scope)",
    # torch implements almost no kernels for uint16/32/64 ("not implemented for 'UInt16'").
    r".*_uint(16|32|64)(_expanded)?$": "uint16/32/64 arithmetic (no torch kernels)",
    r"test_bitwise_not_3d$": "uint16 input (no torch kernel)",
    # Random masks: training-mode dropout with a nonzero ratio is not an inference computation.
    r"test_training_dropout(_default|_mask|_default_mask)?$": "training-mode dropout (random)",
    r"test_dropout_random_old$": "training-mode dropout (random)",
}
_EXCLUDED_RE = re.compile("|".join(f"(?:{pattern})" for pattern in EXCLUDED))


class _Rep(BackendRep):
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes = [(node, attrs_from_node(node)) for node in graph.node]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        initializers = {
            t.name: to_torch(onnx.numpy_helper.to_array(t)) for t in self.graph.initializer
        }
        feeds = [i.name for i in self.graph.input if i.name not in initializers]
        env = {**initializers, **{name: to_torch(a) for name, a in zip(feeds, inputs, strict=True)}}
        for node, attrs in self.nodes:
            outputs = run_op(node.op_type, [env[n] if n else None for n in node.input], attrs)
            # Ops may return trailing optional outputs the node does not name.
            env.update((name, t) for name, t in zip(node.output, outputs, strict=False) if name)
        return tuple(to_numpy(env[o.name]) for o in self.graph.output)


class _AimccBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> _Rep:
        return _Rep(model.graph)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


def _runs_on_aimcc(case: Any) -> bool:
    graph = case.model.graph
    return all(
        n.domain in ("", "ai.onnx") and n.op_type in ONNX_OPS for n in graph.node
    ) and not _EXCLUDED_RE.match(case.name)


CASES = [c for c in load_node_model_tests() if c.model is not None and _runs_on_aimcc(c)]


def _assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if expected.dtype == np.float16:  # 1e-3 is one fp16 ulp; allow for accumulation order
        np.testing.assert_allclose(actual, expected, rtol=4e-3, atol=1e-5)
    elif np.issubdtype(expected.dtype, np.inexact):
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-5)
    else:
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_conformance(case: Any) -> None:
    rep = _AimccBackend.prepare(case.model)
    for inputs, expected in case.data_sets:
        actual = rep.run([node_test_array(i) for i in inputs])
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _assert_matches(a, node_test_array(e))


def test_every_supported_op_is_exercised() -> None:
    """A claimed op without a conformance case would be untested."""
    covered = {n.op_type for c in CASES for n in c.model.graph.node}
    assert set(supported_ops()) - covered == set()


def test_unknown_op_raises() -> None:
    with pytest.raises(AimccError, match="unsupported ONNX op 'NoSuchOp'"):
        run_op("NoSuchOp", [], {})


RUNTIME_DTYPES = (
    np.float32,
    np.float16,
    np.float64,
    np.int64,
    np.int32,
    np.int8,
    np.uint8,
    np.bool_,
)


def test_dtype_round_trip_is_faithful() -> None:
    for dtype in RUNTIME_DTYPES:
        a = np.arange(6).reshape(2, 3).astype(dtype)
        assert to_numpy(to_torch(a)).dtype == a.dtype
        np.testing.assert_array_equal(to_numpy(to_torch(a)), a)
    assert to_torch(np.ones(3, np.float32)).dtype == torch.float32


def _legacy_case(
    op_type: str, opset: int, inputs: list[np.ndarray], outputs: list[int], attrs: dict[str, Any]
) -> onnx.ModelProto:
    """A one-node model with float32 inputs at an old opset; outputs lists their element types."""
    names = [f"x{k}" for k in range(len(inputs))]
    out_names = [f"y{k}" for k in range(len(outputs))]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node(op_type, names, out_names, **attrs)],
        op_type,
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
        [
            onnx.helper.make_tensor_value_info(n, t, None)
            for n, t in zip(out_names, outputs, strict=True)
        ],
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=7)


_X = np.random.default_rng(0).standard_normal((3, 1, 6)).astype(np.float32)

# Pre-opset-13 attribute forms, which the backend node tests (latest opsets) no longer cover.
_F, _I = [onnx.TensorProto.FLOAT], [onnx.TensorProto.INT64]
LEGACY_CASES = {
    "squeeze_axes_attr": ("Squeeze", 11, [_X], _F, {"axes": [1]}),
    "unsqueeze_axes_attr": ("Unsqueeze", 11, [_X], _F, {"axes": [0, -1]}),
    "reduce_sum_axes_attr": ("ReduceSum", 11, [_X], _F, {"axes": [2], "keepdims": 0}),
    "reduce_mean_axes_attr": ("ReduceMean", 11, [_X], _F, {"axes": [-1]}),
    "reduce_max_axes_attr": ("ReduceMax", 13, [_X], _F, {"axes": [0, 2]}),
    "split_sizes_attr": ("Split", 11, [_X], _F * 2, {"axis": 2, "split": [2, 4]}),
    "split_equal_by_outputs": ("Split", 11, [_X], _F * 3, {"axis": 2}),
    "slice_attrs": ("Slice", 9, [_X], _F, {"starts": [1, -4], "ends": [100, -1], "axes": [0, 2]}),
    "clip_attrs": ("Clip", 6, [_X], _F, {"min": -0.5, "max": 0.25}),
    "pad_attrs": ("Pad", 2, [_X], _F, {"pads": [0, 1, 2, 0, 0, 1], "value": 1.5}),
    "dropout_ratio_attr": ("Dropout", 11, [_X], _F, {"ratio": 0.3}),
    "topk_k_attr": ("TopK", 9, [_X], _F + _I, {"k": 3, "axis": 2}),
    "softmax_last_axis_opset11": ("Softmax", 11, [_X], _F, {"axis": 2}),
}


@pytest.mark.parametrize("name", sorted(LEGACY_CASES))
def test_legacy_attribute_forms_match_onnxruntime(name: str) -> None:
    import onnxruntime

    op_type, opset, inputs, outputs, attrs = LEGACY_CASES[name]
    model = _legacy_case(op_type, opset, inputs, outputs, attrs)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, {f"x{k}": a for k, a in enumerate(inputs)})
    actual = _AimccBackend.prepare(model).run(inputs)
    for a, e in zip(actual, expected, strict=True):
        _assert_matches(a, e)
