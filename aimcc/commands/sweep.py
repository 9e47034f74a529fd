"""`aimcc sweep BINARY`: a grid of noise models, drift times, seeds, architecture overrides
and adapters, run as independent tasks on local processes or Ray, into one table and plots."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aimcc.commands import Parser, output_file, seed, shows_progress, status
from aimcc.errors import AimccError


def parser() -> argparse.ArgumentParser:
    from aimcc.commands.eval import add_task_options
    from aimcc.runtime.analog import NOISE_MODELS
    from aimcc.runtime.options import DRIFT_TIMES

    p = Parser(
        prog="aimcc sweep",
        description="Evaluate a binary over a grid of (noise model, drift time, seed, "
        "architecture override, adapter) x trials, as `aimcc eval` evaluates one point: output "
        "error against the fp32 ONNX reference, or task accuracy with --data. A task programs "
        "the tiles once and reads them at every drift time. Writes one row per task, time and "
        "metric (CSV, or Parquet with pyarrow) and optionally a plot (docs/SWEEP.md).",
    )
    p.add_argument("binary", type=Path, help="the .aimcb file")
    p.add_argument("--reference", type=Path, help="the fp32 ONNX model (output error metrics)")
    grid = p.add_argument_group("the grid (each flag replaces that axis of --grid)")
    grid.add_argument("--grid", type=Path, metavar="FILE.toml", help="grid file (docs/SWEEP.md)")
    grid.add_argument(
        "--noise", metavar="LIST", help=f"tile models: {','.join(NOISE_MODELS)} (default pcm)"
    )
    grid.add_argument(
        "--t-inference",
        "--times",
        dest="times",
        metavar="LIST",
        help=f"drift times after programming (default {','.join(DRIFT_TIMES)})",
    )
    grid.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0-4 or 1,5,9 (default 0)")
    grid.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=V1,V2",
        help="sweep a runtime architecture value (tile.mapping/dac/adc/pcm.*), e.g. "
        "--set tile.adc.bits=6,8 (repeatable: every combination)",
    )
    grid.add_argument(
        "--adapter", metavar="LIST", help="peft adapter folders; 'none': the compiled slots"
    )
    grid.add_argument("--trials", type=int, metavar="N", help="programmings per seed (default 1)")
    grid.add_argument("--compensation", help="pcm drift compensation (default: the architecture's)")
    src = p.add_argument_group("inputs for --reference (as aimcc eval)")
    src.add_argument("--inputs", type=Path, help=".npz with one array per model input")
    src.add_argument("--batches", type=int, metavar="N", help="random input batches (default 4)")
    add_task_options(p)
    run = p.add_argument_group("running")
    run.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help=f"worker processes (default: the cores, {_cores()}); with --ray-address local, "
        "the local Ray instance's CPUs",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the tasks on Ray: 'local' (start one here), 'auto' (the running cluster) or "
        "HOST:PORT; needs pip install 'aimcc[ray]'",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "-o",
        "--output",
        type=output_file,
        metavar="FILE",
        help="the table: .csv, or .parquet (needs pyarrow) (default ./BINARY.sweep.csv)",
    )
    out.add_argument("--plot", type=output_file, metavar="PNG", help="plot the metrics vs time")
    src.add_argument(
        "--input-seed",
        type=seed,
        default=0,
        metavar="S",
        help="random batches use seeds S.., --limit draws with S (default 0; not the tiles')",
    )
    return p


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def build_grid(opts: argparse.Namespace) -> Any:
    """The grid file's axes, each replaced by its flag when given."""
    from aimcc import sweep

    axes: dict[str, Any] = sweep.read_grid(opts.grid) if opts.grid else {}
    if opts.noise is not None:
        axes["noise"] = sweep.parse_noise(sweep.split_values(opts.noise))
    if opts.times is not None:
        axes["times"] = sweep.parse_times(sweep.split_values(opts.times))
    if opts.seeds is not None:
        axes["seeds"] = sweep.parse_seeds(sweep.split_values(opts.seeds))
    if opts.trials is not None:
        axes["trials"] = sweep.check_trials(opts.trials)
    if opts.adapter is not None:
        axes["adapters"] = sweep.parse_adapters(sweep.split_values(opts.adapter))
    if opts.compensation is not None:
        axes["compensation"] = opts.compensation
    if opts.overrides:
        axes["overrides"] = tuple(sweep.parse_override(item) for item in opts.overrides)
    keys = [key for key, _ in axes.get("overrides", ())]
    if len(set(keys)) < len(keys):
        raise AimccError(f"--set {keys[0]}: a key is swept once (give its values as A,B,C)")
    if "times" not in axes:
        from aimcc.runtime.options import DRIFT_TIMES

        axes["times"] = sweep.parse_times(DRIFT_TIMES)
    return sweep.Grid(**axes)


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    from aimcc import report, sweep
    from aimcc.atomic import atomic_write

    grid = build_grid(opts)
    jobs = _cores() if opts.jobs is None else opts.jobs
    if jobs < 1:
        raise AimccError(f"-j must be at least 1, got {jobs}")
    if (opts.reference is None) == (opts.data is None):
        raise AimccError("give --reference MODEL.onnx (output error) or --data FILE (accuracy)")
    if opts.data is None and opts.inputs and opts.batches is not None:
        raise AimccError("--batches is for random inputs: --inputs gives the one batch")
    if opts.data is not None and (opts.inputs or opts.batches is not None):
        raise AimccError("--inputs and --batches are for --reference: --data gives the inputs")
    if opts.batches is not None and opts.batches < 1:
        raise AimccError("--batches must be at least 1")
    if opts.data is not None and None in grid.adapters:
        raise AimccError("--data needs --adapter (the task head lives in the adapter)")
    if opts.limit is not None and opts.limit < 1:
        raise AimccError("--limit must be at least 1")
    output = opts.output or Path(f"{opts.binary.stem}.sweep.csv")
    if output.suffix not in (".csv", ".parquet"):
        raise AimccError(f"{output}: the table is a .csv or .parquet file")
    if output.suffix == ".parquet":
        sweep.parquet_bytes([], [])  # pyarrow missing: say so before the work
    if opts.ray_address:
        sweep.check_ray(opts.ray_address)
    tasks = grid.tasks()
    ctx = context(opts, grid)
    names = sweep.columns(ctx.override_keys)
    results: dict[int, list[dict[str, Any]]] = {}
    with task_progress(shows_progress(), len(tasks)) as finished:

        def done(task: sweep.Task, rows: list[dict[str, Any]]) -> None:
            results[task.index] = rows
            finished(task, rows[0]["status"] != "ok")

        if opts.ray_address:
            sweep.run_ray(ctx, tasks, opts.ray_address, opts.jobs, done)
        else:
            sweep.run_local(ctx, tasks, min(jobs, len(tasks)), done)
    rows = [row for task in tasks for row in results[task.index]]
    write_table(output, rows, names)
    summary = sweep.summarise(rows, ctx.override_keys)
    title = f"{opts.binary.name}: {len(tasks)} tasks"
    print_summary(summary, grid, ctx.override_keys, title)
    failed = [row for row in rows if row["status"] != "ok"]
    report.console.print(f"wrote {output} ({len(rows)} rows)", highlight=False)
    if opts.plot and summary:
        with atomic_write(opts.plot) as f:
            f.write(sweep.plot_png(summary, grid.times, title, ctx.override_keys))
        report.console.print(f"wrote {opts.plot}", highlight=False)
    elif opts.plot:
        report.console.print(f"no plot written to {opts.plot}: every task failed")
    if failed:
        first = failed[0]
        report.console.print(
            f"{len(failed)} of {len(tasks)} tasks failed (status 'error' in the table); "
            f"task {first['task']}: {first['error']}",
            highlight=False,
        )
        return 1
    return 0


def context(opts: argparse.Namespace, grid: Any) -> Any:
    """Load the binary, check the grid against it, and make what every task reads: the inputs
    and onnxruntime's reference outputs (once, here), or the labelled data."""
    from aimcc import sweep
    from aimcc.commands import random_inputs, read_npz
    from aimcc.runtime import load

    with status(shows_progress()) as update:
        update(f"loading {opts.binary.name}")
        exe = load(opts.binary)
        sweep.check_grid(grid, exe, heads=opts.data is not None)
        common = {
            "binary": str(opts.binary.resolve()),
            "times": grid.times,
            "compensation": grid.compensation,
            "override_keys": tuple(key for key, _ in grid.overrides),
            # workers (Ray's) may run elsewhere than this directory
            "folders": {a: str(Path(a).resolve()) for a in grid.adapters if a is not None},
        }
        if opts.data is not None:
            from aimcc.adapt import load_data

            update(f"reading {opts.data.name}")
            data = load_data(opts.data, exe, opts.tokenizer, opts.limit, opts.input_seed)
            return sweep.Context(**common, data=data, pooled=opts.pooled)
        from aimcc.commands.eval import check_reference
        from aimcc.evaluate import reference_outputs

        if grid.adapters == (None,):  # with adapters the reference is the user's choice
            check_reference(opts.reference, exe)
        if opts.inputs:
            batches = [read_npz(opts.inputs)]
        else:
            count = 4 if opts.batches is None else opts.batches
            batches = [random_inputs(exe, opts.input_seed + i) for i in range(count)]
        update(f"running {opts.reference.name} in onnxruntime (the reference)")
        reference = reference_outputs(opts.reference, exe, batches)
        return sweep.Context(**common, batches=batches, reference=reference)


@contextlib.contextmanager
def task_progress(enabled: bool, total: int) -> Iterator[Any]:
    """A progress bar on stderr over tasks: done/total, failures so far, time left."""
    if not enabled:
        yield lambda task, failed: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from aimcc.commands.eval import _duration

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=True,
    )
    start, failures = time.perf_counter(), [0]
    with progress:
        bar = progress.add_task("sweep: starting workers", total=total, note="")

        def finished(task: Any, failed: bool) -> None:
            failures[0] += failed
            done = int(progress.tasks[0].completed) + 1
            left = (time.perf_counter() - start) * (total - done) / done
            note = f"~{_duration(left)} left" + (f", {failures[0]} failed" if failures[0] else "")
            what = [task.noise, *task.overrides]
            if task.seed is not None:
                what.append(f"seed {task.seed} trial {task.trial}")
            if task.adapter:
                what.append(Path(task.adapter).name)
            description = f"sweep: done {', '.join(what)}"
            progress.update(bar, advance=1, description=description, note=note)

        yield finished


def write_table(path: Path, rows: list[dict[str, Any]], names: list[str]) -> None:
    from aimcc import sweep
    from aimcc.atomic import atomic_write

    data = (
        sweep.parquet_bytes(rows, names)
        if path.suffix == ".parquet"
        else sweep.csv_bytes(rows, names)
    )
    with atomic_write(path) as f:
        f.write(data)


def print_summary(summary: dict, grid: Any, override_keys: tuple[str, ...], title: str) -> None:
    """Per (output, metric) one table: a row per configuration and time, mean ± std over the
    seeds and trials (n); a column per swept --set key, and the adapter when there are some."""
    from aimcc import report

    adapters = grid.adapters != (None,)
    report.console.print(title, highlight=False)
    for (output, metric), configs in summary.items():
        table = report.FitTable(
            "noise",
            *(report.Col(key.removeprefix("tile."), "right") for key in override_keys),
            *([report.Col("adapter", fit="name")] if adapters else []),
            "time",
            report.Col(metric, "right"),
            report.Col("n", "right"),
            title=f"{metric} of output {output}",
        )
        for config, by_time in configs.items():
            shown = config if adapters else config[:-1]
            for label in [None, *(t for t, _ in grid.times)]:
                if label in by_time:
                    mean, std, n = by_time[label]
                    table.add_row(*shown, label or "-", f"{mean:.4f} ± {std:.4f}", str(n))
        table.print()
