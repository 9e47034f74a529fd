"""The IR: xDSL dialects for each level of the pipeline, and the context that knows them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.utils.exceptions import VerifyException

from aimcc.arch import Arch, load_arch
from aimcc.cost import Schedule
from aimcc.ir.aimc import AIMC
from aimcc.ir.cluster import Cluster
from aimcc.ir.digital import Digital
from aimcc.ir.graph import Graph
from aimcc.ir.nn import NN
from aimcc.ir.weights import WeightStore


@dataclass
class CompileContext(Context):
    """An xDSL context that also carries what passes read beside the IR: weights and the chip."""

    weights: WeightStore = field(default_factory=WeightStore)
    arch: Arch = field(default_factory=load_arch)
    schedule: Schedule | None = None  # what the schedule pass computed (its summary is in the IR)
    # A search done before (replicate's): (stages, tokens, strategy, clusters per tile, result);
    # the schedule pass takes it when it would search the same again
    searched: tuple[Any, ...] | None = None


def make_context(weights: WeightStore | None = None, arch: Arch | None = None) -> CompileContext:
    """A context that parses every stage's IR."""
    ctx = CompileContext(weights=weights or WeightStore(), arch=arch or load_arch())
    for dialect in (Builtin, Func, Graph, NN, AIMC, Digital, Cluster):
        ctx.load_dialect(dialect)
    return ctx


def verify_message(module: ModuleOp, exc: VerifyException) -> str:
    """One line saying why ``module`` does not verify, naming the op.

    Our verifiers name their op; a failed IRDL constraint (e.g. a result type that must be the
    input's) does not, and spreads over lines: find the op, and join the lines."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()) or "invalid IR"
    for op in module.walk():
        if text.startswith(f"{op.name}:") or text.startswith(f"{op.name} "):
            return text
        try:
            op.verify(verify_nested_ops=False)
        except VerifyException:
            return f"{op.name}: {text}"
    return text
