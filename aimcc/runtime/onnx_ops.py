"""Generic ONNX operators on torch tensors, shared by the runtime and the frontend constant folder.

One table serves both so that a subgraph folded at compile time and the same subgraph executed at
run time give identical bits. Each kernel maps ONNX semantics (opset 11..23 forms: axes/split/pads
as attributes or as inputs) onto one or a few torch calls and returns views where ONNX allows it,
because per-call Python overhead and copies dominate small transformer ops on CPU.

An op may return more outputs than its node asks for (optional trailing outputs such as Dropout's
mask or LayerNormalization's mean); callers take the first ``len(node.output)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aimcc.errors import AimccError
from aimcc.runtime.onnx_meta import ELEM_TYPES

Tensors = list[torch.Tensor | None]
Attrs = dict[str, Any]
OpImpl = Callable[[list[torch.Tensor | None], dict[str, Any]], list[torch.Tensor]]

ONNX_OPS: dict[str, OpImpl] = {}

UINT8 = 2  # onnx.proto TensorProto.UINT8
ONNX_TO_TORCH_DTYPE: dict[int, torch.dtype] = {
    code: getattr(torch, name) for code, name in ELEM_TYPES.items()
}


def _torch_dtype(onnx_dtype: int) -> torch.dtype:
    """ONNX element type -> torch dtype, or a user-facing error for types torch cannot hold."""
    dtype = ONNX_TO_TORCH_DTYPE.get(onnx_dtype)
    if dtype is None:
        from aimcc.frontend.proto import type_name

        name = type_name(onnx_dtype)
        raise AimccError(f"ONNX element type {name} is not supported by the aimcc runtime")
    return dtype


def to_torch(a: np.ndarray) -> torch.Tensor:
    """numpy -> torch without a copy when the array is writable and positively strided."""
    a = np.asarray(a)
    if not a.flags.writeable or any(stride < 0 for stride in a.strides):
        a = a.copy()
    if a.dtype.name == "bfloat16":  # numpy has no native bfloat16 (ml_dtypes'); reinterpret
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """torch -> numpy sharing memory; bfloat16 comes back as ml_dtypes.bfloat16."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # only for bfloat16: its import takes ~0.8 s

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def run_op(
    op_type: str, inputs: list[torch.Tensor | None], attrs: dict[str, Any]
) -> list[torch.Tensor]:
    """Execute one default-domain ONNX op."""
    impl = ONNX_OPS.get(op_type)
    if impl is None:
        raise AimccError(f"unsupported ONNX op '{op_type}'")
    return impl(inputs, attrs)


def supported_ops() -> list[str]:
    """Sorted op_types of the default domain that run_op executes."""
    return sorted(ONNX_OPS)


def _register(op_type: str) -> Callable[[OpImpl], OpImpl]:
    def wrap(fn: OpImpl) -> OpImpl:
        ONNX_OPS[op_type] = fn
        return fn

    return wrap


def _opt(inputs: Tensors, index: int) -> torch.Tensor | None:
    """Optional input: absent when the list is short or the slot is None (empty name in ONNX)."""
    return inputs[index] if len(inputs) > index else None


def _ints_input(inputs: Tensors, index: int) -> list[int] | None:
    t = _opt(inputs, index)
    return t.tolist() if t is not None else None


def _ints_input_or_attr(inputs: Tensors, index: int, attrs: Attrs, name: str) -> list[int] | None:
    """Opset 13+ moved axes/split from attributes to inputs; accept both forms."""
    t = _opt(inputs, index)
    return t.tolist() if t is not None else attrs.get(name)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ----------------------------------------------------------------------------------- elementwise


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> OpImpl:
    return lambda inputs, attrs: [fn(inputs[0])]


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpImpl:
    return lambda inputs, attrs: [fn(inputs[0], inputs[1])]


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpImpl:
    return lambda inputs, attrs: [reduce(fn, inputs)]


for _name, _fn in {
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal,
    "Exp": torch.exp,
    "Log": torch.log,
    "Erf": torch.erf,
    "Tanh": torch.tanh,
    "Sigmoid": torch.sigmoid,
    "Relu": torch.relu,
    "Cos": torch.cos,
    "Sin": torch.sin,
    "Tan": torch.tan,
    "Acos": torch.acos,
    "Asin": torch.asin,
    "Atan": torch.atan,
    "Cosh": torch.cosh,
    "Sinh": torch.sinh,
    "Acosh": torch.acosh,
    "Asinh": torch.asinh,
    "Atanh": torch.atanh,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX
    "Sign": torch.sign,
    "Not": torch.logical_not,
    "BitwiseNot": torch.bitwise_not,
    "IsNaN": torch.isnan,
    "HardSwish": F.hardswish,
    "Mish": F.mish,
    "Softsign": F.softsign,
    "Softplus": F.softplus,
    "Identity": lambda x: x,
}.items():
    ONNX_OPS[_name] = _unary(_fn)

for _name, _fn in {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor,
    "MatMul": torch.matmul,
}.items():
    ONNX_OPS[_name] = _binary(_fn)

ONNX_OPS["Max"] = _variadic(torch.maximum)
ONNX_OPS["Min"] = _variadic(torch.minimum)
ONNX_OPS["Sum"] = _variadic(torch.add)


@_register("Mean")
def _mean(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [reduce(torch.add, inputs) / len(inputs)]


@_register("Div")
def _div(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, y = inputs[0], inputs[1]
    if x.is_floating_point():
        return [torch.div(x, y)]
    return [torch.div(x, y, rounding_mode="trunc")]  # ONNX integer Div truncates like C++


@_register("Mod")
def _mod(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    # fmod=1: sign of the dividend (C fmod); fmod=0: sign of the divisor (Python %).
    fn = torch.fmod if attrs.get("fmod", 0) else torch.remainder
    return [fn(inputs[0], inputs[1])]


@_register("Pow")
def _pow(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    y = torch.pow(x, inputs[1])
    return [y if y.dtype == x.dtype else y.to(x.dtype)]  # ONNX keeps the base's type


@_register("BitShift")
def _bit_shift(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    fn = torch.bitwise_left_shift if attrs["direction"] == "LEFT" else torch.bitwise_right_shift
    return [fn(inputs[0], inputs[1])]


@_register("Where")
def _where(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.where(inputs[0], inputs[1], inputs[2])]


@_register("IsInf")
def _is_inf(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    positive, negative = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if positive and negative:
        return [torch.isinf(x)]
    if positive:
        return [torch.isposinf(x)]
    if negative:
        return [torch.isneginf(x)]
    return [torch.zeros(x.shape, dtype=torch.bool)]


@_register("Clip")
def _clip(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, low, high = inputs[0], _opt(inputs, 1), _opt(inputs, 2)
    if low is None and high is None:  # opset < 11 carries the bounds as attributes
        low, high = attrs.get("min"), attrs.get("max")
    if low is None and high is None:
        return [x]
    return [torch.clamp(x, low, high)]


@_register("Cast")
def _cast(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [inputs[0].to(_torch_dtype(attrs["to"]))]


@_register("CastLike")
def _cast_like(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [inputs[0].to(inputs[1].dtype)]


# ------------------------------------------------------------------------------------ activations


@_register("Gelu")
def _gelu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [F.gelu(inputs[0], approximate=attrs.get("approximate", "none"))]


@_register("LeakyRelu")
def _leaky_relu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))]


@_register("Elu")
def _elu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [F.elu(inputs[0], attrs.get("alpha", 1.0))]


@_register("Celu")
def _celu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [F.celu(inputs[0], attrs.get("alpha", 1.0))]


@_register("Selu")
def _selu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return [F.elu(inputs[0], alpha) * gamma]


@_register("ThresholdedRelu")
def _thresholded_relu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    return [torch.where(x > attrs.get("alpha", 1.0), x, 0.0)]


@_register("PRelu")
def _prelu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    return [torch.where(x < 0, x * inputs[1], x)]


@_register("HardSigmoid")
def _hard_sigmoid(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    return [torch.clamp(inputs[0] * alpha + beta, 0.0, 1.0)]


@_register("Swish")
def _swish(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    alpha = attrs.get("alpha", 1.0)
    return [x * torch.sigmoid(x * alpha if alpha != 1.0 else x)]


@_register("Softmax")
def _softmax(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.softmax(inputs[0], attrs.get("axis", -1))]  # opset 13+ semantics


@_register("LogSoftmax")
def _log_softmax(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.log_softmax(inputs[0], attrs.get("axis", -1))]  # opset 13+ semantics


@_register("Hardmax")
def _hardmax(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    axis = attrs.get("axis", -1)
    return [torch.zeros_like(x).scatter_(axis, x.argmax(axis, keepdim=True), 1)]


# ---------------------------------------------------------------------------------- normalization


@_register("LayerNormalization")
def _layer_norm(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, scale, bias = inputs[0], inputs[1], _opt(inputs, 2)
    shape = x.shape[_axis(attrs.get("axis", -1), x.ndim) :]
    eps = attrs.get("epsilon", 1e-5)
    # torch fuses the affine part only for full-shape parameters; ONNX also allows broadcast ones.
    if scale.shape == shape and (bias is None or bias.shape == shape):
        return list(torch.native_layer_norm(x, shape, scale, bias, eps))
    y, mean, inv_std = torch.native_layer_norm(x, shape, None, None, eps)
    y = y * scale if bias is None else torch.addcmul(bias, y, scale)
    return [y, mean, inv_std]


@_register("RMSNormalization")
def _rms_norm(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, scale = inputs[0], inputs[1]
    shape = x.shape[_axis(attrs.get("axis", -1), x.ndim) :]
    eps = attrs.get("epsilon", 1e-5)
    if scale.shape == shape:
        return [F.rms_norm(x, shape, scale, eps)]
    return [F.rms_norm(x, shape, None, eps) * scale]


@_register("LpNormalization")
def _lp_normalization(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    norm = torch.linalg.vector_norm(x, attrs.get("p", 2), attrs.get("axis", -1), keepdim=True)
    return [torch.where(norm == 0, 0.0, x / norm).to(x.dtype)]


# ----------------------------------------------------------------------------------- linear algebra


@_register("Gemm")
def _gemm(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    a, b, c = inputs[0], inputs[1], _opt(inputs, 2)
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if c is not None and a.is_floating_point():
        return [torch.addmm(c, a, b, beta=beta, alpha=alpha)]
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return [y.to(a.dtype)]


@_register("MatMulInteger")
def _matmul_integer(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    a, b = inputs[0].to(torch.int32), inputs[1].to(torch.int32)
    a_zero, b_zero = _opt(inputs, 2), _opt(inputs, 3)
    if a_zero is not None:  # scalar or one per row of A
        a = a - (a_zero.to(torch.int32) if a_zero.ndim == 0 else a_zero.to(torch.int32)[:, None])
    if b_zero is not None:  # scalar or one per column of B
        b = b - b_zero.to(torch.int32)
    return [torch.matmul(a, b)]


@_register("Einsum")
def _einsum(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.einsum(attrs["equation"].replace(" ", ""), *inputs)]


# ---------------------------------------------------------------------------------- shape & layout


@_register("Transpose")
def _transpose(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    perm = attrs.get("perm")
    return [x.permute(perm if perm is not None else tuple(reversed(range(x.ndim))))]


@_register("Reshape")
def _reshape(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    shape = inputs[1].tolist()
    if not attrs.get("allowzero", 0) and 0 in shape:  # 0 copies the input's dimension
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return [x.reshape(shape)]


@_register("Flatten")
def _flatten(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    axis = _axis(attrs.get("axis", 1), x.ndim)
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@_register("Unsqueeze")
def _unsqueeze(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    axes = _ints_input_or_attr(inputs, 1, attrs, "axes")
    rank = x.ndim + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return [x]


@_register("Squeeze")
def _squeeze(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    axes = _ints_input_or_attr(inputs, 1, attrs, "axes")
    return [x.squeeze() if axes is None else x.squeeze(tuple(axes))]


@_register("Concat")
def _concat(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.cat(inputs, attrs["axis"])]


@_register("Split")
def _split(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    axis = attrs.get("axis", 0)
    sizes = _ints_input_or_attr(inputs, 1, attrs, "split")
    if sizes is None:  # equal parts, the last one smaller when uneven (opset 18)
        parts = attrs.get("num_outputs")
        if parts is None:
            raise AimccError("Split needs split sizes or num_outputs (attrs_from_node records it)")
        sizes = -(-x.shape[axis] // parts)
    return list(torch.split(x, sizes, axis))


@_register("Slice")
def _slice(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    if len(inputs) > 1:
        starts, ends = inputs[1].tolist(), inputs[2].tolist()
        axes = _ints_input(inputs, 3)
        steps = _ints_input(inputs, 4) or [1] * len(starts)
    else:  # opset < 10 attribute form
        starts, ends, axes = attrs["starts"], attrs["ends"], attrs.get("axes")
        steps = [1] * len(starts)
    if axes is None:
        axes = range(len(starts))
    index = [slice(None)] * x.ndim
    flip_axes = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = _axis(axis, x.ndim)
        if step > 0:  # Python slicing clamps exactly like ONNX for positive steps
            index[axis] = slice(start, end, step)
            continue
        # torch has no negative steps: flip the axis and slice the mirrored, ONNX-clamped range.
        dim = x.shape[axis]
        first = min(max(start + dim if start < 0 else start, 0), dim - 1)
        stop = min(max(end + dim if end < 0 else end, -1), dim - 1)
        index[axis] = slice(dim - 1 - first, dim - 1 - stop, -step)
        flip_axes.append(axis)
    if flip_axes:
        x = x.flip(flip_axes)
    return [x[tuple(index)]]


@_register("Gather")
def _gather(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, indices = inputs[0], inputs[1]
    axis = _axis(attrs.get("axis", 0), x.ndim)
    if indices.ndim == 0:
        return [x.select(axis, int(indices))]  # a view; select accepts negative indices
    flat = indices.reshape(-1).remainder(x.shape[axis])  # negative indices count from the end
    out = x.index_select(axis, flat)
    return [out.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1 :])]


@_register("GatherElements")
def _gather_elements(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, indices = inputs[0], inputs[1]
    axis = attrs.get("axis", 0)
    return [torch.gather(x, axis, indices.remainder(x.shape[axis]).long())]


@_register("Expand")
def _expand(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    # ONNX broadcasts both ways (a target dim of 1 keeps the input's dim); torch.expand does not.
    # numpy's broadcast_shapes: torch's imports sympy (0.5 s) on first use.
    return [x.expand(np.broadcast_shapes(tuple(x.shape), tuple(inputs[1].tolist())))]


@_register("Tile")
def _tile(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [inputs[0].repeat(inputs[1].tolist())]


@_register("Pad")
def _pad(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    mode = attrs.get("mode", "constant")
    if len(inputs) > 1:
        pads = inputs[1].tolist()
        value_t = _opt(inputs, 2)
        value = value_t.item() if value_t is not None else 0
        axes = _ints_input(inputs, 3)
    else:  # opset < 11 attribute form
        pads, value, axes = attrs["pads"], attrs.get("value", 0.0), None
    axes = [_axis(a, x.ndim) for a in axes] if axes is not None else list(range(x.ndim))
    begins, ends = pads[: len(axes)], pads[len(axes) :]
    if mode == "constant":
        torch_pads = [0] * (2 * x.ndim)  # torch orders (begin, end) pairs from the last axis
        for axis, begin, end in zip(axes, begins, ends, strict=True):
            torch_pads[2 * (x.ndim - 1 - axis)] = begin
            torch_pads[2 * (x.ndim - 1 - axis) + 1] = end
        return [F.pad(x, torch_pads, value=value)]
    # Other modes: gather each padded axis through an index map (any rank and dtype).
    for axis, begin, end in zip(axes, begins, ends, strict=True):
        if begin == 0 and end == 0:
            continue
        dim = x.shape[axis]
        index = torch.arange(-begin, dim + end)
        if mode == "edge":
            index = index.clamp(0, dim - 1)
        elif mode == "wrap":
            index = index.remainder(dim)
        elif mode == "reflect":
            period = 2 * (dim - 1)
            index = index.remainder(period) if period else torch.zeros_like(index)
            index = torch.where(index >= dim, period - index, index)
        else:
            raise AimccError(f"Pad mode '{mode}' is not supported")
        x = x.index_select(axis, index)
    return [x]


@_register("Trilu")
def _trilu(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    k_t = _opt(inputs, 1)
    k = int(k_t) if k_t is not None else 0
    fn = torch.triu if attrs.get("upper", 1) else torch.tril
    return [fn(inputs[0], k)]


# ---------------------------------------------------------------------------- shape-valued & data


@_register("Shape")
def _shape(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    dims = inputs[0].shape[attrs.get("start", 0) : attrs.get("end")]
    return [torch.tensor(dims, dtype=torch.int64)]


@_register("Size")
def _size(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.tensor(inputs[0].numel(), dtype=torch.int64)]


@_register("Range")
def _range(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    start, limit, delta = inputs[0], inputs[1], inputs[2]
    return [torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)]


@_register("ConstantOfShape")
def _constant_of_shape(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    shape = inputs[0].tolist()
    value = attrs.get("value")
    if value is None:
        return [torch.zeros(shape, dtype=torch.float32)]
    fill = to_torch(value).reshape(())
    return [fill.expand(shape).clone()]


@_register("Constant")
def _constant(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    if "value" in attrs:
        return [to_torch(attrs["value"])]
    for name, dtype in (
        ("value_float", torch.float32),
        ("value_floats", torch.float32),
        ("value_int", torch.int64),
        ("value_ints", torch.int64),
    ):
        if name in attrs:
            return [torch.tensor(attrs[name], dtype=dtype)]
    raise AimccError(f"Constant with attributes {sorted(attrs)} is not supported")


@_register("Dropout")
def _dropout(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, ratio, training = inputs[0], _opt(inputs, 1), _opt(inputs, 2)
    ratio_value = float(ratio) if ratio is not None else attrs.get("ratio", 0.5)
    if training is not None and bool(training) and ratio_value != 0.0:
        raise AimccError("Dropout in training mode is random; aimcc runs inference graphs only")
    return [x, torch.ones(x.shape, dtype=torch.bool)]


def _cumulative(fn: Callable[..., torch.Tensor], identity: int) -> OpImpl:
    """CumSum/CumProd with ONNX's exclusive (shift by one) and reverse flags."""

    def impl(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
        x = inputs[0]
        axis = int(inputs[1])
        reverse = attrs.get("reverse", 0)
        if reverse:
            x = x.flip(axis)
        y = fn(x, axis, dtype=x.dtype)
        if attrs.get("exclusive", 0):
            head = torch.full_like(y.narrow(axis, 0, 1), identity)
            y = torch.cat((head, y.narrow(axis, 0, y.shape[axis] - 1)), axis)
        return [y.flip(axis) if reverse else y]

    return impl


ONNX_OPS["CumSum"] = _cumulative(torch.cumsum, 0)
ONNX_OPS["CumProd"] = _cumulative(torch.cumprod, 1)


@_register("TopK")
def _top_k(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, k_t = inputs[0], _opt(inputs, 1)
    k = int(k_t) if k_t is not None else attrs["k"]
    axis = attrs.get("axis", -1)
    # A stable sort keeps the lower index first among equal values, as ONNX requires.
    values, indices = torch.sort(x, dim=axis, descending=bool(attrs.get("largest", 1)), stable=True)
    return [values.narrow(axis, 0, k), indices.narrow(axis, 0, k)]


@_register("GatherND")
def _gather_nd(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    data, indices = inputs[0], inputs[1]
    batch_dims = attrs.get("batch_dims", 0)
    depth = indices.shape[-1]
    batch = math.prod(data.shape[:batch_dims])
    flat_data = data.reshape(batch, *data.shape[batch_dims:])
    index_shape = data.shape[batch_dims : batch_dims + depth]
    flat_index = indices.reshape(batch, -1, depth).remainder(torch.tensor(index_shape))
    batch_index = torch.arange(batch).reshape(batch, 1)
    out = flat_data[(batch_index, *flat_index.unbind(-1))]
    return [out.reshape(indices.shape[:-1] + data.shape[batch_dims + depth :])]


_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@_register("ScatterElements")
def _scatter_elements(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    data, indices, updates = inputs[0], inputs[1], inputs[2]
    axis = attrs.get("axis", 0)
    indices = indices.remainder(data.shape[axis]).long()
    reduction = attrs.get("reduction", "none")
    if reduction == "none":
        return [data.scatter(axis, indices, updates)]
    return [data.scatter_reduce(axis, indices, updates, _SCATTER_REDUCE[reduction])]


@_register("ScatterND")
def _scatter_nd(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    data, indices, updates = inputs[0], inputs[1], inputs[2]
    depth = indices.shape[-1]
    index_shape = data.shape[:depth]
    # Address the indexed slices through one linear index into a [slices, *rest] view.
    strides = torch.tensor([math.prod(index_shape[k + 1 :]) for k in range(depth)])
    linear = (indices.reshape(-1, depth).remainder(torch.tensor(index_shape)) * strides).sum(1)
    out = data.clone()
    flat = out.view(-1, *data.shape[depth:])
    flat_updates = updates.reshape(-1, *data.shape[depth:])
    reduction = attrs.get("reduction", "none")
    if reduction == "none":
        flat.index_copy_(0, linear, flat_updates)
    elif reduction == "add":
        flat.index_add_(0, linear, flat_updates)
    else:
        flat.index_reduce_(0, linear, flat_updates, _SCATTER_REDUCE[reduction])
    return [out]


@_register("NonZero")
def _non_zero(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    return [torch.nonzero(inputs[0]).T]


@_register("OneHot")
def _one_hot(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    indices, depth_t, values = inputs[0].to(torch.int64), inputs[1], inputs[2]
    depth = int(depth_t.item())
    indices = torch.where(indices < 0, indices + depth, indices)  # out-of-range stays all "off"
    axis = _axis(attrs.get("axis", -1), indices.ndim + 1)
    classes_shape = [1] * (indices.ndim + 1)
    classes_shape[axis] = depth
    hot = indices.unsqueeze(axis) == torch.arange(depth).reshape(classes_shape)
    return [torch.where(hot, values[1], values[0])]


@_register("EyeLike")
def _eye_like(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x = inputs[0]
    dtype = attrs.get("dtype")
    rows, cols = x.shape
    diagonal = torch.arange(cols) - torch.arange(rows)[:, None] == attrs.get("k", 0)
    return [diagonal.to(_torch_dtype(dtype) if dtype is not None else x.dtype)]


# -------------------------------------------------------------------------------------- reductions


def _reduction(fn: Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]) -> OpImpl:
    """Wrap fn(x, dims, keepdim) with ONNX axes handling (input or attribute, empty = all)."""

    def impl(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
        x = inputs[0]
        axes = _ints_input_or_attr(inputs, 1, attrs, "axes")
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            dims = tuple(range(x.ndim))
        else:
            dims = tuple(_axis(a, x.ndim) for a in axes)
        return [fn(x, dims, bool(attrs.get("keepdims", 1)))]

    return impl


def _extremum(fn: Callable[..., torch.Tensor], empty_fill: float) -> OpImpl:
    """amax/amin reject empty reductions; ONNX defines them as -inf/+inf (or the type's bound)."""

    def reduce_fn(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
        if x.numel() != 0:
            return fn(x, dims, keep)
        shape = [1 if k in dims else s for k, s in enumerate(x.shape) if keep or k not in dims]
        if x.dtype == torch.bool:
            empty_value = empty_fill > 0
        elif not x.is_floating_point():
            info = torch.iinfo(x.dtype)
            empty_value = info.min if empty_fill < 0 else info.max
        else:
            empty_value = empty_fill
        return torch.full(shape, empty_value, dtype=x.dtype)

    return _reduction(reduce_fn)


def _reduce_prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for dim in dims:  # torch.prod reduces one dim at a time
        x = x.prod(dim, keepdim=True, dtype=x.dtype)
    return x if keep else x.squeeze(dims)


def _sum_square(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    return (x * x).sum(dims, keepdim=keep, dtype=x.dtype)


def _reduce_l2(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    return torch.sqrt(_sum_square(x, dims, keep)).to(x.dtype)


ONNX_OPS["ReduceSum"] = _reduction(lambda x, d, k: x.sum(d, keepdim=k, dtype=x.dtype))
ONNX_OPS["ReduceMean"] = _reduction(lambda x, d, k: x.mean(d, keepdim=k))
ONNX_OPS["ReduceMax"] = _extremum(torch.amax, -math.inf)
ONNX_OPS["ReduceMin"] = _extremum(torch.amin, math.inf)
ONNX_OPS["ReduceProd"] = _reduction(_reduce_prod)
ONNX_OPS["ReduceSumSquare"] = _reduction(_sum_square)
ONNX_OPS["ReduceL1"] = _reduction(lambda x, d, k: x.abs().sum(d, keepdim=k, dtype=x.dtype))
ONNX_OPS["ReduceL2"] = _reduction(_reduce_l2)
ONNX_OPS["ReduceLogSum"] = _reduction(lambda x, d, k: torch.log(x.sum(d, keepdim=k)))
ONNX_OPS["ReduceLogSumExp"] = _reduction(lambda x, d, k: torch.logsumexp(x, d, keepdim=k))


def _arg_extremum(fn: Callable[..., torch.Tensor]) -> OpImpl:
    def impl(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
        x = inputs[0]
        axis = attrs.get("axis", 0)
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):  # torch returns the first hit; search mirrored
            return [x.shape[axis] - 1 - fn(x.flip(axis), axis, keep)]
        return [fn(x, axis, keep)]

    return impl


ONNX_OPS["ArgMax"] = _arg_extremum(torch.argmax)
ONNX_OPS["ArgMin"] = _arg_extremum(torch.argmin)


# ------------------------------------------------------------------------------------ quantization


def _per_axis(param: torch.Tensor, x: torch.Tensor, axis: int, block_size: int) -> torch.Tensor:
    """Shape a scale/zero-point (scalar, per-axis 1-D, or blocked) to broadcast against x."""
    if param.ndim == 0 or param.numel() == 1:
        return param.reshape(())
    if block_size:
        return param.repeat_interleave(block_size, axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.ndim
    shape[axis] = -1
    return param.reshape(shape)


@_register("DequantizeLinear")
def _dequantize_linear(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, scale, zero = inputs[0], inputs[1], _opt(inputs, 2)
    axis, block = _axis(attrs.get("axis", 1), x.ndim), attrs.get("block_size", 0)
    y = x.to(torch.float32)
    if zero is not None:
        y = y - _per_axis(zero, x, axis, block).to(torch.float32)
    y = y * _per_axis(scale, x, axis, block).to(torch.float32)
    out_dtype = attrs.get("output_dtype", 0)
    return [y.to(_torch_dtype(out_dtype) if out_dtype else scale.dtype)]


@_register("QuantizeLinear")
def _quantize_linear(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    x, scale, zero = inputs[0], inputs[1], _opt(inputs, 2)
    axis, block = _axis(attrs.get("axis", 1), x.ndim), attrs.get("block_size", 0)
    if zero is not None:
        out_dtype = zero.dtype
    else:
        out_dtype = _torch_dtype(attrs.get("output_dtype", 0) or UINT8)
    if out_dtype.is_floating_point:
        raise AimccError(f"QuantizeLinear to {out_dtype} is not supported")
    y = torch.round(x.to(torch.float32) / _per_axis(scale, x, axis, block).to(torch.float32))
    if zero is not None:
        y = y + _per_axis(zero, x, axis, block).to(torch.float32)
    info = torch.iinfo(out_dtype)
    return [y.clamp(info.min, info.max).to(out_dtype)]


@_register("DynamicQuantizeLinear")
def _dynamic_quantize_linear(inputs: Tensors, attrs: Attrs) -> list[torch.Tensor]:
    """uint8 affine quantization whose range always includes 0 (ORT dynamic quantization)."""
    x = inputs[0].to(torch.float32)
    low, high = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
    scale = (high - low) / 255.0
    zero = torch.round(torch.clamp(-low / scale, 0.0, 255.0))
    y = torch.clamp(torch.round(x / scale) + zero, 0.0, 255.0)
    return [y.to(torch.uint8), scale, zero.to(torch.uint8)]
