"""Passes on textual IR: hand-written input, checked output (the MLIR FileCheck discipline)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.parser import Parser

from aimcc.arch import load_arch
from aimcc.errors import AimccError
from aimcc.ir import CompileContext, make_context
from aimcc.ir.weights import WeightStore
from aimcc.passes.partition import PartitionPass
from aimcc.passes.place import PlacePass
from aimcc.passes.raise_transformer import RaiseTransformerPass
from aimcc.passes.tile import TilePass

RNG = np.random.default_rng(0)


def context(**weights: np.ndarray) -> CompileContext:
    store = WeightStore()
    for key, array in weights.items():
        assert store.add(key, array) == key
    return make_context(store, load_arch())


def run(ctx: CompileContext, text: str, *passes) -> str:
    module = Parser(ctx, text).parse_module()
    for p in passes:
        p.apply(ctx, module)
    module.verify()
    return str(module)


def ops(text: str) -> list[str]:
    """Op names in the function body, in order: a compact summary of the output IR."""
    module = Parser(make_context(), text).parse_module()
    return [op.name for op in module.walk() if op.name not in ("builtin.module", "func.func")]


LINEAR_LORA = """
builtin.module {
  func.func @main(%x: tensor<4x16xf32>) -> tensor<4x32xf32> {
    %w = graph.weight "w" : tensor<16x32xf32>
    %b = graph.weight "b" : tensor<32xf32>
    %a = graph.weight "a" : tensor<16x2xf32>
    %bb = graph.weight "bb" : tensor<2x32xf32>
    %s = graph.weight "s" : tensor<f32>
    %y = "graph.node"(%x, %w) <{op_type = "MatMul", params = {}}> : (tensor<4x16xf32>, tensor<16x32xf32>) -> tensor<4x32xf32>
    %yb = "graph.node"(%y, %b) <{op_type = "Add", params = {}}> : (tensor<4x32xf32>, tensor<32xf32>) -> tensor<4x32xf32>
    %h = "graph.node"(%x, %a) <{op_type = "MatMul", params = {}}> : (tensor<4x16xf32>, tensor<16x2xf32>) -> tensor<4x2xf32>
    %d = "graph.node"(%h, %bb) <{op_type = "MatMul", params = {}}> : (tensor<4x2xf32>, tensor<2x32xf32>) -> tensor<4x32xf32>
    %ds = "graph.node"(%d, %s) <{op_type = "Mul", params = {}}> : (tensor<4x32xf32>, tensor<f32>) -> tensor<4x32xf32>
    %out = "graph.node"(%yb, %ds) <{op_type = "Add", params = {}}> : (tensor<4x32xf32>, tensor<4x32xf32>) -> tensor<4x32xf32>
    func.return %out : tensor<4x32xf32>
  }
}
"""


def linear_lora_context() -> CompileContext:
    return context(
        w=RNG.standard_normal((16, 32), np.float32),
        b=np.ones(32, np.float32),
        a=RNG.standard_normal((16, 2), np.float32),
        bb=RNG.standard_normal((2, 32), np.float32),
        s=np.array(4.0, np.float32),
    )


def test_raise_fuses_linear_bias_and_lora() -> None:
    out = run(linear_lora_context(), LINEAR_LORA, RaiseTransformerPass())
    # the scale constant is folded into the op and erased with the matched ops
    assert ops(out) == ["graph.weight"] * 4 + ["nn.linear", "func.return"]
    assert "lora_scale = 4.000000e+00 : f32" in out
    assert "nn.linear %x, %w bias %b lora(%a, %bb)" in out


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("hybrid", ["aimc.matmul", "digital.kernel", "digital.kernel"]),
        ("aimc", ["aimc.matmul", "digital.kernel"]),
        ("digital", ["digital.kernel"] * 3),
    ],
)
def test_partition_targets(target: str, expected: list[str]) -> None:
    ctx = linear_lora_context()
    out = run(ctx, LINEAR_LORA, RaiseTransformerPass(), PartitionPass(target=target))
    assert [o for o in ops(out) if o != "graph.weight"] == [*expected, "func.return"]
    if target == "aimc":  # the adapter is merged: W + s * A @ B under a new key
        merged = ctx.weights["w_lora"]
        w, a, b = (ctx.weights[k].astype(np.float64) for k in ("w", "a", "bb"))
        np.testing.assert_allclose(merged, w + 4.0 * a @ b, rtol=1e-6, atol=1e-6)
        assert 'kind = "lora"' not in out
    if target == "hybrid":
        assert 'kind = "lora"' in out and 'kind = "bias_add"' in out


MATMUL = """
builtin.module {
  func.func @main(%x: tensor<3x1100xf32>) -> tensor<3x600xf32> {
    %w = graph.weight "w" : tensor<1100x600xf32>
    %y = "aimc.matmul"(%x, %w) : (tensor<3x1100xf32>, tensor<1100x600xf32>) -> tensor<3x600xf32>
    func.return %y : tensor<3x600xf32>
  }
}
"""


def test_tile_splits_into_a_grid_with_partial_edges() -> None:
    ctx = context(w=np.zeros((1100, 600), np.float32))
    out = run(ctx, MATMUL, TilePass())
    assert ops(out).count("aimc.program") == 6  # ceil(1100/512)=3 rows x ceil(600/512)=2 cols
    assert "rows [1024, 1100] cols [512, 600]" in out
    assert "grid [3, 2]" in out
    mvms = [line for line in out.splitlines() if "aimc.mvm %x" in line]
    assert len(mvms) == 6 and mvms[-1].endswith("!aimc.tile<512x512>) -> tensor<3x88xf32>")
    out = run(ctx, MATMUL, TilePass(rows=256, cols=256))
    assert ops(out).count("aimc.program") == 15


def test_place_numbers_tiles_and_refuses_too_many() -> None:
    ctx = context(w=np.zeros((1100, 600), np.float32))
    out = run(ctx, MATMUL, TilePass(), PlacePass())
    ids = [int(t.split("tile_id = ")[1].split(" ")[0]) for t in out.split("\n") if "tile_id" in t]
    assert ids == list(range(6))
    small = make_context(ctx.weights, load_arch("paper-512", ["tile.count=5", "link.chips=1"]))
    with pytest.raises(AimccError, match=r"needs 6 tiles.*--chips 1 gives 5"):
        run(small, MATMUL, TilePass(), PlacePass())


ATTENTION = """
builtin.module {
  func.func @main(%q: tensor<2x8x4xf32>, %kt: tensor<2x4x8xf32>, %v: tensor<2x8x4xf32>, %m: tensor<2x8x8xf32>) -> tensor<2x8x4xf32> {
    %c = graph.weight "c" : tensor<f32>
    %s = "graph.node"(%q, %kt) <{op_type = "MatMul", params = {}}> : (tensor<2x8x4xf32>, tensor<2x4x8xf32>) -> tensor<2x8x8xf32>
    %ss = "graph.node"(%s, %c) <{op_type = "Div", params = {}}> : (tensor<2x8x8xf32>, tensor<f32>) -> tensor<2x8x8xf32>
    %sm = "graph.node"(%ss, %m) <{op_type = "Add", params = {}}> : (tensor<2x8x8xf32>, tensor<2x8x8xf32>) -> tensor<2x8x8xf32>
    %p = "graph.node"(%sm) <{op_type = "Softmax", params = {axis = -1 : i64}}> : (tensor<2x8x8xf32>) -> tensor<2x8x8xf32>
    %o = "graph.node"(%p, %v) <{op_type = "MatMul", params = {}}> : (tensor<2x8x8xf32>, tensor<2x8x4xf32>) -> tensor<2x8x4xf32>
    func.return %o : tensor<2x8x4xf32>
  }
}
"""


def test_raise_attention_with_divided_scale_and_mask() -> None:
    out = run(context(c=np.array(2.0, np.float32)), ATTENTION, RaiseTransformerPass())
    assert [o for o in ops(out) if o != "graph.weight"] == ["nn.attention", "func.return"]
    assert "scale = 5.000000e-01 : f32" in out


GELU_ERF = """
builtin.module {
  func.func @main(%x: tensor<8xf32>) -> tensor<8xf32> {
    %half = graph.weight "half" : tensor<f32>
    %r2 = graph.weight "r2" : tensor<f32>
    %one = graph.weight "one" : tensor<f32>
    %a = "graph.node"(%x, %r2) <{op_type = "Div", params = {}}> : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
    %e = "graph.node"(%a) <{op_type = "Erf", params = {}}> : (tensor<8xf32>) -> tensor<8xf32>
    %p = "graph.node"(%e, %one) <{op_type = "Add", params = {}}> : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
    %h = "graph.node"(%x, %half) <{op_type = "Mul", params = {}}> : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
    %y = "graph.node"(%h, %p) <{op_type = "Mul", params = {}}> : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
    func.return %y : tensor<8xf32>
  }
}
"""


def gelu_context(sqrt2: float) -> CompileContext:
    return context(
        half=np.array(0.5, np.float32),
        r2=np.array(sqrt2, np.float32),
        one=np.array(1.0, np.float32),
    )


def test_raise_recognises_gelu_by_its_values() -> None:
    out = run(gelu_context(np.sqrt(2.0)), GELU_ERF, RaiseTransformerPass())
    assert [o for o in ops(out) if o != "graph.weight"] == ["nn.activation", "func.return"]
    assert 'nn.activation "gelu_erf" %' in out


def test_raise_leaves_a_lookalike_that_is_not_gelu() -> None:
    out = run(gelu_context(3.0), GELU_ERF, RaiseTransformerPass())  # x * 0.5 * (1 + erf(x / 3))
    assert "nn.activation" not in out and out.count('"graph.node"') == 5
