"""The AHWA-LoRA experiment on a real model and task: all-MiniLM-L6-v2 on SST-2, offline.

    python bench/ahwa_lora.py [--train 512] [--dev 0] [--trials 10] [--seq 48] [--out DIR] ...

Builds the example (examples/ahwa_lora/build.py: MiniLM with LoRA slots, compiled hybrid for
paper-512 tiles), then trains on a subset of SST-2 train and evaluates on SST-2 dev:

  (a) a task LoRA + 2-class head trained digitally (exact fp32 layers), evaluated in fp32;
  (b) that same adapter deployed on PCM tiles;
  (c) an AHWA-LoRA adapter: (a) trained further on the task through the simulated tiles
      (``aimcc adapt``'s training forward: weight noise 6.7 %, output noise 4 %, 8-bit
      DAC/ADC with STE), head and LoRA at the LoRA's learning rate;
  (d) a label-free adapter: (a) adapted to the tiles by distillation from the fp32 model
      with (a), the "hardware adaptation" half of the method.

(b), (c) and (d) run on the same programmed chip in each trial: adapters are switched in, the
tiles are never reprogrammed (the multi-task path). Accuracy mean ± std over the trials at each
drift time goes to a markdown table, a JSON file and a PNG in --out. SST-2 is read from
../shared/data/sst2 relative to the project root (never copied).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "ahwa_lora"))

import build as example  # noqa: E402

from aimcc.adapt import (  # noqa: E402
    TrainConfig,
    load_data,
    train,
    with_base,
)
from aimcc.adapters import read_adapter, write_adapter  # noqa: E402
from aimcc.commands import parse_time  # noqa: E402
from aimcc.evaluate import accuracy, evaluate_accuracy  # noqa: E402
from aimcc.runtime import load  # noqa: E402
from aimcc.runtime.analog import NoiseSpec  # noqa: E402
from aimcc.runtime.options import DRIFT_TIMES  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2"
POOLED = "sentence_embedding"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def trained(path: Path, exe, data, config: TrainConfig, init=None):
    """Train (or reuse the adapter cached at ``path``)."""
    if (path / "adapter_config.json").is_file():
        log(f"reusing {path}")
        return read_adapter(path)
    t0 = time.perf_counter()

    def progress(step: int, total: int, loss: float) -> None:
        if step == 1 or step % 4 == 0 or step == total:
            left = (time.perf_counter() - t0) / step * (total - step)
            log(f"  {path.name}: step {step}/{total} loss {loss:.4f} (~{left:.0f} s left)")

    result = train(exe, data, config, init, progress)
    write_adapter(path, with_base(result.adapter, exe.where))
    log(f"trained {path.name}: {result.steps} steps in {result.seconds:.0f} s")
    return result.adapter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=512, help="training sentences (subset)")
    p.add_argument("--dev", type=int, default=0, help="dev sentences (0: all 872)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--times", default=",".join(DRIFT_TIMES))
    p.add_argument("--seq", type=int, default=48, help="sequence length (98 %% of dev fits 48)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--adapt-epochs", type=float, default=0.5, help="epochs of (c) and (d)")
    p.add_argument("--lr", type=float, default=1e-2, help="the head's learning rate")
    p.add_argument("--lora-lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=example.DEFAULT_OUT / "bench")
    opts = p.parse_args(argv)
    torch.manual_seed(opts.seed)
    command = "python bench/ahwa_lora.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log(f"{command}; torch threads {torch.get_num_threads()}")
    _, binary = example.build(example.DEFAULT_OUT, opts.batch, opts.seq)
    exe = load(binary)
    tok = example.tokenizer_dir()
    train_data = load_data(SST2 / "train.tsv", exe, tok, opts.train, opts.seed)
    dev = load_data(SST2 / "dev.tsv", exe, tok, opts.dev or None, opts.seed)
    log(f"{binary.name}: train subset {len(train_data)}, dev {len(dev)}")
    tag = f"s{opts.seq}_n{opts.train}_e{opts.epochs:g}_{opts.adapt_epochs:g}"
    tag += f"_lr{opts.lr:g}_{opts.lora_lr:g}_seed{opts.seed}"
    adapters = opts.out / "adapters"
    common = dict(
        epochs=opts.epochs, lr=opts.lr, lora_lr=opts.lora_lr, seed=opts.seed, output=POOLED
    )
    a = trained(adapters / f"a_digital_{tag}", exe, train_data, TrainConfig(analog=False, **common))
    # (c) and (d) start from (a); the head moves at the LoRA's rate (a large head step on
    # noisy outputs undoes what (a) learnt)
    common.update(epochs=opts.adapt_epochs, lr=opts.lora_lr)
    c = trained(adapters / f"c_ahwa_slowhead_{tag}", exe, train_data, TrainConfig(**common), init=a)
    d = trained(
        adapters / f"d_distill_{tag}",
        exe,
        train_data,
        TrainConfig(objective="distill", **common),
        init=a,
    )
    exe.set_noise(NoiseSpec("ideal"))
    fp32 = {name: accuracy(exe, dev, ad, POOLED) for name, ad in (("a", a), ("c", c), ("d", d))}
    log("fp32 accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in fp32.items()))
    times = [(label.strip(), parse_time(label)) for label in opts.times.split(",")]
    t0 = time.perf_counter()
    done = [0]

    def step() -> None:
        done[0] += 1
        total = opts.trials * len(times)
        left = (time.perf_counter() - t0) / done[0] * (total - done[0])
        log(f"  pcm {done[0]}/{total} (~{left:.0f} s left)")

    pcm = evaluate_accuracy(
        exe, dev, {"b": a, "c": c, "d": d}, times, opts.trials, opts.seed, POOLED, step=step
    )
    labels = [label for label, _ in times]
    rows = {
        "(a) digital fp32, digital LoRA": np.full((1, len(times)), fp32["a"]),
        "(b) digital LoRA on PCM": pcm["b"],
        "(c) AHWA-LoRA on PCM": pcm["c"],
        "(d) distill-only AHWA adapter on PCM": pcm["d"],
    }
    table = [
        f"`{command}` — SST-2 dev ({len(dev)} sentences), train subset {len(train_data)}, "
        f"seq {opts.seq}, {opts.trials} trials, accuracy % mean ± std",
        "",
        "| adapter | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name, values in rows.items():
        cells = [
            f"{100 * m:.2f} ± {100 * s:.2f}"
            for m, s in zip(values.mean(0), values.std(0), strict=True)
        ]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    table.append("")
    table.append(
        "fp32 accuracy of the AHWA adapters themselves: "
        f"(c) {100 * fp32['c']:.2f}, (d) {100 * fp32['d']:.2f}"
    )
    text = "\n".join(table)
    print(text)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / f"ahwa_lora_{tag}.md").write_text(text + "\n")
    (opts.out / f"ahwa_lora_{tag}.json").write_text(
        json.dumps(
            {
                "command": command,
                "times": labels,
                "fp32": fp32,
                "pcm": {k: v.tolist() for k, v in pcm.items()},
                "train": len(train_data),
                "dev": len(dev),
            },
            indent=1,
        )
    )
    plot(rows, labels, opts.out / f"ahwa_lora_{tag}.png", f"MiniLM on SST-2 dev: {command}")
    log(f"wrote {opts.out}/ahwa_lora_{tag}.{{md,json,png}}")
    return 0


def plot(rows: dict[str, np.ndarray], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(labels))
    for name, values in rows.items():
        ax.errorbar(
            x, 100 * values.mean(0), yerr=100 * values.std(0), marker="o", capsize=3, label=name
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("time after programming")
    ax.set_ylabel("SST-2 dev accuracy (%)")
    ax.set_title(title, fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
