"""`aimcc adapt BINARY --data FILE -o ADAPTER`: train LoRA adapters against the simulated tiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from aimcc import report
from aimcc.adapt import (
    OBJECTIVES,
    TrainConfig,
    load_data,
    train,
    with_base,
)
from aimcc.adapters import read_adapter, write_adapter
from aimcc.errors import AimccError
from aimcc.runtime import load
from aimcc.runtime.train import TrainNoise


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aimcc adapt",
        description="Train the binary's LoRA slots (AHWA-LoRA) with the analog weights frozen: "
        "every analog layer runs through the binary's own tiles with the paper's training "
        "noise (weight noise relative to each column's max |w|, output noise, 8-bit DAC/ADC "
        "with straight-through gradients). 'task' fits a digital 2-class head and the LoRA to "
        "labels (cross-entropy); 'distill' needs no labels and matches the fp32 model with the "
        "starting adapter. Writes a peft adapter folder.",
    )
    p.add_argument("binary", type=Path, help="the .aimcb file (compiled with LoRA slots)")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="TSV 'sentence<TAB>label' (with --tokenizer) or .npz of token ids",
    )
    p.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizer folder (for a TSV)")
    p.add_argument("-o", "--output", type=Path, required=True, help="adapter folder to write")
    p.add_argument("--objective", choices=OBJECTIVES, default="task")
    p.add_argument("--init", type=Path, metavar="ADAPTER", help="start from this adapter")
    p.add_argument(
        "--digital",
        action="store_true",
        help="train on exact fp32 layers instead of the simulated tiles",
    )
    p.add_argument("--limit", type=int, metavar="N", help="use N examples drawn with --seed")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the head")
    p.add_argument("--lora-lr", type=float, help="learning rate of the LoRA (default: --lr)")
    p.add_argument(
        "--warmup",
        type=float,
        default=TrainConfig.warmup,
        metavar="FRACTION",
        help="linear warm-up over this fraction of the steps, then linear decay to 0 (default 0.1)",
    )
    p.add_argument(
        "--weight-noise",
        type=float,
        default=TrainNoise.weight_noise,
        help="weight noise std relative to the column max |w| (default 0.067)",
    )
    p.add_argument(
        "--out-noise",
        type=float,
        help="output noise std per tile (default: the arch's tile.adc.out_noise)",
    )
    p.add_argument(
        "--pooled",
        default="sentence_embedding",
        metavar="OUTPUT",
        help="the output the head reads and distillation matches",
    )
    p.add_argument("--seed", type=int, default=0, help="data order, noise and init")
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    if opts.epochs <= 0 or opts.lr <= 0 or (opts.limit is not None and opts.limit < 1):
        raise AimccError("--epochs, --lr and --limit must be positive")
    if not 0 <= opts.warmup < 1:
        raise AimccError(f"--warmup must be a fraction in [0, 1), got {opts.warmup}")
    exe = load(opts.binary)
    data = load_data(opts.data, exe, opts.tokenizer, opts.limit, opts.seed)
    init = read_adapter(opts.init) if opts.init else None
    config = TrainConfig(
        objective=opts.objective,
        analog=not opts.digital,
        noise=TrainNoise(opts.weight_noise, opts.out_noise),
        epochs=opts.epochs,
        lr=opts.lr,
        lora_lr=opts.lora_lr,
        seed=opts.seed,
        output=opts.pooled,
        warmup=opts.warmup,
    )
    progress = Progress(
        TextColumn("training {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        console=report.console,
        transient=True,
    )
    where = "fp32" if opts.digital else "on the tiles"
    with progress:
        task = progress.add_task(where, total=None, loss=float("nan"))

        def step(done: int, total: int, loss: float) -> None:
            progress.update(task, completed=done, total=total, loss=loss)

        result = train(exe, data, config, init, step)
    write_adapter(opts.output, with_base(result.adapter, str(opts.binary)))
    last = sum(result.losses[-10:]) / len(result.losses[-10:])
    report.console.print(
        f"{result.steps} steps on {len(data)} examples {where} in {result.seconds:.1f} s, "
        f"loss {result.losses[0]:.4f} -> {last:.4f} (mean of the last 10); wrote {opts.output}",
        highlight=False,
    )
    return 0
