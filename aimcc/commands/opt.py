"""`aimcc opt`: run named passes on IR and print the result, as mlir-opt and xdsl-opt do.

    aimcc opt model.onnx -p raise --save-weights w.npz -o raised.mlir
    aimcc opt raised.mlir --weights w.npz -p "partition{target=aimc},tile{rows=256 cols=256}"

The tool for pass authors: textual IR in, a pipeline of passes with options, IR out. An ONNX
input is imported first; textual IR refers to weights by key, so passes that read weight values
need the store (``--weights``, written by ``--save-weights``).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np
from xdsl.parser import Parser
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError, ParseError, VerifyException

from aimcc.arch import load_arch
from aimcc.atomic import write_npz, write_text
from aimcc.commands import add_model_options
from aimcc.compiler import referenced_keys
from aimcc.errors import AimccError, first_line
from aimcc.frontend.importer import import_graph
from aimcc.frontend.load import fix_input_shapes, load_onnx, parse_input_shapes
from aimcc.ir import make_context
from aimcc.ir.weights import WeightStore
from aimcc.passes import PASSES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aimcc opt",
        description="Run a pipeline of aimcc passes on textual IR (or an imported ONNX model) "
        "and print the resulting IR.",
    )
    p.add_argument("input", type=Path, help="textual IR (.mlir) or an ONNX model (imported first)")
    p.add_argument(
        "-p",
        "--passes",
        default="",
        metavar="PIPELINE",
        help="comma-separated passes with options, e.g. 'raise,partition{target=aimc},"
        f"tile{{rows=256 cols=256}}'; passes: {', '.join(PASSES)} (default: none)",
    )
    p.add_argument("--weights", type=Path, help=".npz weight store the textual IR refers to")
    p.add_argument(
        "--save-weights",
        type=Path,
        metavar="OUT.npz",
        help="write the weights the output refers to",
    )
    add_model_options(p)
    p.add_argument("-o", "--output", type=Path, help="write the IR here instead of printing it")
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    arch = load_arch(opts.arch, opts.overrides)
    passes = parse_passes(opts.passes)  # bad options fail before any work
    if opts.input.suffix == ".onnx":
        model = load_onnx(opts.input)
        shapes = fix_input_shapes(model, parse_input_shapes(opts.input_shape))
        module, weights = import_graph(model, shapes)
    else:
        weights = read_weights(opts.weights) if opts.weights else WeightStore()
        ctx = make_context(weights, arch)
        if not opts.input.is_file():
            raise AimccError(f"{opts.input}: no such file")
        try:
            module = Parser(ctx, opts.input.read_text(), str(opts.input)).parse_module()
            module.verify()
        except ParseError as exc:
            raise AimccError(f"{first_line(exc)}: {exc.msg}") from None
        except VerifyException as exc:
            raise AimccError(f"{opts.input}: IR does not verify: {first_line(exc)}") from None
        missing = sorted(referenced_keys(module) - set(weights))
        if missing:
            raise AimccError(
                f"{opts.input}: weight '{missing[0]}' is not in the weight store "
                f"({len(missing)} missing): pass --weights FILE.npz (see --save-weights)"
            )
    ctx = make_context(weights, arch)
    for p in passes:
        p.apply(ctx, module)
        try:
            module.verify()
        except VerifyException as exc:
            raise AimccError(f"IR after '{p.name}' does not verify: {first_line(exc)}") from None
    weights.retain(referenced_keys(module))
    text = str(module) + "\n"
    if opts.output:
        write_text(opts.output, text)
    else:
        print(text, end="")
    if opts.save_weights:
        write_npz(opts.save_weights, dict(weights))
    return 0


def parse_passes(spec: str) -> list[ModulePass]:
    """A pipeline spec (xDSL's syntax: ``name{opt=value other=value},...``) -> passes."""
    if not spec.strip():
        return []
    try:
        specs = list(parse_pipeline(spec))
        unknown = [s.name for s in specs if s.name not in PASSES]
        if unknown:
            raise AimccError(f"--passes: unknown pass '{unknown[0]}' (passes: {', '.join(PASSES)})")
        return [PASSES[s.name].from_pass_spec(s) for s in specs]
    except ArgSpecParseError as exc:  # the reason is the last line, under a source excerpt
        reason = str(exc).strip().splitlines()[-1].strip()
        raise AimccError(f"--passes '{spec}': {reason}") from None
    except (ValueError, TypeError) as exc:  # unknown or mistyped option
        raise AimccError(f"--passes '{spec}': {first_line(exc)}") from None


def read_weights(path: Path) -> WeightStore:
    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    store = WeightStore()
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                store.add(key, data[key])
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AimccError(f"{path}: not a readable .npz weight store ({first_line(exc)})") from None
    return store
