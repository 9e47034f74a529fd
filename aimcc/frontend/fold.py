"""numpy forms of the ONNX ops the importer meets most, so that compiling needs no torch.

The importer evaluates every node: constant ones to fold them, the others on zero-filled
stand-ins for their result types. The runtime's op library (``aimcc.runtime.onnx_ops``, torch)
stays the one definition of what an op computes; torch's import costs ~2.5 s, so these numpy
forms stand in for it where they cannot differ:

- ``EXACT`` ops are folded with numpy too: data movement, shape arithmetic, comparisons and
  logic, and IEEE-exact arithmetic (+, -, *, /), which give the same bits in numpy and torch
  (torch's vectorised sqrt is not correctly rounded: tests/test_frontend.py compares every op
  on onnx's node tests);
- ``TYPED`` ops (reductions, transcendental and matrix products whose rounding may differ) give
  result types only: a constant node of these is folded by the op library.

Anything else, any dtype outside numpy's native ones (bfloat16), mixed input dtypes, and any
error go to the op library (:class:`Defer`), which then gives the result or the error message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Arrays = list[np.ndarray | None]
Attrs = dict[str, Any]
Impl = Callable[[Arrays, Attrs], list[np.ndarray]]

EXACT: dict[str, Impl] = {}
TYPED: dict[str, Impl] = {}
_FLOAT_KINDS = "f"
# numpy's own types the op library has kernels for (not ml_dtypes' bfloat16 or float8, whose
# kind is 'f' too, nor uint16/32/64, which torch barely supports)
_NATIVE = {np.dtype(n) for n in ("float16", "float32", "float64", "int8", "int16", "int32")}
_NATIVE |= {np.dtype(n) for n in ("int64", "uint8", "bool")}
# Ops that compute new values (the others move or compare them): NaN results go to the library.
_ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Cast"}


class Defer(Exception):
    """The op library decides this case."""


def evaluate(op_type: str, args: Arrays, attrs: Attrs, constant: bool) -> list[np.ndarray]:
    """The op's results with numpy, or :class:`Defer` (also for any error: the op library's
    message is the one users see)."""
    impl = EXACT.get(op_type) or (None if constant else TYPED.get(op_type))
    if impl is None:
        raise Defer
    if any(a is not None and a.dtype not in _NATIVE for a in args):
        raise Defer
    try:
        with np.errstate(all="ignore"):  # inf as torch gives it, without warnings
            outs = [np.asarray(out) for out in impl(args, attrs)]
    except Defer:
        raise
    except Exception:  # the op library reports it in its own words
        raise Defer from None
    nan = constant and op_type in _ARITHMETIC  # (stand-ins' values are never used)
    if nan and any(o.dtype.kind == "f" and np.isnan(o).any() for o in outs):
        raise Defer  # NaN's sign and payload bits differ between the libraries
    return outs


def _register(table: dict[str, Impl], *names: str) -> Callable[[Impl], Impl]:
    def wrap(fn: Impl) -> Impl:
        for name in names:
            table[name] = fn
        return fn

    return wrap


def _same_dtype(arrays: Arrays) -> np.dtype:
    dtypes = {a.dtype for a in arrays if a is not None}
    if len(dtypes) != 1:  # torch and numpy promote differently
        raise Defer
    return dtypes.pop()


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise Defer
    return axis + rank if axis < 0 else axis


def _ints(args: Arrays, index: int, attrs: Attrs, name: str) -> list[int] | None:
    if len(args) > index and args[index] is not None:
        return [int(v) for v in args[index].reshape(-1)]
    value = attrs.get(name)
    return None if value is None else [int(v) for v in value]


def _stand_in(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zero-filled array of a result type that costs no memory (its values are never used)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


# ------------------------------------------------------------------------- exact: elementwise

_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Equal": np.equal,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
}
_UNARY = {"Neg": np.negative, "Abs": np.absolute, "Not": np.logical_not}


def _binary(fn: Callable[..., np.ndarray]) -> Impl:
    def impl(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
        _same_dtype(args[:2])
        return [fn(args[0], args[1])]

    return impl


def _unary(fn: Callable[..., np.ndarray]) -> Impl:
    def impl(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
        x = args[0]
        if x.dtype.kind == "b" and fn is not np.logical_not:
            raise Defer
        if x.dtype.kind == "u" and fn is np.negative:
            raise Defer
        return [fn(x)]

    return impl


for _name, _fn in _BINARY.items():
    EXACT[_name] = _binary(_fn)
for _name, _fn in _UNARY.items():
    EXACT[_name] = _unary(_fn)


@_register(EXACT, "Div")
def _div(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, y = args[0], args[1]
    _same_dtype([x, y])
    if x.dtype.kind in _FLOAT_KINDS:
        return [np.true_divide(x, y)]
    if x.dtype.kind == "b" or np.any(y == 0):
        raise Defer
    quotient = np.abs(x) // np.abs(y)  # ONNX integer Div truncates like C++
    return [np.where((x < 0) != (y < 0), -quotient, quotient).astype(x.dtype)]


def _variadic(fn: Callable[..., np.ndarray]) -> Impl:
    def impl(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
        _same_dtype(args)
        out = args[0]
        for a in args[1:]:
            out = fn(out, a)  # NaN propagates in both
        return [out]

    return impl


EXACT["Max"], EXACT["Min"] = _variadic(np.maximum), _variadic(np.minimum)


@_register(EXACT, "Where")
def _where(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    if args[0].dtype != np.bool_:
        raise Defer
    _same_dtype(args[1:3])
    return [np.where(args[0], args[1], args[2])]


@_register(EXACT, "Cast")
def _cast(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    from aimcc.runtime.onnx_meta import ELEM_TYPES

    x, name = args[0], ELEM_TYPES.get(attrs["to"])
    if name is None or name == "bfloat16":
        raise Defer
    target = np.dtype(name)
    if x.dtype.kind in _FLOAT_KINDS and target.kind not in "fb":
        raise Defer  # float -> int: out-of-range values differ between the libraries
    if target == np.float16 and x.dtype not in (np.float16, np.float32):
        raise Defer  # torch may round twice on the way
    return [x.astype(target)]


# -------------------------------------------------------------------------- exact: movement


@_register(EXACT, "Identity")
def _identity(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    return [args[0]]


@_register(EXACT, "Shape")
def _shape(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    dims = args[0].shape[attrs.get("start", 0) : attrs.get("end")]
    return [np.array(dims, np.int64)]


@_register(EXACT, "Size")
def _size(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    return [np.array(args[0].size, np.int64)]


@_register(EXACT, "Reshape")
def _reshape(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, shape = args[0], [int(s) for s in args[1].reshape(-1)]
    if not attrs.get("allowzero", 0) and 0 in shape:  # 0 copies the input's dimension
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return [x.reshape(shape)]


@_register(EXACT, "Flatten")
def _flatten(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, axis = args[0], attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise Defer
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@_register(EXACT, "Unsqueeze")
def _unsqueeze(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, axes = args[0], _ints(args, 1, attrs, "axes")
    if axes is None:
        raise Defer
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(sorted(_axis(a, rank) for a in axes)))]


@_register(EXACT, "Squeeze")
def _squeeze(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, axes = args[0], _ints(args, 1, attrs, "axes")
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, tuple(_axis(a, x.ndim) for a in axes))]


@_register(EXACT, "Transpose")
def _transpose(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    perm = attrs.get("perm")
    return [np.transpose(args[0], None if perm is None else tuple(perm))]


@_register(EXACT, "Concat")
def _concat(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    _same_dtype(args)
    if any(a.ndim == 0 for a in args):
        raise Defer
    return [np.concatenate(args, _axis(attrs["axis"], args[0].ndim))]


@_register(EXACT, "Split")
def _split(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x = args[0]
    axis = _axis(attrs.get("axis", 0), x.ndim)
    sizes = _ints(args, 1, attrs, "split")
    if sizes is None:  # equal parts, the last one smaller when uneven (opset 18)
        parts = attrs.get("num_outputs")
        if not parts:
            raise Defer
        step = -(-x.shape[axis] // parts)
        sizes = [min(step, x.shape[axis] - k) for k in range(0, x.shape[axis], step)]
    if sum(sizes) != x.shape[axis] or any(s < 0 for s in sizes):
        raise Defer
    return np.split(x, np.cumsum(sizes)[:-1].tolist(), axis)


@_register(EXACT, "Slice")
def _slice(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x = args[0]
    if len(args) > 1:
        starts, ends = _ints(args, 1, attrs, ""), _ints(args, 2, attrs, "")
        axes, steps = _ints(args, 3, attrs, ""), _ints(args, 4, attrs, "")
    else:  # opset < 10 attribute form
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    steps = steps or [1] * len(starts)
    axes = axes if axes is not None else list(range(len(starts)))
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise Defer
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = _axis(axis, x.ndim)
        dim = x.shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, end, step)
        else:  # ONNX clamps to [0, dim-1] and [-1, dim-1]; -1 is "before the first"
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(start, None if end < 0 else end, step) if dim else slice(0, 0)
    return [x[tuple(index)]]


@_register(EXACT, "Gather")
def _gather(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, indices = args[0], args[1]
    if indices.dtype.kind not in "iu":
        raise Defer
    axis = _axis(attrs.get("axis", 0), x.ndim)
    dim = x.shape[axis]
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        raise Defer
    return [np.take(x, indices, axis)]


@_register(EXACT, "GatherND")
def _gather_nd(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, indices = args[0], args[1]
    if attrs.get("batch_dims", 0) or indices.dtype.kind not in "iu" or indices.ndim == 0:
        raise Defer
    depth = indices.shape[-1]
    if depth > x.ndim:
        raise Defer
    dims = np.array(x.shape[:depth], np.int64)
    flat = indices.reshape(-1, depth).astype(np.int64)
    if flat.size and ((flat < -dims).any() or (flat >= dims).any()):
        raise Defer
    flat = np.where(flat < 0, flat + dims, flat)
    picked = x[tuple(flat.T)] if depth else np.broadcast_to(x, (flat.shape[0], *x.shape))
    return [picked.reshape(indices.shape[:-1] + x.shape[depth:])]


@_register(EXACT, "Expand")
def _expand(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, shape = args[0], tuple(int(s) for s in args[1].reshape(-1))
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, shape))]


@_register(EXACT, "Tile")
def _tile(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    repeats = [int(r) for r in args[1].reshape(-1)]
    if len(repeats) != args[0].ndim or any(r < 0 for r in repeats):
        raise Defer
    return [np.tile(args[0], repeats)]


@_register(EXACT, "Range")
def _range(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    start, limit, delta = args[0], args[1], args[2]
    dtype = _same_dtype([start, limit, delta])
    if dtype.kind not in "iu" or int(delta) == 0:
        raise Defer  # float ranges: the libraries step differently
    return [np.arange(int(start), int(limit), int(delta), dtype=dtype)]


@_register(EXACT, "ConstantOfShape")
def _constant_of_shape(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    shape = [int(s) for s in args[0].reshape(-1)]
    value = attrs.get("value")
    if value is None:
        return [np.zeros(shape, np.float32)]
    if value.dtype not in _NATIVE:
        raise Defer
    return [np.full(shape, value.reshape(()), value.dtype)]


@_register(EXACT, "Constant")
def _constant(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    if "value" in attrs:
        return [attrs["value"]]
    for name, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if name in attrs:
            return [np.array(attrs[name], dtype)]
    raise Defer


# -------------------------------------------------------------------------- types only

_GELU = ("none", "tanh")


def _like_float(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    """Elementwise (and Softmax's) result: the input's type, with the op's checks."""
    x = args[0]
    if x.dtype.kind not in _FLOAT_KINDS or attrs.get("approximate", "none") not in _GELU:
        raise Defer
    if "axis" in attrs:
        _axis(attrs["axis"], x.ndim)
    return [_stand_in(x.shape, x.dtype)]


for _name in (
    "Erf", "Tanh", "Sigmoid", "Exp", "Log", "Cos", "Sin", "Relu", "Gelu", "Softmax",
    "LogSoftmax", "Softplus", "Round", "Floor", "Ceil", "Sqrt", "Reciprocal",
):  # fmt: skip
    TYPED[_name] = _like_float


@_register(TYPED, "Pow")
def _pow(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x, y = args[0], args[1]
    if x.dtype.kind not in _FLOAT_KINDS or y.dtype.kind not in _FLOAT_KINDS:
        raise Defer
    return [_stand_in(np.broadcast_shapes(x.shape, y.shape), x.dtype)]


@_register(TYPED, "LayerNormalization", "RMSNormalization")
def _normalization(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x = args[0]
    _same_dtype(args)
    if x.dtype.kind not in _FLOAT_KINDS:
        raise Defer
    axis = _axis(attrs.get("axis", -1), x.ndim)
    tail = x.shape[axis:]
    for param in args[1:]:
        if param is not None and np.broadcast_shapes(param.shape, tail) != tail:
            raise Defer
    stats = x.shape[:axis] + (1,) * len(tail)
    return [_stand_in(x.shape, x.dtype), _stand_in(stats, x.dtype), _stand_in(stats, x.dtype)]


@_register(TYPED, "MatMul")
def _matmul(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    a, b = args[0], args[1]
    dtype = _same_dtype([a, b])
    if dtype.kind not in "iuf" or a.ndim == 0 or b.ndim == 0:
        raise Defer
    a_dim, b_dim = a.shape[-1], b.shape[-2 if b.ndim > 1 else 0]
    if a_dim != b_dim:
        raise Defer
    # the contracted axis emptied: the result's type for the cost of filling it
    empty = np.matmul(a[..., :0], b[..., :0, :] if b.ndim > 1 else b[:0])
    return [_stand_in(empty.shape, dtype)]


@_register(TYPED, "Gemm")
def _gemm(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    a, b, c = args[0], args[1], args[2] if len(args) > 2 else None
    dtype = _same_dtype([a, b, c])
    if dtype.kind not in _FLOAT_KINDS or a.ndim != 2 or b.ndim != 2:
        raise Defer
    (m, k) = a.shape[::-1] if attrs.get("transA", 0) else a.shape
    (k2, n) = b.shape[::-1] if attrs.get("transB", 0) else b.shape
    if k != k2 or (c is not None and np.broadcast_shapes(c.shape, (m, n)) != (m, n)):
        raise Defer
    return [_stand_in((m, n), dtype)]


@_register(TYPED, "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin")
def _reduce(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x = args[0]
    if x.dtype.kind not in _FLOAT_KINDS or x.ndim == 0:
        raise Defer
    axes = _ints(args, 1, attrs, "axes")
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            raise Defer
        axes = list(range(x.ndim))
    axes = sorted({_axis(a, x.ndim) for a in axes})
    if attrs.get("keepdims", 1):
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [_stand_in(shape, x.dtype)]


@_register(TYPED, "Clip")
def _clip(args: Arrays, attrs: Attrs) -> list[np.ndarray]:
    x = args[0]
    _same_dtype(args)
    if any(a is not None and a.size != 1 for a in args[1:]):
        raise Defer
    return [_stand_in(x.shape, x.dtype)]
