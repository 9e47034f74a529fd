"""One AHWA-LoRA training step: aimcc adapt's forward+backward against aihwkit-lightning's.

    python bench/adapt.py [--batch 32] [--seq 48] [--rounds 3]

Same model (all-MiniLM-L6-v2 with rank-8 LoRA on its 36 encoder linears, the example of
examples/ahwa_lora), same input batch (SST-2 train sentences), same noise (weight noise 6.7 %
of the column max, output noise 4 % per tile, 8-bit DAC/ADC, 512-row tiles), same loss (CE of
a 2-class head on the mean-pooled embedding), in the same process. aihwkit-lightning runs its
train-mode torch forward (the CPU path; its triton kernels need a GPU) on the HF model with
peft LoRA around its AnalogLinear layers. Each round times one step of each, in turn; the
median over rounds is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "ahwa_lora"))

import build as example  # noqa: E402

from aimcc.adapt import TrainConfig, batches, load_data, train  # noqa: E402
from aimcc.arch import load_arch  # noqa: E402
from aimcc.runtime import load  # noqa: E402
from aimcc.runtime.train import TrainNoise, aihwkit_lightning_config  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2"


def lightning_model(arch):
    """HF MiniLM, its linears converted to aihwkit-lightning, then peft LoRA around them."""
    import build_corpus
    import peft
    from aihwkit_lightning.nn import AnalogLinear
    from transformers import BertModel

    bert = BertModel.from_pretrained(
        example.tokenizer_dir(), add_pooling_layer=False, attn_implementation="eager"
    )
    for name, module in list(bert.named_modules()):
        if isinstance(module, torch.nn.Linear):
            parent, _, child = name.rpartition(".")
            config = aihwkit_lightning_config(arch, module.in_features, True, TrainNoise())
            setattr(bert.get_submodule(parent), child, AnalogLinear.from_digital(module, config))
    lora = peft.LoraConfig(
        r=build_corpus.LORA_RANK,
        lora_alpha=build_corpus.LORA_ALPHA,
        target_modules=example.TARGETS,
        lora_dropout=0.0,
    )
    return peft.get_peft_model(bert, lora).train()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    opts = p.parse_args(argv)
    torch.manual_seed(0)
    _, binary = example.build(example.DEFAULT_OUT, opts.batch, opts.seq)
    exe = load(binary)
    data = load_data(SST2 / "train.tsv", exe, example.tokenizer_dir(), opts.batch, 0)
    feeds, labels, _ = next(batches(data, exe))
    arch = load_arch("paper-512")
    model = lightning_model(arch)
    head = torch.nn.Linear(384, 2)
    optimiser = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3)
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    target = torch.from_numpy(labels)

    def lightning_step() -> None:
        hidden = model(**inputs).last_hidden_state
        loss = F.cross_entropy(head(hidden.mean(1)), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    config = TrainConfig(epochs=1.0, output="sentence_embedding")

    def aimcc_step() -> float:
        """train() on one batch: one step; its clock starts after the one-time setup (the
        tiles' mapping, done once per training run)."""
        return train(exe, data, config).seconds

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    ours, theirs = [], []
    for _ in range(opts.rounds + 1):  # the first round warms up both
        ours.append(aimcc_step())
        theirs.append(timed(lightning_step))
    ours, theirs = ours[1:], theirs[1:]
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"MiniLM + LoRA r8, batch {opts.batch} x seq {opts.seq}, one training step "
        f"(forward+backward+AdamW), median of {opts.rounds}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print("| simulator | step (s) | rounds |\n|---|---|---|")
    print(f"| aimcc adapt (TrainProgram, train_matmul) | {a:.3f} | {np.round(ours, 3)} |")
    print(f"| aihwkit-lightning 2.1 (torch path) | {b:.3f} | {np.round(theirs, 3)} |")
    print(f"aimcc / aihwkit-lightning = {a / b:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
