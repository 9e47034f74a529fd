"""The kernel manifest: every digital kernel the RISC-V clusters must run, as JSON.

Each IR kernel (``digital.kernel`` and multi-row ``aimc.accumulate``) maps to the generated
RISC-V kernels that compute it (:func:`kernel_plan`): attention per head as qk, mask add,
softmax and av; LoRA as X.A then .B added in place; generic ONNX ops onto elementwise, layout
and reduction kernels, and the integer/bool mask preparation onto cast, and/or, where and
gather_nd kernels. Views (reshapes) need no code; anything else says why it has none.
A kernel whose buffers exceed the cluster's TCDM is split along the token dimension into
equal pieces, so all pieces run one generated kernel. A kernel the split pass spread over
several clusters by columns says so (``column_split``: parts and clusters), and its calls are
one part's (accumulations, bias, activations, matmuls; elementwise ONNX kernels keep the whole).
An attention the head-split pass spread over clusters says so too (``head_split``: groups,
heads per group, clusters), and its calls are one group's (``repeat``: its heads).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, FloatAttr, IntegerAttr
from xdsl.ir import Operation, SSAValue

from aimcc.atomic import write_text
from aimcc.backends.signatures import KernelSignature, kernel_args, tcdm_bytes
from aimcc.cost.model import Stage, cluster_cycles
from aimcc.errors import AimccError
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import AbsentOp, WeightOp
from aimcc.ir.types import dtype_of, shape_of
from aimcc.passes.schedule import column_split, head_clusters

if TYPE_CHECKING:
    from aimcc.compiler import Compilation

MANIFEST_VERSION = 2
_VIEWS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
# ONNX element type -> the RISC-V kernels' dtype (bools are bytes)
_KERNEL_DTYPES = {"float32": "f32", "int64": "i64", "int32": "i32", "bool": "bool"}


def _sig(
    kind: str, attrs: dict[str, float] | None = None, dtype: str = "f32", **dims: int
) -> KernelSignature:
    attr_items = tuple(sorted((attrs or {}).items()))
    return KernelSignature(kind, tuple(sorted(dims.items())), attr_items, dtype)


@dataclass(frozen=True)
class KernelCall:
    """A generated kernel run ``repeat`` times (once per head or batch block) over ``tokens``
    tokens; ``at(t)`` is its signature for t tokens, which is how a split picks its pieces."""

    at: Callable[[int], KernelSignature]
    tokens: int
    repeat: int = 1


@dataclass(frozen=True)
class Plan:
    """How an IR kernel runs on RISC-V: status "code" (calls), "view" or "none" (reason)."""

    status: str
    calls: tuple[KernelCall, ...] = ()
    reason: str = ""


def _none(reason: str) -> Plan:
    return Plan("none", reason=reason)


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    return math.prod(shape[:-1]), shape[-1]


def _present(values: list[SSAValue]) -> list[SSAValue]:
    return [v for v in values if not isinstance(v.owner, AbsentOp)]


def _const(comp: Compilation, value: SSAValue) -> list[float] | None:
    """A constant operand's values (None when it is computed at run time)."""
    if isinstance(value.owner, WeightOp):
        return [float(v) for v in comp.ctx.weights[value.owner.key.data].ravel()]
    return None


def _param(op: KernelOp, name: str) -> Any:
    attr = op.params.data.get(name)
    if isinstance(attr, ArrayAttr):
        return [a.value.data for a in attr.data if isinstance(a, IntegerAttr)]
    if isinstance(attr, IntegerAttr | FloatAttr):
        return attr.value.data
    return None


def _attention(op: KernelOp) -> Plan:
    args = _present(list(op.args))
    q, kt, v = (shape_of(a.type) for a in args[:3])
    # a head split: the calls of one group (each group's cluster runs its heads)
    groups = max(1, len(head_clusters(op)))
    heads, (s, d), s2 = math.prod(q[:-2]) // groups, q[-2:], kt[-1]
    scale = {"scale": float(_param(op, "scale"))}
    calls = [KernelCall(lambda t: _sig("qk", scale, S=t, S2=s2, D=d), s, heads)]
    if len(args) > 3:
        mask = shape_of(args[3].type)
        if math.prod(mask[:-2]) != 1:
            return _none(f"attention mask {mask} varies per head: no kernel reads it")
        kind = {(s, s2): "add", (1, s2): "bias_add"}.get(tuple(mask[-2:]))
        if kind is None:
            return _none(f"attention mask {mask} broadcasts in no supported way")
        calls.append(KernelCall(lambda t: _sig(kind, M=t, N=s2), s, heads))
    calls.append(KernelCall(lambda t: _sig("softmax", M=t, N=s2), s, heads))
    calls.append(KernelCall(lambda t: _sig("av", S=t, S2=s2, D=v[-1]), s, heads))
    return Plan("code", tuple(calls))


def _squeeze_merge(shape: tuple[int, ...], groups: list[int]) -> list[tuple[int, int]]:
    """Drop size-1 dims, then merge neighbours with the same group: [(size, group)]."""
    merged: list[tuple[int, int]] = []
    for size, group in zip(shape, groups, strict=True):
        if size == 1:
            continue
        if merged and merged[-1][1] == group:
            merged[-1] = (merged[-1][0] * size, group)
        else:
            merged.append((size, group))
    return merged


def _transpose(shape: tuple[int, ...], perm: list[int]) -> Plan:
    """Canonical form: batch blocks of (A, B, C) -> (B, A, C), C contiguous (maybe 1)."""
    # merge input dims that stay adjacent and in order in the output
    kept = [p for p in perm if shape[p] != 1]
    runs: dict[int, int] = {}
    for i, p in enumerate(kept):
        runs[p] = runs[kept[i - 1]] if i and kept[i - 1] == p - 1 else p
    order = [p for p in range(len(shape)) if shape[p] != 1]
    merged = _squeeze_merge(tuple(shape[p] for p in order), [runs[p] for p in order])
    groups = [g for _, g in merged]
    out_groups = list(dict.fromkeys(runs[p] for p in kept))
    if groups == out_groups:
        return Plan("view", reason="transpose moves only size-1 dims")
    sizes = dict((g, size) for size, g in merged)
    batch = 0
    while groups[batch] == out_groups[batch]:
        batch += 1
    rest, rest_out = groups[batch:], out_groups[batch:]
    repeat = math.prod(sizes[g] for g in groups[:batch])
    if len(rest) == 2 and rest_out == rest[::-1]:
        a, b, c = sizes[rest[0]], sizes[rest[1]], 1
    elif len(rest) == 3 and rest_out == [rest[1], rest[0], rest[2]]:
        a, b, c = sizes[rest[0]], sizes[rest[1]], sizes[rest[2]]
    else:
        return _none(f"transpose {perm} of {shape} is no (A, B, C) -> (B, A, C) swap")
    return Plan("code", (KernelCall(lambda t: _sig("transpose", A=a, B=b, C=c), a, repeat),))


def _binary(op_type: str, a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> Plan:
    def strip(shape: tuple[int, ...]) -> tuple[int, ...]:
        while shape and shape[0] == 1:
            shape = shape[1:]
        return shape

    kind = _BINARY[op_type]
    if strip(a) != strip(out):
        if op_type not in ("Add", "Mul") or strip(b) != strip(out):
            return _none(f"onnx.{op_type} broadcasts its first operand {a} to {out}")
        a, b = b, a
    m, n = _rows(out) if out else (1, 1)
    full, row, col = strip(out), strip((n,)), strip((*out[:-1], 1)) if out else ()
    if strip(b) == full:
        pass
    elif strip(b) == row:
        kind = "bias_add" if kind == "add" else f"{kind}_row"
    elif strip(b) == col:
        kind = f"{kind}_col"
    else:
        return _none(f"onnx.{op_type} broadcast of {b} to {out} is neither by row nor column")
    return Plan("code", (KernelCall(lambda t: _sig(kind, M=t, N=n), m),))


def _reduce(op_type: str, shape: tuple[int, ...], axes: list[int] | None) -> Plan:
    if axes is None:
        return _none(f"onnx.{op_type} with run-time axes")
    axes = sorted(a % len(shape) for a in axes)
    if axes != list(range(axes[0], axes[-1] + 1)):
        return _none(f"onnx.{op_type} over non-adjacent axes {axes}")
    a, b = math.prod(shape[: axes[0]]), math.prod(shape[axes[0] : axes[-1] + 1])
    c = math.prod(shape[axes[-1] + 1 :])
    kind = "reduce_sum" if op_type == "ReduceSum" else "reduce_l2"
    return Plan("code", (KernelCall(lambda t: _sig(kind, A=t, B=b, C=c), a),))


def _expand(shape: tuple[int, ...], out: tuple[int, ...]) -> Plan:
    padded = (1,) * (len(out) - len(shape)) + shape
    merged = _squeeze_merge(out, [int(p == o) for p, o in zip(padded, out, strict=True)])
    kinds = [g for _, g in merged]  # 1: kept, 0: broadcast
    if kinds.count(0) > 1 or (kinds and kinds[0] == 0 and len(kinds) > 2):
        return _none(f"onnx.Expand {shape} -> {out} broadcasts along several dims")
    a = merged[0][0] if kinds[:1] == [1] and 0 in kinds else 1
    b = next((size for size, g in merged if g == 0), 1)
    c = merged[-1][0] if kinds[-1:] == [1] and kinds != [1] and len(kinds) > 1 else 1
    if b == 1:
        return Plan("view", reason="expand to the same number of elements")
    return Plan("code", (KernelCall(lambda t: _sig("broadcast", A=a, B=b, C=c), 1),))


def _strip(shape: tuple[int, ...]) -> tuple[int, ...]:
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _form(shape: tuple[int, ...], out: tuple[int, ...]) -> str | None:
    """How an operand broadcasts to ``out`` seen as (rows, n): "" (full), "row" (one value
    per column), "col" (one per row), or None."""
    n = out[-1] if out else 1
    forms = {"": _strip(out), "row": _strip((n,)), "col": _strip((*out[:-1], 1)) if out else ()}
    return next((form for form, want in forms.items() if _strip(shape) == want), None)


def _cast(op: KernelOp) -> Plan:
    source, target = dtype_of(op.args[0].type), dtype_of(op.outs[0].type)
    if source not in _KERNEL_DTYPES or target not in _KERNEL_DTYPES:
        return _none(f"onnx.Cast {source} -> {target}: no kernel for these types")
    if source == target:
        return Plan("view", reason="Cast to the type it already has")
    shape = shape_of(op.args[0].type)
    rows, n = _rows(shape) if shape else (1, 1)
    kind, dtype = f"cast_{_KERNEL_DTYPES[target]}", _KERNEL_DTYPES[source]
    return Plan("code", (KernelCall(lambda t: _sig(kind, dtype=dtype, N=t * n), rows),))


def _logical(op_type: str, a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> Plan:
    forms = (_form(a, out), _form(b, out))
    kind = {("", ""): "", ("", "row"): "_row", ("", "col"): "_col", ("col", "row"): "_outer"}
    suffix = kind.get(forms, kind.get(forms[::-1]))  # And and Or commute
    if suffix is None:
        return _none(f"onnx.{op_type} broadcast of {a} and {b} to {out} is no row/column form")
    m, n = _rows(out) if out else (1, 1)
    kind_name = f"{op_type.lower()}{suffix}"
    return Plan("code", (KernelCall(lambda t: _sig(kind_name, dtype="bool", M=t, N=n), m),))


def _where(comp: Compilation, op: KernelOp) -> Plan:
    cond, a, b = op.args
    out = shape_of(op.outs[0].type)
    if dtype_of(a.type) != "float32" or _form(shape_of(cond.type), out) != "":
        return _none("onnx.Where needs a full-shape condition choosing between floats")
    m, n = _rows(out) if out else (1, 1)
    values = [_const(comp, v) for v in (a, b)]
    if all(v is not None and len(v) == 1 for v in values):
        attrs = {"a": values[0][0], "b": values[1][0]}
        return Plan("code", (KernelCall(lambda t: _sig("where_const", attrs, M=t, N=n), m),))
    if all(_strip(shape_of(v.type)) == _strip(out) for v in (a, b)):
        return Plan("code", (KernelCall(lambda t: _sig("where", M=t, N=n), m),))
    return _none("onnx.Where picks between a broadcast value and a tensor: no kernel")


def _gather_nd(op: KernelOp) -> Plan:
    data, idx = (shape_of(v.type) for v in op.args[:2])
    depth, dtype = idx[-1], _KERNEL_DTYPES.get(dtype_of(op.args[0].type))
    if _param(op, "batch_dims") or not 1 <= depth <= 3 or dtype is None:
        return _none(f"onnx.GatherND of {data} by {idx}: no kernel (batch dims, depth or type)")
    axes = dict(zip("XYZ", data[:depth], strict=False))
    tokens, width = math.prod(idx[:-1]), math.prod(data[depth:])
    call = KernelCall(lambda t: _sig("gather_nd", dtype=dtype, T=t, D=width, **axes), tokens)
    return Plan("code", (call,))


def _onnx(comp: Compilation, op: KernelOp, op_type: str) -> Plan:
    if op_type in _VIEWS:
        return Plan("view", reason=f"{op_type} keeps the bytes, only the shape changes")
    if op_type == "Cast":
        return _cast(op)
    if op_type == "GatherND":
        return _gather_nd(op)
    if op_type == "Where":
        return _where(comp, op)
    inputs = _present(list(op.args))
    if op_type in ("And", "Or"):
        a, b, out = (shape_of(v.type) for v in (*inputs[:2], op.outs[0]))
        return _logical(op_type, a, b, out)
    data = [v for v in inputs if not isinstance(v.owner, WeightOp)] or inputs[:1]
    odd = [dtype_of(v.type) for v in data if dtype_of(v.type) != "float32"]
    if odd:
        return _none(f"onnx.{op_type} on {odd[0]} data (mask preprocessing): no f32 kernel")
    shape, out = shape_of(inputs[0].type), shape_of(op.outs[0].type)
    if op_type in _BINARY:
        return _binary(op_type, shape, shape_of(inputs[1].type), out)
    if op_type == "Transpose":
        return _transpose(shape, _param(op, "perm") or list(range(len(shape)))[::-1])
    if op_type == "Expand":
        return _expand(shape, out)
    if op_type in ("ReduceSum", "ReduceL2"):
        axes = _const(comp, op.args[1]) if len(op.args) > 1 else _param(op, "axes")
        return _reduce(op_type, shape, None if axes is None else [int(a) for a in axes])
    if op_type == "Clip":
        bounds = [_const(comp, v) if not isinstance(v.owner, AbsentOp) else [] for v in op.args[1:]]
        if any(b is None for b in bounds):
            return _none("onnx.Clip with run-time bounds")
        lo, hi = [*bounds, [], []][:2]
        big = 3.4028234663852886e38
        attrs = {"lo": lo[0] if lo else -big, "hi": hi[0] if hi else big}
        rows, n = _rows(shape) if shape else (1, 1)
        return Plan("code", (KernelCall(lambda t: _sig("clip", attrs, N=t * n), rows),))
    if op_type == "Split":
        axis = int(_param(op, "axis") or 0) % len(shape)
        if math.prod(shape[:axis]) == 1:
            return Plan("view", reason="split along the outermost dim: contiguous pieces")
        m, width = math.prod(shape[:axis]), math.prod(shape[axis:])
        widths = {math.prod(shape_of(r.type)[axis:]) for r in op.outs}
        return Plan(
            "code",
            tuple(
                KernelCall(lambda t, n=n: _sig("column_slice", M=t, N=n, W=width), m)
                for n in sorted(widths)
            ),
        )
    return _none(f"no RISC-V kernel for onnx.{op_type}")


def kernel_plan(comp: Compilation, op: Operation) -> Plan:
    """The RISC-V kernels that compute one IR kernel (a ``digital.kernel`` or accumulation)."""
    parts = column_split(op)  # a column split: the calls of one part (the largest)
    if isinstance(op, AccumulateOp):
        rows_of_tiles, cols_of_tiles = op.grid_shape
        tokens, width = _rows(shape_of(op.result.type))
        if parts > 1:
            n = -(-width // parts)
            call = KernelCall(lambda t: _sig("accumulate", P=rows_of_tiles, M=t, N=n), tokens)
            return Plan("code", (call,))
        n = width // cols_of_tiles  # columns per tile column (equal: tiling splits evenly)
        call = KernelCall(lambda t: _sig("accumulate", P=rows_of_tiles, M=t, N=n), tokens)
        return Plan("code", (replace(call, repeat=cols_of_tiles),))
    assert isinstance(op, KernelOp)
    kind = op.kind.data
    if kind.startswith("onnx."):
        return _onnx(comp, op, kind.removeprefix("onnx."))
    shapes = [shape_of(a.type) for a in _present(list(op.args))]
    if parts > 1 and kind in ("matmul", "bias_add", "gelu_erf", "gelu_tanh", "silu"):
        # each part computes its share of the output columns (a matmul reads all of x)
        shapes = [
            (*s[:-1], -(-s[-1] // parts)) if i or kind != "matmul" else s
            for i, s in enumerate(shapes)
        ]
    eps = {"eps": float(_param(op, "epsilon") or 0.0)}
    match kind:
        case "matmul":
            (a, b), n = shapes[:2], shapes[1][-1]
            if len(b) == 2:
                m, k = _rows(a)
                return Plan("code", (KernelCall(lambda t: _sig("matmul", M=t, K=k, N=n), m),))
            repeat, m, k = math.prod(a[:-2]), a[-2], a[-1]
            return Plan("code", (KernelCall(lambda t: _sig("matmul", M=t, K=k, N=n), m, repeat),))
        case "lora":
            (t_all, k), r, n = _rows(shapes[0]), shapes[2][-1], shapes[3][-1]
            scale = {"scale": float(_param(op, "scale"))}
            xa = KernelCall(lambda t: _sig("lora_xa", T=t, K=k, R=r), t_all)
            b_add = KernelCall(lambda t: _sig("lora_b_add", scale, T=t, R=r, N=n), t_all)
            return Plan("code", (xa, b_add))
        case "bias_add":
            m, n = _rows(shapes[0])
            return Plan("code", (KernelCall(lambda t: _sig("bias_add", M=t, N=n), m),))
        case "attention":
            return _attention(op)
        case "layer_norm" | "rms_norm":
            if kind == "layer_norm" and len(shapes) < 3:
                return _none("LayerNorm without bias: the kernel needs a beta buffer")
            m, n = _rows(shapes[0])
            return Plan("code", (KernelCall(lambda t: _sig(kind, eps, M=t, N=n), m),))
        case "gelu_erf" | "gelu_tanh" | "silu":
            m, n = _rows(shapes[0])
            return Plan("code", (KernelCall(lambda t: _sig(kind, N=t * n), m),))
        case "embedding":
            (v, d), tokens = shapes[0], math.prod(shapes[1])
            return Plan("code", (KernelCall(lambda t: _sig("gather", V=v, D=d, T=t), tokens),))
        case "rope":
            x, cos = shapes[0], shapes[1]
            heads, (t_all, d) = math.prod(x[:-2]), x[-2:]
            if math.prod(cos[:-2]) not in (1, heads) or tuple(cos[-2:]) != (t_all, d):
                return _none(f"rope tables {cos} do not match x {x}")
            return Plan("code", (KernelCall(lambda t: _sig("rope", T=t, D=d), t_all, heads),))
    return _none(f"no RISC-V kernel for {kind}")


@dataclass(frozen=True)
class Split:
    """A call's placement in TCDM: the piece signature and how many pieces run it."""

    signature: KernelSignature
    piece: KernelSignature
    pieces: int
    fits: bool


def split_call(call: KernelCall, tcdm: int) -> Split:
    """Whole when it fits; else the fewest equal token pieces (a divisor) that fit."""
    full = call.at(call.tokens)
    for pieces in range(1, call.tokens + 1):
        if call.tokens % pieces == 0 and tcdm_bytes(call.at(call.tokens // pieces)) <= tcdm:
            return Split(full, call.at(call.tokens // pieces), pieces, True)
    return Split(full, call.at(1), call.tokens, False)


_COST_KINDS = {"lora_xa", "lora_b_add", "matmul", "qk", "av", "softmax", "layer_norm"}
_COST_KINDS |= {"rms_norm", "gelu_erf", "gelu_tanh", "silu", "add", "bias_add", "accumulate"}


def estimated_cycles(sig: KernelSignature, tokens: int, comp: Compilation) -> float:
    """One call of ``sig`` on ``tokens`` tokens, from the cost model's cluster unit cost."""
    d = dict(sig.dims)
    per_token = math.prod(kernel_args(sig)[-1][2]) // tokens
    match sig.kind:
        case "qk" | "av":
            dims = {"S": d["S2"], "D": d["D"]}
        case "lora_xa" | "lora_b_add" | "matmul" | "accumulate":
            dims = {k: v for k, v in d.items() if k not in ("T", "M")}
        case "gather":
            dims = {"N": d["D"]}
        case _:
            dims = {"N": per_token}
    if sig.kind not in _COST_KINDS | {"gather"}:
        kind, dims = "elementwise", {"elements": per_token, "ops": 1}
    else:
        kind = sig.kind
    stage = Stage(sig.symbol, kind, {**dims, "T": tokens}, (), "cluster")
    return cluster_cycles(stage, tokens, comp.arch)


def _ir_kernels(comp: Compilation) -> list[Operation]:
    main = next(op for op in comp.module.walk() if isinstance(op, func.FuncOp))
    return [
        op
        for op in main.body.block.ops
        if isinstance(op, KernelOp) or (isinstance(op, AccumulateOp) and op.grid_shape[0] > 1)
    ]


@dataclass
class EmitStats:
    """What :func:`emit_riscv` wrote: per piece symbol its file and sha256."""

    files: dict[str, tuple[str, str]]
    kernels: int
    seconds: float


def riscv_signatures(comp: Compilation) -> list[KernelSignature]:
    """The distinct kernels to generate (piece signatures), in program order."""
    tcdm = comp.arch.cluster.tcdm_kib * 1024
    sigs = []
    for op in _ir_kernels(comp):
        sigs += [split_call(call, tcdm).piece for call in kernel_plan(comp, op).calls]
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
    plan = kernel_plan(comp, op)
    if plan.status != "code":
        return {"status": plan.status, "reason": plan.reason}
    tcdm = comp.arch.cluster.tcdm_kib * 1024
    calls = []
    for call in plan.calls:
        split = split_call(call, tcdm)
        tokens = call.tokens // split.pieces
        cycles = estimated_cycles(split.piece, tokens, comp) * split.pieces * call.repeat
        entry = {
            "symbol": split.piece.symbol,
            "signature": split.signature.symbol,
            "kind": split.piece.kind,
            "dtype": split.piece.dtype,
            "dims": dict(split.piece.dims),
            "attrs": dict(split.piece.attrs),
            "args": [
                {"name": n, "dtype": dt, "shape": list(s)} for n, dt, s in kernel_args(split.piece)
            ],
            "repeat": call.repeat,
            "pieces": split.pieces,
            "tokens_per_piece": tokens,
            "footprint_bytes": tcdm_bytes(split.signature),
            "piece_footprint_bytes": tcdm_bytes(split.piece),
            "tcdm_bytes": tcdm,
            "fits": split.fits,
            "est_cycles": round(cycles, 1),
        }
        if emitted is not None:
            entry["file"], entry["sha256"] = emitted.files[split.piece.symbol]
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
        if isinstance(op, KernelOp):
            entry = {
                "kind": op.kind.data,
                "cluster": op.cluster.value.data if op.cluster is not None else 0,
                "inputs": [describe(a) for a in op.args],
                "outputs": [describe(r) for r in op.outs],
                "params": {k: str(v) for k, v in sorted(op.params.data.items())},
            }
        else:
            assert isinstance(op, AccumulateOp)
            first = op.partials[0].owner.operands[1].owner
            entry = {
                "kind": "accumulate",
                "cluster": comp.arch.cluster_of_tile(first.tile_id.value.data),
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
        groups = head_clusters(op) if isinstance(op, KernelOp) else []
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
        "riscv_dtype": "f32",
        "kernels": kernels,
    }


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"
