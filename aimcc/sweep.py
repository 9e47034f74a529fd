"""Sweeps: a grid of (noise model, drift time, seed, architecture override, adapter) x trials.

A task is one programming of the tiles (one noise model, override, adapter, seed and trial)
read at every drift time of the grid, as `aimcc eval` does: the same devices age. Tasks are
independent, so they run on local worker processes or as Ray remote tasks through the same
function (:func:`run_task`); each worker computes with one torch thread, so a task's numbers
do not depend on how many workers there are or where it ran. The evaluation is
:mod:`aimcc.evaluate`'s (the reference, the metrics, PCM drift), not a second one.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aimcc.arch import _apply_override, arch_from_dict
from aimcc.commands import MAX_SEED
from aimcc.errors import AimccError, first_line

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from aimcc.adapt import Dataset
    from aimcc.runtime import Executable

DETERMINISTIC = ("ideal", "quant")  # one task each: no seed, no drift
# Only what the runtime reads can change on a compiled binary; tile sizes, counts and clusters
# shaped the program and need a recompile (aimcc compile --set ...).
RUNTIME_SECTIONS = ("tile.mapping.", "tile.dac.", "tile.adc.", "tile.pcm.")
GRID_KEYS = ("noise", "t_inference", "seeds", "trials", "adapter", "compensation", "set")

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Task:
    """One programming of the tiles; ``program_seed`` is derived from (seed, trial)."""

    index: int
    noise: str
    overrides: tuple[str, ...]  # "key=value" items, applied to the binary's architecture
    adapter: str | None  # a peft folder, or None: the slots the binary was compiled with
    seed: int | None  # None for deterministic tiles
    trial: int | None
    program_seed: int | None


@dataclass(frozen=True)
class Grid:
    noise: tuple[str, ...] = ("pcm",)
    times: tuple[tuple[str, float], ...] = ()
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (key, values) per swept key
    adapters: tuple[str | None, ...] = (None,)
    trials: int = 1
    compensation: str | None = None

    def tasks(self) -> list[Task]:
        """Every task, in one fixed order (the table's): adapter, override, noise, seed, trial."""
        combos: list[tuple[str, ...]] = [()]
        for key, values in self.overrides:
            combos = [(*c, f"{key}={v}") for c in combos for v in values]
        tasks: list[Task] = []
        for adapter, combo, noise in itertools.product(self.adapters, combos, self.noise):
            draws = itertools.product(self.seeds, range(self.trials))
            for seed, trial in [(None, None)] if noise in DETERMINISTIC else draws:
                drawn = None if seed is None else program_seed(seed, trial)
                tasks.append(Task(len(tasks), noise, combo, adapter, seed, trial, drawn))
        return tasks


def program_seed(seed: int, trial: int) -> int:
    """The seed that programs the tiles of (seed, trial): a hash (numpy's SeedSequence), so
    seeds 0-4 x 3 trials are 15 different devices (seed + trial would repeat some), the same on
    every machine. Every override and adapter of a (seed, trial) gets the same devices, so
    their differences are paired. ``evaluate(..., trials=1, seed=program_seed)`` gives a
    task's rows."""
    state = np.random.SeedSequence([seed, trial]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & MAX_SEED


# -- grid values ---------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """'6,8' -> ['6', '8']; commas inside [...] or quotes stay ('[0.1,0.2],[0.3,0.4]')."""
    items, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        current += char
    items.append(current.strip())
    if any(not item for item in items):
        raise AimccError(f"bad list '{text}': an empty value (write values as A,B,C)")
    return items


def parse_noise(values: Iterable[str]) -> tuple[str, ...]:
    from aimcc.runtime.analog import NOISE_MODELS

    out = []
    for value in values:
        if value not in NOISE_MODELS:
            raise AimccError(f"unknown noise model '{value}': use {', '.join(NOISE_MODELS)}")
        out.append(value)
    return tuple(dict.fromkeys(out))


def parse_times(values: Iterable[str | int | float]) -> tuple[tuple[str, float], ...]:
    """Labels with seconds ('1d' -> ('1d', 86400.0)); a bare number is seconds."""
    from aimcc.commands import parse_time

    out = {}
    for value in values:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise AimccError(f"bad time {value!r}: use a number of seconds or a text like '1d'")
        label = str(value).strip()
        out[label] = parse_time(label)
    return tuple(out.items())


def parse_seeds(values: Iterable[str | int]) -> tuple[int, ...]:
    """'0-4' -> 0..4; '1,5,9'; '0-2,10'; in [0, 2^63-1]."""
    seeds: list[int] = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            first = last = value
        elif isinstance(value, str):
            low, dash, high = value.strip().partition("-")
            try:
                first = int(low)
                last = int(high) if dash else first
            except ValueError:
                raise AimccError(
                    f"bad seed '{value}': use integers or ranges, e.g. 0-4 or 1,5,9"
                ) from None
        else:
            raise AimccError(f"bad seed {value!r}: use integers or ranges, e.g. 0-4")
        if not 0 <= first <= last <= MAX_SEED:
            raise AimccError(f"bad seeds '{value}': need 0 <= first <= last <= 2^63-1")
        if last - first >= 100_000:
            raise AimccError(f"bad seeds '{value}': more than 100000 seeds")
        seeds += range(first, last + 1)
    if not seeds:
        raise AimccError("no seeds")
    return tuple(dict.fromkeys(seeds))


def parse_override(item: str) -> tuple[str, tuple[str, ...]]:
    """'tile.adc.bits=6,8' -> ('tile.adc.bits', ('6', '8')): a runtime key of the architecture."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise AimccError(f"bad --set '{item}': expected KEY=V1,V2,..., e.g. tile.adc.bits=6,8")
    if not key.startswith(RUNTIME_SECTIONS):
        raise AimccError(
            f"bad --set '{item}': a sweep can change only what the runtime reads "
            f"({', '.join(s + '*' for s in RUNTIME_SECTIONS)}); '{key}' shaped the compiled "
            "program (compile once per value with aimcc compile --set)"
        )
    return key, tuple(dict.fromkeys(split_values(text)))


def parse_adapters(values: Iterable[str], base: Path | None = None) -> tuple[str | None, ...]:
    """Adapter folders ('none': the binary's compiled slots); relative to ``base`` if given."""
    out: list[str | None] = []
    for value in values:
        if not isinstance(value, str):
            raise AimccError(f"bad adapter {value!r}: a folder path or 'none'")
        if value == "none":
            out.append(None)
            continue
        path = Path(value) if base is None or Path(value).is_absolute() else base / value
        if not path.is_dir():
            raise AimccError(f"adapter {path}: no such folder")
        out.append(str(path))
    return tuple(dict.fromkeys(out))


def read_grid(path: Path) -> dict[str, Any]:
    """A TOML grid file, e.g. ``noise = ["ideal", "pcm"]``, ``t_inference = ["0s", "1y"]``,
    ``seeds = "0-4"``, ``trials = 2``, ``adapter = ["none", "a/"]``, ``compensation =
    "global"``, ``[set] "tile.adc.bits" = [6, 8]``; values as the command-line flags take them
    (adapter folders relative to the file). Returns the parsed axes given."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AimccError(f"{path}: grid file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AimccError(f"{path}: cannot read the grid file ({first_line(exc)})") from None
    except tomllib.TOMLDecodeError as exc:
        raise AimccError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - set(GRID_KEYS))
    if unknown:
        raise AimccError(f"{path}: unknown grid key '{unknown[0]}' (keys: {', '.join(GRID_KEYS)})")

    def listed(key: str) -> list:
        return _as_list(raw[key], key)

    out: dict[str, Any] = {}
    try:
        if "noise" in raw:
            out["noise"] = parse_noise(listed("noise"))
        if "t_inference" in raw:
            out["times"] = parse_times(listed("t_inference"))
        if "seeds" in raw:
            out["seeds"] = parse_seeds(listed("seeds"))
        if "trials" in raw:
            out["trials"] = check_trials(raw["trials"])
        if "adapter" in raw:
            out["adapters"] = parse_adapters(listed("adapter"), path.parent)
        if "compensation" in raw:
            out["compensation"] = str(raw["compensation"])
        if "set" in raw:
            if not isinstance(raw["set"], dict):
                raise AimccError("'set' must be a table of KEY = [values]")
            out["overrides"] = tuple(
                parse_override(f"{key}={','.join(map(_toml_text, _as_list(values, key)))}")
                for key, values in raw["set"].items()
            )
    except AimccError as exc:
        raise AimccError(f"{path}: {exc}") from None
    return out


def _as_list(value: Any, key: str) -> list:
    """A scalar as a list of one; an empty list is refused (the grid would have no task)."""
    if value == []:
        raise AimccError(f"'{key}' is an empty list (the grid would have no task)")
    return value if isinstance(value, list) else [value]


def _toml_text(value: Any) -> str:
    """A TOML value back as the text --set takes (strings quoted, lists in brackets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ",".join(map(_toml_text, value)) + "]"
    return repr(value)


def check_trials(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise AimccError(f"bad trials {value!r}: an integer from 1 to 100000")
    return value


def override_arch(arch: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The binary's architecture (as stored) with ``key=value`` items applied and checked."""
    import copy

    raw = copy.deepcopy(arch)
    for item in overrides:
        _apply_override(raw, item)
    arch_from_dict(raw)  # types and ranges, as for a compile --set
    return raw


def check_grid(grid: Grid, exe: Executable, heads: bool = False) -> None:
    """Every grid value that can be checked before running is: overrides against the binary's
    architecture, adapters against its slots (one-line errors, nothing started). ``heads``:
    task accuracy, where each adapter brings the head (applied outside the program)."""
    from aimcc.adapt import HEAD, apply_adapter
    from aimcc.adapters import read_adapter

    base = exe.arch.to_dict()
    for key, values in grid.overrides:
        for value in values:
            override_arch(base, [f"{key}={value}"])
    for adapter in grid.adapters:
        if adapter is None:
            continue
        try:
            if heads:
                found = read_adapter(adapter)
                if HEAD not in found.heads:
                    raise AimccError(f"no '{HEAD}' head for task accuracy")
                apply_adapter(exe, found)
            else:
                exe.prepare_adapter(adapter)
        except AimccError as exc:
            raise AimccError(f"adapter {adapter}: {exc}") from None
    exe.set_adapter(None)
    if grid.compensation is not None:
        from aimcc.runtime.analog import COMPENSATIONS

        if grid.compensation not in COMPENSATIONS:
            raise AimccError(
                f"unknown compensation '{grid.compensation}': use {', '.join(COMPENSATIONS)}"
            )


# -- tasks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What every task reads: shipped once to each worker (to Ray's object store once)."""

    binary: str
    times: tuple[tuple[str, float], ...]
    compensation: str | None
    override_keys: tuple[str, ...]
    batches: list[Feeds] | None = None  # output error against ``reference``
    reference: list[Feeds] | None = None
    data: Dataset | None = None  # or task accuracy of the adapter's head on ``data``
    pooled: str = "sentence_embedding"
    folders: dict[str, str] = field(default_factory=dict)  # adapter as given -> absolute path
    token: str = field(default_factory=lambda: os.urandom(8).hex())  # the worker cache's key


_WORKER: dict[str, Any] = {}  # per process: the loaded binary of one Context, its adapters


def _worker(ctx: Context) -> dict[str, Any]:
    """The binary and adapters of ``ctx``, loaded once per worker process; one torch thread,
    so numbers do not depend on how many workers share the machine."""
    if _WORKER.get("token") != ctx.token:
        import torch

        from aimcc.runtime import load

        torch.set_num_threads(1)
        _WORKER.clear()
        exe = load(ctx.binary)
        _WORKER.update(token=ctx.token, exe=exe, arch=exe.arch.to_dict(), adapters={})
    return _WORKER


def columns(override_keys: Sequence[str]) -> list[str]:
    return [
        "task",
        "noise",
        "t_inference",
        "t_seconds",
        "seed",
        "trial",
        "program_seed",
        *override_keys,
        "adapter",
        "output",
        "metric",
        "value",
        "status",
        "error",
    ]


def _row(ctx: Context, task: Task, **values: Any) -> dict[str, Any]:
    settings = dict(item.split("=", 1) for item in task.overrides)
    row: dict[str, Any] = {
        "task": task.index,
        "noise": task.noise,
        "t_inference": None,
        "t_seconds": None,
        "seed": task.seed,
        "trial": task.trial,
        "program_seed": task.program_seed,
        **{key: settings.get(key) for key in ctx.override_keys},
        "adapter": task.adapter or "none",
        "output": None,
        "metric": None,
        "value": None,
        "status": "ok",
        "error": None,
    }
    row.update(values)
    return row


def run_task(ctx: Context, task: Task) -> list[dict[str, Any]]:
    """One task's rows (a row per drift time and metric; deterministic tiles: one time-less
    row per metric); a failure is one row with status 'error' and the message."""
    try:
        return _evaluate(ctx, task)
    except Exception as exc:  # reported in the table, never lost
        return [error_row(ctx, task, exc)]


def error_row(ctx: Context, task: Task, exc: BaseException) -> dict[str, Any]:
    message = first_line(exc)
    if not isinstance(exc, AimccError):
        message = f"{type(exc).__name__}: {message}"
    return _row(ctx, task, status="error", error=message)


def _evaluate(ctx: Context, task: Task) -> list[dict[str, Any]]:
    from aimcc.evaluate import (
        accuracy,
        evaluate,
        evaluate_accuracy,
        metrics_for,
        score,
    )
    from aimcc.runtime.analog import NoiseSpec

    state = _worker(ctx)
    exe = state["exe"]
    exe.arch = arch_from_dict(override_arch(state["arch"], task.overrides))
    pcm, adapters = task.noise == "pcm", state["adapters"]
    if ctx.data is not None:  # task accuracy: the head lives in the adapter
        if task.adapter is None:
            raise AimccError("task accuracy needs an adapter (its head classifies)")
        if task.adapter not in adapters:
            from aimcc.adapters import read_adapter

            adapters[task.adapter] = read_adapter(ctx.folders.get(task.adapter, task.adapter))
        adapter = adapters[task.adapter]
        if pcm:
            values = evaluate_accuracy(
                exe, ctx.data, {"a": adapter}, ctx.times, 1, task.program_seed,
                ctx.pooled, ctx.compensation,
            )["a"][0]  # fmt: skip
        else:
            exe.set_noise(NoiseSpec(task.noise))
            values = [accuracy(exe, ctx.data, adapter, ctx.pooled)]
        metrics = [(ctx.pooled, "accuracy")]
        grid = values[:, None] if pcm else np.array([values])
    else:
        assert ctx.batches is not None and ctx.reference is not None
        if task.adapter not in adapters:
            folder = ctx.folders.get(task.adapter, task.adapter) if task.adapter else None
            adapters[task.adapter] = exe.prepare_adapter(folder)
        exe.set_adapter(adapters[task.adapter])
        if pcm:
            result = evaluate(
                exe, ctx.batches, ctx.reference, ctx.times, 1, task.program_seed,
                ctx.compensation,
            )  # fmt: skip
            grid, found = result.values[0], result.metrics
        else:
            exe.set_noise(NoiseSpec(task.noise))
            found = metrics_for(exe, ctx.reference[0])
            outputs = [exe.run(feeds) for feeds in ctx.batches]
            grid = np.array([score(found, outputs, ctx.reference)])
        metrics = [(m.output, m.kind) for m in found]
    times = ctx.times if pcm else [(None, None)]
    return [
        _row(
            ctx,
            task,
            t_inference=label,
            t_seconds=seconds,
            output=output,
            metric=kind,
            value=float(grid[i][j]),
        )
        for i, (label, seconds) in enumerate(times)
        for j, (output, kind) in enumerate(metrics)
    ]


# -- running -------------------------------------------------------------------------------
Done = Callable[[Task, list[dict[str, Any]]], None]


def run_local(ctx: Context, tasks: Sequence[Task], jobs: int, done: Done) -> None:
    """Tasks on ``jobs`` worker processes; ``jobs`` 1 runs them in this process. ``done`` is
    called in this process as each task finishes. Workers fork from a server process that
    imported torch and the runtime once and ran nothing (forking this process, whose torch
    has started threads, can hang); without one (not Unix) they are spawned and import it each."""
    if jobs <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            for task in tasks:
                done(task, run_task(ctx, task))
        finally:
            torch.set_num_threads(threads)
            _WORKER.clear()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    if "forkserver" in multiprocessing.get_all_start_methods():
        start = multiprocessing.get_context("forkserver")
        start.set_forkserver_preload(["aimcc.evaluate", "aimcc.runtime.executor"])
    else:
        start = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=start,
        initializer=_set_context,
        initargs=(ctx,),
    )
    try:
        futures = {pool.submit(_pool_task, task): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                rows = future.result()
            except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                rows = [error_row(ctx, task, RuntimeError(f"worker process died ({exc})"))]
            done(task, rows)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_CONTEXT: list[Context] = []


def _set_context(ctx: Context) -> None:
    _CONTEXT[:] = [ctx]


def _pool_task(task: Task) -> list[dict[str, Any]]:
    return run_task(_CONTEXT[0], task)


def run_ray(ctx: Context, tasks: Sequence[Task], address: str, jobs: int | None, done: Done):
    """The same tasks as Ray remote tasks (one CPU each). ``address``: 'local' starts a local
    instance (``jobs`` CPUs), 'auto' or HOST:PORT joins a running cluster; a Ray session this
    process already has is used as it is. The binary's path must be readable on every node."""
    ray = check_ray(address)
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,  # not Ray's start-up notes on the user's stderr
        }
        try:
            if address == "local":
                ray.init(num_cpus=jobs, **options)
            else:
                ray.init(address=address, **options)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError...
            raise AimccError(
                f"cannot start or reach Ray at '{address}': {first_line(exc)}"
            ) from None
    try:
        shared = ray.put(ctx)
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        pending = {remote.remote(shared, task): task for task in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except Exception as exc:  # the worker died: run_task itself never raises
                    rows = [error_row(ctx, task, exc)]
                done(task, rows)
    finally:
        if started:
            ray.shutdown()


def check_ray(address: str) -> Any:
    """The ray module, if installed; and a HOST:PORT that nothing answers on is refused at
    once (Ray itself retries for minutes). Called before any work."""
    try:
        import ray
    except ImportError:
        raise AimccError(
            "--ray-address needs Ray, which is not installed: pip install 'aimcc[ray]'"
        ) from None
    if not ray.is_initialized() and address not in ("local", "auto") and "://" not in address:
        _check_reachable(address)
    return ray


def _check_reachable(address: str) -> None:
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "localhost", int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise AimccError(
            f"cannot reach Ray at '{address}' ({first_line(exc)}): give 'local', 'auto' or "
            "the HOST:PORT of a running cluster's head (ray start --head)"
        ) from None


# -- the table and the plot ----------------------------------------------------------------
def csv_bytes(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> bytes:
    """The table as CSV (floats in full precision: repr); empty cells for None."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row[n] is None else row[n] for n in names])
    return text.getvalue().encode()


def parquet_bytes(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise AimccError(
            "a .parquet table needs pyarrow (pip install pyarrow); or write .csv"
        ) from None
    types = {"task": pa.int64(), "t_seconds": pa.float64(), "value": pa.float64()}
    types |= dict.fromkeys(("seed", "trial", "program_seed"), pa.int64())
    schema = pa.schema([(n, types.get(n, pa.string())) for n in names])  # the rest: text
    table = pa.Table.from_pylist([{n: row[n] for n in names} for row in rows], schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def config_of(row: dict[str, Any], override_keys: Sequence[str]) -> tuple[str, ...]:
    """A row's configuration: (noise, each --set value, adapter folder name or 'none')."""
    adapter = "none" if row["adapter"] == "none" else Path(row["adapter"]).name
    return (row["noise"], *(str(row[k]) for k in override_keys), adapter)


def config_label(config: tuple[str, ...], override_keys: Sequence[str]) -> str:
    """'pcm, tile.adc.bits=6, adapter a': a line of the plot."""
    noise, *values, adapter = config
    parts = [noise, *(f"{k}={v}" for k, v in zip(override_keys, values, strict=True))]
    return ", ".join(parts + ([f"adapter {adapter}"] if adapter != "none" else []))


def summarise(
    rows: Sequence[dict[str, Any]], override_keys: Sequence[str]
) -> dict[tuple[str, str], dict[tuple[str, ...], dict[str | None, tuple[float, float, int]]]]:
    """(output, metric) -> configuration -> time label (None: no drift) -> (mean, std, n)
    over seeds and trials, of the rows that succeeded; in the table's order."""
    values: dict = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        key = (row["output"], row["metric"])
        config = config_of(row, override_keys)
        values.setdefault(key, {}).setdefault(config, {}).setdefault(row["t_inference"], []).append(
            row["value"]
        )
    return {
        key: {
            config: {t: (float(np.mean(v)), float(np.std(v)), len(v)) for t, v in times.items()}
            for config, times in configs.items()
        }
        for key, configs in values.items()
    }


def figure(
    summary: dict, times: Sequence[tuple[str, float]], title: str, override_keys: Sequence[str]
) -> Figure:
    """A panel per (output, metric): mean ± std over seeds x trials against drift time on the
    log axis of `aimcc eval --plot`, a line per configuration (one colour in every panel);
    ideal (dotted) and quant (dashed) tiles do not drift: horizontal lines."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure  # imported here: only --plot pays for it

    from aimcc.evaluate import time_axis

    panels = list(summary)
    configs = list(dict.fromkeys(c for configs in summary.values() for c in configs))
    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {c: cycle[i % len(cycle)] for i, c in enumerate(configs)}  # same in every panel
    fig = Figure(figsize=(5 * len(panels), 3.6 + 0.25 * len(configs)), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x, ticks, labels = time_axis([s for _, s in times])
    position = {label: xi for (label, _), xi in zip(times, x, strict=True)}
    for ax, (output, metric) in zip(axes, panels, strict=True):
        for config, by_time in summary[(output, metric)].items():
            if None in by_time:
                mean, std, _ = by_time[None]
                style = ":" if config[0] == "ideal" else "--"
                label = config_label(config, override_keys)
                ax.axhline(mean, color=colour[config], linestyle=style, label=label)
                continue
            points = [(position[t], *by_time[t][:2]) for t, _ in times if t in by_time]
            px, mean, std = (np.array(c) for c in zip(*points, strict=True))
            ax.errorbar(
                px,
                mean,
                yerr=std,
                color=colour[config],
                marker="o",
                capsize=3,
                label=config_label(config, override_keys),
            )
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels, rotation=30)
        ax.minorticks_off()
        if any(s == 0 for _, s in times) and len(x) > 1:  # the zero tick is not on the log scale
            ax.axvline(x.min() * 10**0.5, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("time after programming (log scale)")
        ax.set_title(f"{metric} ({output})" if len(panels) > 1 else metric)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    legend = [config_label(c, override_keys) for c in configs]
    order = sorted(range(len(names)), key=lambda i: legend.index(names[i]))
    fig.legend(
        [handles[i] for i in order],
        [names[i] for i in order],
        loc="outside lower center",
        ncols=min(3, len(names)),
        fontsize="small",
    )
    fig.suptitle(title)
    return fig


def plot_png(
    summary: dict, times: Sequence[tuple[str, float]], title: str, override_keys: Sequence[str]
) -> bytes:
    buffer = io.BytesIO()
    figure(summary, times, title, override_keys).savefig(
        buffer, format="png", dpi=120, metadata={"Software": None}
    )
    return buffer.getvalue()
