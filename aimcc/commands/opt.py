"""`aimcc opt`: run named passes on IR and print the result, as mlir-opt and xdsl-opt do.

    aimcc opt model.onnx -p raise --save-weights w.npz -o raised.mlir
    aimcc opt raised.mlir --weights w.npz -p "partition{target=aimc},tile{rows=256 cols=256}"
    aimcc opt test.mlir -p tile        # small weights inline: no --weights

The tool for pass authors: textual IR in, a pipeline of passes with options, IR out. An ONNX
input is imported first. Textual IR carries its small weights inline (up to --inline-weights
bytes) and refers to larger ones by key, whose values are in the store beside it
(``--weights``, written by ``--save-weights``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from aimcc.commands import Parser, add_model_options, output_file, shows_progress, status
from aimcc.errors import AimccError

SPLIT = re.compile(r"^// -----\s*$", re.M)  # --split-input-file's separator, as mlir-opt's


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aimcc opt",
        description="Run a pipeline of aimcc passes on textual IR (or an imported ONNX model) "
        "and print the resulting IR. 'aimcc compile OUT.mlir --weights W.npz' finishes "
        "compiling it into a binary.",
    )
    p.add_argument(
        "input",
        type=Path,
        nargs="?",
        help="textual IR (.mlir) or an ONNX model (imported first)",
    )
    p.add_argument(
        "-p",
        "--passes",
        default="",
        metavar="PIPELINE",
        help="comma-separated passes with options, e.g. 'raise,partition{target=aimc},"
        "tile{rows=256 cols=256}'; see --list-passes (default: none)",
    )
    p.add_argument(
        "--list-passes", action="store_true", help="print every pass with its options and exit"
    )
    p.add_argument(
        "--weights", type=Path, help=".npz store of the weights the textual IR names by key"
    )
    p.add_argument(
        "--save-weights",
        type=output_file,
        metavar="OUT.npz",
        help="write the weights the output names by key (the larger than --inline-weights)",
    )
    p.add_argument(
        "--inline-weights",
        type=int,
        metavar="BYTES",
        help="print the value of every weight of at most BYTES bytes in the IR (default 1 KiB, "
        "aimcc.ir.text.INLINE_BYTES; 0: none, every weight is named by key)",
    )
    add_model_options(p)
    p.add_argument(
        "--split-input-file",
        action="store_true",
        help="textual IR: treat each part between '// -----' lines as its own module; the "
        "outputs are joined by '// -----' (as mlir-opt, for tests)",
    )
    p.add_argument(
        "--verify-diagnostics",
        action="store_true",
        help="print the error of IR that does not parse, verify or pass, as the output of its "
        "part, and exit 0 (for tests of the verifiers' diagnostics)",
    )
    p.add_argument(
        "-o", "--output", type=output_file, help="write the IR here instead of printing it"
    )
    return p


def list_passes() -> str:
    """Each pass in pipeline order: its name, what it does, and its options with defaults."""
    from aimcc.passes import PASSES

    lines = []
    for name, cls in PASSES.items():
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        lines.append(f"{name}: {doc.removeprefix(f'{name}: ')}")
        options = [f for f in dataclasses.fields(cls) if f.init]
        for f in options:
            lines.append(f"    {f.name}: {f.type} = {f.default!r}")
        if not options:
            lines.append("    (no options)")
    lines.append("")
    lines.append("e.g. -p 'raise,partition{target=aimc},tile{rows=256 cols=256}'")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    if opts.list_passes:
        print(list_passes(), end="")
        return 0
    if opts.input is None:
        raise AimccError("opt: give the IR or ONNX model to transform (or --list-passes)")
    from xdsl.dialects.builtin import ModuleOp

    from aimcc.arch import DEFAULT_ARCH, load_arch
    from aimcc.atomic import write_npz, write_text
    from aimcc.compiler import (
        import_onnx,
        parse_passes,
        read_ir,
        read_weights,
        referenced_keys,
        run_passes,
    )
    from aimcc.frontend.load import parse_input_shapes
    from aimcc.ir import make_context
    from aimcc.ir.text import ARCH_ATTR, INLINE_BYTES, arch_attr, inlined, module_arch
    from aimcc.ir.weights import WeightStore

    arch = load_arch(opts.arch or DEFAULT_ARCH, opts.overrides)  # bad options fail before
    passes = parse_passes(opts.passes)  # any work
    if opts.input.suffix == ".onnx" and opts.weights:
        raise AimccError("--weights is for textual IR: an ONNX model carries its weights")
    if opts.input.suffix != ".onnx" and opts.input_shape:
        raise AimccError("--input-shape applies when importing ONNX: textual IR has static shapes")
    if opts.split_input_file and opts.input.suffix == ".onnx":
        raise AimccError("--split-input-file applies to textual IR")
    if opts.inline_weights is None:
        opts.inline_weights = INLINE_BYTES
    if opts.inline_weights < 0:
        raise AimccError(f"--inline-weights {opts.inline_weights}: give a size in bytes, 0 or more")
    outputs, keys = [], set()
    with status(shows_progress()) as update:  # ends before the IR is printed
        update(f"reading {opts.input.name}")
        if opts.input.suffix == ".onnx":
            module, weights, _ = import_onnx(opts.input, parse_input_shapes(opts.input_shape))
            parts = [module]
        else:
            weights = read_weights(opts.weights) if opts.weights else WeightStore()
            if not opts.input.is_file():
                raise AimccError(f"{opts.input}: no such file")
            parts = SPLIT.split(opts.input.read_text()) if opts.split_input_file else [None]
        for part in parts:
            try:
                if not isinstance(part, ModuleOp):
                    part = read_ir(opts.input, weights, part)
                    arch = module_arch(part, opts.arch, opts.overrides, str(opts.input))
                part.attributes[ARCH_ATTR] = arch_attr(arch)
                ctx = make_context(weights, arch)  # a fresh arch: place may set the chip count
                run_passes(
                    part, ctx, passes, stage=lambda name: update(f"{opts.input.name}: {name}")
                )
            except AimccError as exc:
                if not opts.verify_diagnostics:
                    raise
                outputs.append(f"error: {exc}")
                continue
            with inlined(part, weights, opts.inline_weights) as inline:
                outputs.append(str(part))
            keys |= referenced_keys(part) - inline  # the weights it names by key only
    weights.retain(keys)
    text = "\n// -----\n".join(outputs) + "\n"
    if opts.output:
        write_text(opts.output, text)
    else:
        print(text, end="")
    if opts.save_weights:
        write_npz(opts.save_weights, dict(weights))
    return 0
