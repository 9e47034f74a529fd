"""Adapter switching: time to swap LoRA adapters on one analog binary, and their size.

Run: python bench/adapters.py [--model examples/models/minilm.onnx] [--rank 8] [--rounds 200]

The base (MiniLM-size: 6 layers, hidden 384) is compiled once with --lora-rank slots on every
linear; two random adapters (every slot filled) are switched in turn. Timed per switch
(median): set_adapter of an adapter made ready by prepare_adapter (a swap of tensor
references, as onnxruntime's multi-LoRA keeps adapters loaded), of an Adapter in memory (check,
pad, scale, swap), of its peft folder on disk (adds reading adapter_config.json and the
safetensors), and back to the compiled slots (None). The tiles are programmed with pcm noise
first, and the bench checks that the programmed devices are the same objects after every
switch. Without --model, and when examples/models/minilm.onnx is absent, a random BERT of
MiniLM's dimensions is exported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aimcc.adapters import Adapter, LoraWeights, write_adapter
from aimcc.backends.aimcb import write_binary
from aimcc.compiler import compile_model
from aimcc.passes.lora_slots import LoraSlotsPass
from aimcc.runtime import Executable, load
from aimcc.runtime.analog import NoiseSpec

ROOT = Path(__file__).resolve().parents[1]
MINILM = ROOT / "examples" / "models" / "minilm.onnx"
TARGET_MS = 1.0  # the switch-time target for a MiniLM-size adapter set


def minilm_size_bert(path: Path) -> Path:
    """A random-init BERT with all-MiniLM-L6-v2's dimensions, exported like the corpus."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnx
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(0, 30522, (1, 128))  # static shapes: the benched ones
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    program = torch.onnx.export(
        model, args=(), kwargs=inputs, opset_version=20, dynamo=True, verbose=False
    )
    onnx.save_model(program.model_proto, path)
    return path


def random_adapter(exe: Executable, rank: int, seed: int) -> Adapter:
    rng = np.random.default_rng(seed)
    return Adapter(
        {
            name: LoraWeights(
                rng.standard_normal((k, rank)).astype(np.float32) * 0.01,
                rng.standard_normal((rank, n)).astype(np.float32) * 0.01,
                2.0,
            )
            for name, (k, _, n) in exe.adapter_slots().items()
        }
    )


def median_ms(call: Callable[[int], object], rounds: int) -> float:
    call(0)
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="ONNX model (default: minilm.onnx or MiniLM-size)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--rounds", type=int, default=200)
    opts = p.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = opts.model or (MINILM if MINILM.is_file() else minilm_size_bert(tmp / "m.onnx"))
        shapes = {"input_ids": (1, 128)} if model == MINILM else None
        write_binary(
            compile_model(model, input_shapes=shapes, slots=LoraSlotsPass(opts.rank)),
            tmp / "base.aimcb",
        )
        exe = load(tmp / "base.aimcb")
        exe.set_noise(NoiseSpec("pcm"), seed=0)
        programmed = [layer.programmed for layer in exe.layers]
        adapters = [random_adapter(exe, opts.rank, seed) for seed in (1, 2)]
        folders = [write_adapter(tmp / f"task{i}", a) for i, a in enumerate(adapters)]
        ready = [exe.prepare_adapter(a) for a in adapters]
        swap = median_ms(lambda i: exe.set_adapter(ready[i % 2]), opts.rounds)
        in_memory = median_ms(lambda i: exe.set_adapter(adapters[i % 2]), opts.rounds)
        from_disk = median_ms(lambda i: exe.set_adapter(folders[i % 2]), opts.rounds // 4)
        to_none = median_ms(lambda i: exe.set_adapter(None), opts.rounds)
        assert all(a is b.programmed for a, b in zip(programmed, exe.layers, strict=True))
        analog_values = sum(layer.weight.numel() for layer in exe.layers)
        adapter_bytes = adapters[0].nbytes()
        file_bytes = (folders[0] / "adapter_model.safetensors").stat().st_size
    table = Table(
        title=f"{model.name}: {len(exe.layers)} analog layers, "
        f"{len(exe.adapter_slots())} slots of rank {opts.rank}",
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("switch, prepared adapter (median)", f"{swap:.3f} ms")
    table.add_row("switch, Adapter in memory (check + swap)", f"{in_memory:.3f} ms")
    table.add_row("switch, peft folder on disk (median)", f"{from_disk:.3f} ms")
    table.add_row("back to the compiled slots (None)", f"{to_none:.3f} ms")
    table.add_row("target", f"< {TARGET_MS:g} ms")
    table.add_row(
        "analog weights (devices, fp32 bytes)",
        f"{analog_values:,} ({analog_values * 4 / 2**20:.2f} MiB)",
    )
    table.add_row(
        "adapter tensors (fp32)", f"{adapter_bytes:,} B ({adapter_bytes / 2**10:.1f} KiB)"
    )
    table.add_row("adapter file (safetensors)", f"{file_bytes:,} B")
    table.add_row("adapter / analog bytes", f"{adapter_bytes / (analog_values * 4):.2%}")
    table.add_row("tiles reprogrammed by switching", "0 (same programmed devices)")
    console.print(table)


if __name__ == "__main__":
    main()
