"""Training recipes for the AHWA-LoRA adapters, compared on the same PCM chips at one time.

    python bench/ahwa_recipes.py c1,c3e,a3e_dig [--chips 3] [--times 1y] [--seed 100]

Every recipe starts from the bench's digital adapter (a) (bench/ahwa_lora.py's cache: the
same settings, trained here if missing) and trains on SST-2 train (the named subset), then
all of them, and (a) itself as "b", are evaluated on the whole dev set: fp32, and on
``--chips`` programmed PCM chips (seeds from ``--seed``) at each of ``--times``, every adapter
switched in on the same devices (paired). Adapters are cached in --out. docs/AHWA_LORA.md
quotes its tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import ahwa_lora as bench  # noqa: E402

from aimcc.adapt import TrainConfig, load_data  # noqa: E402
from aimcc.evaluate import accuracy, evaluate_accuracy  # noqa: E402
from aimcc.runtime import load  # noqa: E402
from aimcc.runtime.analog import NoiseSpec  # noqa: E402

# name -> (training sentences, TrainConfig fields over the bench's (c) settings), from (a)
RECIPES = {
    "c1": (1024, dict(epochs=1.0)),  # the bench's (c) before session 5
    "c3e": (1024, dict(epochs=3.0)),  # the bench's (c) now
    "c5e": (1024, dict(epochs=5.0)),
    "c4k": (4096, dict(epochs=1.0)),
    "a3e_dig": (1024, dict(epochs=3.0, analog=False)),  # equal-budget digital control
    "d2e": (1024, dict(epochs=2.0, objective="distill", lr=5e-4)),
    "d2elr": (1024, dict(epochs=2.0, objective="distill", lr=1e-3, lora_lr=1e-3)),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", help="comma-separated: " + ", ".join(RECIPES))
    p.add_argument("--chips", type=int, default=3)
    p.add_argument("--times", default="1y")
    p.add_argument("--seed", type=int, default=100, help="the first chip's seed")
    p.add_argument("--out", type=Path, default=bench.example.DEFAULT_OUT / "recipes")
    opts = p.parse_args(argv)
    names = opts.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipe '{unknown[0]}': use {', '.join(RECIPES)}")
    times = [(label, bench.parse_time(label)) for label in opts.times.split(",")]
    defaults = bench.parser().parse_args([])  # (a) as the bench trains and caches it
    tag, common = bench.settings(defaults)
    _, binary = bench.example.build(bench.example.DEFAULT_OUT, defaults.batch, defaults.seq)
    exe = load(binary)
    tok = bench.example.tokenizer_dir()
    n = defaults.train
    data = {n: load_data(bench.SST2 / "train.tsv", exe, tok, n, defaults.seed)}
    dev = load_data(bench.SST2 / "dev.tsv", exe, tok, None, defaults.seed)
    path = defaults.out / "adapters" / f"a_digital_{tag}"
    a, _ = bench.trained(path, exe, data[n], TrainConfig(analog=False, **common))
    adapters = {"b": a}
    for name in names:
        n, fields = RECIPES[name]
        if n not in data:
            data[n] = load_data(bench.SST2 / "train.tsv", exe, tok, n, defaults.seed)
        config = TrainConfig(**{**common, **fields})
        adapters[name], _ = bench.trained(opts.out / name, exe, data[n], config, init=a)
    exe.set_noise(NoiseSpec("ideal"))
    fp32 = {k: accuracy(exe, dev, ad, bench.POOLED) for k, ad in adapters.items()}
    pcm = evaluate_accuracy(exe, dev, adapters, times, opts.chips, opts.seed, bench.POOLED)
    print("| adapter | fp32 | " + " | ".join(f"PCM {t}" for t, _ in times) + " |")
    print("|---" * (len(times) + 2) + "|")
    for name, values in pcm.items():
        cells = [
            f"{100 * values[:, i].mean():.2f} ± {100 * values[:, i].std():.2f}"
            for i in range(len(times))
        ]
        print(f"| {name} | {100 * fp32[name]:.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
