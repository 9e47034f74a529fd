"""Runtime throughput against onnxruntime: ideal, quant and pcm tiles on the same inputs.

Run: python bench/run.py [--model PATH] [--batch 1 8] [--seq 128]
(default model: all-MiniLM-L6-v2 from the per-machine corpus cache, built on first use)

Each round runs onnxruntime and then every aimcc tile model once, so a busy machine slows all
of them alike; the table shows sequences/s from the median round time. Both use --threads
intra-op threads; onnxruntime's idle threads do not spin (they would steal the cores from the
next contender in the round).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from aimcc.backends.aimcb import write_binary
from aimcc.commands import random_inputs
from aimcc.compiler import compile_model
from aimcc.runtime import Executable, load
from aimcc.runtime.analog import NOISE_MODELS, NoiseSpec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from corpus_cache import model_path  # noqa: E402

TARGETS = {"ideal": 0.8, "quant": None, "pcm": 0.4}  # the throughput floors


def median_seconds(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for call in calls.values():  # warm-up: allocator, kernel selection
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(model: Path, batch: int, seq: int, rounds: int, threads: int) -> Table:
    shapes = {"input_ids": (batch, seq)}  # the other token inputs follow the shared dims
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "model.aimcb"
        write_binary(compile_model(model, "hybrid", input_shapes=shapes), binary)
        executables: dict[str, Executable] = {}
        start = time.perf_counter()
        for noise in NOISE_MODELS:
            executables[noise] = load(binary)
            executables[noise].set_noise(NoiseSpec(noise), seed=0)
        programming = time.perf_counter() - start
    feeds = random_inputs(executables["ideal"], seed=0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    calls: dict[str, Callable[[], object]] = {"onnxruntime": lambda: session.run(None, feeds)}
    for noise, exe in executables.items():
        calls[f"aimcc {noise}"] = lambda exe=exe: exe.run(feeds)
    seconds = median_seconds(calls, rounds)
    table = Table(
        "runtime",
        "ms / batch",
        "sequences / s",
        "x onnxruntime",
        "target",
        title=f"{model.name}, batch {batch}, seq {seq}, {threads} threads, median of {rounds}",
        title_justify="left",
    )
    for name, secs in seconds.items():
        ratio = seconds["onnxruntime"] / secs
        floor = TARGETS.get(name.removeprefix("aimcc "))
        verdict = f">= {floor} {'ok' if ratio >= floor else 'MISSED'}" if floor else ""
        table.add_row(name, f"{secs * 1e3:.1f}", f"{batch / secs:.1f}", f"{ratio:.2f}", verdict)
    table.caption = f"loading + programming the three models: {programming:.1f} s"
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="default: minilm from the corpus cache")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    opts = p.parse_args()
    opts.model = opts.model or model_path("minilm")
    torch.set_num_threads(opts.threads)
    console = Console()
    console.print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for batch in opts.batch:
        console.print(bench(opts.model, batch, opts.seq, opts.rounds, opts.threads))
    console.print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
