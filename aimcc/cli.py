"""The ``aimcc`` command: compile an ONNX model (default), run or inspect a binary.

    aimcc model.onnx --target hybrid             compile: model.aimcb + model.kernels.json
    aimcc run model.aimcb --inputs inputs.npz    execute in the simulated runtime
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aimcc.errors import AimccError, first_line

if TYPE_CHECKING:
    import numpy as np

    from aimcc.runtime.executor import Executable

SUBCOMMANDS = ("run",)
TIME_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
              "month": 2629800.0, "y": 31557600.0}


def parse_time(text: str) -> float:
    """'1d', '10y', '3600', '1month' -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in ("", *TIME_UNITS):
        raise AimccError(f"bad time '{text}': use a number with s, min, h, d, w, month or y "
                         "(e.g. 1d, 10y)")
    return float(match.group(1)) * TIME_UNITS.get(match.group(2) or "s", 1.0)


def compile_parser() -> argparse.ArgumentParser:
    from aimcc.arch import DEFAULT_ARCH, preset_names
    from aimcc.compiler import PASS_NAMES
    from aimcc.passes.partition import TARGETS

    p = argparse.ArgumentParser(
        prog="aimcc",
        description="Compile an ONNX transformer onto analog in-memory-computing tiles and "
        "RISC-V clusters. Other commands: 'aimcc run BINARY' executes a compiled binary "
        "(see 'aimcc run --help').",
    )
    p.add_argument("model", help="the ONNX model to compile (external data files are read too)")
    p.add_argument("--target", choices=TARGETS, default="hybrid",
                   help="hybrid: static linears on analog tiles, LoRA/attention/norms digital "
                   "(default); aimc: LoRA merged into the analog weights (fully-analog "
                   "baseline); digital: everything on the RISC-V clusters")
    p.add_argument("--arch", default=DEFAULT_ARCH,
                   help=f"architecture preset ({', '.join(preset_names())}) or a .toml file "
                   f"(default {DEFAULT_ARCH})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an architecture value, e.g. --set tile.count=256 (repeatable)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0xD1...",
                   help="static shape for a dynamic input (repeatable); dims sharing a symbolic "
                   "name follow; default: batch 1, other dynamic dims 128")
    p.add_argument("-o", "--output", type=Path,
                   help="binary to write (default: ./<model>.aimcb; the manifest goes beside "
                   "it as <name>.kernels.json)")
    p.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after every stage")
    p.add_argument("--print-ir-after", action="append", default=[], choices=PASS_NAMES,
                   metavar="PASS", help=f"print the IR after PASS ({', '.join(PASS_NAMES)})")
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary")
    return p


def run_parser() -> argparse.ArgumentParser:
    from aimcc.runtime.analog import NOISE_MODELS

    p = argparse.ArgumentParser(prog="aimcc run",
                                description="Execute a compiled .aimcb binary in the simulated "
                                "runtime and print (and optionally save) its outputs.")
    p.add_argument("binary", type=Path, help="the .aimcb file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--inputs", type=Path, help=".npz with one array per model input")
    src.add_argument("--random", action="store_true",
                     help="generate random inputs: token ids uniform over their embedding table, "
                     "other integer inputs (masks) ones, floats standard normal")
    p.add_argument("-o", "--output", type=Path, help="write the outputs to this .npz")
    p.add_argument("--noise", choices=NOISE_MODELS, default="ideal",
                   help="tile model: ideal (exact, default), quant (DAC/ADC only), pcm "
                   "(programming noise, drift, read noise, DAC/ADC, output noise)")
    p.add_argument("--t-inference", default="0s", metavar="TIME",
                   help="time since programming for pcm drift: e.g. 0s, 1h, 1d, 1w, 1month, 10y")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs and noise")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command: Callable[[list[str]], int] = _compile
    if args and args[0] in SUBCOMMANDS:
        command = {"run": _run}[args.pop(0)]
    try:
        return command(args)
    except AimccError as exc:
        print(f"aimcc: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aimcc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("AIMCC_TRACEBACK"):
            raise
        print(f"aimcc: internal error: {type(exc).__name__}: {first_line(exc)} "
              "(set AIMCC_TRACEBACK=1 for details)", file=sys.stderr)
        return 2


def _compile(argv: list[str]) -> int:
    opts = compile_parser().parse_args(argv)
    from aimcc import report
    from aimcc.arch import load_arch
    from aimcc.atomic import write_text
    from aimcc.backends.aimcb import write_binary
    from aimcc.backends.manifest import kernel_manifest, manifest_json
    from aimcc.compiler import compile_model
    from aimcc.frontend.load import parse_input_shapes

    arch = load_arch(opts.arch, opts.overrides)
    shapes = parse_input_shapes(opts.input_shape)
    wanted = set(opts.print_ir_after)

    def after_pass(name: str, module: object) -> None:
        if opts.print_ir_after_all or name in wanted:
            report.print_ir(name, module)

    comp = compile_model(opts.model, opts.target, arch, shapes,
                         after_pass if (wanted or opts.print_ir_after_all) else None)
    output = opts.output or Path(Path(opts.model).stem + ".aimcb")
    manifest_path = output.with_name(output.name.removesuffix(".aimcb") + ".kernels.json")
    size = write_binary(comp, output)
    write_text(manifest_path, manifest_json(kernel_manifest(comp)))
    if not opts.quiet:
        report.print_compile_summary(comp, {output: size, manifest_path: None})
    return 0


def _run(argv: list[str]) -> int:
    opts = run_parser().parse_args(argv)
    from aimcc import report
    from aimcc.atomic import write_npz
    from aimcc.runtime import load
    from aimcc.runtime.analog import NoiseSpec

    exe = load(opts.binary)
    spec = NoiseSpec(opts.noise, parse_time(opts.t_inference))
    exe.set_noise(spec, opts.seed)
    if opts.inputs:
        feeds = _read_npz(opts.inputs)
    elif opts.random:
        feeds = random_inputs(exe, opts.seed)
    else:
        raise AimccError("give --inputs FILE.npz or --random")
    outputs = exe.run(feeds)
    if opts.output:
        write_npz(opts.output, outputs)
    report.print_outputs(outputs, spec, opts.output)
    return 0


def random_inputs(exe: Executable, seed: int) -> dict[str, np.ndarray]:
    """Random feeds: ids below the size of the table they index, masks of ones, floats normal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bounds = exe.index_bounds()
    feeds = {}
    for spec in exe.inputs:
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        if spec["name"] in bounds:
            feeds[spec["name"]] = rng.integers(0, bounds[spec["name"]], shape).astype(dtype)
        elif dtype.kind in "iub":
            feeds[spec["name"]] = np.ones(shape, dtype)
        else:
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _read_npz(path: Path) -> dict:
    import zipfile

    import numpy as np

    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AimccError(f"{path}: not a readable .npz file ({first_line(exc)})") from None


if __name__ == "__main__":
    sys.exit(main())
