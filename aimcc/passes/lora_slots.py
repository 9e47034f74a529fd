"""lora-slots: give linear layers empty LoRA adapter slots, so any model can host adapters.

AHWA-LoRA programs the analog weights once and puts each task in a small digital adapter. A
model exported without LoRA gets, on every target layer, a LoRA branch with zero A [K, R] and
B [R, N] (scale 1): partition turns it into the same `lora` kernel an exported adapter becomes,
so the cost model, the schedule and the manifest count it, and the runtime swaps adapters into
it (`Executable.set_adapter`). Layers that already carry LoRA keep theirs (their rank is the
slot's). ``digital`` names layers kept on the RISC-V clusters (e.g. a task head that adapters
replace, which on tiles would mean reprogramming them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from aimcc.adapters import listing, matches, split_pattern
from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.nn import LinearOp
from aimcc.ir.types import shape_of
from aimcc.passes.matching import add_weight


@dataclass(frozen=True)
class LoraSlotsPass(ModulePass):
    """Zero LoRA slots of ``rank`` on linears matching ``targets`` (default: every linear not
    kept digital); linears matching ``digital`` stay on the clusters. Patterns: comma-separated
    names, dot-suffixes or globs of layer names."""

    name = "lora-slots"

    rank: int = 0
    targets: str = ""
    digital: str = ""

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        if self.rank < 0:
            raise AimccError(f"--lora-rank must be positive, got {self.rank}")
        linears = [o for o in op.walk() if isinstance(o, LinearOp)]
        names = [lin.layer_name or "" for lin in linears]
        targets, digital = split_pattern(self.targets), split_pattern(self.digital)
        if targets and not self.rank:
            raise AimccError("--lora-targets needs --lora-rank R")
        for option, items in (("--lora-targets", targets), ("--digital-layers", digital)):
            for item in items:
                if not any(matches(item, n) for n in names):
                    raise AimccError(
                        f"{option}: '{item}' matches no linear layer (layers: {listing(names)})"
                    )
        rewriter = Rewriter()
        for lin, name in zip(linears, names, strict=True):
            keep_digital = any(matches(item, name) for item in digital)
            chosen = any(matches(i, name) for i in targets) if targets else not keep_digital
            slot = self.rank > 0 and chosen and lin.lora_a is None
            if not slot and not keep_digital:
                continue
            new_ops = []
            lora = None
            if slot:
                k, n = shape_of(lin.weight)
                dtype = np.float32
                a = add_weight(ctx, f"{name}.lora_A", np.zeros((k, self.rank), dtype))
                b = add_weight(ctx, f"{name}.lora_B", np.zeros((self.rank, n), dtype))
                new_ops += [a, b]
                lora = (a.result, b.result, 1.0)
            fused = lin.with_operands(lora=lora, digital=keep_digital)
            rewriter.replace_op(lin, [*new_ops, fused], [fused.result])
