"""The AHWA-LoRA experiment on a real model and task: all-MiniLM-L6-v2 on SST-2, offline.

    python bench/ahwa_lora.py [--train 1024] [--dev 0] [--trials 10] [--seq 48] [--out DIR] ...

Builds the example (examples/ahwa_lora/build.py: MiniLM with LoRA slots, compiled hybrid for
paper-512 tiles), then trains on a subset of SST-2 train and evaluates on SST-2 dev:

  (a) a task LoRA + 2-class head trained digitally (exact fp32 layers), evaluated in fp32;
  (b) that same adapter deployed on PCM tiles;
  (c) an AHWA-LoRA adapter: (a) trained on the same task and data through the simulated
      tiles (``aimcc adapt``'s training forward: weight noise 6.7 %, output noise 4 %, 8-bit
      DAC/ADC with STE) for ``--ahwa-epochs`` more, warm-up and linear decay again; with
      ``--ahwa-from scratch`` trained through the tiles from the start, as the paper does
      (at this small budget that under-fits: see docs/AHWA_LORA.md);
  (d) a label-free adapter: (a) adapted to the tiles by distillation from the fp32 model
      with (a), the "hardware adaptation" half of the method (``--second-trials`` trials).

(b), (c) and (d) run on the same programmed chip in each trial: adapters are switched in, the
tiles are never reprogrammed (the multi-task path). Accuracy mean ± std over the trials at each
drift time goes to a markdown table, a JSON file and a PNG in --out. SST-2 is read from
../shared/data/sst2 relative to the project root (never copied).
"""

from __future__ import annotations

import argparse
import json
import os
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

START = time.perf_counter()
SST2 = ROOT.parent / "shared" / "data" / "sst2"
POOLED = "sentence_embedding"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def trained(path: Path, exe, data, config: TrainConfig, init=None):
    """Train (or reuse the adapter cached at ``path``); the adapter and ``path``."""
    if (path / "adapter_config.json").is_file():
        log(f"reusing {path}")
        return read_adapter(path), path
    t0 = time.perf_counter()

    def progress(step: int, total: int, loss: float) -> None:
        if step == 1 or step % 4 == 0 or step == total:
            left = (time.perf_counter() - t0) / step * (total - step)
            log(f"  {path.name}: step {step}/{total} loss {loss:.4f} (~{left:.0f} s left)")

    result = train(exe, data, config, init, progress)
    write_adapter(path, with_base(result.adapter, exe.where))
    log(f"trained {path.name}: {result.steps} steps in {result.seconds:.0f} s")
    return result.adapter, path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1024, help="training sentences (subset)")
    p.add_argument("--dev", type=int, default=0, help="dev sentences (0: all 872)")
    p.add_argument("--trials", type=int, default=10, help="PCM trials of (b) and (c)")
    p.add_argument("--second-trials", type=int, default=3, help="PCM trials of (d)")
    p.add_argument("--times", default=",".join(DRIFT_TIMES))
    p.add_argument("--seq", type=int, default=48, help="sequence length (98 %% of dev fits 48)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=float, default=2.0, help="epochs of (a) and (c)")
    p.add_argument("--adapt-epochs", type=float, default=0.5, help="epochs of (d)")
    p.add_argument(
        "--ahwa-from",
        choices=("digital", "scratch"),
        default="digital",
        help="(c) continues (a) through the tiles, or is trained through them from the start",
    )
    p.add_argument("--ahwa-epochs", type=float, default=3.0, help="epochs of (c) after (a)")
    p.add_argument("--ahwa-lr", type=float, default=1e-2, help="head learning rate of (c)")
    p.add_argument("--lr", type=float, default=1e-2, help="the head's learning rate")
    p.add_argument("--lora-lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction, then linear decay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="processes running PCM trials side by side")
    p.add_argument("--out", type=Path, default=example.DEFAULT_OUT / "bench")
    return p


def settings(opts: argparse.Namespace) -> tuple[str, dict]:
    """The tag naming the cached adapters of these options, and the TrainConfig fields of (a)
    (bench/ahwa_recipes.py starts from the same (a))."""
    tag = f"s{opts.seq}_n{opts.train}_e{opts.epochs:g}_{opts.adapt_epochs:g}"
    tag += f"_lr{opts.lr:g}_{opts.lora_lr:g}_w{opts.warmup:g}_seed{opts.seed}"
    common = dict(
        epochs=opts.epochs,
        lr=opts.lr,
        lora_lr=opts.lora_lr,
        warmup=opts.warmup,
        seed=opts.seed,
        output=POOLED,
    )
    return tag, common


def main(argv: list[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    torch.manual_seed(opts.seed)
    command = "python bench/ahwa_lora.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log(f"{command}; torch threads {torch.get_num_threads()}")
    _, binary = example.build(example.DEFAULT_OUT, opts.batch, opts.seq)
    exe = load(binary)
    tok = example.tokenizer_dir()
    train_data = load_data(SST2 / "train.tsv", exe, tok, opts.train, opts.seed)
    dev = load_data(SST2 / "dev.tsv", exe, tok, opts.dev or None, opts.seed)
    log(f"{binary.name}: train subset {len(train_data)}, dev {len(dev)}")
    tag, common = settings(opts)
    adapters = opts.out / "adapters"
    a, a_path = trained(
        adapters / f"a_digital_{tag}", exe, train_data, TrainConfig(analog=False, **common)
    )
    if opts.ahwa_from == "scratch":  # the paper's recipe: noise from the first step
        c, c_path = trained(adapters / f"c_ahwa_{tag}", exe, train_data, TrainConfig(**common))
    else:  # (a) trained on through the tiles: same data, --ahwa-epochs more, same schedule
        c_config = TrainConfig(**{**common, "epochs": opts.ahwa_epochs, "lr": opts.ahwa_lr})
        name = f"c_ahwa_from_a_{tag}_e{opts.ahwa_epochs:g}_lr{opts.ahwa_lr:g}"
        c, c_path = trained(adapters / name, exe, train_data, c_config, init=a)
        # the control: (a) trained on digitally for the same epochs, so (c)'s gain is not
        # just the longer training (reported in fp32)
        more = TrainConfig(**{**common, "epochs": opts.ahwa_epochs, "analog": False})
        name = f"a_more_digital_{tag}_e{opts.ahwa_epochs:g}"
        a_more, _ = trained(adapters / name, exe, train_data, more, init=a)
    # (d) starts from (a) and never sees a label; the head moves at the LoRA's rate
    common.update(epochs=opts.adapt_epochs, lr=opts.lora_lr)
    d, d_path = trained(
        adapters / f"d_distill_{tag}",
        exe,
        train_data,
        TrainConfig(objective="distill", **common),
        init=a,
    )
    exe.set_noise(NoiseSpec("ideal"))
    named = {"a": a, "c": c, "d": d}
    if opts.ahwa_from == "digital":
        named["a_more"] = a_more
    fp32 = {name: accuracy(exe, dev, ad, POOLED) for name, ad in named.items()}
    log("fp32 accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in fp32.items()))
    times = [(label.strip(), parse_time(label)) for label in opts.times.split(",")]
    second = min(opts.second_trials, opts.trials)
    labels = [label for label, _ in times]
    stem = opts.out / f"ahwa_lora_{tag}_{opts.ahwa_from}_t{'-'.join(labels)}_d{len(dev)}"
    key = {"command": command, "times": labels, "dev": len(dev), "fp32": fp32}
    pcm: dict[str, list] = {"b": [], "c": [], "d": []}
    saved = _with(stem, ".json")
    if saved.is_file():  # a run cut short: keep its finished trials (each is a whole chip)
        old = json.loads(saved.read_text())
        # the same adapters (their fp32 accuracy), dev set and times; the command may differ
        # (--jobs, --trials, --second-trials)
        if all(old.get(k) == key[k] for k in ("times", "dev", "fp32")):
            pcm = {k: v[:] for k, v in old["pcm"].items()}
            log(f"resuming after {len(pcm['b'])} finished trials in {saved}")
    # trial i programs the devices of seed + i once and serves (b), (c) and, in the first
    # --second-trials trials, (d) on them at every drift time (the multi-task path: adapters
    # switched, tiles never reprogrammed); trials are independent chips, so --jobs processes
    # run them side by side, and the report is rewritten after every trial (a run cut short
    # keeps what it finished, and the same command resumes it)
    jobs = [
        (trial, ("b", "c", "d") if trial < second else ("b", "c"), times, opts.seed)
        for trial in range(len(pcm["b"]), opts.trials)
    ]
    paths = {"b": a_path, "c": c_path, "d": d_path}
    t0 = time.perf_counter()
    if opts.jobs == 1:
        _WORKER.update(exe=exe, dev=dev, adapters={"b": a, "c": c, "d": d})
        results = map(_trial, jobs)
    else:
        import multiprocessing

        threads = max(1, torch.get_num_threads() // opts.jobs)
        pool = multiprocessing.get_context("spawn").Pool(
            opts.jobs, _init_worker, (binary, paths, opts.dev, opts.seed, threads)
        )
        results = pool.imap(_trial, jobs)
    for done, (trial, values) in enumerate(results, start=1):
        for name, v in values.items():
            pcm[name].append(v)
        left = (time.perf_counter() - t0) / done * (len(jobs) - done)
        log(f"  pcm trial {trial} done ({done}/{len(jobs)}, ~{left:.0f} s left)")
        write_report(stem, key, pcm, opts.trials, second, len(train_data), opts.seq)
    if opts.jobs > 1:
        pool.close()
        pool.join()
    log(f"wrote {stem}.{{md,json,png}}")
    return 0


_WORKER: dict = {}  # a trial process's binary, dev set and adapters


def _init_worker(binary: Path, paths: dict, dev: int, seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    exe = load(binary)
    data = load_data(SST2 / "dev.tsv", exe, example.tokenizer_dir(), dev or None, seed)
    _WORKER.update(exe=exe, dev=data, adapters={k: read_adapter(p) for k, p in paths.items()})


def _trial(job: tuple) -> tuple[int, dict[str, list]]:
    """One chip: program seed + trial, read it at every time with each named adapter."""
    trial, names, times, seed = job
    adapters = {name: _WORKER["adapters"][name] for name in names}
    values = evaluate_accuracy(
        _WORKER["exe"], _WORKER["dev"], adapters, times, 1, seed + trial, POOLED
    )
    return trial, {name: v[0].tolist() for name, v in values.items()}


def _with(stem: Path, suffix: str) -> Path:
    """``stem`` + suffix (the stem holds dots: with_suffix would cut it)."""
    return stem.parent / (stem.name + suffix)


def write_report(
    stem: Path, key: dict, pcm: dict[str, list], trials: int, second: int, train: int, seq: int
) -> None:
    """The table (markdown), the numbers (JSON) and the plot of the trials finished so far."""
    labels, fp32 = key["times"], key["fp32"]
    rows = {
        "(a) digital fp32, digital LoRA": np.full((1, len(labels)), fp32["a"]),
        "(b) digital LoRA on PCM": np.array(pcm["b"]),
        "(c) AHWA-LoRA on PCM": np.array(pcm["c"]),
        "(d) distill-only AHWA adapter on PCM": np.array(pcm["d"]),
    }
    done = len(pcm["b"])
    table = [
        f"`{key['command']}` — SST-2 dev ({key['dev']} sentences), train subset {train}, "
        f"seq {seq}, {done} of {trials} trials ((d): {len(pcm['d'])} of {second}), "
        "accuracy % mean ± std",
        "",
        "| adapter | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name, values in rows.items():
        if not len(values):
            continue
        cells = [
            f"{100 * m:.2f} ± {100 * s:.2f}"
            for m, s in zip(values.mean(0), values.std(0), strict=True)
        ]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    table.append("")
    table.append(
        "fp32 accuracy of the AHWA adapters themselves: "
        f"(c) {100 * fp32['c']:.2f}, (d) {100 * fp32['d']:.2f}"
        + (
            f"; (a) trained on digitally for (c)'s extra epochs: {100 * fp32['a_more']:.2f}"
            if "a_more" in fp32
            else ""
        )
    )
    if len(pcm["b"]) and "1y" in labels:  # the acceptance, at 1 y
        i = labels.index("1y")
        a1, b1, c1 = fp32["a"], np.mean(np.array(pcm["b"])[:, i]), np.mean(np.array(pcm["c"])[:, i])
        lost = a1 - b1
        table.append(
            f"at 1y: (c) is {100 * (a1 - c1):.2f} points below (a) (target: within 2) and "
            f"recovers {100 * (c1 - b1):.2f} of the {100 * lost:.2f} points (b) loses "
            f"({100 * (c1 - b1) / lost:.0f} %, target: at least half)"
            if lost > 0
            else f"at 1y: (b) loses nothing against (a); (c) is {100 * (a1 - c1):.2f} below (a)"
        )
    busy = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table.append(
        f"this process: {(time.perf_counter() - START) / 60:.0f} min on {os.cpu_count()} cores "
        f"(load average 1/5/15 min at the end: {busy})"
    )
    text = "\n".join(table)
    print(text, flush=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
    _with(stem, ".md").write_text(text + "\n")
    _with(stem, ".json").write_text(json.dumps({**key, "pcm": pcm}, indent=1))
    plot(
        {k: v for k, v in rows.items() if len(v)},
        labels,
        _with(stem, ".png"),
        f"MiniLM on SST-2 dev: {key['command']}",
    )


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
