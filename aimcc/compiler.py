"""The driver: ONNX file -> frontend -> passes -> a compiled module with its weights."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from aimcc.arch import Arch, load_arch
from aimcc.cost import Schedule
from aimcc.errors import AimccError, first_line
from aimcc.frontend.importer import import_graph
from aimcc.frontend.load import fix_input_shapes, load_onnx
from aimcc.ir import CompileContext, make_context
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import NodeOp, TensorRefAttr, WeightOp
from aimcc.passes import PASSES
from aimcc.passes.partition import PartitionPass
from aimcc.passes.place import PlacePass, precheck
from aimcc.passes.raise_transformer import RaiseTransformerPass
from aimcc.passes.schedule import SchedulePass
from aimcc.passes.split import SplitPass
from aimcc.passes.tile import TilePass

PASS_NAMES = ("import", *PASSES)


def pipeline(target: str, schedule: SchedulePass | None = None) -> list[ModulePass]:
    """The passes after import, in order, configured for ``target`` (and the scheduler)."""
    return [
        RaiseTransformerPass(),
        PartitionPass(target=target),
        TilePass(),
        PlacePass(),
        SplitPass(),
        schedule or SchedulePass(),
    ]


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


def compile_model(
    path: str | Path,
    target: str = "hybrid",
    arch: Arch | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    after_pass: Callable[[str, ModuleOp], None] | None = None,
    schedule: SchedulePass | None = None,
) -> Compilation:
    """Compile an ONNX file; ``after_pass(name, module)`` sees the IR after every stage.

    The weights of the result are views of the mapped ONNX file: do not overwrite the file in
    place (``onnx.save`` to the same path) while the Compilation is still to be written."""
    with gc_paused():
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        model = load_onnx(path)
        shapes = fix_input_shapes(model, input_shapes or {})
        precheck(model, arch or load_arch(), target)  # cheap refusals before import
        seconds["load"] = time.perf_counter() - start
        start = time.perf_counter()
        module, weights = import_graph(model, shapes)
        del model
        ctx = make_context(weights, arch or load_arch())
        weights.hash_in_background()  # for the binary, while the passes run
        seconds["import"] = time.perf_counter() - start
        start = time.perf_counter()
        _verify(module, "import")
        checking = time.perf_counter() - start
        if after_pass:
            after_pass("import", module)
        for p in pipeline(target, schedule):
            start = time.perf_counter()
            p.apply(ctx, module)
            seconds[p.name] = time.perf_counter() - start
            if after_pass:
                _verify(module, p.name)
                after_pass(p.name, module)
        start = time.perf_counter()
        _verify(module, PASS_NAMES[-1])
        ctx.weights.retain(referenced_keys(module))
        seconds["verify"] = checking + time.perf_counter() - start  # after import and at the end
        return Compilation(module, ctx, target, str(path), shapes, seconds)


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
        elif isinstance(op, NodeOp | KernelOp):
            keys.update(a.key.data for a in op.params.data.values() if isinstance(a, TensorRefAttr))
    return keys


def _verify(module: ModuleOp, stage: str) -> None:
    try:
        module.verify()
    except VerifyException as exc:
        raise AimccError(
            f"internal error: IR after '{stage}' does not verify: {first_line(exc)}"
        ) from None
