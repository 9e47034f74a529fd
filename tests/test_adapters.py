"""Adapter slots and peft adapters: one analog binary, many tasks (issue 9, items 1-3).

References are peft itself (adapters it writes, models it runs, merged exports run by
onnxruntime), never aimcc's own arithmetic.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, SMALL_MODELS, model_path, onnxruntime_outputs, relative_error

from aimcc.adapters import (
    Adapter,
    LoraWeights,
    read_adapter,
    write_adapter,
)
from aimcc.backends.aimcb import write_binary
from aimcc.cli import main
from aimcc.commands import random_inputs
from aimcc.compiler import compile_model
from aimcc.errors import AimccError
from aimcc.passes.lora_slots import LoraSlotsPass
from aimcc.runtime import Executable, load
from aimcc.runtime.analog import NoiseSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
peft = pytest.importorskip("peft")

SEQ = 16
SHAPES = {"input_ids": (1, SEQ), "attention_mask": (1, SEQ), "token_type_ids": (1, SEQ)}


def _corpus() -> Any:
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "examples/build_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


corpus = _corpus()


def export(model: torch.nn.Module, inputs: dict[str, torch.Tensor], path: Path, out: str) -> Path:
    """torch's dynamo exporter, static shapes, as the corpus is exported."""
    program = torch.onnx.export(
        model.eval(),
        args=(),
        kwargs=inputs,
        input_names=list(inputs),
        output_names=[out],
        opset_version=corpus.OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    onnx.save_model(program.model_proto, path)
    return path


def compile_to(
    path: Path, out: Path, slots: LoraSlotsPass | None = None, target: str = "hybrid", **kw: Any
) -> Executable:
    comp = compile_model(path, target, input_shapes=kw.get("shapes"), slots=slots)
    write_binary(comp, out)
    return load(out)


def bert_feeds(names: tuple[str, ...] = corpus._BERT_IO) -> dict[str, np.ndarray]:
    inputs = corpus.sample_inputs("bert", 1, SEQ)
    return {k: inputs[k].numpy() for k in names}


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus BERT (no LoRA in its graph) compiled with rank-8 adapter slots."""
    out = tmp_path_factory.mktemp("base") / "bert8.aimcb"
    compile_to(model_path("bert"), out, LoraSlotsPass(8), shapes=SHAPES)
    return out


def peft_bert(**config: Any) -> Any:
    """peft LoRA with random non-zero weights on the corpus BERT."""
    model = corpus.torch_model("bert")
    torch.manual_seed(5)
    lora = peft.LoraConfig(init_lora_weights=False, lora_dropout=0.0, **config)
    return peft.get_peft_model(model, lora)


def merged_reference(peft_model: Any, tmp_path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    merged = peft_model.merge_and_unload()
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    path = export(merged, inputs, tmp_path / "merged.onnx", "last_hidden_state")
    return onnxruntime_outputs(path, feeds)[0]


# -- item 1: slots -------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMALL_MODELS)
def test_lora_rank_on_every_corpus_model_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    exe = compile_to(model_path(name), tmp_path / "m.aimcb", LoraSlotsPass(8))
    analog = [i for i in exe.program["instructions"] if i["op"] == "analog"]
    loras = [i for i in exe.program["instructions"] if i.get("kind") == "lora"]
    assert analog and len(loras) == len(analog)  # every analog linear got a slot (or has LoRA)
    assert all(i["layer"] for i in analog)
    feeds = random_inputs(exe, 0)
    got = exe.run(feeds)
    for spec, ref in zip(exe.outputs, onnxruntime_outputs(model_path(name), feeds), strict=True):
        assert relative_error(got[spec["name"]], ref) < 1e-4


def test_lora_rank_on_minilm_matches_onnxruntime(minilm_path: Path, tmp_path: Path) -> None:
    shapes = {"input_ids": (1, 32)}
    exe = compile_to(minilm_path, tmp_path / "m.aimcb", LoraSlotsPass(8), shapes=shapes)
    assert len(exe.adapter_slots()) == 36
    feeds = random_inputs(exe, 0)
    got = exe.run(feeds)
    for spec, ref in zip(exe.outputs, onnxruntime_outputs(minilm_path, feeds), strict=True):
        assert relative_error(got[spec["name"]], ref) < 1e-4


def test_compile_options_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.aimcb"
    model = str(model_path("bert"))
    assert (
        main([model, "--lora-rank", "4", "--lora-targets", "*.self.*", "-q", "-o", str(out)]) == 0
    )
    assert len(load(out).adapter_slots()) == 6  # query, key, value of two layers
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "6 LoRA adapter slots (6 of rank 4; " in shown and "--adapter DIR" in shown
    bad = tmp_path / "bad.aimcb"
    capsys.readouterr()
    assert main([model, "--lora-rank", "4", "--digital-layers", "clasifier", "-o", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aimcc: error: --digital-layers: 'clasifier' matches no linear layer")
    assert err.count("\n") == 1 and not bad.exists()


def test_every_stage_with_slots_and_digital_layers_round_trips() -> None:
    """Layer names, slots and the digital mark print and parse back at every stage."""
    from xdsl.parser import Parser

    from aimcc.ir import make_context

    dumps: dict[str, str] = {}
    comp = compile_model(
        model_path("bert"),
        slots=LoraSlotsPass(4, digital="encoder.layer.1.output.dense"),
        after_pass=lambda stage, module: dumps.__setitem__(stage, str(module)),
    )
    assert 'layer = "encoder.layer.1.output.dense", digital' in dumps["lora-slots"]
    assert '{layer = "encoder.layer.0.attention.self.query"}' in dumps["tile"]
    ctx = make_context(comp.ctx.weights, comp.arch)
    for stage, text in dumps.items():
        parsed = Parser(ctx, text).parse_module()
        parsed.verify()
        assert str(parsed) == text, f"{stage} does not round-trip"


def test_slot_kernels_are_in_the_schedule(tmp_path: Path) -> None:
    base = compile_model(model_path("bert"), input_shapes=SHAPES)
    slots = compile_model(model_path("bert"), input_shapes=SHAPES, slots=LoraSlotsPass(8))
    assert base.schedule is not None and slots.schedule is not None
    assert slots.schedule.makespan_ns > base.schedule.makespan_ns
    assert slots.schedule.energy_nj > base.schedule.energy_nj


def test_lora_targets_and_bad_patterns(tmp_path: Path) -> None:
    exe = compile_to(model_path("bert"), tmp_path / "qv.aimcb", LoraSlotsPass(4, "query,value"))
    assert sorted(exe.adapter_slots()) == [
        f"encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")
    ]
    with pytest.raises(AimccError, match="'nothing' matches no linear layer"):
        compile_model(model_path("bert"), slots=LoraSlotsPass(4, "nothing"))
    with pytest.raises(AimccError, match="--target aimc"):
        compile_model(model_path("bert"), "aimc", slots=LoraSlotsPass(4))


def test_gpt2_peft_conv1d_lora_lands_on_clusters(tmp_path: Path) -> None:
    """peft LoRA on GPT-2's Conv1D: the base is a Gemm on a flattened 2-D view, the LoRA
    branch runs on the 3-D tensor. It must become `lora` kernels, never analog layers."""
    model = corpus.torch_model("gpt2")
    torch.manual_seed(3)
    config = peft.LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["c_attn", "c_proj", "c_fc"],
        fan_in_fan_out=True,
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    wrapped = peft.get_peft_model(model, config).get_base_model()
    inputs = corpus.sample_inputs("gpt2", 1, SEQ)
    path = export(wrapped, inputs, tmp_path / "gpt2_lora.onnx", "logits")
    shapes = {"input_ids": (1, SEQ), "attention_mask": (1, SEQ)}
    exe = compile_to(path, tmp_path / "g.aimcb", shapes=shapes)
    analog = [i for i in exe.program["instructions"] if i["op"] == "analog"]
    loras = [i for i in exe.program["instructions"] if i.get("kind") == "lora"]
    assert len(loras) == 8 and len(analog) == 9  # 2 blocks x 4 Conv1D, plus the LM head
    assert all(8 not in exe._tensors[i["weight"]].shape for i in analog)  # no A or B on a tile
    assert {i["params"]["layer"] for i in loras} == {
        f"transformer.h.{b}.{m}"
        for b in (0, 1)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    feeds = {k: v.numpy() for k, v in inputs.items()}
    reference = onnxruntime_outputs(path, feeds)[0]
    assert relative_error(exe.run(feeds)["logits"], reference) < 1e-4


def test_gpt2_conv1d_adapter_loads_onto_slots(tmp_path: Path) -> None:
    """A peft Conv1D adapter (fan_in_fan_out) on the plain GPT-2 binary's slots, whose base
    linears run on the flattened 2-D view, matches the merged export."""
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    torch.manual_seed(4)
    pm = peft.get_peft_model(corpus.torch_model("gpt2"), config)
    pm.save_pretrained(tmp_path / "adapter")
    inputs = corpus.sample_inputs("gpt2", 1, SEQ)
    merged = export(pm.merge_and_unload(), inputs, tmp_path / "merged.onnx", "logits")
    shapes = {"input_ids": (1, SEQ), "attention_mask": (1, SEQ)}
    exe = compile_to(model_path("gpt2"), tmp_path / "g.aimcb", LoraSlotsPass(8), shapes=shapes)
    exe.set_adapter(tmp_path / "adapter")
    feeds = {k: v.numpy() for k, v in inputs.items()}
    reference = onnxruntime_outputs(merged, feeds)[0]
    assert relative_error(exe.run(feeds)["logits"], reference) < 1e-4
    assert relative_error(onnxruntime_outputs(model_path("gpt2"), feeds)[0], reference) > 1e-3


# -- item 2: peft folders ------------------------------------------------------------------
def test_peft_adapter_on_slot_binary_matches_merged_export(bert_base: Path, tmp_path: Path):
    """An adapter folder written by peft (ranks 8 and 4 via rank_pattern, alpha_pattern) loads
    onto the base binary; `aimcc run` matches onnxruntime on the merged-LoRA export."""
    pm = peft_bert(
        r=8,
        lora_alpha=16,
        target_modules=["query", "key", "value", "dense"],
        rank_pattern={"value": 4},
        alpha_pattern={"key": 4},
    )
    pm.save_pretrained(tmp_path / "adapter")
    feeds = bert_feeds()
    reference = merged_reference(pm, tmp_path, feeds)
    np.savez(tmp_path / "in.npz", **feeds)
    args = ["run", str(bert_base), "--inputs", str(tmp_path / "in.npz")]
    assert main([*args, "--adapter", str(tmp_path / "adapter"), "-o", str(tmp_path / "o.npz")]) == 0
    with np.load(tmp_path / "o.npz") as out:
        assert relative_error(out["last_hidden_state"], reference) < 1e-4
    base = onnxruntime_outputs(model_path("bert"), feeds)[0]
    assert relative_error(base, reference) > 1e-2  # the adapter does change the outputs


class _Wrapped(torch.nn.Module):
    """The corpus BERT one module deeper (layer names gain a ``bert.`` prefix)."""

    def __init__(self) -> None:
        super().__init__()
        self.bert = corpus.torch_model("bert")

    def forward(self, input_ids, attention_mask, token_type_ids):
        kw = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.bert(input_ids=input_ids, **kw).last_hidden_state


def test_legacy_export_names_and_prefixed_modules(tmp_path: Path) -> None:
    """torch's legacy exporter leaves names only in node scopes (`/bert/encoder/.../MatMul`);
    an adapter made on the bare BERT (`encoder....`) attaches by dot-suffix."""
    feeds = bert_feeds()
    args = tuple(torch.from_numpy(feeds[k]) for k in corpus._BERT_IO)
    path = tmp_path / "legacy.onnx"
    torch.onnx.export(
        _Wrapped().eval(),
        args,
        str(path),
        input_names=list(corpus._BERT_IO),
        output_names=["last_hidden_state"],
        opset_version=17,
        dynamo=False,
    )
    exe = compile_to(path, tmp_path / "legacy.aimcb", LoraSlotsPass(8))
    assert "bert.encoder.layer.1.attention.self.query" in exe.adapter_slots()
    pm = peft_bert(r=8, lora_alpha=16, target_modules=["query", "value"])
    pm.save_pretrained(tmp_path / "adapter")
    reference = merged_reference(pm, tmp_path, feeds)
    exe.set_adapter(tmp_path / "adapter")
    assert relative_error(exe.run(feeds)["last_hidden_state"], reference) < 1e-4


def test_rslora_adapter(bert_base: Path, tmp_path: Path) -> None:
    pm = peft_bert(r=4, lora_alpha=8, target_modules=["query", "value"], use_rslora=True)
    pm.save_pretrained(tmp_path / "adapter")
    feeds = bert_feeds()
    reference = merged_reference(pm, tmp_path, feeds)
    exe = load(bert_base)
    exe.set_adapter(tmp_path / "adapter")
    assert relative_error(exe.run(feeds)["last_hidden_state"], reference) < 1e-4


def test_written_adapter_loads_into_peft_with_same_digital_outputs(tmp_path: Path) -> None:
    """Round trip: aimcc writes, peft reads on the Hugging Face model; digital outputs agree."""
    rng = np.random.default_rng(0)
    lora = {}
    for layer in (0, 1):
        for module, rank, scale in (
            ("attention.self.query", 8, 2.0),
            ("attention.self.value", 4, 0.5),
            ("attention.output.dense", 8, 2.0),
            ("output.dense", 2, 3.0),  # the FFN's 512 -> 128
        ):
            k = 512 if module == "output.dense" else 128
            lora[f"encoder.layer.{layer}.{module}"] = LoraWeights(
                rng.standard_normal((k, rank)).astype(np.float32) * 0.1,
                rng.standard_normal((rank, 128)).astype(np.float32) * 0.1,
                scale,
            )
    folder = write_adapter(tmp_path / "ours", Adapter(lora))
    again = read_adapter(folder)
    assert set(again.lora) == set(lora)
    for name, lw in lora.items():
        np.testing.assert_array_equal(again.lora[name].a, lw.a)
        np.testing.assert_array_equal(again.lora[name].b, lw.b)
        assert again.lora[name].scale == pytest.approx(lw.scale, rel=1e-12)
    hf = peft.PeftModel.from_pretrained(corpus.torch_model("bert"), folder).eval()
    feeds = bert_feeds()
    with torch.no_grad():
        expected = hf(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state
    exe = compile_to(
        model_path("bert"), tmp_path / "d.aimcb", LoraSlotsPass(8), "digital", shapes=SHAPES
    )
    exe.set_adapter(folder)
    assert relative_error(exe.run(feeds)["last_hidden_state"], expected.numpy()) < 1e-5


class _Classifier(torch.nn.Module):
    """The corpus BERT with a 2-class head on the first token (a task head for adapters)."""

    def __init__(self) -> None:
        super().__init__()
        self.bert = corpus.torch_model("bert")
        self.classifier = torch.nn.Linear(corpus.HIDDEN, 2)

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self.classifier(hidden[:, 0])


def test_task_head_in_modules_to_save_swaps_with_the_adapter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base_model = _Classifier().eval()
    feeds = bert_feeds()
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    base_onnx = export(base_model, inputs, tmp_path / "cls.onnx", "logits")
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    pm = peft.get_peft_model(_Classifier().eval(), config)
    with torch.no_grad():
        head = pm.base_model.model.classifier.modules_to_save["default"]
        head.weight.normal_(0, 0.5)
        head.bias.normal_(0, 0.5)
    pm.save_pretrained(tmp_path / "task")
    merged = pm.merge_and_unload()
    reference = onnxruntime_outputs(export(merged, inputs, tmp_path / "m.onnx", "logits"), feeds)
    slots = LoraSlotsPass(8, digital="classifier")
    exe = compile_to(base_onnx, tmp_path / "cls.aimcb", slots, shapes=SHAPES)
    assert exe.layer_names()["classifier"] == "digital"
    assert "classifier" not in exe.adapter_slots()
    exe.set_adapter(tmp_path / "task")
    assert relative_error(exe.run(feeds)["logits"], reference[0]) < 1e-4
    exe.set_adapter(None)
    base = onnxruntime_outputs(base_onnx, feeds)[0]
    assert relative_error(exe.run(feeds)["logits"], base) < 1e-4
    analog = compile_to(base_onnx, tmp_path / "a.aimcb", LoraSlotsPass(8), shapes=SHAPES)
    with pytest.raises(AimccError, match=r"on analog tiles.*--digital-layers classifier"):
        analog.set_adapter(tmp_path / "task")


# -- item 3: switching never reprograms a tile ---------------------------------------------
def test_switching_adapters_keeps_the_programmed_pcm_devices(bert_base: Path, tmp_path: Path):
    peft_bert(r=8, lora_alpha=16, target_modules=["query", "value"]).save_pretrained(tmp_path / "a")
    exe = load(bert_base)
    exe.set_noise(NoiseSpec("pcm", 3600.0), seed=0)
    programmed = [layer.programmed for layer in exe.layers]
    tiles = [layer.tiles for layer in exe.layers]
    devices = [(p.g_prog.clone(), p.nu.clone()) for p in programmed if p is not None]
    feeds = bert_feeds()

    def run() -> np.ndarray:
        assert exe._generator is not None
        exe._generator.manual_seed(11)  # the same output-noise draws for each run
        return exe.run(feeds)["last_hidden_state"]

    before = run()
    exe.set_adapter(tmp_path / "a")
    during = run()
    exe.set_adapter(None)
    after = run()
    assert len(devices) == len(exe.layers) == 12
    assert all(a is b for a, b in zip(programmed, (x.programmed for x in exe.layers), strict=True))
    assert all(a is b for a, b in zip(tiles, (x.tiles for x in exe.layers), strict=True))
    for (g, nu), layer in zip(devices, exe.layers, strict=True):
        assert layer.programmed is not None
        assert torch.equal(g, layer.programmed.g_prog) and torch.equal(nu, layer.programmed.nu)
    assert relative_error(during, before) > 1e-2
    np.testing.assert_array_equal(after, before)  # same devices, same read: same outputs


def test_eval_loads_the_adapter(
    bert_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aimcc eval --adapter`: the trials run with the adapter in its slots."""
    import aimcc.evaluate as evaluate_module  # eval imports it when it runs, after argparse

    pm = peft_bert(r=8, lora_alpha=16, target_modules=["query", "value"])
    pm.save_pretrained(tmp_path / "adapter")
    feeds = bert_feeds()
    merged = pm.merge_and_unload()
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    reference = export(merged, inputs, tmp_path / "merged.onnx", "last_hidden_state")
    seen = []
    real = evaluate_module.evaluate

    def spy(exe: Executable, *args: Any, **kw: Any) -> Any:
        exe.set_noise(NoiseSpec("ideal"))
        seen.append(
            relative_error(exe.run(feeds)["last_hidden_state"], args[1][0]["last_hidden_state"])
        )
        return real(exe, *args, **kw)

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    np.savez(tmp_path / "in.npz", **feeds)
    common = ["eval", str(bert_base), "--reference", str(reference), "--inputs"]
    common += [str(tmp_path / "in.npz"), "--trials", "1", "--times", "0s"]
    assert main([*common, "--adapter", str(tmp_path / "adapter")]) == 0
    assert seen[0] < 1e-4  # ideal tiles: with the adapter, the merged model
    # without the adapter, the merged model is not the one the binary was compiled from
    assert main(common) == 1


# -- bad inputs: one line, nothing half-written, previous adapter kept ---------------------
def _bad(folder: Path, how: str) -> Path:
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = folder / "adapter_model.safetensors"
    if how == "wrong rank":
        config["r"] = 4
    elif how == "DoRA":
        config["use_dora"] = True
    elif how == "bad rank_pattern":
        config["rank_pattern"] = {"query(": 8}
    elif how == "corrupt safetensors":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how in ("non-finite", "unknown module"):
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(weights))
        key = next(k for k in tensors if k.endswith("lora_B.weight"))
        if how == "non-finite":
            tensors[key][0, 0] = np.nan
        else:
            tensors[key.replace("query", "querx")] = tensors.pop(key)
            a = key.replace("lora_B", "lora_A")
            tensors[a.replace("query", "querx")] = tensors.pop(a)
        save_file(tensors, str(weights))
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("wrong rank", "has rank 8, the config says 4"),
        ("unknown module", "'encoder.layer.0.attention.self.querx' matches no layer"),
        ("corrupt safetensors", "not a readable safetensors file"),
        ("non-finite", "non-finite values"),
        ("rank above the slot", "more than the slot rank 8"),
        ("another base model", "an adapter for another base model"),
        ("missing folder", "not an adapter folder"),
        ("DoRA", "DoRA (use_dora) is not supported"),
        ("bad rank_pattern", "'query(' in the adapter config is not a regex"),
    ],
)
def test_bad_adapters_fail_with_one_line(
    how: str, message: str, bert_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "adapter"
    if how == "rank above the slot":
        peft_bert(r=16, lora_alpha=16, target_modules=["query"]).save_pretrained(folder)
    elif how == "another base model":
        config = corpus._bert_config()
        config.hidden_size, config.intermediate_size = 64, 128
        from transformers import BertModel

        model = peft.get_peft_model(
            BertModel(config, add_pooling_layer=False),
            peft.LoraConfig(r=8, target_modules=["query"], init_lora_weights=False),
        )
        model.save_pretrained(folder)
    elif how != "missing folder":
        peft_bert(r=8, lora_alpha=16, target_modules=["query"]).save_pretrained(folder)
        _bad(folder, how)
    out = tmp_path / "out.npz"
    capsys.readouterr()  # drop what making the adapter printed (library warnings)
    code = main(["run", str(bert_base), "--random", "--adapter", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("aimcc: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_failed_switch_keeps_the_previous_adapter(bert_base: Path, tmp_path: Path) -> None:
    peft_bert(r=8, lora_alpha=16, target_modules=["query"]).save_pretrained(tmp_path / "good")
    exe = load(bert_base)
    exe.set_adapter(tmp_path / "good")
    feeds = bert_feeds()
    before = exe.run(feeds)["last_hidden_state"]
    bad = {
        "encoder.layer.0.attention.self.query": (np.zeros((128, 4)), np.zeros((4, 64)), 1.0),
        "encoder.layer.1.attention.self.query": (np.zeros((128, 4)), np.zeros((4, 128)), 1.0),
    }
    with pytest.raises(AimccError, match="another base model"):
        exe.set_adapter(bad)
    np.testing.assert_array_equal(exe.run(feeds)["last_hidden_state"], before)


def test_write_adapter_is_atomic(tmp_path: Path) -> None:
    good = Adapter({"q": LoraWeights(np.ones((4, 2), np.float32), np.ones((2, 4), np.float32), 1)})
    write_adapter(tmp_path / "a", good)
    bad = Adapter({"q": LoraWeights(np.full((4, 2), np.nan, np.float32), np.ones((2, 4)), 1.0)})
    with pytest.raises(AimccError, match="non-finite"):
        write_adapter(tmp_path / "a", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp folder left
    np.testing.assert_array_equal(read_adapter(tmp_path / "a").lora["q"].a, np.ones((4, 2)))
