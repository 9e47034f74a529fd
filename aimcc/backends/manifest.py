"""The kernel manifest: every digital kernel the RISC-V clusters must run, as JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from xdsl.dialects import func
from xdsl.ir import SSAValue

from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import AbsentOp, WeightOp
from aimcc.ir.types import dtype_of, shape_of

if TYPE_CHECKING:
    from aimcc.compiler import Compilation

MANIFEST_VERSION = 1


def kernel_manifest(comp: Compilation) -> dict[str, Any]:
    """One entry per kernel call in program order, plus partial-sum accumulations."""
    main = next(op for op in comp.module.walk() if isinstance(op, func.FuncOp))
    names: dict[SSAValue, str] = {}

    def describe(value: SSAValue) -> dict[str, Any] | None:
        owner = value.owner
        if isinstance(owner, AbsentOp):
            return None
        if isinstance(owner, WeightOp):
            ref = {"weight": owner.key.data}
        else:
            ref = {"value": names.setdefault(value, f"v{len(names)}")}
        return {**ref, "shape": list(shape_of(value.type)), "dtype": dtype_of(value.type)}

    kernels: list[dict[str, Any]] = []
    for op in main.body.block.ops:
        if isinstance(op, KernelOp):
            entry = {
                "kind": op.kind.data,
                "cluster": op.cluster.value.data if op.cluster is not None else 0,
                "inputs": [describe(a) for a in op.args],
                "outputs": [describe(r) for r in op.outs],
                "params": {k: str(v) for k, v in sorted(op.params.data.items())},
            }
        elif isinstance(op, AccumulateOp) and op.grid_shape[0] > 1:
            first = op.partials[0].owner.operands[1].owner
            entry = {
                "kind": "accumulate",
                "cluster": first.tile_id.value.data % comp.arch.cluster.count,
                "inputs": [describe(p) for p in op.partials],
                "outputs": [describe(op.result)],
                "params": {"grid": list(op.grid_shape)},
            }
        else:
            continue
        kernels.append({"id": len(kernels), **entry,
                        "dtype": entry["outputs"][0]["dtype"] if entry["outputs"] else ""})
    return {
        "manifest_version": MANIFEST_VERSION,
        "source": comp.source.rsplit("/", 1)[-1],
        "target": comp.target,
        "arch": comp.arch.name,
        "cluster": {"count": comp.arch.cluster.count, "tcdm_kib": comp.arch.cluster.tcdm_kib,
                    "dtype": comp.arch.cluster.dtype},
        "kernels": kernels,
    }


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"
