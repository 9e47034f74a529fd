"""`aimcc MODEL.onnx`: compile a model into a binary and a kernel manifest."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aimcc import report
from aimcc.arch import load_arch
from aimcc.atomic import atomic_write, write_text
from aimcc.backends.aimcb import manifest_path, write_binary
from aimcc.backends.manifest import EmitStats, emit_riscv
from aimcc.commands import add_model_options
from aimcc.compiler import PASS_NAMES, Compilation, compile_model, gc_paused
from aimcc.cost import to_chrome_trace
from aimcc.errors import AimccError
from aimcc.frontend.load import parse_input_shapes
from aimcc.passes.partition import TARGETS
from aimcc.passes.schedule import PIPELINES, SchedulePass


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
    add_model_options(p)
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
    p.add_argument(
        "--emit-riscv",
        type=Path,
        metavar="DIR",
        help="write the RISC-V assembly of every digital kernel into DIR (one <symbol>.S per "
        "distinct kernel; the manifest records files, hashes, TCDM split and cycles)",
    )
    p.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="auto",
        help="schedule: serial, intra (tile and cluster of a layer overlap), cross (layers "
        "overlap), both, or auto (the fastest; default); see docs/SCHEDULING.md",
    )
    p.add_argument(
        "--clusters-per-tile",
        type=int,
        default=1,
        metavar="N",
        help="RISC-V clusters serving each tile's digital work (default 1)",
    )
    p.add_argument(
        "--chips",
        type=int,
        default=None,
        metavar="N",
        help="chips in the system: a model larger than one chip is cut into pipeline stages "
        "(default: the fewest chips that hold the model)",
    )
    p.add_argument(
        "--trace",
        type=Path,
        metavar="OUT.json",
        help="write the schedule as Chrome trace-event JSON (open in ui.perfetto.dev)",
    )
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="write the schedule's Gantt chart")
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary")
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    with gc_paused():
        return _compile(opts)


def write_outputs(
    comp: Compilation, output: Path, emitted: EmitStats | None = None
) -> dict[Path, int | None]:
    """Write the binary and, beside it, the kernel manifest (one path with Python's
    write_binary); returns the files (and the binary's size)."""
    size = write_binary(comp, output, emitted=emitted)
    return {output: size, manifest_path(output): None}


def _compile(opts: argparse.Namespace) -> int:
    arch = load_arch(opts.arch, opts.overrides)
    if opts.chips is not None:
        if opts.chips < 1:
            raise AimccError(f"--chips {opts.chips}: use at least 1 (or leave it out)")
        arch = arch.with_chips(opts.chips)
    shapes = parse_input_shapes(opts.input_shape)
    wanted = set(opts.print_ir_after)
    scheduler = SchedulePass(pipeline=opts.pipeline, clusters_per_tile=opts.clusters_per_tile)

    def after_pass(name: str, module: object) -> None:
        if opts.print_ir_after_all or name in wanted:
            report.print_ir(name, module)

    comp = compile_model(
        opts.model,
        opts.target,
        arch,
        shapes,
        after_pass if (wanted or opts.print_ir_after_all) else None,
        scheduler,
    )
    output = opts.output or Path(Path(opts.model).stem + ".aimcb")
    emitted = emit_riscv(comp, opts.emit_riscv) if opts.emit_riscv else None
    files = write_outputs(comp, output, emitted)
    timeline = comp.schedule
    if timeline is not None and opts.trace:
        write_text(opts.trace, json.dumps(to_chrome_trace(timeline), sort_keys=True))
        files[opts.trace] = None
    if timeline is not None and opts.plot:
        with atomic_write(opts.plot) as f:
            report.plot_schedule(comp, f)
        files[opts.plot] = None
    if not opts.quiet:
        report.print_compile_summary(comp, files)
        baseline = None
        if comp.target == "hybrid" and report.has_lora(comp):  # the fully analog reference
            merged = compile_model(opts.model, "aimc", arch, shapes, schedule=scheduler)
            baseline = merged.schedule
        report.print_schedule(comp, timeline, baseline)
    return 0
