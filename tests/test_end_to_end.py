"""Every corpus model on every target, compiled and run, against onnxruntime (ideal tiles)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMALL_MODELS, model_path, onnxruntime_outputs, relative_error

from aimcc.backends.aimcb import write_binary
from aimcc.commands import random_inputs
from aimcc.compiler import compile_model
from aimcc.passes.partition import TARGETS
from aimcc.report import placement_stats
from aimcc.runtime import load

TOLERANCE = 1e-4  # the bound on max |diff| / max |ref|


def compile_and_compare(path: Path, target: str, tmp_path: Path):
    comp = compile_model(path, target)
    binary = tmp_path / f"{path.stem}.{target}.aimcb"
    write_binary(comp, binary)
    exe = load(binary)
    feeds = random_inputs(exe, seed=1)
    outputs = exe.run(feeds)
    references = onnxruntime_outputs(path, feeds)
    assert list(outputs) == [o["name"] for o in exe.outputs]
    for (name, actual), reference in zip(outputs.items(), references, strict=True):
        assert actual.shape == reference.shape, name
        assert relative_error(actual, reference) < TOLERANCE, name
    return comp


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model", SMALL_MODELS)
def test_matches_onnxruntime(model: str, target: str, tmp_path: Path) -> None:
    comp = compile_and_compare(model_path(model), target, tmp_path)
    stats = placement_stats(comp)
    if target == "digital":
        assert stats.tiles == 0 and stats.kernels["matmul"] > 0
    else:
        assert stats.tiles > 0 and stats.kernels["matmul"] == 0
    if model in ("bert_lora", "lora_layer_128", "lora_layer_512x128"):
        # hybrid keeps adapters digital; aimc merges them into the analog weights
        assert (stats.kernels["lora"] > 0) == (target != "aimc")


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_minilm_matches_onnxruntime(minilm_path: Path, target: str, tmp_path: Path) -> None:
    compile_and_compare(minilm_path, target, tmp_path)


def test_raise_recognises_each_models_parts() -> None:
    expected = {
        # position embeddings fold to constants: only word and token-type lookups remain
        "bert": {"attention": 2, "layer_norm": 5, "gelu_erf": 2, "embedding": 2},
        "bert_lora": {"lora": 4, "attention": 2},
        "gpt2": {"gelu_tanh": 2, "attention": 2, "layer_norm": 5},
        "llama": {"rms_norm": 5, "rope": 4, "silu": 2, "attention": 2},
        "lora_layer_128": {"lora": 1},
    }
    for model, kinds in expected.items():
        stats = placement_stats(compile_model(model_path(model), "hybrid"))
        for kind, count in kinds.items():
            assert stats.kernels[kind] == count, (model, kind, stats.kernels)


def test_linear_layers_go_to_tiles() -> None:
    # gpt2: 2 layers x (qkv, proj, fc, fc_proj) + the tied LM head = 9 analog layers
    stats = placement_stats(compile_model(model_path("gpt2"), "hybrid"))
    assert stats.analog_layers == 9
    assert 0 < stats.utilisation <= 1
