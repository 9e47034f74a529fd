"""lower-cluster: every digital kernel becomes a ``cluster.call`` of RISC-V kernels (or a view).

Each ``digital.kernel`` maps to the kernels that compute it (``#cluster.kernel``, a closed set
of kinds: `backends/signatures.py`): attention per head as qk, mask add, softmax and av; LoRA
as X.A then .B added in place; generic ONNX ops onto elementwise and reduction kernels, and the
integer/bool mask preparation onto cast, and/or, where and gather_nd kernels. Re-indexing ops
(reshape, transpose, slice, split, expand) become ``cluster.view``: no kernel, the consumer's
DMA reads through them. A multi-row ``aimc.accumulate`` gets the kernel that adds its partial
sums (``kernel``). An op no kernel computes stays a call with no kernels and the reason
(``unsupported``); every consumer reports it.

This is the one place that knows how an IR kernel runs on a cluster: the schedule, the
manifest, the RISC-V backend and the runtime read the calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.attrs import int_list
from aimcc.ir.cluster import VIEW_OPS, CallOp, KernelAttr, ViewOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import AbsentOp, WeightOp
from aimcc.ir.types import dtype_of, shape_of
from aimcc.ir.weights import WeightStore

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
# ONNX element type -> the RISC-V kernels' dtype (bools are bytes); float32 data is in the
# cluster's number format (``arch.cluster.kernel_dtype``: f16 or f32)
_KERNEL_DTYPES = {"int64": "i64", "int32": "i32", "bool": "bool"}
HEAD_CLUSTERS = "head_clusters"


class _Unsupported(Exception):
    """No RISC-V kernel computes this op (the message says why)."""


Plan = list[tuple[KernelAttr, list[int]]]  # kernels with the operands each reads


@dataclass(frozen=True)
class LowerClusterPass(ModulePass):
    name = "lower-cluster"

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        main = next((o for o in op.walk() if isinstance(o, func.FuncOp)), None)
        if main is None:
            return
        fdt = ctx.arch.cluster.kernel_dtype
        for o in list(main.body.block.ops):
            if isinstance(o, AccumulateOp) and o.grid_shape[0] > 1 and o.kernel is None:
                o.kernel = accumulate_kernel(o, fdt)
            elif isinstance(o, KernelOp):
                Rewriter.replace_op(o, lower(o, ctx.weights, fdt))


def accumulate_kernel(acc: AccumulateOp, fdt: str) -> KernelAttr:
    """The partial sums of a layer's rows of tiles, one kernel per column of tiles."""
    rows_of_tiles, cols_of_tiles = acc.grid_shape
    tokens, width = _rows(shape_of(acc.result))
    if width % cols_of_tiles:  # uneven tile columns: one kernel over all of them
        cols_of_tiles = 1
    dims = {"P": rows_of_tiles, "M": tokens, "N": width // cols_of_tiles}
    return KernelAttr("accumulate", dims, dtype=fdt, repeat=cols_of_tiles, along="M")


def lower(op: KernelOp, weights: WeightStore, fdt: str) -> Operation:
    """The call (or view) of ``op``, its float data in ``fdt`` (the cluster's f16 or f32)."""
    kind = op.kind.data
    results = [r.type for r in op.outs]
    if kind.startswith("onnx.") and kind.removeprefix("onnx.") in VIEW_OPS:
        return ViewOp(kind.removeprefix("onnx."), list(op.args), results, op.params)
    if op.cluster is None:
        raise AimccError(f"lower-cluster: kernel '{kind}' has no cluster (run 'place' first)")
    try:
        plan = _plan(op, weights, fdt)
        reason = ""
    except _Unsupported as exc:
        plan, reason = [], str(exc)
    new = CallOp(
        kind,
        list(op.args),
        results,
        [k for k, _ in plan],
        [r for _, r in plan],
        op.params,
        op.cluster.value.data,
        reason,
    )
    if "split" in op.attributes:
        new.attributes["split"] = op.attributes["split"]
    return new


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    return (math.prod(shape[:-1]), shape[-1]) if shape else (1, 1)


def _param(op: KernelOp, name: str) -> object:
    attr = op.params.data.get(name)
    if (ints := int_list(attr)) is not None:
        return ints
    if isinstance(attr, IntegerAttr | FloatAttr):
        return attr.value.data
    return None


def _const(weights: WeightStore, value: SSAValue) -> list[float] | None:
    """A constant operand's values (None when it is computed at run time)."""
    if isinstance(value.owner, WeightOp):
        return [float(v) for v in weights[value.owner.key.data].ravel()]
    return None


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


def _plan(op: KernelOp, weights: WeightStore, fdt: str) -> Plan:
    kind = op.kind.data
    if kind.startswith("onnx."):
        return _onnx(op, kind.removeprefix("onnx."), weights, fdt)
    shapes = [shape_of(a) for a in op.args]
    eps = {"eps": float(_param(op, "epsilon") or 0.0)}  # type: ignore[arg-type]
    match kind:
        case "matmul":
            a, b = shapes[:2]
            n = b[-1]
            if len(b) == 2:
                m, k = _rows(a)
                dims = {"M": m, "K": k, "N": n}
                return [(KernelAttr("matmul", dims, dtype=fdt, along="M"), [0, 1])]
            repeat, m, k = math.prod(a[:-2]), a[-2], a[-1]
            dims = {"M": m, "K": k, "N": n}
            return [(KernelAttr("matmul", dims, dtype=fdt, repeat=repeat, along="M"), [0, 1])]
        case "lora":
            (t, k), r, n = _rows(shapes[0]), shapes[2][-1], shapes[3][-1]
            scale = {"scale": float(_param(op, "scale"))}  # type: ignore[arg-type]
            return [
                (KernelAttr("lora_xa", {"T": t, "K": k, "R": r}, dtype=fdt, along="T"), [0, 2]),
                (KernelAttr("lora_b_add", {"T": t, "R": r, "N": n}, scale, fdt, along="T"), [3, 1]),
            ]
        case "bias_add":
            m, n = _rows(shapes[0])
            return [(KernelAttr("bias_add", {"M": m, "N": n}, dtype=fdt, along="M"), [0, 1])]
        case "attention":
            return _attention(op, fdt)
        case "layer_norm" | "rms_norm":
            if kind == "layer_norm" and len(op.args) < 3:
                raise _Unsupported("LayerNorm without bias: the kernel needs a beta buffer")
            m, n = _rows(shapes[0])
            reads = [0, 1, 2] if kind == "layer_norm" else [0, 1]
            return [(KernelAttr(kind, {"M": m, "N": n}, eps, fdt, along="M"), reads)]
        case "gelu_erf" | "gelu_tanh" | "silu":
            m, n = _rows(shapes[0])
            return [(KernelAttr(kind, {"N": m * n}, dtype=fdt, along="N", unit=n), [0])]
        case "embedding":
            (v, d), tokens = shapes[0], math.prod(shapes[1])
            dims = {"V": v, "D": d, "T": tokens}
            return [(KernelAttr("gather", dims, dtype=fdt, along="T"), [0, 1])]
        case "rope":
            x, cos = shapes[0], shapes[1]
            heads, (t, d) = math.prod(x[:-2]), x[-2:]
            if math.prod(cos[:-2]) not in (1, heads) or tuple(cos[-2:]) != (t, d):
                raise _Unsupported(f"rope tables {cos} do not match x {x}")
            rope = KernelAttr("rope", {"T": t, "D": d}, dtype=fdt, repeat=heads, along="T")
            return [(rope, [0, 1, 2])]
    raise _Unsupported(f"no RISC-V kernel for {kind}")


def _attention(op: KernelOp, fdt: str) -> Plan:
    args = [a for a in op.args if not isinstance(a.owner, AbsentOp)]
    q, kt, v = (shape_of(a) for a in args[:3])
    # a head split: the kernels of one group (each group's cluster runs its heads)
    groups = max(1, len(_param(op, HEAD_CLUSTERS) or [0]))  # type: ignore[arg-type]
    heads, (s, d), s2 = math.prod(q[:-2]) // groups, q[-2:], kt[-1]
    scale = {"scale": float(_param(op, "scale"))}  # type: ignore[arg-type]
    plan: Plan = [(KernelAttr("qk", {"S": s, "S2": s2, "D": d}, scale, fdt, heads, "S"), [0, 1])]
    if len(args) > 3:
        mask = shape_of(args[3])
        if math.prod(mask[:-2]) != 1:
            raise _Unsupported(f"attention mask {mask} varies per head: no kernel reads it")
        kind = {(s, s2): "add", (1, s2): "bias_add"}.get(tuple(mask[-2:]))
        if kind is None:
            raise _Unsupported(f"attention mask {mask} broadcasts in no supported way")
        plan.append((KernelAttr(kind, {"M": s, "N": s2}, {}, fdt, heads, "M"), [3]))
    plan.append((KernelAttr("softmax", {"M": s, "N": s2}, {}, fdt, heads, "M"), []))
    plan.append((KernelAttr("av", {"S": s, "S2": s2, "D": v[-1]}, {}, fdt, heads, "S"), [2]))
    return plan


def _binary(
    op_type: str, a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...], fdt: str
) -> Plan:
    kind, reads = _BINARY[op_type], [0, 1]
    if _strip(a) != _strip(out):
        if op_type not in ("Add", "Mul") or _strip(b) != _strip(out):
            raise _Unsupported(f"onnx.{op_type} broadcasts its first operand {a} to {out}")
        a, b, reads = b, a, [1, 0]
    m, n = _rows(out)
    form = _form(b, out)
    if form is None:
        raise _Unsupported(f"onnx.{op_type} broadcast of {b} to {out} is neither by row nor column")
    if form == "row":
        kind = "bias_add" if kind == "add" else f"{kind}_row"
    elif form == "col":
        kind = f"{kind}_col"
    return [(KernelAttr(kind, {"M": m, "N": n}, dtype=fdt, along="M"), reads)]


def _onnx(op: KernelOp, op_type: str, weights: WeightStore, fdt: str) -> Plan:
    inputs = [v for v in op.args if not isinstance(v.owner, AbsentOp)]
    out = shape_of(op.outs[0])
    kernel_dtypes = {"float32": fdt, **_KERNEL_DTYPES}
    if op_type == "Cast":
        source, target = dtype_of(op.args[0].type), dtype_of(op.outs[0].type)
        if source not in kernel_dtypes or target not in kernel_dtypes or source == target:
            raise _Unsupported(f"onnx.Cast {source} -> {target}: no kernel for these types")
        rows, n = _rows(shape_of(op.args[0]))
        kind, dtype = f"cast_{kernel_dtypes[target]}", kernel_dtypes[source]
        return [(KernelAttr(kind, {"N": rows * n}, dtype=dtype, along="N", unit=n), [0])]
    if op_type == "GatherND":
        data, idx = (shape_of(v) for v in op.args[:2])
        depth, dtype = idx[-1], kernel_dtypes.get(dtype_of(op.args[0].type))
        if _param(op, "batch_dims") or not 1 <= depth <= 3 or dtype is None:
            raise _Unsupported(
                f"onnx.GatherND of {data} by {idx}: no kernel (batch dims, depth or type)"
            )
        dims = {**dict(zip("XYZ", data[:depth], strict=False)), "D": math.prod(data[depth:])}
        dims["T"] = math.prod(idx[:-1])
        return [(KernelAttr("gather_nd", dims, dtype=dtype, along="T"), [0, 1])]
    if op_type == "Where":
        cond, a, b = op.args
        if dtype_of(a.type) != "float32" or _form(shape_of(cond), out) != "":
            raise _Unsupported("onnx.Where needs a full-shape condition choosing between floats")
        m, n = _rows(out)
        values = [_const(weights, v) for v in (a, b)]
        if all(v is not None and len(v) == 1 for v in values):
            attrs = {"a": values[0][0], "b": values[1][0]}  # type: ignore[index]
            return [(KernelAttr("where_const", {"M": m, "N": n}, attrs, fdt, along="M"), [0])]
        if all(_strip(shape_of(v)) == _strip(out) for v in (a, b)):
            return [(KernelAttr("where", {"M": m, "N": n}, dtype=fdt, along="M"), [0, 1, 2])]
        raise _Unsupported("onnx.Where picks between a broadcast value and a tensor: no kernel")
    if op_type in ("And", "Or"):
        a, b = (shape_of(v) for v in inputs[:2])
        forms = (_form(a, out), _form(b, out))
        suffixes = {
            ("", ""): "",
            ("", "row"): "_row",
            ("", "col"): "_col",
            ("col", "row"): "_outer",
        }
        reads = [0, 1]
        if forms not in suffixes and forms[::-1] in suffixes:  # And and Or commute
            forms, reads = forms[::-1], [1, 0]
        if forms not in suffixes:
            raise _Unsupported(
                f"onnx.{op_type} broadcast of {a} and {b} to {out} is no row/column form"
            )
        m, n = _rows(out)
        kind = f"{op_type.lower()}{suffixes[forms]}"
        return [(KernelAttr(kind, {"M": m, "N": n}, dtype="bool", along="M"), reads)]
    data = [v for v in inputs if not isinstance(v.owner, WeightOp)] or inputs[:1]
    odd = [dtype_of(v.type) for v in data if dtype_of(v.type) != "float32"]
    if odd:
        raise _Unsupported(f"onnx.{op_type} on {odd[0]} data (mask preprocessing): no kernel")
    shape = shape_of(inputs[0])
    if op_type in _BINARY:
        return _binary(op_type, shape, shape_of(inputs[1]), out, fdt)
    if op_type in ("ReduceSum", "ReduceL2"):
        const = _const(weights, op.args[1]) if len(op.args) > 1 else None
        axes = const if len(op.args) > 1 else _param(op, "axes")
        if axes is None:
            raise _Unsupported(f"onnx.{op_type} with run-time axes")
        axes = sorted(int(a) % len(shape) for a in axes)  # type: ignore[union-attr]
        if axes != list(range(axes[0], axes[-1] + 1)):
            raise _Unsupported(f"onnx.{op_type} over non-adjacent axes {axes}")
        a, b = math.prod(shape[: axes[0]]), math.prod(shape[axes[0] : axes[-1] + 1])
        c = math.prod(shape[axes[-1] + 1 :])
        kind = "reduce_sum" if op_type == "ReduceSum" else "reduce_l2"
        return [(KernelAttr(kind, {"A": a, "B": b, "C": c}, dtype=fdt, along="A"), [0])]
    if op_type == "Clip":
        bounds = [
            _const(weights, v) if not isinstance(v.owner, AbsentOp) else [] for v in op.args[1:]
        ]
        if any(b is None for b in bounds):
            raise _Unsupported("onnx.Clip with run-time bounds")
        lo, hi = [*bounds, [], []][:2]
        big = 3.4028234663852886e38
        attrs = {"lo": lo[0] if lo else -big, "hi": hi[0] if hi else big}  # type: ignore[index]
        rows, n = _rows(shape)
        return [(KernelAttr("clip", {"N": rows * n}, attrs, fdt, along="N", unit=n), [0])]
    raise _Unsupported(f"no RISC-V kernel for onnx.{op_type}")
