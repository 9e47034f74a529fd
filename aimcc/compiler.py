"""The driver: ONNX file (or textual IR at any stage) -> frontend -> passes -> a compiled
module with its weights."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Attribute
from xdsl.parser import Parser
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import ParseError, VerifyException

from aimcc.arch import Arch, load_arch
from aimcc.cost import Schedule
from aimcc.errors import AimccError, first_line
from aimcc.ir import CompileContext, make_context, verify_message
from aimcc.ir.aimc import AccumulateOp, MatmulOp, ProgramOp
from aimcc.ir.cluster import CallOp, ViewOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import NAME_ATTR, NodeOp, TensorRefAttr, WeightOp
from aimcc.ir.text import ARCH_ATTR, absorb_inline_weights, arch_attr, module_arch
from aimcc.ir.weights import WeightStore
from aimcc.passes import PASSES
from aimcc.passes.head_split import HeadSplitPass
from aimcc.passes.lora_slots import LoraSlotsPass
from aimcc.passes.partition import TARGET_ATTR, PartitionPass
from aimcc.passes.place import precheck
from aimcc.passes.replicate import ReplicatePass
from aimcc.passes.schedule import SCHEDULE_ATTR, SchedulePass

if TYPE_CHECKING:
    from aimcc.backends.aimcb import BinaryStream

PASS_NAMES = ("import", *PASSES)
SOURCE_ATTR = "aimc.source"  # module attribute: the ONNX file's name, kept through textual IR
SOURCE_SHA256_ATTR = "aimc.source_sha256"  # and the sha256 of its bytes (eval checks it)
Stage = Callable[[str], None]


# The default pipeline, in xDSL's pass-pipeline syntax (``aimcc MODEL.onnx -p SPEC`` replaces
# it; ``aimcc opt --list-passes`` shows every option). The compile options configure these passes.
DEFAULT_PIPELINE = (
    "raise,lora-slots,partition,tile,fuse-bias,place,head-split,lower-cluster,split,replicate,"
    "schedule"
)


def pipeline(
    target: str = "hybrid",
    schedule: SchedulePass | None = None,
    slots: LoraSlotsPass | None = None,
    head_split: HeadSplitPass | None = None,
    replicate: ReplicatePass | None = None,
) -> list[ModulePass]:
    """DEFAULT_PIPELINE configured for ``target`` (and the scheduler, the adapter slots, the
    attention head split and the weight replication, which optimises for the scheduler's
    strategy)."""
    if slots is not None and slots.rank and target == "aimc":
        raise AimccError("--lora-rank: adapter slots are digital; --target aimc has none")
    if schedule is not None:
        replicate = dataclasses.replace(
            replicate or ReplicatePass(),
            pipeline=schedule.pipeline,
            clusters_per_tile=schedule.clusters_per_tile,
            tokens=schedule.tokens,
        )
    configured: dict[str, ModulePass] = {"partition": PartitionPass(target=target)}
    configured.update(
        {p.name: p for p in (slots, head_split, replicate, schedule) if p is not None}
    )
    return [configured.get(p.name, p) for p in parse_passes(DEFAULT_PIPELINE)]


def pipeline_spec(passes: list[ModulePass]) -> str:
    """The spec string of configured passes (what ``-p`` would take to run them again)."""
    return ",".join(str(p.pipeline_pass_spec()) for p in passes)


def parse_passes(spec: str, flag: str = "--passes") -> list[ModulePass]:
    """A pipeline spec (xDSL's syntax: ``name{opt=value other=value},...``) -> passes."""
    if not spec.strip():
        return []
    from xdsl.utils.arg_spec import parse_pipeline
    from xdsl.utils.exceptions import ArgSpecParseError

    try:
        specs = list(parse_pipeline(spec))
        unknown = [s.name for s in specs if s.name not in PASSES]
        if unknown:
            raise AimccError(f"{flag}: unknown pass '{unknown[0]}' (passes: {', '.join(PASSES)})")
        return [PASSES[s.name].from_pass_spec(s) for s in specs]
    except ArgSpecParseError as exc:  # the reason is the last line, under a source excerpt
        reason = str(exc).strip().splitlines()[-1].strip()
        raise AimccError(f"{flag} '{spec}': {reason}") from None
    except (ValueError, TypeError) as exc:  # unknown or mistyped option
        raise AimccError(f"{flag} '{spec}': {first_line(exc)}") from None


def run_passes(
    module: ModuleOp,
    ctx: CompileContext,
    passes: list[ModulePass],
    seconds: dict[str, float] | None = None,
    after_pass: Callable[[str, ModuleOp], None] | None = None,
    stage: Stage | None = None,
    verify_each: bool = True,
) -> None:
    """The one pass runner (compile and opt): ``stage(name)`` before each pass, verify after
    each (a pass that breaks the IR is named; the time goes to ``seconds["verify"]``), then
    ``after_pass(name, module)``. Without ``verify_each``, the IR is verified once, after
    the last pass (``aimcc compile``'s default: verifying a 1.1B model's IR after each of 11
    passes cost 2.5-4 s of its compile; ``--verify-each`` names the pass that broke it)."""
    seconds = {} if seconds is None else seconds
    for i, p in enumerate(passes):
        if stage:
            stage(p.name)
        start = time.perf_counter()
        p.apply(ctx, module)
        checked = time.perf_counter()
        seconds[p.name] = seconds.get(p.name, 0.0) + checked - start
        if verify_each or i == len(passes) - 1:
            unchecked = "" if verify_each or i == 0 else ", ".join(q.name for q in passes)
            _verify(module, p.name, unchecked)
            seconds["verify"] = seconds.get("verify", 0.0) + time.perf_counter() - checked
        if after_pass:
            after_pass(p.name, module)


@dataclass
class Compilation:
    """A compiled model: the final IR, the weights it references, and how it was made."""

    module: ModuleOp
    ctx: CompileContext
    target: str
    source: str
    input_shapes: dict[str, tuple[int, ...]]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def arch(self) -> Arch:
        return self.ctx.arch

    @property
    def schedule(self) -> Schedule | None:
        """The schedule the schedule pass found (None when it did not run)."""
        return self.ctx.schedule

    @property
    def source_sha256(self) -> str | None:
        """sha256 of the ONNX file compiled (None for IR that does not record it)."""
        attr = self.module.attributes.get(SOURCE_SHA256_ATTR)
        return attr.data if isinstance(attr, StringAttr) else None


def import_onnx(
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]],
    seconds: dict[str, float] | None = None,
    stage: Stage | None = None,
    precheck_for: tuple[Arch, str] | None = None,
) -> tuple[ModuleOp, WeightStore, dict[str, tuple[int, ...]]]:
    """Load and import an ONNX file; the module records the file's name and sha256 (hashed on
    a second thread meanwhile), so a binary made from it, directly or through textual IR,
    names the model it was compiled from."""
    from aimcc.frontend.importer import import_graph  # protobuf, onnx checker: ONNX input only
    from aimcc.frontend.load import file_sha256, fix_input_shapes, load_onnx

    seconds = {} if seconds is None else seconds
    with ThreadPoolExecutor(1) as pool:
        if stage:
            stage("load")
        start = time.perf_counter()
        model = load_onnx(path)  # checks the path first
        digest = pool.submit(file_sha256, path)
        shapes = fix_input_shapes(model, input_shapes)
        if precheck_for is not None:  # cheap refusals (tiles, chips) before the import
            precheck(model, *precheck_for)
        seconds["load"] = time.perf_counter() - start
        if stage:
            stage("import")
        start = time.perf_counter()
        module, weights = import_graph(model, shapes)
        del model
        module.attributes[SOURCE_ATTR] = StringAttr(Path(path).name)
        module.attributes[SOURCE_SHA256_ATTR] = StringAttr(digest.result())
        seconds["import"] = time.perf_counter() - start
    return module, weights, shapes


def compile_model(
    path: str | Path,
    target: str = "hybrid",
    arch: Arch | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    after_pass: Callable[[str, ModuleOp], None] | None = None,
    schedule: SchedulePass | None = None,
    stage: Stage | None = None,
    slots: LoraSlotsPass | None = None,
    head_split: HeadSplitPass | None = None,
    passes: list[ModulePass] | None = None,
    replicate: ReplicatePass | None = None,
    verify_each: bool = False,
    stream: BinaryStream | None = None,
) -> Compilation:
    """Compile an ONNX file; ``after_pass(name, module)`` sees the IR after every stage,
    ``stage(name)`` is told when each begins (for progress). ``passes`` (from a ``-p`` spec)
    replace the configured default pipeline. The imported IR and the final IR are verified;
    ``verify_each``: also the IR after every pass (:func:`run_passes`). ``stream``: the binary
    to write, started as soon as the weights are imported (``write_binary(..., stream=)``).

    The weights of the result are views of the mapped ONNX file: do not overwrite the file in
    place (``onnx.save`` to the same path) while the Compilation is still to be written."""
    if passes is not None:
        target = _spec_target(passes, target)  # the refusals before import check for it
    with gc_paused():
        seconds: dict[str, float] = {}
        module, weights, shapes = import_onnx(
            path, input_shapes or {}, seconds, stage, (arch or load_arch(), target)
        )
        ctx = make_context(weights, arch or load_arch())
        if stream is not None:
            stream.start(weights)  # the weights reach the disk while the passes run
        else:
            weights.hash_in_background()  # for the binary, while the passes run
        if passes is None:
            passes = pipeline(target, schedule, slots, head_split, replicate)
        return _finish(
            module,
            ctx,
            passes,
            "import",
            target,
            str(path),
            shapes,
            seconds,
            after_pass,
            stage,
            verify_each,
        )


def read_ir(path: Path, weights: WeightStore, text: str | None = None) -> ModuleOp:
    """Parse and verify textual IR; its inline weights join ``weights``, which must hold the
    ones it names by key only (``text``: a part of the file at ``path``, for
    ``opt --split-input-file``)."""
    if text is None and not path.is_file():
        raise AimccError(f"{path}: no such file")
    module: ModuleOp | None = None
    try:
        text = path.read_text() if text is None else text
        module = Parser(make_context(weights), text, str(path)).parse_module()
        module.verify()
    except ParseError as exc:
        raise AimccError(f"{first_line(exc)}: {exc.msg}") from None
    except VerifyException as exc:
        # an attribute's verifier can fail while parsing, before there is a module
        why = verify_message(module, exc) if module else " ".join(str(exc).split())
        raise AimccError(f"{path}: IR does not verify: {why}") from None
    except UnicodeDecodeError:
        raise AimccError(f"{path}: not textual IR (not UTF-8 text)") from None
    absorb_inline_weights(module, weights, str(path))
    missing = sorted(referenced_keys(module) - set(weights))
    if missing:
        raise AimccError(
            f"{path}: weight '{missing[0]}' is not in the weight store ({len(missing)} "
            "missing): pass --weights FILE.npz (written by 'aimcc opt --save-weights')"
        )
    return module


def read_weights(path: Path) -> WeightStore:
    """A weight store saved by ``aimcc opt --save-weights`` (.npz, one array per key)."""
    import numpy as np

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


def ir_stage(module: ModuleOp) -> str:
    """The last stage textual IR has been through (a name in PASS_NAMES), from what it holds:
    nn ops or ONNX nodes beside aimc/digital ops mean raise ran but not partition; analog
    matmuls mean partition but not tile; unplaced tiles or kernels, tile but not place;
    cluster calls, lower-cluster; the schedule attribute, schedule."""
    dialects = {op.name.split(".")[0] for op in module.walk()}
    if not dialects & {"nn", "aimc", "digital"}:
        return "import"
    if "nn" in dialects or any(isinstance(op, NodeOp) for op in module.walk()):
        return "raise"
    if any(isinstance(op, MatmulOp) for op in module.walk()):
        return "partition"
    if any(
        (isinstance(op, ProgramOp) and op.tile_id is None)
        or (isinstance(op, KernelOp | AccumulateOp) and op.cluster is None)
        for op in module.walk()
    ):
        return "tile"
    if SCHEDULE_ATTR in module.attributes:
        return "schedule"
    return "lower-cluster" if "cluster" in dialects else "place"


def ir_target(module: ModuleOp) -> str:
    """The target partitioned IR was compiled for (recorded by partition; else inferred)."""
    attr = module.attributes.get(TARGET_ATTR)
    if isinstance(attr, StringAttr):
        return attr.data
    analog = any(isinstance(op, ProgramOp | MatmulOp) for op in module.walk())
    return "hybrid" if analog else "digital"


def compile_ir(
    path: Path,
    weights: WeightStore,
    target: str | None = None,
    arch: Arch | Callable[[ModuleOp], Arch] | None = None,
    after_pass: Callable[[str, ModuleOp], None] | None = None,
    schedule: SchedulePass | None = None,
    stage: Stage | None = None,
    head_split: HeadSplitPass | None = None,
    passes: list[ModulePass] | None = None,
    replicate: ReplicatePass | None = None,
    verify_each: bool = False,
) -> Compilation:
    """Finish compiling textual IR at any stage (``aimcc opt`` output): run the passes it has
    not been through. The schedule pass always runs (the binary needs its full result).
    ``target`` (default hybrid) applies only when partition is still to run. ``passes`` (from
    a ``-p`` spec) run instead, all of them. ``arch``: the architecture, or how to find it from
    the module (default: the one it records, :func:`aimcc.ir.text.module_arch`)."""
    with gc_paused():
        seconds: dict[str, float] = {}
        if stage:
            stage("load")
        start = time.perf_counter()
        module = read_ir(path, weights)
        if not isinstance(arch, Arch):
            arch = (arch or partial(module_arch, where=str(path)))(module)
        seconds["load"] = time.perf_counter() - start
        done = ir_stage(module)
        if target is not None and PASS_NAMES.index(done) >= PASS_NAMES.index("partition"):
            raise AimccError(
                f"--target {target} has no effect: {path} is already partitioned "
                f"(for {ir_target(module)}); give the IR from before partition"
            )
        if done == "schedule":  # scheduled again: the binary needs the full result
            done = "place"
        if PASS_NAMES.index(done) >= PASS_NAMES.index("partition"):
            target = ir_target(module)
        target = target or "hybrid"
        ctx = make_context(weights, arch)
        weights.hash_in_background()
        if passes is None:
            passes = pipeline(target, schedule, head_split=head_split, replicate=replicate)
            passes = [p for p in passes if PASS_NAMES.index(p.name) > PASS_NAMES.index(done)]
        else:
            target = _spec_target(passes, target)
        main = next((op for op in module.walk() if isinstance(op, func.FuncOp)), None)
        if main is None:
            raise AimccError(f"{path}: no function in the IR")
        args = main.body.block.args
        attrs = main.arg_attrs.data if main.arg_attrs else [None] * len(args)
        shapes = {
            _arg_name(attr, i): tuple(arg.type.get_shape())
            for i, (arg, attr) in enumerate(zip(args, attrs, strict=True))
        }
        source_attr = module.attributes.get(SOURCE_ATTR)
        source = source_attr.data if isinstance(source_attr, StringAttr) else str(path)
        return _finish(
            module,
            ctx,
            passes,
            done,
            target,
            source,
            shapes,
            seconds,
            after_pass,
            stage,
            verify_each,
        )


def _spec_target(passes: list[ModulePass], target: str) -> str:
    """The target a ``-p`` spec partitions for (its partition pass's), else ``target``."""
    chosen = [p.target for p in passes if isinstance(p, PartitionPass)]
    return chosen[-1] if chosen else target


def _arg_name(attrs: Attribute | None, index: int) -> str:
    name = attrs.data.get(NAME_ATTR) if isinstance(attrs, DictionaryAttr) else None
    return name.data if isinstance(name, StringAttr) else f"arg{index}"


def _finish(
    module: ModuleOp,
    ctx: CompileContext,
    passes: list[ModulePass],
    done: str,
    target: str,
    source: str,
    shapes: dict[str, tuple[int, ...]],
    seconds: dict[str, float],
    after_pass: Callable[[str, ModuleOp], None] | None,
    stage: Stage | None,
    verify_each: bool,
) -> Compilation:
    """Record the architecture on a module that has been through ``done``, verify it, run
    ``passes`` on it (:func:`run_passes`); keep only the weights the final IR refers to."""
    module.attributes[ARCH_ATTR] = arch_attr(ctx.arch)
    start = time.perf_counter()
    _verify(module, done)
    seconds["verify"] = time.perf_counter() - start
    if after_pass:
        after_pass(done, module)
    run_passes(module, ctx, passes, seconds, after_pass, stage, verify_each)
    ctx.weights.retain(referenced_keys(module))
    return Compilation(module, ctx, target, source, shapes, seconds)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: compiling allocates many small objects (the IR),
    and collections cost 2-4x (DESIGN.md); the garbage is collected after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def referenced_keys(module: ModuleOp) -> set[str]:
    """Weight-store keys the IR refers to (weights and tensor-valued attributes)."""
    keys = set()
    for op in module.walk():
        if isinstance(op, WeightOp):
            keys.add(op.key.data)
        elif isinstance(op, NodeOp | KernelOp | CallOp | ViewOp):
            keys.update(a.key.data for a in op.params.data.values() if isinstance(a, TensorRefAttr))
    return keys


def _verify(module: ModuleOp, stage: str, unchecked: str = "") -> None:
    """Verify the IR after ``stage``; ``unchecked``: the passes before it that ran without
    verification, named in the error (which then suggests --verify-each)."""
    try:
        module.verify()
    except VerifyException as exc:
        where = f"'{stage}'"
        if unchecked:
            where = f"'{stage}' (verified once after {unchecked}; --verify-each names the pass)"
        raise AimccError(
            f"IR after {where} does not verify: {verify_message(module, exc)}"
        ) from None
