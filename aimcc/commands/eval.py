"""`aimcc eval BINARY --reference MODEL.onnx`: accuracy on PCM tiles over drift time."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from aimcc import report
from aimcc.atomic import atomic_write
from aimcc.commands import (
    Parser,
    output_file,
    parse_time,
    random_inputs,
    read_npz,
    seed,
    shows_progress,
    status,
    warn,
)
from aimcc.errors import AimccError
from aimcc.runtime.options import COMPENSATIONS, DRIFT_TIMES

if TYPE_CHECKING:  # torch, onnx and onnxruntime: imported after argparse answered --help
    from aimcc.evaluate import EvalResult
    from aimcc.runtime import Executable


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aimcc eval",
        description="Program the binary's tiles with PCM noise N times and compare its outputs "
        "with the fp32 ONNX reference (onnxruntime) at several times after programming: "
        "relative error ||y - ref|| / ||ref||, cosine similarity, and for embedding "
        "outputs the mean per-sentence cosine. Prints mean ± std over the trials.",
    )
    p.add_argument("binary", type=Path, help="the .aimcb file")
    p.add_argument(
        "--reference",
        type=Path,
        help="the fp32 ONNX model the binary was compiled from (checked by its sha256): output "
        "error metrics; or --data for task accuracy",
    )
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
        metavar="N",
        help="number of different random input batches (default 4; not with --inputs)",
    )
    p.add_argument(
        "--compensation",
        choices=COMPENSATIONS,
        help="drift compensation (default: the architecture's, tile.pcm.compensation)",
    )
    p.add_argument("--seed", type=seed, default=0, help="trial i programs with seed + i")
    p.add_argument("--plot", type=output_file, metavar="PNG", help="write a plot of the metrics")
    p.add_argument(
        "--adapter",
        type=Path,
        metavar="DIR",
        help="a peft LoRA adapter folder to load into the binary's adapter slots (compiled "
        "with --lora-rank); tiles are not reprogrammed (docs/ADAPTERS.md); --reference is then "
        "the adapted model (e.g. peft's merged export), not checked against the binary's hash",
    )
    add_task_options(p)
    return p


def add_task_options(p: argparse.ArgumentParser) -> None:
    """Task accuracy on labelled data (instead of --reference): see :func:`main_task`."""
    task = p.add_argument_group("task accuracy (labelled data, a digital head in the adapter)")
    task.add_argument("--data", type=Path, help="TSV 'sentence<TAB>label' or .npz with 'labels'")
    task.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizer folder (for a TSV)")
    task.add_argument(
        "--limit", type=int, metavar="N", help="evaluate N examples (drawn with --seed)"
    )
    task.add_argument(
        "--pooled", default="sentence_embedding", metavar="OUTPUT", help="the output the head reads"
    )


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    from aimcc.evaluate import evaluate, plot, reference_outputs
    from aimcc.runtime import load

    if opts.data is not None:
        return main_task(opts)
    if opts.reference is None:
        raise AimccError("give --reference MODEL.onnx (output error) or --data FILE (accuracy)")
    if opts.inputs and opts.batches is not None:
        raise AimccError("--batches is for random inputs: --inputs gives the one batch")
    opts.batches = 4 if opts.batches is None else opts.batches
    if opts.trials < 1 or opts.batches < 1:
        raise AimccError("--trials and --batches must be at least 1")
    times = [(label.strip(), parse_time(label)) for label in opts.times.split(",")]
    with status(shows_progress()) as update:
        update(f"loading {opts.binary.name}")
        exe = load(opts.binary)
        if opts.adapter:  # the reference is then the adapted model (e.g. merged), not the base
            update(f"loading adapter {opts.adapter}")
            exe.set_adapter(opts.adapter)
        else:
            check_reference(opts.reference, exe)
        if opts.inputs:
            batches = [read_npz(opts.inputs)]
        else:
            batches = [random_inputs(exe, opts.seed + i) for i in range(opts.batches)]
        update(f"running {opts.reference.name} in onnxruntime (the reference)")
        reference = reference_outputs(opts.reference, exe, batches)
    with trial_progress(shows_progress(), opts.trials, [label for label, _ in times]) as step:
        result = evaluate(
            exe,
            batches,
            reference,
            times,
            opts.trials,
            opts.seed,
            opts.compensation,
            step=step,
        )
    title = f"{opts.binary.name} on pcm tiles vs {opts.reference.name}, {opts.trials} trials"
    print_result(result, title)
    if opts.plot:
        with atomic_write(opts.plot) as f:
            f.write(plot(result, title))
        report.console.print(f"wrote {opts.plot}", highlight=False)
    return 0


def check_reference(model: Path, exe: Executable) -> None:
    """The reference must be the model the binary was compiled from: compile records the ONNX
    file's sha256 in the binary. Binaries of older versions (or of IR that does not name its
    model) cannot be checked, which is said."""
    from aimcc.frontend.load import file_sha256

    if not model.is_file():
        raise AimccError(f"{model}: reference model not found")
    recorded = exe.program.get("source_sha256")
    if recorded is None:
        warn(f"{exe.where} records no model hash: cannot check that it was compiled from {model}")
    elif file_sha256(model) != recorded:
        raise AimccError(
            f"{model}: not the model {exe.where} was compiled from "
            f"({exe.program.get('source', '?')}, sha256 {recorded[:12]}...)"
        )


@contextlib.contextmanager
def trial_progress(enabled: bool, trials: int, labels: list[str]) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr over trials x drift times, saying what runs now (the first
    read of each trial also programs every tile) and, once a trial is done, the time left."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    total = trials * len(labels)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[eta]}"),
        console=Console(stderr=True),
        transient=True,
    )

    def describe(done: int) -> str:
        trial, index = divmod(done, len(labels))
        what = "programming tiles, reading" if index == 0 else "reading"
        return f"trial {trial + 1}/{trials}: {what} at {labels[index]}"

    start, unknown = time.perf_counter(), "time left after trial 1"
    with progress:
        task = progress.add_task(describe(0), total=total, eta=unknown)

        def step() -> None:
            done = int(progress.tasks[0].completed) + 1
            left = (time.perf_counter() - start) * (total - done) / done
            progress.update(
                task,
                advance=1,
                description=describe(done) if done < total else "done",
                eta=f"~{_duration(left)} left" if done >= len(labels) else unknown,
            )

        yield step


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def print_result(result: EvalResult, title: str) -> None:
    """Per output one table: a row per drift time, a column per metric, mean ± std over the
    trials (several outputs side by side would not fit 80 columns)."""
    outputs = list(dict.fromkeys(m.output for m in result.metrics))
    mean, std = result.mean(), result.std()
    report.console.print(title, highlight=False)
    for output in outputs:
        index = [i for i, m in enumerate(result.metrics) if m.output == output]
        table = report.FitTable(
            "time",
            *(report.Col(result.metrics[i].kind, "right") for i in index),
            title=f"output {output}",
        )
        for label, means, stds in zip(result.times, mean, std, strict=True):
            table.add_row(label, *(f"{means[i]:.4f} ± {stds[i]:.4f}" for i in index))
        table.print()


def main_task(opts: argparse.Namespace) -> int:
    """Accuracy of the adapter's head on PCM tiles over drift time, next to fp32 (ideal tiles:
    exact float matmuls) with the same model and adapter."""
    from aimcc.adapt import load_data
    from aimcc.adapters import read_adapter
    from aimcc.evaluate import accuracy, evaluate_accuracy
    from aimcc.runtime import load
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
    labels = [label for label, _ in times]
    with trial_progress(shows_progress(), opts.trials, labels) as step:
        values = evaluate_accuracy(
            exe,
            data,
            {"pcm": adapter},
            times,
            opts.trials,
            opts.seed,
            opts.pooled,
            opts.compensation,
            step=step,
        )["pcm"]
    title = (
        f"{opts.binary.name} + {opts.adapter.name} on {opts.data.name} ({len(data)} examples), "
        f"accuracy %, {opts.trials} trials"
    )
    table = report.FitTable(
        "time", report.Col("pcm tiles", "right"), report.Col("fp32 digital", "right"), title=title
    )
    for label, mean, std in zip(labels, values.mean(0), values.std(0), strict=True):
        table.add_row(label, f"{100 * mean:.2f} ± {100 * std:.2f}", f"{100 * fp32:.2f}")
    table.print()
    return 0
