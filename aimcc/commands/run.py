"""`aimcc run BINARY`: execute a compiled binary in the simulated runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.table import Table

from aimcc import report
from aimcc.atomic import write_npz
from aimcc.commands import parse_time, random_inputs, read_npz
from aimcc.errors import AimccError
from aimcc.runtime import load
from aimcc.runtime.analog import COMPENSATIONS, NOISE_MODELS, NoiseSpec

STATISTICS = ("mean", "std", "min", "max")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aimcc run",
        description="Execute a compiled .aimcb binary in the simulated "
        "runtime and print (and optionally save) its outputs.",
    )
    p.add_argument("binary", type=Path, help="the .aimcb file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--inputs", type=Path, help=".npz with one array per model input")
    src.add_argument(
        "--random",
        action="store_true",
        help="generate random inputs: token ids uniform over their embedding table, "
        "other integer inputs (masks) ones, floats standard normal",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the outputs to this .npz (with --trials: one array per output, "
        "trials stacked on a new first axis)",
    )
    p.add_argument(
        "--noise",
        choices=NOISE_MODELS,
        default="ideal",
        help="tile model: ideal (exact, default), quant (DAC/ADC only), pcm "
        "(programming noise, drift, read noise, DAC/ADC, output noise)",
    )
    p.add_argument(
        "--t-inference",
        default="0s",
        metavar="TIME",
        help="time since programming for pcm drift: e.g. 0s, 1h, 1d, 1w, 1month, 10y",
    )
    p.add_argument(
        "--compensation",
        choices=COMPENSATIONS,
        help="pcm drift compensation (default: the architecture's, tile.pcm.compensation)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=1,
        metavar="N",
        help="pcm: program the tiles N times (seeds SEED..SEED+N-1) and print each output "
        "statistic as mean ± std over the trials",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs and noise")
    p.add_argument(
        "--adapter",
        type=Path,
        metavar="DIR",
        help="a peft LoRA adapter folder to load into the binary's adapter slots (compiled "
        "with --lora-rank); tiles are not reprogrammed (docs/ADAPTERS.md)",
    )
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    if opts.trials < 1:
        raise AimccError(f"--trials must be at least 1, got {opts.trials}")
    if opts.trials > 1 and opts.noise != "pcm":
        raise AimccError(f"--trials needs --noise pcm ({opts.noise} tiles are deterministic)")
    spec = NoiseSpec(opts.noise, parse_time(opts.t_inference), opts.compensation)
    exe = load(opts.binary)
    if opts.adapter:
        exe.set_adapter(opts.adapter)
    if opts.inputs:
        feeds = read_npz(opts.inputs)
    elif opts.random:
        feeds = random_inputs(exe, opts.seed)
    else:
        raise AimccError("give --inputs FILE.npz or --random")
    if opts.trials == 1:
        exe.set_noise(spec, opts.seed)
        outputs = exe.run(feeds)
        if opts.output:
            write_npz(opts.output, outputs)
        report.print_outputs(outputs, spec, opts.output)
        return 0
    trials = []
    for trial in range(opts.trials):
        exe.set_noise(spec, opts.seed + trial)
        trials.append(exe.run(feeds))
    stacked = {name: np.stack([t[name] for t in trials]) for name in trials[0]}
    if opts.output:
        write_npz(opts.output, stacked)
    print_trials(stacked, spec, opts.output)
    return 0


def print_trials(stacked: dict[str, np.ndarray], spec: NoiseSpec, saved: Path | None) -> None:
    """Each output's statistics per trial, shown as mean ± std over the trials."""
    n_trials = next(iter(stacked.values())).shape[0]
    title = f"outputs over {n_trials} programmings (pcm tiles, t = {spec.t_inference_s:g} s)"
    table = Table("name", "shape", *STATISTICS, title=title, title_justify="left")
    for name, values in stacked.items():
        per_trial = values.reshape(n_trials, -1).astype(np.float64)
        stats = [getattr(np, s)(per_trial, axis=1) for s in STATISTICS]
        table.add_row(
            name,
            "x".join(map(str, values.shape[1:])),
            *(f"{s.mean():.4g} ± {s.std():.2g}" for s in stats),
        )
    report.console.print(table, highlight=False)
    if saved:
        report.console.print(f"wrote {saved}", highlight=False)
