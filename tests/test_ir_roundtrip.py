"""Every stage's IR prints and parses back to the same text, and never contains the weights."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import model_path
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from aimcc.compiler import PASS_NAMES, compile_model
from aimcc.ir import make_context


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


def test_weights_are_referenced_by_key_never_printed() -> None:
    comp = compile_model(model_path("gpt2"), "hybrid")
    text = str(comp.module)
    assert "dense<" not in text
    # the largest weight would print as >100k numbers; the whole module is far smaller
    largest = max(comp.ctx.weights[k].size for k in comp.ctx.weights)
    assert largest > 100_000 and len(text) < largest
    weight = comp.ctx.weights["lm_head.weight"]
    assert f"{float(weight.reshape(-1)[0]):.6e}" not in text
    assert isinstance(weight, np.ndarray)
