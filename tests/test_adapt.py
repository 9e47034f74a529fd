"""`aimcc adapt` and task accuracy in `aimcc eval`, on the small BERT with LoRA of the corpus.

The training executor is checked against the runtime (same program, same outputs), adapters
against peft's own LoRA layers, training against its promises (seeded, loss goes down, frozen
analog weights), and the user errors against their messages.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, model_path

from aimcc.adapt import HEAD, TrainConfig, TrainProgram, apply_adapter, lora_slots, train
from aimcc.adapters import Adapter, LoraWeights, read_adapter, write_adapter
from aimcc.backends.aimcb import write_binary
from aimcc.cli import main
from aimcc.compiler import compile_model
from aimcc.errors import AimccError
from aimcc.runtime import load
from aimcc.runtime.analog import NoiseSpec
from aimcc.runtime.train import TrainNoise

BATCH, SEQ = 4, 16
SHAPES = {name: (BATCH, SEQ) for name in ("input_ids", "attention_mask", "token_type_ids")}


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("adapt") / "bert_lora.aimcb"
    write_binary(compile_model(model_path("bert_lora"), "hybrid", input_shapes=SHAPES), path)
    return path


@pytest.fixture(scope="module")
def data_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token ids with a learnable label: does the first token come from the lower half?"""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, (16, SEQ))
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, input_ids=ids, labels=(ids[:, 0] < 500).astype(np.int64))
    return path


def random_adapter(exe, seed: int, head: bool = True) -> Adapter:
    rng = np.random.default_rng(seed)
    lora = {}
    for slot in lora_slots(exe):
        k, r = exe._tensors[slot.a].shape
        n = exe._tensors[slot.b].shape[1]
        lora[slot.name] = LoraWeights(
            rng.normal(0, 0.1, (k, r)).astype(np.float32),
            rng.normal(0, 0.1, (r, n)).astype(np.float32),
            slot.scale,
        )
    heads = {}
    if head:
        heads[HEAD] = {
            "weight": rng.normal(size=(2, 128)).astype(np.float32),
            "bias": np.zeros(2, np.float32),
        }
    return Adapter(lora, heads)


def feeds(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(0, 1000, (BATCH, SEQ)),
        "attention_mask": np.ones((BATCH, SEQ), np.int64),
        "token_type_ids": np.zeros((BATCH, SEQ), np.int64),
    }


def test_slots_are_named_after_the_peft_modules(binary: Path) -> None:
    names = [s.name for s in lora_slots(load(binary))]
    assert names == [
        f"encoder.layer.{i}.attention.self.{kind}" for i in (0, 1) for kind in ("query", "value")
    ]


def test_adapter_folder_is_peft_and_matches_peft_layers(binary: Path, tmp_path: Path) -> None:
    """Written as peft writes it, and the binary with the adapter computes what the torch model
    with peft's LoRA layers holding the same weights computes."""
    import peft
    from safetensors.numpy import load_file

    sys.path.insert(0, str(ROOT / "examples"))
    import build_corpus

    exe = load(binary)
    adapter = random_adapter(exe, 0, head=False)
    folder = write_adapter(tmp_path / "ad", adapter)
    config = peft.LoraConfig.from_pretrained(str(folder))
    assert config.r == 8 and config.lora_alpha == 32
    assert set(config.target_modules) == set(adapter.lora)
    keys = load_file(str(folder / "adapter_model.safetensors"))
    name = "encoder.layer.0.attention.self.query"
    assert keys[f"base_model.model.{name}.lora_A.weight"].shape == (8, 128)
    back = read_adapter(folder)
    for key, w in adapter.lora.items():
        np.testing.assert_array_equal(back.lora[key].a, w.a)
        np.testing.assert_array_equal(back.lora[key].b, w.b)
        assert back.lora[key].scale == w.scale

    model = build_corpus.torch_model("bert_lora")
    with torch.no_grad():
        for key, w in back.lora.items():
            module = model.get_submodule(key)
            module.lora_A["default"].weight.copy_(torch.from_numpy(w.a.T))
            module.lora_B["default"].weight.copy_(torch.from_numpy(w.b.T))
        inputs = feeds()
        ref = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state
    apply_adapter(exe, back)
    ours = exe.run(inputs)["last_hidden_state"]
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-4)
    apply_adapter(exe, None)  # back to zero LoRA: a different output
    assert not np.allclose(exe.run(inputs)["last_hidden_state"], ours, atol=1e-3)


def test_train_program_is_the_runtime_program(binary: Path) -> None:
    """Digital training runs exactly the binary's program; the analog one its tiles + noise."""
    exe = load(binary)
    adapter = random_adapter(exe, 1)
    apply_adapter(exe, adapter)
    program = TrainProgram(exe, analog=False, noise=TrainNoise(), seed=0)
    program.set_lora(adapter)
    inputs = feeds()
    with torch.no_grad():
        ours = program(inputs)["last_hidden_state"].numpy()
    np.testing.assert_allclose(ours, exe.run(inputs)["last_hidden_state"], rtol=1e-4, atol=1e-4)
    # the training tiles clip at 3 sigma as programmed PCM does; quant tiles do not clip
    mapping = replace(exe.arch.tile.mapping, clip_sigma=0.0)
    exe.arch = replace(exe.arch, tile=replace(exe.arch.tile, mapping=mapping))
    quiet = TrainProgram(exe, analog=True, noise=TrainNoise(0.0, 0.0), seed=0)
    quiet.set_lora(adapter)
    exe.set_noise(NoiseSpec("quant"))
    with torch.no_grad():
        quant = quiet(inputs)["last_hidden_state"].numpy()
    np.testing.assert_allclose(quant, exe.run(inputs)["last_hidden_state"], rtol=1e-3, atol=1e-3)


def test_adapt_cli_is_seeded_and_learns(binary: Path, data_npz: Path, tmp_path: Path) -> None:
    args = ["adapt", str(binary), "--data", str(data_npz), "--pooled", "last_hidden_state"]
    args += ["--epochs", "3", "--lr", "1e-2", "--seed", "3"]
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    assert main([*args, "-o", str(tmp_path / "two")]) == 0
    one = (tmp_path / "one" / "adapter_model.safetensors").read_bytes()
    assert one == (tmp_path / "two" / "adapter_model.safetensors").read_bytes()
    config = json.loads((tmp_path / "one" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == [HEAD]
    adapter = read_adapter(tmp_path / "one")
    assert all(np.abs(w.b).max() > 0 for w in adapter.lora.values())  # LoRA was trained


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    from aimcc.adapt import _linear

    factor = _linear(20, 0.1)
    assert [factor(s) for s in range(3)] == [0.5, 1.0, 1.0]
    assert factor(19) == pytest.approx(1 / 18) and factor(20) == 0.0
    assert all(factor(s) >= factor(s + 1) for s in range(2, 20))
    assert _linear(5, 0.0)(0) == 1.0


def test_training_lowers_the_loss_and_keeps_analog_weights(binary: Path, data_npz: Path) -> None:
    from aimcc.adapt import load_data

    exe = load(binary)
    weights = {k: v.clone() for k, v in exe._tensors.items()}
    data = load_data(data_npz, exe, None)
    config = TrainConfig(epochs=8, lr=1e-2, output="last_hidden_state", seed=0)
    result = train(exe, data, config)
    assert np.mean(result.losses[-4:]) < 0.8 * np.mean(result.losses[:4])
    for key, value in exe._tensors.items():
        assert torch.equal(value, weights[key]), key
    distilled = train(exe, data, TrainConfig(objective="distill", output="last_hidden_state"))
    assert HEAD not in distilled.adapter.heads
    assert np.isfinite(distilled.losses).all()


def test_eval_task_accuracy(binary: Path, data_npz: Path, tmp_path: Path, capsys) -> None:
    exe = load(binary)
    folder = write_adapter(tmp_path / "ad", random_adapter(exe, 2))
    args = ["eval", str(binary), "--data", str(data_npz), "--adapter", str(folder)]
    args += ["--pooled", "last_hidden_state", "--trials", "2", "--times", "0s,1y"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fp32 digital" in out and "1y" in out and "±" in out


def test_user_errors(binary: Path, data_npz: Path, tmp_path: Path, capsys) -> None:
    tsv = tmp_path / "d.tsv"
    tsv.write_text("sentence\tlabel\ngood\t1\n")
    cases = [
        (["adapt", str(binary), "--data", str(tsv), "-o", str(tmp_path / "x")], "--tokenizer"),
        (["adapt", str(binary), "--data", str(tmp_path / "none.npz"), "-o", "x"], "no such file"),
        (["eval", str(binary), "--data", str(data_npz)], "--adapter"),
        (["eval", str(binary)], "--reference"),
        (
            ["adapt", str(binary), "--data", str(data_npz), "-o", "x", "--init", str(tmp_path)],
            "not a peft adapter folder",
        ),
        (
            ["adapt", str(binary), "--data", str(data_npz), "-o", "x", "--warmup", "1.5"],
            "--warmup must be a fraction",
        ),
    ]
    for args, message in cases:
        assert main(args) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    exe = load(binary)
    with pytest.raises(AimccError, match="nope"):
        apply_adapter(exe, Adapter({"nope": LoraWeights(np.zeros((1, 1)), np.zeros((1, 1)), 1.0)}))
