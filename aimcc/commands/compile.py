"""`aimcc MODEL.onnx`: compile a model into a binary and a kernel manifest."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from aimcc.commands import (
    Parser,
    add_model_options,
    output_dir,
    output_file,
    process_seconds,
    shows_progress,
    status,
    warn,
)
from aimcc.errors import AimccError

if TYPE_CHECKING:
    from aimcc.backends.aimcb import BinaryStream
    from aimcc.backends.manifest import EmitStats
    from aimcc.compiler import Compilation
    from aimcc.passes.lora_slots import LoraSlotsPass


def parser() -> argparse.ArgumentParser:
    from aimcc.compiler import DEFAULT_PIPELINE, PASS_NAMES
    from aimcc.passes.partition import TARGETS
    from aimcc.passes.schedule import PIPELINES

    p = Parser(
        prog="aimcc [compile]",
        description="Compile an ONNX transformer onto analog in-memory-computing tiles and "
        "RISC-V clusters, or finish compiling textual IR from 'aimcc opt' (any stage). "
        "Other commands: 'aimcc --help'.",
    )
    p.add_argument(
        "model",
        help="the ONNX model to compile (external data files are read too), or textual IR "
        "(.mlir, from 'aimcc opt'; with --weights if it names weights by key)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        metavar="W.npz",
        help="textual IR only: the store of the weights it names by key ('aimcc opt "
        "--save-weights'; small weights are inline)",
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        help="hybrid: static linears on analog tiles, LoRA/attention/norms digital "
        "(default); aimc: LoRA merged into the analog weights (fully-analog "
        "baseline); digital: everything on the RISC-V clusters",
    )
    add_model_options(p)
    p.add_argument(
        "-o",
        "--output",
        type=output_file,
        help="binary to write (default: ./<model>.aimcb; the manifest goes beside "
        "it as <name>.kernels.json)",
    )
    p.add_argument(
        "--print-ir-after-all", action="store_true", help="print the IR after every stage"
    )
    p.add_argument(
        "--verify-each",
        action="store_true",
        help="verify the IR after every pass, as 'opt' does (default: the imported IR and "
        "the final IR; a pass that breaks the IR is then not named)",
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
        type=output_dir,
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
        "--head-groups",
        type=int,
        default=0,
        metavar="N",
        help="spread each attention over at most N clusters by heads (default 0: one group "
        "per head, as clusters allow; 1: attention on one cluster); docs/SCHEDULING.md",
    )
    p.add_argument(
        "--replicate",
        default="auto",
        metavar="auto|off|N",
        help="copy the analog layers that hold up the pipeline onto spare tiles, each copy "
        "taking a share of the tokens: auto (as the cost model finds faster; default), off, "
        "or at most N copies of a layer",
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
        type=output_file,
        metavar="OUT.json",
        help="write the schedule as Chrome trace-event JSON (open in ui.perfetto.dev)",
    )
    p.add_argument(
        "--plot", type=output_file, metavar="OUT.png", help="write the schedule's Gantt chart"
    )
    p.add_argument(
        "-p",
        "--passes",
        metavar="PIPELINE",
        help="run this pass pipeline instead of the default "
        f"'{DEFAULT_PIPELINE}' (xDSL's syntax, options in braces: 'aimcc opt --list-passes'); "
        "it must end with schedule, and pass options replace the options above",
    )
    p.add_argument(
        "--compare",
        choices=["aimc"],
        help="aimc: compile the model a second time with LoRA merged into the tiles "
        "(--target aimc) and show the hybrid LoRA overhead against it",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print no summary and no progress")
    add_adapter_slot_options(p)
    g = p.add_argument_group("projections kept digital by sensitivity (docs/SENSITIVITY.md)")
    g.add_argument(
        "--sensitivity", type=Path, metavar="S.json", help="from 'aimcc sensitivity --json'"
    )
    g.add_argument(
        "--keep-digital", type=int, metavar="K", help="keep the K most sensitive digital"
    )
    g.add_argument(
        "--error-budget",
        type=float,
        metavar="E",
        help="keep the fewest most sensitive digital whose measured error (the JSON's "
        "--pareto points) is at most E",
    )
    return p


# -- adapter slots (AHWA-LoRA: one analog binary, many tasks; docs/ADAPTERS.md) ------------
def add_adapter_slot_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adapter slots (docs/ADAPTERS.md)")
    g.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        metavar="R",
        help="give linear layers an empty (zero) digital LoRA slot of rank R, so peft "
        "adapters can be loaded at run time ('aimcc run --adapter') without reprogramming tiles",
    )
    g.add_argument(
        "--lora-targets",
        default="",
        metavar="PATTERN",
        help="layers that get slots: comma-separated layer names, dot-suffixes (query,value) "
        "or globs (default: every linear not kept digital)",
    )
    g.add_argument(
        "--digital-layers",
        default="",
        metavar="PATTERN",
        help="linear layers kept on the RISC-V clusters, e.g. a task head (peft "
        "modules_to_save) that adapters replace",
    )


def adapter_slots(opts: argparse.Namespace) -> LoraSlotsPass:
    from aimcc.passes.lora_slots import LoraSlotsPass

    digital = opts.digital_layers
    path = getattr(opts, "sensitivity", None)
    keep, budget = getattr(opts, "keep_digital", None), getattr(opts, "error_budget", None)
    if path is None and (keep is not None or budget is not None):
        raise AimccError("--keep-digital and --error-budget need --sensitivity S.json")
    if path is not None:
        from aimcc.sensitivity import choose_digital, read_sensitivity

        if (keep is None) == (budget is None):
            raise AimccError("--sensitivity needs one of --keep-digital K or --error-budget E")
        chosen = choose_digital(read_sensitivity(path), keep, budget)
        digital = ",".join(filter(None, [digital, *chosen]))
    return LoraSlotsPass(opts.lora_rank, opts.lora_targets, digital)


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    with status(shows_progress(opts.quiet)) as update:
        update(f"compiling {Path(opts.model).name}: starting")
        from aimcc.compiler import gc_paused

        with gc_paused(), _binary_stream(opts) as stream:
            return _compile(opts, update, stream)


@contextlib.contextmanager
def _binary_stream(opts: argparse.Namespace) -> Iterator[BinaryStream | None]:
    """The binary of an ONNX model's compile, written while the passes run (a large
    model's); a compile that fails removes it."""
    if Path(opts.model).suffix != ".onnx":
        yield None
        return
    from aimcc.backends.aimcb import BinaryStream

    stream = BinaryStream(_binary_path(opts))
    try:
        yield stream
    except BaseException:
        stream.abort()
        raise


def _binary_path(opts: argparse.Namespace) -> Path:
    return opts.output or Path(Path(opts.model).stem + ".aimcb")


def write_outputs(
    comp: Compilation,
    output: Path,
    emitted: EmitStats | None = None,
    stream: BinaryStream | None = None,
) -> dict[Path, int | None]:
    """Write the binary (finish ``stream``, the one the compile started) and, beside it, the
    kernel manifest (one path with Python's write_binary); returns the files (and the
    binary's size)."""
    from aimcc.backends.aimcb import manifest_path, write_binary

    size = write_binary(comp, output, emitted=emitted, stream=stream)
    return {output: size, manifest_path(output): None}


def _compile(
    opts: argparse.Namespace, update: Callable[[str], None], stream: BinaryStream | None
) -> int:
    from xdsl.dialects.builtin import ModuleOp

    from aimcc import report
    from aimcc.arch import DEFAULT_ARCH, Arch, load_arch
    from aimcc.atomic import atomic_write, write_text
    from aimcc.compiler import (
        PASS_NAMES,
        compile_ir,
        compile_model,
        parse_passes,
        read_weights,
    )
    from aimcc.frontend.load import parse_input_shapes
    from aimcc.ir.text import module_arch
    from aimcc.ir.weights import WeightStore
    from aimcc.passes.head_split import HeadSplitPass
    from aimcc.passes.replicate import ReplicatePass, copies_limit
    from aimcc.passes.schedule import SchedulePass

    name = Path(opts.model).name
    arch = load_arch(opts.arch or DEFAULT_ARCH, opts.overrides)
    is_ir = Path(opts.model).suffix != ".onnx"
    if is_ir and opts.input_shape:
        raise AimccError("--input-shape applies to ONNX models: textual IR has static shapes")
    if not is_ir and opts.weights is not None:
        raise AimccError("--weights is for textual IR: an ONNX model carries its weights")
    if opts.chips is not None:
        if opts.chips < 1:
            raise AimccError(f"--chips {opts.chips}: use at least 1 (or leave it out)")
        arch = arch.with_chips(opts.chips)
    shapes = parse_input_shapes(opts.input_shape)
    wanted = set(opts.print_ir_after)
    scheduler = SchedulePass(pipeline=opts.pipeline, clusters_per_tile=opts.clusters_per_tile)
    if opts.head_groups < 0:
        raise AimccError(f"--head-groups {opts.head_groups}: use 0 (as many as heads) or more")
    heads = HeadSplitPass(max_groups=opts.head_groups)
    copies_limit(opts.replicate, "--replicate")
    replicate = ReplicatePass(replicas=opts.replicate)
    passes = _spec_passes(opts, parse_passes) if opts.passes is not None else None
    if opts.compare and is_ir:
        raise AimccError("--compare aimc compiles the ONNX model again: give the .onnx file")

    printed: set[str] = set()

    def after_pass(stage: str, module: object) -> None:
        if opts.print_ir_after_all or stage in wanted:
            report.print_ir(stage, module)
            printed.add(stage)

    def stage(stage: str) -> None:
        update(f"compiling {name}: {stage}")

    printing = after_pass if (wanted or opts.print_ir_after_all) else None
    if is_ir:
        if opts.lora_rank or opts.lora_targets or opts.digital_layers:
            raise AimccError(
                "--lora-rank, --lora-targets and --digital-layers apply to ONNX models "
                "(in textual IR run the pass: aimcc opt -p 'lora-slots{rank=8}')"
            )

        def ir_arch(module: ModuleOp) -> Arch:  # the one the IR records, --set, --chips
            found = module_arch(module, opts.arch, opts.overrides, opts.model)
            return found.with_chips(opts.chips) if opts.chips is not None else found

        comp = compile_ir(
            Path(opts.model),
            read_weights(opts.weights) if opts.weights else WeightStore(),
            opts.target,
            ir_arch,
            printing,
            scheduler,
            stage,
            heads,
            passes,
            replicate,
            opts.verify_each,
        )
    else:
        comp = compile_model(
            opts.model,
            opts.target or "hybrid",
            arch,
            shapes,
            printing,
            scheduler,
            stage,
            adapter_slots(opts) if passes is None else None,
            heads,
            passes,
            replicate,
            opts.verify_each,
            stream,
        )
    if opts.compare and comp.target != "hybrid":
        raise AimccError(
            f"--compare aimc compares a hybrid compile with the fully analog one; {name} was "
            f"compiled for {comp.target}"
        )
    for stage_name in sorted(wanted - printed, key=PASS_NAMES.index):
        warn(f"--print-ir-after {stage_name}: {name} was already past {stage_name}")
    output = _binary_path(opts)
    emitted = None
    if opts.emit_riscv:
        from aimcc.backends.manifest import emit_riscv

        update(f"compiling {name}: RISC-V assembly into {opts.emit_riscv}")
        emitted = emit_riscv(comp, opts.emit_riscv)
    update(f"compiling {name}: writing {output}")
    files = write_outputs(comp, output, emitted, stream)
    timeline = comp.schedule
    if timeline is None and (opts.trace or opts.plot):
        warn(f"{name} has nothing to schedule: no --trace or --plot written")
    if timeline is not None and opts.trace:
        from aimcc.cost import to_chrome_trace

        write_text(opts.trace, json.dumps(to_chrome_trace(timeline), sort_keys=True))
        files[opts.trace] = None
    if timeline is not None and opts.plot:
        update(f"compiling {name}: plotting the schedule")
        with atomic_write(opts.plot) as f:
            report.plot_schedule(comp, f)
        files[opts.plot] = None
    if not opts.quiet:
        update("")
        report.print_compile_summary(comp, files, process_seconds())
        baseline = None
        if opts.compare == "aimc":
            update(f"compiling {name} for the fully analog baseline (aimc)")
            merged = compile_model(
                opts.model,
                "aimc",
                arch,
                shapes,
                schedule=scheduler,
                head_split=heads,
                passes=_merged(passes),
                replicate=replicate,
            )
            baseline = merged.schedule
        report.print_schedule(comp, timeline, baseline)
    return 0


def _spec_passes(opts: argparse.Namespace, parse: Callable[..., list]) -> list:
    """The passes of ``-p SPEC``; the options that configure the default pipeline would be
    silently ignored beside it, so they are refused."""
    p = parser()
    given = [
        flag
        for flag, dest in (
            ("--target", "target"),
            ("--lora-rank", "lora_rank"),
            ("--lora-targets", "lora_targets"),
            ("--digital-layers", "digital_layers"),
            ("--sensitivity", "sensitivity"),
            ("--pipeline", "pipeline"),
            ("--clusters-per-tile", "clusters_per_tile"),
            ("--head-groups", "head_groups"),
            ("--replicate", "replicate"),
        )
        if getattr(opts, dest) != p.get_default(dest)
    ]
    if given:
        raise AimccError(
            f"{given[0]} configures the default pipeline: with -p give it as a pass option "
            "(aimcc opt --list-passes)"
        )
    passes = parse(opts.passes, "-p")
    if not passes or passes[-1].name != "schedule":
        raise AimccError(
            f"-p '{opts.passes}': a binary needs the pipeline to end with schedule "
            "(for partial pipelines use 'aimcc opt')"
        )
    return passes


def _merged(passes: list | None) -> list | None:
    """The ``--compare aimc`` baseline of a ``-p`` pipeline: partition for aimc, no slots."""
    if passes is None:
        return None
    from dataclasses import replace

    from aimcc.passes.partition import PartitionPass

    return [
        replace(p, target="aimc") if isinstance(p, PartitionPass) else p
        for p in passes
        if p.name != "lora-slots"
    ]
