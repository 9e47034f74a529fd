"""`aimcc run BINARY`: execute a compiled binary in the simulated runtime."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aimcc import report
from aimcc.atomic import write_npz
from aimcc.commands import Parser, output_file, parse_time, random_inputs, read_npz, seed, warn
from aimcc.errors import AimccError
from aimcc.runtime.options import COMPENSATIONS, NOISE_MODELS

if TYPE_CHECKING:
    from aimcc.runtime.analog import NoiseSpec

STATISTICS = ("mean", "std", "min", "max")


def parser() -> argparse.ArgumentParser:
    p = Parser(
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
        type=output_file,
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
        metavar="TIME",
        help="pcm: time since programming, for drift: e.g. 0s (default), 1h, 1d, 1w, 1month, 10y",
    )
    p.add_argument(
        "--compensation",
        choices=COMPENSATIONS,
        help="pcm: drift compensation (default: the architecture's, tile.pcm.compensation)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=1,
        metavar="N",
        help="pcm: program the tiles N times (seeds SEED..SEED+N-1) and print each output "
        "statistic as mean ± std over the trials",
    )
    p.add_argument(
        "--seed", type=seed, default=None, help="seed for random inputs and pcm noise (default 0)"
    )
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
    from aimcc.runtime import load  # torch: after argparse answered --help
    from aimcc.runtime.analog import NoiseSpec

    if opts.trials < 1:
        raise AimccError(f"--trials must be at least 1, got {opts.trials}")
    spec = NoiseSpec(opts.noise, parse_time(opts.t_inference or "0s"), opts.compensation)
    check_options(opts)
    opts.seed = opts.seed or 0
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


def check_options(opts: argparse.Namespace) -> None:
    """Options that would change nothing in this combination are refused (or, for --seed,
    warned about): a silently ignored option reads as a result."""
    if opts.noise != "pcm":
        deterministic = f"{opts.noise} tiles are deterministic"
        for given, option, why in (
            (opts.trials > 1, "--trials", deterministic),
            (opts.t_inference is not None, "--t-inference", f"{opts.noise} tiles do not drift"),
            (opts.compensation is not None, "--compensation", f"{opts.noise} tiles do not drift"),
        ):
            if given:
                raise AimccError(f"{option} needs --noise pcm ({why})")
        if opts.seed is not None and not opts.random:
            warn(f"--seed has no effect: the inputs are given and {deterministic}")


def print_trials(stacked: dict[str, np.ndarray], spec: NoiseSpec, saved: Path | None) -> None:
    """Each output statistic (a row) as its mean and std over the trials."""
    n_trials = next(iter(stacked.values())).shape[0]
    title = f"outputs over {n_trials} programmings (pcm tiles, t = {spec.t_inference_s:g} s)"
    table = report.FitTable(
        report.Col("name", fit="name"),
        "shape",
        "statistic",
        report.Col("mean of trials", "right"),
        report.Col("std of trials", "right"),
        title=title,
    )
    for name, values in stacked.items():
        per_trial = values.reshape(n_trials, -1).astype(np.float64)
        shape = ["x".join(map(str, values.shape[1:])) or "scalar", str(values.dtype), "", ""]
        for i, statistic in enumerate(STATISTICS):
            s = getattr(np, statistic)(per_trial, axis=1)
            table.add_row(
                "" if i else name, shape[i], statistic, f"{s.mean():.4g}", f"{s.std():.2g}"
            )
    table.print()
    if saved:
        report.console.print(f"wrote {saved}", highlight=False)
