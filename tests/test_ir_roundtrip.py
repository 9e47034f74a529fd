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
    small = {  # weights an op holds (a fused bias is a reference on its layer, not an op)
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
