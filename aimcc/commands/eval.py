"""`aimcc eval BINARY --reference MODEL.onnx`: accuracy on PCM tiles over drift time."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aimcc import report
from aimcc.atomic import atomic_write
from aimcc.commands import parse_time, random_inputs, read_npz
from aimcc.errors import AimccError
from aimcc.evaluate import DRIFT_TIMES, EvalResult, evaluate, plot, reference_outputs
from aimcc.runtime import load
from aimcc.runtime.analog import COMPENSATIONS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aimcc eval",
        description="Program the binary's tiles with PCM noise N times and compare its outputs "
        "with the fp32 ONNX reference (onnxruntime) at several times after programming: "
        "relative error ||y - ref|| / ||ref||, cosine similarity, and for embedding "
        "outputs the mean per-sentence cosine. Prints mean ± std over the trials.",
    )
    p.add_argument("binary", type=Path, help="the .aimcb file")
    p.add_argument("--reference", type=Path, help="the fp32 ONNX model (output error metrics)")
    p.add_argument("--trials", type=int, default=10, metavar="N", help="programmings (default 10)")
    p.add_argument(
        "--times",
        default=",".join(DRIFT_TIMES),
        help=f"comma-separated times after programming (default {','.join(DRIFT_TIMES)})",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--inputs", type=Path, help=".npz with one array per model input")
    src.add_argument(
        "--random",
        action="store_true",
        help="random inputs (default): --batches batches of random token ids / normal floats",
    )
    p.add_argument(
        "--batches",
        type=int,
        default=4,
        metavar="N",
        help="number of different random input batches (default 4)",
    )
    p.add_argument(
        "--compensation",
        choices=COMPENSATIONS,
        help="drift compensation (default: the architecture's, tile.pcm.compensation)",
    )
    p.add_argument("--seed", type=int, default=0, help="trial i programs with seed + i")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write a plot of the metrics")
    add_task_options(p)
    return p


def add_task_options(p: argparse.ArgumentParser) -> None:
    """Task accuracy on labelled data (instead of --reference): see :func:`main_task`."""
    task = p.add_argument_group("task accuracy (labelled data, a digital head in the adapter)")
    task.add_argument("--data", type=Path, help="TSV 'sentence<TAB>label' or .npz with 'labels'")
    task.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizer folder (for a TSV)")
    task.add_argument("--adapter", type=Path, help="peft adapter folder with a 'classifier' head")
    task.add_argument(
        "--limit", type=int, metavar="N", help="evaluate N examples (drawn with --seed)"
    )
    task.add_argument(
        "--pooled", default="sentence_embedding", metavar="OUTPUT", help="the output the head reads"
    )


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    if opts.data is not None:
        return main_task(opts)
    if opts.reference is None:
        raise AimccError("give --reference MODEL.onnx (output error) or --data FILE (accuracy)")
    if opts.trials < 1 or opts.batches < 1:
        raise AimccError("--trials and --batches must be at least 1")
    times = [(label.strip(), parse_time(label)) for label in opts.times.split(",")]
    exe = load(opts.binary)
    if opts.inputs:
        batches = [read_npz(opts.inputs)]
    else:
        batches = [random_inputs(exe, opts.seed + i) for i in range(opts.batches)]
    reference = reference_outputs(opts.reference, exe, batches)
    progress = Progress(
        TextColumn("programming and reading tiles"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=report.console,
        transient=True,
    )
    with progress:
        task = progress.add_task("eval", total=opts.trials * len(times))
        result = evaluate(
            exe,
            batches,
            reference,
            times,
            opts.trials,
            opts.seed,
            opts.compensation,
            step=lambda: progress.advance(task),
        )
    title = f"{opts.binary.name} on pcm tiles vs {opts.reference.name}, {opts.trials} trials"
    print_result(result, title)
    if opts.plot:
        with atomic_write(opts.plot) as f:
            f.write(plot(result, title))
        report.console.print(f"wrote {opts.plot}", highlight=False)
    return 0


def print_result(result: EvalResult, title: str) -> None:
    """One row per drift time, one column per metric, cells mean ± std over the trials."""
    table = Table("time", title=title, title_justify="left")
    for metric in result.metrics:
        table.add_column(f"{metric.output}\n{metric.kind}", justify="right")
    mean, std = result.mean(), result.std()
    for label, means, stds in zip(result.times, mean, std, strict=True):
        table.add_row(label, *(f"{m:.4f} ± {s:.4f}" for m, s in zip(means, stds, strict=True)))
    report.console.print(table, highlight=False)


def main_task(opts: argparse.Namespace) -> int:
    """Accuracy of the adapter's head on PCM tiles over drift time, next to fp32 (ideal tiles:
    exact float matmuls) with the same model and adapter."""
    from aimcc.adapt import load_data, read_adapter
    from aimcc.evaluate import accuracy, evaluate_accuracy
    from aimcc.runtime.analog import NoiseSpec

    if opts.adapter is None:
        raise AimccError("--data needs --adapter (the task head lives in the adapter)")
    if opts.trials < 1 or (opts.limit is not None and opts.limit < 1):
        raise AimccError("--trials and --limit must be at least 1")
    times = [(label.strip(), parse_time(label)) for label in opts.times.split(",")]
    exe = load(opts.binary)
    data = load_data(opts.data, exe, opts.tokenizer, opts.limit, opts.seed)
    adapter = read_adapter(opts.adapter)
    exe.set_noise(NoiseSpec("ideal"))
    fp32 = accuracy(exe, data, adapter, opts.pooled)
    progress = Progress(
        TextColumn("programming and reading tiles"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=report.console,
        transient=True,
    )
    with progress:
        task = progress.add_task("eval", total=opts.trials * len(times))
        values = evaluate_accuracy(
            exe,
            data,
            {"pcm": adapter},
            times,
            opts.trials,
            opts.seed,
            opts.pooled,
            opts.compensation,
            step=lambda: progress.advance(task),
        )["pcm"]
    title = (
        f"{opts.binary.name} + {opts.adapter.name} on {opts.data.name} ({len(data)} examples), "
        f"accuracy %, {opts.trials} trials"
    )
    table = Table("time", "pcm tiles", "fp32 digital", title=title, title_justify="left")
    for label, mean, std in zip(
        [label for label, _ in times], values.mean(0), values.std(0), strict=True
    ):
        table.add_row(label, f"{100 * mean:.2f} ± {100 * std:.2f}", f"{100 * fp32:.2f}")
    report.console.print(table, highlight=False)
    return 0
