"""Every stage's IR prints and parses back to the same text; small weights print inline and read
back bit for bit, large ones never print; the arch the module records reads back as compiled."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import model_path
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from aimcc.arch import load_arch
from aimcc.compiler import PASS_NAMES, compile_model
from aimcc.ir import make_context
from aimcc.ir.graph import WeightOp
from aimcc.ir.text import INLINE_BYTES, absorb_inline_weights, module_arch, print_ir
from aimcc.ir.weights import WeightStore


@pytest.mark.parametrize("model", ["bert_lora", "gpt2", "llama"])
@pytest.mark.parametrize("target", ["hybrid", "digital"])
def test_every_stage_round_trips(model: str, target: str) -> None:
    dumps: dict[str, str] = {}

    def keep(stage: str, module: ModuleOp) -> None:
        dumps[stage] = str(module)

    comp = compile_model(model_path(model), target, after_pass=keep)
    assert list(dumps) == list(PASS_NAMES)
    ctx = make_context(comp.ctx.weights, comp.arch)
    for stage, text in dumps.items():
        parsed = Parser(ctx, text).parse_module()
        parsed.verify()
        assert str(parsed) == text, f"{stage} does not round-trip"


@pytest.mark.parametrize("model", ["bert_lora", "gpt2", "llama"])
def test_small_weights_print_inline_and_read_back_exactly(model: str) -> None:
    arch = load_arch("hermes-256", ["tile.count=4096", "cluster.tcdm_kib=256"])
    comp = compile_model(model_path(model), "hybrid", arch)
    text = print_ir(comp.module, comp.ctx.weights)
    parsed = Parser(make_context(), text).parse_module()
    parsed.verify()
    assert str(parsed) == text  # the inline values print back the same
    store = WeightStore()
    absorb_inline_weights(parsed, store, model)
    named = {op.key.data for op in comp.module.walk() if isinstance(op, WeightOp)}
    inline = named & set(store)
    small = {  # every small weight, a bias fused into its layer's tiles too (an operand)
        k
        for k, v in comp.ctx.weights.items()
        if k in named and v.nbytes <= INLINE_BYTES and (v.dtype.kind != "f" or np.isfinite(v).all())
    }
    assert inline and inline == small  # all small weights but those with a NaN or infinity
    for key in store:
        want, got = comp.ctx.weights[key], store[key]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), key
    assert print_ir(parsed, store) == text  # values moved to the store print the same again
    assert module_arch(parsed) == arch  # the arch it was compiled for, from the text alone


def test_weights_are_referenced_by_key_never_printed() -> None:
    comp = compile_model(model_path("gpt2"), "hybrid")
    text = str(comp.module)
    assert "dense<" not in text  # in memory, a weight is its key
    text = print_ir(comp.module, comp.ctx.weights)
    # the largest weight would print as >100k numbers; the whole module is far smaller
    largest = max(comp.ctx.weights[k].size for k in comp.ctx.weights)
    assert largest > 100_000 and len(text) < largest
    weight = comp.ctx.weights["lm_head.weight"]
    assert f"{float(weight.reshape(-1)[0]):.6e}" not in text
    assert isinstance(weight, np.ndarray)


def test_integer_lists_print_as_dense_arrays() -> None:
    """ONNX ints, head groups and replicas print as array<i64: ...>, never as a list of
    IntegerAttrs; the readers take both forms (ir/attrs.int_list)."""
    from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, i64

    from aimcc.ir.attrs import int_array, int_list

    dumps: dict[str, str] = {}
    compile_model(model_path("gpt2"), "hybrid", after_pass=lambda s, m: dumps.update({s: str(m)}))
    assert "perm = array<i64: 0, 2, 1, 3>" in dumps["import"]
    assert "head_clusters = array<i64: " in dumps["head-split"]
    assert all(" : i64, " not in line for text in dumps.values() for line in text.splitlines()
               if "= [" in line)  # fmt: skip
    assert int_list(int_array([3, -1])) == [3, -1]
    assert int_list(ArrayAttr([IntegerAttr(3, i64), IntegerAttr(-1, i64)])) == [3, -1]
    assert int_list(ArrayAttr([])) == [] and int_list(None) is None
