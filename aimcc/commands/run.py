"""`aimcc run BINARY`: execute a compiled binary in the simulated runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from aimcc import report
from aimcc.atomic import write_npz
from aimcc.commands import parse_time, random_inputs, read_npz
from aimcc.errors import AimccError
from aimcc.runtime import load
from aimcc.runtime.analog import NOISE_MODELS, NoiseSpec


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
    p.add_argument("-o", "--output", type=Path, help="write the outputs to this .npz")
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
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs and noise")
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    exe = load(opts.binary)
    spec = NoiseSpec(opts.noise, parse_time(opts.t_inference))
    exe.set_noise(spec, opts.seed)
    if opts.inputs:
        feeds = read_npz(opts.inputs)
    elif opts.random:
        feeds = random_inputs(exe, opts.seed)
    else:
        raise AimccError("give --inputs FILE.npz or --random")
    outputs = exe.run(feeds)
    if opts.output:
        write_npz(opts.output, outputs)
    report.print_outputs(outputs, spec, opts.output)
    return 0
