"""`aimcc MODEL.onnx`: compile a model into a binary and a kernel manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from aimcc import report
from aimcc.arch import DEFAULT_ARCH, load_arch, preset_names
from aimcc.atomic import write_text
from aimcc.backends.aimcb import write_binary
from aimcc.backends.manifest import kernel_manifest, manifest_json
from aimcc.compiler import PASS_NAMES, compile_model
from aimcc.frontend.load import parse_input_shapes
from aimcc.passes.partition import TARGETS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aimcc",
        description="Compile an ONNX transformer onto analog in-memory-computing tiles and "
        "RISC-V clusters. Other commands: 'aimcc run BINARY' executes a compiled binary "
        "(see 'aimcc run --help').",
    )
    p.add_argument("model", help="the ONNX model to compile (external data files are read too)")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="hybrid",
        help="hybrid: static linears on analog tiles, LoRA/attention/norms digital "
        "(default); aimc: LoRA merged into the analog weights (fully-analog "
        "baseline); digital: everything on the RISC-V clusters",
    )
    p.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        help=f"architecture preset ({', '.join(preset_names())}) or a .toml file "
        f"(default {DEFAULT_ARCH})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an architecture value, e.g. --set tile.count=256 (repeatable)",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0xD1...",
        help="static shape for a dynamic input (repeatable); dims sharing a symbolic "
        "name follow; default: batch 1, other dynamic dims 128",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="binary to write (default: ./<model>.aimcb; the manifest goes beside "
        "it as <name>.kernels.json)",
    )
    p.add_argument(
        "--print-ir-after-all", action="store_true", help="print the IR after every stage"
    )
    p.add_argument(
        "--print-ir-after",
        action="append",
        default=[],
        choices=PASS_NAMES,
        metavar="PASS",
        help=f"print the IR after PASS ({', '.join(PASS_NAMES)})",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary")
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    arch = load_arch(opts.arch, opts.overrides)
    shapes = parse_input_shapes(opts.input_shape)
    wanted = set(opts.print_ir_after)

    def after_pass(name: str, module: object) -> None:
        if opts.print_ir_after_all or name in wanted:
            report.print_ir(name, module)

    comp = compile_model(
        opts.model,
        opts.target,
        arch,
        shapes,
        after_pass if (wanted or opts.print_ir_after_all) else None,
    )
    output = opts.output or Path(Path(opts.model).stem + ".aimcb")
    manifest_path = output.with_name(output.name.removesuffix(".aimcb") + ".kernels.json")
    size = write_binary(comp, output)
    write_text(manifest_path, manifest_json(kernel_manifest(comp)))
    if not opts.quiet:
        report.print_compile_summary(comp, {output: size, manifest_path: None})
    return 0
