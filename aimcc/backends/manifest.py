"""The kernel manifest: every call the RISC-V clusters run, as JSON.

It prints the lowered IR (`lower-cluster`): each ``cluster.call`` (and multi-row
``aimc.accumulate``) with the kernels that compute it, as the call's ``#cluster.kernel``
attributes say; a ``cluster.view`` needs no code; a call no kernel computes says why. A kernel
whose buffers exceed the cluster's TCDM runs in equal token pieces of one generated function
(``KernelAttr.piece``); its cycles are the kernel attribute's (``KernelAttr.cycles``, the cost
model's). A call the split pass spread over clusters by columns says so (``column_split``:
parts and clusters) and its kernels are one part's; an attention the head-split pass spread
over clusters says so too (``head_split``: groups, heads per group, clusters), and its kernels
are one group's (``repeat``: its heads).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from aimcc.atomic import write_text
from aimcc.backends.signatures import KernelSignature
from aimcc.errors import AimccError
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.cluster import CallOp, KernelAttr, ViewOp
from aimcc.ir.graph import AbsentOp, WeightOp
from aimcc.ir.types import dtype_of, shape_of
from aimcc.passes.schedule import column_split, head_clusters

if TYPE_CHECKING:
    from aimcc.compiler import Compilation

MANIFEST_VERSION = 4  # 3: calls of the lowered IR, no entry for views and fused biases;
# 4: float kernels in the cluster's number format (riscv_dtype and call dtypes f16 or f32),
# integer-list params as MLIR prints them now, `array<i64: 0, 2, 1, 3>`


def estimated_cycles(kernel: KernelAttr, tokens: int, comp: Compilation) -> float:
    """One call of ``kernel`` on ``tokens`` tokens (the kernel attribute's cost)."""
    return kernel.cycles(tokens, comp.arch)


def _ir_kernels(comp: Compilation) -> list[Operation]:
    main = next(op for op in comp.module.walk() if isinstance(op, func.FuncOp))
    return [
        op
        for op in main.body.block.ops
        if isinstance(op, CallOp | ViewOp)
        or (isinstance(op, AccumulateOp) and op.kernel is not None)
    ]


def op_kernels(op: Operation) -> list[KernelAttr]:
    """The kernels one cluster runs for an IR op (one column part's under a split)."""
    if isinstance(op, CallOp):
        return op.part_kernels
    if isinstance(op, AccumulateOp) and op.kernel is not None:
        return [op.kernel.column_part(column_split(op))]
    return []


@dataclass
class EmitStats:
    """What :func:`emit_riscv` wrote: per piece symbol its file and sha256."""

    files: dict[str, tuple[str, str]]
    kernels: int
    seconds: float


def riscv_signatures(comp: Compilation) -> list[KernelSignature]:
    """The distinct functions to generate (piece signatures), in program order."""
    tcdm = comp.arch.cluster.tcdm_kib * 1024
    sigs = [k.piece(tcdm)[0].signature for op in _ir_kernels(comp) for k in op_kernels(op)]
    return list(dict.fromkeys(sigs))


def emit_riscv(comp: Compilation, out_dir: str | Path) -> EmitStats:
    """Generate every kernel and write one ``<symbol>.S`` each into ``out_dir``; all assembly
    is generated before the first file is written, and each file is written atomically."""
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AimccError(f"--emit-riscv: '{out}' exists and is not a directory")
    gc_was_enabled = gc.isenabled()
    gc.disable()  # xDSL passes allocate many small objects (DESIGN.md: collection costs 2-4x)
    try:
        from aimcc.backends.riscv import generate_kernels  # xDSL's RISC-V dialects

        kernels = generate_kernels(riscv_signatures(comp))
    finally:
        if gc_was_enabled:
            gc.enable()
    files = {}
    try:
        for kernel in kernels:
            name = f"{kernel.signature.symbol}.S"
            write_text(out / name, kernel.asm)
            files[kernel.signature.symbol] = (name, hashlib.sha256(kernel.asm.encode()).hexdigest())
    except OSError as exc:
        raise AimccError(f"--emit-riscv: cannot write into '{out}': {exc.strerror}") from exc
    return EmitStats(files, len(kernels), time.perf_counter() - start)


def _riscv_entry(comp: Compilation, op: Operation, emitted: EmitStats | None) -> dict[str, Any]:
    if isinstance(op, ViewOp):
        return {"status": "view", "reason": f"{op.view.data}: the consumer's DMA reads through"}
    if isinstance(op, CallOp) and op.unsupported is not None:
        return {"status": "none", "reason": op.unsupported.data}
    tcdm = comp.arch.cluster.tcdm_kib * 1024
    calls = []
    for kernel in op_kernels(op):
        piece, pieces, fits = kernel.piece(tcdm)
        tokens = piece.tokens
        repeat = kernel.repeat.value.data
        cycles = estimated_cycles(piece, tokens, comp) * pieces * repeat
        entry = {
            "symbol": piece.symbol,
            "signature": kernel.symbol,
            "kind": piece.kind.data,
            "dtype": piece.dtype.data,
            "dims": dict(piece.dim_map),
            "attrs": piece.attr_map,
            "args": [{"name": n, "dtype": dt, "shape": list(s)} for n, dt, s in piece.args()],
            "repeat": repeat,
            "pieces": pieces,
            "tokens_per_piece": tokens,
            "footprint_bytes": kernel.tcdm_bytes(),
            "piece_footprint_bytes": piece.tcdm_bytes(),
            "tcdm_bytes": tcdm,
            "fits": fits,
            "est_cycles": round(cycles, 1),
        }
        if emitted is not None:
            entry["file"], entry["sha256"] = emitted.files[piece.symbol]
        calls.append(entry)
    return {"status": "code", "calls": calls}


def kernel_manifest(comp: Compilation, emitted: EmitStats | None = None) -> dict[str, Any]:
    """One entry per kernel call in program order, plus partial-sum accumulations; each says
    which RISC-V kernels compute it (with files and hashes when ``emitted`` is given)."""
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
    for op in _ir_kernels(comp):
        if isinstance(op, CallOp | ViewOp):
            entry = {
                "kind": op.callee.data if isinstance(op, CallOp) else f"onnx.{op.view.data}",
                "cluster": op.cluster.value.data if isinstance(op, CallOp) else None,
                "inputs": [describe(a) for a in op.args],
                "outputs": [describe(r) for r in op.outs],
                "params": {k: str(v) for k, v in sorted(op.params.data.items())},
            }
        else:
            assert isinstance(op, AccumulateOp) and op.cluster is not None
            entry = {
                "kind": "accumulate",
                "cluster": op.cluster.value.data,
                "inputs": [describe(p) for p in op.partials],
                "outputs": [describe(op.result)],
                "params": {"grid": list(op.grid_shape)},
            }
        parts = column_split(op)
        if parts > 1:  # the split pass's decision: columns dealt to consecutive clusters
            clusters = comp.arch.system_clusters
            entry["column_split"] = {
                "parts": parts,
                "clusters": [(entry["cluster"] + j) % clusters for j in range(parts)],
            }
        groups = head_clusters(op) if isinstance(op, CallOp) else []
        if len(groups) > 1:  # the head-split pass's decision: equal groups of heads
            heads = shape_of(op.args[0].type)[-3]
            entry["head_split"] = {
                "groups": len(groups),
                "heads_per_group": heads // len(groups),
                "clusters": groups,
            }
        dtype = entry["outputs"][0]["dtype"] if entry["outputs"] else ""
        riscv = _riscv_entry(comp, op, emitted)
        kernels.append({"id": len(kernels), **entry, "dtype": dtype, "riscv": riscv})
    return {
        "manifest_version": MANIFEST_VERSION,
        "source": comp.source.rsplit("/", 1)[-1],
        "target": comp.target,
        "arch": comp.arch.name,
        "cluster": {
            "count": comp.arch.cluster.count,
            "tcdm_kib": comp.arch.cluster.tcdm_kib,
            "dtype": comp.arch.cluster.dtype,
        },
        "riscv_dtype": comp.arch.cluster.kernel_dtype,  # the float kernels' element type
        "kernels": kernels,
    }


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"
