"""Textual IR that is a complete test case: small weights inline, the arch as a module attribute.

The module attribute ``aimc.arch`` records the architecture the IR is compiled for, as the
command line gives it: a preset and the values that differ from it,
``aimc.arch = {preset = "paper-512", "cluster.tcdm_kib" = 1 : i64}`` (an architecture that is
no preset lists every value). The compiler writes it before the passes run; ``aimcc opt`` and
``aimcc compile`` on text read it back (``--set`` changes it; ``--arch`` is refused, as the IR
was compiled for the recorded one). The preset's TOML stays the one place of its numbers and
their sources.

In memory a `graph.weight` names its tensor by key in the :class:`WeightStore` (passes read and
add weights there). In text, a weight of at most :data:`INLINE_BYTES` bytes also prints its
value, ``graph.weight "key" : tensor<2xf32> = dense<[1.0, 2.0]>`` (xDSL prints up to 100
elements as numbers and larger tensors as one hex string, both exact); larger weights stay named
by key only and are saved beside the file (``aimcc opt --save-weights w.npz``). Reading text moves
inline values into the store, so a file whose weights are all inline needs no ``--weights``.

Why not ``dense_resource`` with a ``{-# dialect_resources #-}`` blob section: the pinned xDSL
parses and prints it, but keeps the blobs on the builtin dialect object (one global store shared
by every parse), and a resource handle must be a bare identifier while weight keys keep ONNX
names (``onnx::MatMul_12``).

The threshold, 1 KiB: every scalar and shape constant of a real model, a test's 16x16 f32
weight, no bias or norm vector of a real model (768 f32 is 3 KiB): BERT-base's IR stays its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    BoolAttr,
    BytesAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute

from aimcc.arch import DEFAULT_ARCH, Arch, arch_changes, arch_from_changes, load_arch
from aimcc.errors import AimccError
from aimcc.ir.graph import WeightOp
from aimcc.ir.types import dtype_of, tensor_type
from aimcc.ir.weights import WeightStore

INLINE_BYTES = 1024  # weights up to this size print their value in textual IR
ARCH_ATTR = "aimc.arch"  # module attribute: the architecture the IR is compiled for


def arch_attr(arch: Arch) -> DictionaryAttr:
    """``arch`` as the ``aimc.arch`` module attribute: its preset and what differs from it."""
    preset, values = arch_changes(arch)
    entries: dict[str, Attribute] = {"preset": StringAttr(preset)} if preset else {}
    entries.update({key: _value_attr(value) for key, value in values.items()})
    return DictionaryAttr(entries)


def _value_attr(value: Any) -> Attribute:
    if isinstance(value, bool):
        return BoolAttr.from_bool(value)
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, float):
        return FloatAttr(value, f64)
    if isinstance(value, str):
        return StringAttr(value)
    return DenseArrayBase.from_list(f64, [float(v) for v in value])  # tuple[float, ...]


def module_arch(
    module: ModuleOp, arch: str | None = None, overrides: list[str] | None = None, where: str = ""
) -> Arch:
    """The architecture of textual IR: the one ``aimc.arch`` records (with ``--set``
    ``overrides``), else ``arch`` (a preset or TOML file; default the default preset)."""
    attr = module.attributes.get(ARCH_ATTR)
    if attr is None:
        return load_arch(arch or DEFAULT_ARCH, overrides)
    if arch is not None:
        raise AimccError(
            f"--arch {arch}: {where} records the architecture it is compiled for ({ARCH_ATTR}); "
            "change its values with --set"
        )
    if not isinstance(attr, DictionaryAttr):
        raise AimccError(f"{where}: {ARCH_ATTR} must be a dictionary, got {attr}")
    preset, values = None, {}
    for key, value in attr.data.items():
        if key == "preset":
            if not isinstance(value, StringAttr):
                raise AimccError(f"{where}: {ARCH_ATTR} preset must be a string")
            preset = value.data
        else:
            values[key] = _attr_value(value, key, where)
    return arch_from_changes(preset, values, overrides, f"{where}: {ARCH_ATTR}")


def _attr_value(attr: Attribute, key: str, where: str) -> Any:
    if isinstance(attr, IntegerAttr):
        typ = attr.type
        bool_typed = isinstance(typ, IntegerType) and typ.width.data == 1
        return bool(attr.value.data) if bool_typed else attr.value.data
    if isinstance(attr, FloatAttr):
        return attr.value.data
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return list(attr.get_values())
    raise AimccError(f"{where}: {ARCH_ATTR} '{key}' is not a number, string or array ({attr})")


def dense_attr(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    """The exact value of ``array`` as a dense elements attribute (bytes in C order)."""
    typ = tensor_type(array.shape, str(array.dtype))
    return DenseIntOrFPElementsAttr(typ, BytesAttr(np.ascontiguousarray(array).tobytes()))


def array_of(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    """The numpy array of a dense elements attribute (a splat fills its shape)."""
    typ = attr.get_type()
    assert isinstance(typ, TensorType)
    shape = tuple(typ.get_shape())
    dtype = _numpy_dtype(dtype_of(typ))
    if dtype == np.bool_:  # xDSL stores a parsed `true` as 0xff
        flat = np.frombuffer(attr.data.data, dtype=np.uint8) != 0
    else:
        flat = np.frombuffer(attr.data.data, dtype=dtype)
    if flat.size == 1 and int(np.prod(shape)) != 1:
        flat = np.repeat(flat, int(np.prod(shape)))
    return flat.reshape(shape).copy()


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":  # numpy has none of its own; ml_dtypes' (a torch/onnx dependency)
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def absorb_inline_weights(module: ModuleOp, weights: WeightStore, where: str) -> None:
    """Move every inline weight value of parsed text into ``weights`` under its key (a key that
    is also in the store beside the file must hold the same tensor)."""
    for op in module.walk():
        if isinstance(op, WeightOp) and op.value is not None:
            key = op.key.data
            array = array_of(op.value)
            if key in weights and not _same(weights[key], array):
                raise AimccError(
                    f"{where}: weight '{key}' is inline and in the weight store, with "
                    "different values"
                )
            if key not in weights:
                weights.put(key, array)
            del op.properties["value"]


def _prints_exactly(array: np.ndarray) -> bool:
    """Whether the value survives print and parse: xDSL prints a NaN or infinity of a short
    list as a hex integer, which its parser then reads as that number (so those stay in the
    store)."""
    return (array.dtype.kind != "f" and array.dtype.name != "bfloat16") or bool(
        np.isfinite(array.astype(np.float64)).all()
    )


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@contextmanager
def inlined(
    module: ModuleOp, weights: WeightStore, inline_bytes: int = INLINE_BYTES
) -> Iterator[set[str]]:
    """Inside, the weights of at most ``inline_bytes`` bytes carry their value (for printing);
    yields their keys (the text needs no store for them). The values are removed on exit."""
    carrying, keys = [], set()
    try:
        for op in module.walk():
            if not isinstance(op, WeightOp) or op.value is not None:
                continue
            array = weights.get(op.key.data)
            if array is not None and array.nbytes <= inline_bytes and _prints_exactly(array):
                op.properties["value"] = dense_attr(array)
                carrying.append(op)
                keys.add(op.key.data)
        yield keys
    finally:
        for op in carrying:
            del op.properties["value"]


def print_ir(module: ModuleOp, weights: WeightStore, inline_bytes: int = INLINE_BYTES) -> str:
    """The module as text with its small weights inline (:func:`inlined`)."""
    with inlined(module, weights, inline_bytes):
        return str(module)
