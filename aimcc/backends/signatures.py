"""What each RISC-V kernel computes (its signature), its arguments and its TCDM footprint.

Plain Python, no xDSL: every compile plans its kernels for the manifest from these, and only
``--emit-riscv`` imports the generator (`riscv.py`) and xDSL's RISC-V dialects (~0.3 s).
"""

import math as pymath
from dataclasses import dataclass
from functools import cache

from aimcc.errors import AimccError

_OPS = ("add", "sub", "mul", "div")
# binary elementwise kind -> (op, how b broadcasts): y = a op b, b of a's shape (""), one value
# per column ("row", b: (N,), as a bias; bias_add is add_row) or one per row ("col", b: (M,)).
_BINARY_KINDS: dict[str, tuple[str, str]] = {
    **{op: (op, "") for op in _OPS},
    "bias_add": ("add", "row"),
    **{f"{op}_row": (op, "row") for op in _OPS[1:]},
    **{f"{op}_col": (op, "col") for op in _OPS},
}

# float data is in the cluster's number format (arch.cluster.kernel_dtype): f16 (Zfh) or f32
FLOAT_DTYPES = ("f16", "f32")
_DTYPES = (*FLOAT_DTYPES, "i64", "i32", "bool")
# bool kernels on masks: y = a op b with a and b full (""), b one value per column ("row"), one
# per row ("col"), or a one per row and b one per column ("outer": y[m, n] = a[m] op b[n]).
_LOGICAL_KINDS: dict[str, tuple[str, str]] = {
    f"{op}{suffix}": (op, suffix.lstrip("_"))
    for op in ("and", "or")
    for suffix in ("", "_row", "_col", "_outer")
}
# gather_nd indexes the data's leading dims with these names (as many as an index tuple has)
_GATHER_ND_AXES = ("X", "Y", "Z")

# kind -> (dims it needs, attrs it needs); the order of each tuple is irrelevant (sorted later).
_KIND_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lora_xa": (("K", "R", "T"), ()),
    "lora_b_add": (("N", "R", "T"), ("scale",)),
    "matmul": (("K", "M", "N"), ()),
    "qk": (("D", "S", "S2"), ("scale",)),
    "av": (("D", "S", "S2"), ()),
    "softmax": (("M", "N"), ()),
    "layer_norm": (("M", "N"), ("eps",)),
    "rms_norm": (("M", "N"), ("eps",)),
    "gelu_erf": (("N",), ()),
    "gelu_tanh": (("N",), ()),
    "silu": (("N",), ()),
    **{kind: (("M", "N"), ()) for kind in _BINARY_KINDS},
    "accumulate": (("M", "N", "P"), ()),
    "gather": (("D", "T", "V"), ()),
    "rope": (("D", "T"), ()),
    "transpose": (("A", "B", "C"), ()),
    "broadcast": (("A", "B", "C"), ()),
    "column_slice": (("M", "N", "W"), ()),
    "reduce_sum": (("A", "B", "C"), ()),
    "reduce_l2": (("A", "B", "C"), ()),
    "clip": (("N",), ("hi", "lo")),
    **{f"cast_{to}": (("N",), ()) for to in _DTYPES},  # dtype: the source type
    **{kind: (("M", "N"), ()) for kind in _LOGICAL_KINDS},
    "where": (("M", "N"), ()),
    "where_const": (("M", "N"), ("a", "b")),
    "gather_nd": (("D", "T", *_GATHER_ND_AXES[:1]), ()),  # plus Y, Z for deeper index tuples
}
KERNEL_KINDS: tuple[str, ...] = tuple(_KIND_PARAMS)

# kind -> the element types it is generated for (a float type for every kind not listed)
_KIND_DTYPES: dict[str, tuple[str, ...]] = {
    **{f"cast_{to}": tuple(dt for dt in _DTYPES if dt != to) for to in _DTYPES},
    **{kind: ("bool",) for kind in _LOGICAL_KINDS},
    "gather_nd": _DTYPES,
}

# The size of an element: TCDM footprints here and the cost model's chunks (cost/model.py)
DTYPE_BYTES = {"f16": 2, "f32": 4, "i64": 8, "i32": 4, "bool": 1}


def _symbol_float(value: float) -> str:
    """A float spelled with identifier characters only; repr round-trips, so it stays unique."""
    return repr(float(value)).replace("+", "").replace("-", "m").replace(".", "p")


@dataclass(frozen=True)
class KernelSignature:
    """What a digital kernel computes: kind, static sizes, compile-time scalars and the element
    type of its data (a cast's source type; a where's values, its condition being bool; the
    cluster's number format, f16 or f32, for float kernels)."""

    kind: str
    dims: tuple[tuple[str, int], ...]
    attrs: tuple[tuple[str, float], ...] = ()
    dtype: str = "f32"

    @property
    def symbol(self) -> str:
        """Link name, e.g. `aimcc_lora_xa_K128_R8_T8`; attrs are part of it (they are baked in),
        and so is a dtype other than f32 (`aimcc_cast_bool_N128_i64`)."""
        parts = [f"aimcc_{self.kind}"]
        parts += [f"{name}{size}" for name, size in sorted(self.dims)]
        parts += [f"{name}{_symbol_float(value)}" for name, value in sorted(self.attrs)]
        parts += [self.dtype] if self.dtype != "f32" else []
        return "_".join(parts)

    def dim(self, name: str) -> int:
        return dict(self.dims)[name]

    def attr(self, name: str) -> float:
        return dict(self.attrs)[name]


@cache  # signatures are immutable; the IR verifier and the schedule ask again and again
def check_signature(sig: KernelSignature) -> None:
    if sig.kind not in _KIND_PARAMS:
        raise AimccError(f"riscv backend: unknown kernel kind {sig.kind!r} (have {KERNEL_KINDS})")
    dtypes = _KIND_DTYPES.get(sig.kind, FLOAT_DTYPES)
    if sig.dtype not in dtypes:
        raise AimccError(
            f"riscv backend: kernel {sig.kind} supports dtypes {dtypes}, not {sig.dtype}"
        )
    want_dims, want_attrs = _KIND_PARAMS[sig.kind]
    dim_names = sorted(name for name, _ in sig.dims)
    if sig.kind == "gather_nd":
        axes = [name for name in _GATHER_ND_AXES if name in dim_names]
        want_dims = ("D", "T", *_GATHER_ND_AXES[: max(len(axes), 1)])
    if dim_names != sorted(want_dims):
        raise AimccError(
            f"riscv backend: kernel {sig.kind} needs dims {want_dims}, got {dim_names}"
        )
    if any(size <= 0 for _, size in sig.dims):
        raise AimccError(f"riscv backend: kernel {sig.symbol} has a non-positive dim")
    if sig.kind == "rope" and sig.dim("D") % 2:
        raise AimccError(f"riscv backend: kernel {sig.symbol} rotates halves of an odd D")
    attr_names = sorted(name for name, _ in sig.attrs)
    if attr_names != sorted(want_attrs):
        raise AimccError(
            f"riscv backend: kernel {sig.kind} needs attrs {want_attrs}, got {attr_names}"
        )


@cache
def kernel_args(sig: KernelSignature) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """(name, dtype, shape) of each argument in calling order; outputs come last."""
    check_signature(sig)
    d, f = dict(sig.dims), sig.dtype  # f: the float kernels' element type
    match sig.kind:
        case "lora_xa":
            return (
                ("x", f, (d["T"], d["K"])),
                ("A", f, (d["K"], d["R"])),
                ("h", f, (d["T"], d["R"])),
            )
        case "lora_b_add":
            return (
                ("h", f, (d["T"], d["R"])),
                ("B", f, (d["R"], d["N"])),
                ("y", f, (d["T"], d["N"])),
            )
        case "matmul":
            return (
                ("a", f, (d["M"], d["K"])),
                ("b", f, (d["K"], d["N"])),
                ("y", f, (d["M"], d["N"])),
            )
        case "qk":  # keys come transposed, as attention's operand holds them
            return (
                ("q", f, (d["S"], d["D"])),
                ("kt", f, (d["D"], d["S2"])),
                ("s", f, (d["S"], d["S2"])),
            )
        case "av":
            return (
                ("p", f, (d["S"], d["S2"])),
                ("v", f, (d["S2"], d["D"])),
                ("o", f, (d["S"], d["D"])),
            )
        case "softmax":
            return (("x", f, (d["M"], d["N"])), ("y", f, (d["M"], d["N"])))
        case "layer_norm":
            return (
                ("x", f, (d["M"], d["N"])),
                ("gamma", f, (d["N"],)),
                ("beta", f, (d["N"],)),
                ("y", f, (d["M"], d["N"])),
            )
        case "rms_norm":
            return (
                ("x", f, (d["M"], d["N"])),
                ("gamma", f, (d["N"],)),
                ("y", f, (d["M"], d["N"])),
            )
        case "gelu_erf" | "gelu_tanh" | "silu" | "clip":
            return (("x", f, (d["N"],)), ("y", f, (d["N"],)))
        case kind if kind in _BINARY_KINDS:
            b_shape = {"": (d["M"], d["N"]), "row": (d["N"],), "col": (d["M"],)}
            return (
                ("a", f, (d["M"], d["N"])),
                ("b", f, b_shape[_BINARY_KINDS[kind][1]]),
                ("y", f, (d["M"], d["N"])),
            )
        case "accumulate":
            return (("parts", f, (d["P"], d["M"], d["N"])), ("y", f, (d["M"], d["N"])))
        case "gather":
            return (
                ("table", f, (d["V"], d["D"])),
                ("idx", "i64", (d["T"],)),  # ONNX token ids are int64
                ("y", f, (d["T"], d["D"])),
            )
        case "rope":
            return tuple((name, f, (d["T"], d["D"])) for name in ("x", "cos", "sin", "y"))
        case "transpose":
            return (("x", f, (d["A"], d["B"], d["C"])), ("y", f, (d["B"], d["A"], d["C"])))
        case "broadcast":
            return (("x", f, (d["A"], d["C"])), ("y", f, (d["A"], d["B"], d["C"])))
        case "column_slice":
            return (("x", f, (d["M"], d["W"])), ("y", f, (d["M"], d["N"])))
        case "reduce_sum" | "reduce_l2":
            return (("x", f, (d["A"], d["B"], d["C"])), ("y", f, (d["A"], d["C"])))
        case kind if kind.startswith("cast_"):
            return (("x", sig.dtype, (d["N"],)), ("y", kind.removeprefix("cast_"), (d["N"],)))
        case kind if kind in _LOGICAL_KINDS:
            shapes = {"": (d["M"], d["N"]), "row": (d["N"],), "col": (d["M"],)}
            form = _LOGICAL_KINDS[kind][1]
            return (
                ("a", "bool", shapes["col" if form == "outer" else ""]),
                ("b", "bool", shapes["row" if form == "outer" else form]),
                ("y", "bool", (d["M"], d["N"])),
            )
        case "where":
            return (
                ("cond", "bool", (d["M"], d["N"])),
                ("a", f, (d["M"], d["N"])),
                ("b", f, (d["M"], d["N"])),
                ("y", f, (d["M"], d["N"])),
            )
        case "where_const":
            return (("cond", "bool", (d["M"], d["N"])), ("y", f, (d["M"], d["N"])))
        case "gather_nd":
            axes = [d[name] for name in _GATHER_ND_AXES if name in d]
            return (
                ("data", sig.dtype, (pymath.prod(axes), d["D"])),  # indexed dims flattened
                ("idx", "i64", (d["T"], len(axes))),  # ONNX indices are int64, may be negative
                ("y", sig.dtype, (d["T"], d["D"])),
            )
    raise AssertionError(sig.kind)


def tcdm_bytes(sig: KernelSignature) -> int:
    """Bytes a kernel call keeps in the cluster's TCDM: every argument except a gather's table,
    which stays in L2 and is streamed row by row (only the looked-up rows move)."""
    return sum(
        DTYPE_BYTES[dt] * pymath.prod(shape)
        for name, dt, shape in kernel_args(sig)
        if not (sig.kind == "gather" and name == "table")
    )
