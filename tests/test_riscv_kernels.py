"""Every digital kernel kind, lowered to RISC-V, run under qemu and checked against numpy.

All kernels of a run are assembled and linked into one static rv64gc binary (one gcc call),
which `qemu-riscv64` runs once per case: argv names the kernel and two files holding the
argument buffers before and after the call. Without the cross toolchain the lowered RISC-V
module is run in xDSL's interpreter instead, so the check never silently disappears.
"""

import math
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects import arith
from xdsl.dialects import math as xmath
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, f32, i8, i32, i64
from xdsl.interpreter import Interpreter, InterpreterFunctions, PythonValues, impl, register_impls
from xdsl.interpreters.arith import ArithFunctions
from xdsl.interpreters.builtin import scalar_attr
from xdsl.interpreters.func import FuncFunctions
from xdsl.interpreters.math import MathFunctions
from xdsl.interpreters.memref import MemRefFunctions
from xdsl.interpreters.scf import ScfFunctions
from xdsl.interpreters.shaped_array import ShapedArray
from xdsl.interpreters.utils.ptr import TypedPtr
from xdsl.passes import PassPipeline
from xdsl.transforms.convert_linalg_to_loops import ConvertLinalgToLoopsPass
from xdsl.transforms.linalg_generalize_named_ops import LinalgGeneralizeNamedOpsPass

from aimcc.backends import riscv as rv

EPS32 = float(np.finfo(np.float32).eps)
CC, QEMU = "riscv64-linux-gnu-gcc", "qemu-riscv64"
HAVE_QEMU = shutil.which(CC) is not None and shutil.which(QEMU) is not None
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}

# Two shapes per kind; the second has no power-of-two dims.
CASES: list[rv.KernelSignature] = [
    rv.KernelSignature(kind, tuple(sorted(dims.items())), tuple(sorted(attrs.items())))
    for kind, attrs, shapes in [
        ("lora_xa", {}, [{"T": 8, "K": 128, "R": 8}, {"T": 3, "K": 37, "R": 5}]),
        ("lora_b_add", {"scale": 2.0}, [{"T": 8, "R": 8, "N": 64}, {"T": 3, "R": 5, "N": 23}]),
        ("matmul", {}, [{"M": 8, "K": 32, "N": 16}, {"M": 5, "K": 19, "N": 7}]),
        ("qk", {"scale": 0.125}, [{"S": 8, "S2": 8, "D": 64}, {"S": 5, "S2": 7, "D": 24}]),
        ("av", {}, [{"S": 8, "S2": 8, "D": 64}, {"S": 5, "S2": 7, "D": 24}]),
        ("softmax", {}, [{"M": 4, "N": 64}, {"M": 3, "N": 37}]),
        ("layer_norm", {"eps": 1e-5}, [{"M": 4, "N": 64}, {"M": 3, "N": 37}]),
        ("rms_norm", {"eps": 1e-6}, [{"M": 4, "N": 64}, {"M": 3, "N": 37}]),
        ("gelu_erf", {}, [{"N": 256}, {"N": 333}]),
        ("gelu_tanh", {}, [{"N": 256}, {"N": 333}]),
        ("silu", {}, [{"N": 256}, {"N": 333}]),
        ("add", {}, [{"M": 4, "N": 32}, {"M": 3, "N": 37}]),
        ("bias_add", {}, [{"M": 4, "N": 32}, {"M": 3, "N": 37}]),
        ("accumulate", {}, [{"P": 4, "M": 4, "N": 32}, {"P": 3, "M": 3, "N": 37}]),
        ("gather", {}, [{"V": 32, "D": 16, "T": 8}, {"V": 29, "D": 13, "T": 5}]),
        *[
            (kind, {}, [{"M": 4, "N": 32}, {"M": 3, "N": 37}])
            for kind in [
                "sub",
                "mul",
                "div",
                "sub_row",
                "mul_row",
                "div_row",
                "add_col",
                "sub_col",
                "mul_col",
                "div_col",
            ]
        ],
        ("clip", {"lo": -0.5, "hi": 0.75}, [{"N": 256}, {"N": 333}]),
        ("rope", {}, [{"T": 8, "D": 32}, {"T": 5, "D": 14}]),
        ("transpose", {}, [{"A": 5, "B": 3, "C": 7}, {"A": 6, "B": 9, "C": 1}]),
        ("broadcast", {}, [{"A": 2, "B": 3, "C": 16}, {"A": 1, "B": 37, "C": 1}]),
        ("column_slice", {}, [{"M": 4, "N": 8, "W": 24}, {"M": 3, "N": 5, "W": 13}]),
        ("reduce_sum", {}, [{"A": 1, "B": 16, "C": 32}, {"A": 3, "B": 5, "C": 7}]),
        ("reduce_l2", {}, [{"A": 1, "B": 16, "C": 32}, {"A": 3, "B": 5, "C": 7}]),
    ]
    for dims in shapes
]
# Kinds on integer and bool data (attention-mask preparation), with their dtypes.
NUMPY_DTYPES = {"f32": np.float32, "i64": np.int64, "i32": np.int32, "bool": np.uint8}
CASES += [
    rv.KernelSignature(kind, tuple(sorted(dims.items())), tuple(sorted(attrs.items())), dtype)
    for kind, attrs, dtype, shapes in [
        *[
            (f"cast_{to}", {}, source, [{"N": 64}, {"N": 37}])
            for to in NUMPY_DTYPES
            for source in NUMPY_DTYPES
            if source != to
        ],
        *[
            (f"{op}{form}", {}, "bool", [{"M": 4, "N": 32}, {"M": 3, "N": 37}])
            for op in ("and", "or")
            for form in ("", "_row", "_col", "_outer")
        ],
        ("where", {}, "f32", [{"M": 4, "N": 32}, {"M": 3, "N": 37}]),
        ("where_const", {"a": 0.0, "b": -3.4028234663852886e38}, "f32", [{"M": 4, "N": 32}]),
        ("where_const", {"a": 1.5, "b": -2.25}, "f32", [{"M": 3, "N": 37}]),
        # the models' mask: one bool per token, picked by (0, t) index pairs
        ("gather_nd", {}, "bool", [{"T": 16, "D": 1, "X": 1, "Y": 16}]),
        ("gather_nd", {}, "f32", [{"T": 5, "D": 3, "X": 7}]),
        ("gather_nd", {}, "i64", [{"T": 6, "D": 2, "X": 3, "Y": 4, "Z": 5}]),
        ("gather_nd", {}, "i32", [{"T": 9, "D": 1, "X": 5, "Y": 3}]),
    ]
    for dims in shapes
]

_HARNESS = """\
#include <stdio.h>
#include <string.h>
typedef void (*kernel_fn)(void *, void *, void *, void *);
{decls}
static const struct {{ const char *name; kernel_fn fn; int nargs; }} kernels[] = {{
{table}
}};
static double blob[{max_words}];
/* usage: run SYMBOL IN OUT SIZE0 SIZE1 ... (argument byte sizes, in calling order; each
   argument starts 8-byte aligned, as `_pack` lays them out) */
int main(int argc, char **argv) {{
  void *args[4] = {{0, 0, 0, 0}};
  long total = 0;
  for (int i = 4; i < argc; i++) {{
    args[i - 4] = (char *)blob + total;
    total += (atol(argv[i]) + 7) / 8 * 8;
  }}
  FILE *in = fopen(argv[2], "rb");
  if (!in || fread(blob, 1, total, in) != (size_t)total) return 2;
  fclose(in);
  for (unsigned k = 0; k < sizeof kernels / sizeof kernels[0]; k++)
    if (!strcmp(kernels[k].name, argv[1])) {{
      kernels[k].fn(args[0], args[1], args[2], args[3]);
      FILE *out = fopen(argv[3], "wb");
      if (!out || fwrite(blob, 1, total, out) != (size_t)total) return 3;
      fclose(out);
      return 0;
    }}
  return 4;
}}
"""


def _integers(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values that catch wrong widths: zeros, small ones of both signs and (i64) ones beyond
    32 bits; bools are 0 or 1."""
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(np.uint8)
    bits = 62 if dtype == "i64" else 31
    big = rng.integers(-(2**bits), 2**bits, shape)
    small = rng.integers(-3, 4, shape)
    return np.where(rng.random(shape) < 0.5, big, small).astype(NUMPY_DTYPES[dtype])


def _floats_to_cast(target: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Fractions of both signs (truncation), +-0 and, for bool, NaN (true) and infinities."""
    x = rng.uniform(-3, 3, shape) * 10.0 ** rng.integers(0, 7 if target == "i32" else 9, shape)
    x[:4] = [0.0, -0.0, 0.5, -0.99]
    if target == "bool":
        x[4:7] = [np.nan, np.inf, -np.inf]
    return x.astype(np.float32)


def _inputs(sig: rv.KernelSignature, rng: np.random.Generator) -> list[np.ndarray]:
    """Argument buffers in calling order; outputs start as garbage unless they are read."""
    arrays = []
    for name, dtype, shape in rv.kernel_args(sig):
        if sig.kind == "gather_nd" and name == "idx":  # in range, negatives counting from the end
            axes = [size for axis, size in sorted(sig.dims) if axis in "XYZ"]
            arrays.append(np.stack([rng.integers(-n, n, shape[0]) for n in axes], axis=1))
        elif dtype == "i64" and sig.kind == "gather":
            arrays.append(rng.integers(0, sig.dim("V"), shape).astype(np.int64))
        elif dtype != "f32":
            arrays.append(_integers(dtype, shape, rng))
        elif sig.kind.startswith("cast_"):
            arrays.append(_floats_to_cast(sig.kind.removeprefix("cast_"), shape, rng))
        elif sig.kind in ("gelu_erf", "gelu_tanh", "silu") and name == "x":
            # cover the saturated tails as well as the curved middle
            arrays.append(
                np.concatenate([np.linspace(-12, 12, 41), rng.normal(0, 3, shape[0] - 41)]).astype(
                    np.float32
                )
            )
        elif sig.kind.startswith("div") and name == "b":  # divisors away from zero
            arrays.append(
                (rng.uniform(0.5, 2, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
            )
        elif sig.kind == "softmax" and name == "x":
            arrays.append((rng.normal(0, 6, shape)).astype(np.float32))
        elif sig.kind in ("layer_norm", "rms_norm") and name == "x":
            arrays.append((rng.normal(1.5, 3, shape)).astype(np.float32))
        else:
            arrays.append(rng.normal(0, 1, shape).astype(np.float32))
    if sig.kind != "lora_b_add":  # y += ... reads y; every other output is write-only
        out = arrays[-1]
        arrays[-1] = np.full_like(out, np.nan if out.dtype.kind == "f" else 0x5A)
    return arrays


def _reference(sig: rv.KernelSignature, args: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(numpy reference in float64, allowed absolute error per element) for the output."""
    a64 = [a.astype(np.float64) for a in args]
    ulp_out: Callable[[np.ndarray], np.ndarray] = lambda r: 4 * EPS32 * np.abs(r)  # noqa: E731
    match sig.kind:
        case "lora_xa" | "matmul" | "av":
            # dot products of length K: |error| <= K eps sum|a||b| (Higham's gamma_K bound)
            ref = a64[0] @ a64[1]
            return ref, a64[0].shape[1] * EPS32 * (np.abs(a64[0]) @ np.abs(a64[1]))
        case "qk":  # q @ kt with kt (D, S2)
            s = sig.attr("scale")
            ref = s * a64[0] @ a64[1]
            return ref, (a64[0].shape[1] + 1) * EPS32 * s * (np.abs(a64[0]) @ np.abs(a64[1]))
        case "lora_b_add":
            s = sig.attr("scale")
            ref = a64[2] + s * (a64[0] @ a64[1])
            bound = np.abs(a64[2]) + s * (np.abs(a64[0]) @ np.abs(a64[1]))
            return ref, (a64[0].shape[1] + 2) * EPS32 * bound
        case "softmax":
            e = np.exp(a64[0] - a64[0].max(axis=1, keepdims=True))
            ref = e / e.sum(axis=1, keepdims=True)
            # exp polynomial (< 1e-8 rel) + N-term sum + divide: a few ulp of each output
            return ref, 16 * EPS32 * ref + 1e-12
        case "layer_norm" | "rms_norm":
            x, gamma = a64[0], a64[1]
            eps = sig.attr("eps")
            if sig.kind == "layer_norm":
                centred = x - x.mean(axis=1, keepdims=True)
                ref = centred / np.sqrt((centred**2).mean(axis=1, keepdims=True) + eps)
                ref = ref * gamma + a64[2]
                scale = np.abs(centred / np.sqrt((centred**2).mean(axis=1, keepdims=True)))
                bound = scale * np.abs(gamma) + np.abs(a64[2])
            else:
                ref = x / np.sqrt((x**2).mean(axis=1, keepdims=True) + eps) * gamma
                bound = np.abs(ref)
            # N-term sums feed the statistics: relative error ~ N eps of the normalised value
            return ref, x.shape[1] * EPS32 * bound + 1e-6
        case "gelu_erf":
            x = a64[0]
            ref = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
            # A&S 7.1.26 erf: |error| <= 1.5e-7, times 0.5|x|; plus a few ulp of rounding
            return ref, 0.5 * np.abs(x) * 2e-7 + ulp_out(ref) + 1e-7
        case "gelu_tanh":
            x = a64[0]
            ref = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
            # tanh = 1 - 2/(exp(2u)+1) has ~1 ulp of 1.0 absolute error, times 0.5|x|
            return ref, 0.5 * np.abs(x) * 4 * EPS32 + ulp_out(ref) + 1e-7
        case "silu":
            x = a64[0]
            ref = x / (1 + np.exp(-x))
            return ref, ulp_out(ref) + 1e-30
        case kind if kind == "bias_add" or kind.split("_")[0] in BINARY:
            # one correctly rounded f32 operation per element, as numpy's f32 arithmetic: exact
            a, b = args[0], args[1]
            b = b[:, None] if kind.endswith("_col") else b
            ref = BINARY[kind.split("_")[0] if kind != "bias_add" else "add"](a, b)
            return ref.astype(np.float64), np.zeros(a.shape)
        case "clip":
            ref = np.clip(args[0], sig.attr("lo"), sig.attr("hi"))
            return ref.astype(np.float64), np.zeros(ref.shape)
        case "rope":
            x, cos, sin = a64[0], a64[1], a64[2]
            half = x.shape[1] // 2
            rotated = np.concatenate([-x[:, half:], x[:, :half]], axis=1)
            ref = x * cos + rotated * sin
            # two rounded products and one rounded sum
            return ref, 2 * EPS32 * (np.abs(x * cos) + np.abs(rotated * sin))
        case "transpose":
            return a64[0].transpose(1, 0, 2), np.zeros(args[-1].shape)
        case "broadcast":
            return np.broadcast_to(a64[0][:, None, :], args[-1].shape), np.zeros(args[-1].shape)
        case "column_slice":
            return a64[0][:, : sig.dim("N")], np.zeros(args[-1].shape)
        case "reduce_sum":
            # B-term sums: |error| <= B eps sum|x| (Higham's gamma_B bound)
            ref = a64[0].sum(axis=1)
            return ref, sig.dim("B") * EPS32 * np.abs(a64[0]).sum(axis=1)
        case "reduce_l2":
            # sum of B squares (B + 1) eps relative, halved by the square root, + 1 ulp of sqrt
            ref = np.sqrt((a64[0] ** 2).sum(axis=1))
            return ref, (sig.dim("B") + 3) * EPS32 * ref
        case "accumulate":
            total = np.zeros(args[0].shape[1:], np.float32)
            for part in args[0]:  # same left-to-right f32 order as the kernel: bit-exact
                total = total + part
            return total.astype(np.float64), np.zeros(total.shape)
        case "gather":
            return a64[0][args[1]], np.zeros((args[1].shape[0], args[0].shape[1]))
        # integer and bool outputs are compared exactly (see `_check`)
        case kind if kind.startswith("cast_"):
            to = NUMPY_DTYPES[kind.removeprefix("cast_")]
            with np.errstate(invalid="ignore"):  # NaN -> bool is true, as intended
                ref = args[0].astype(bool).astype(to) if to == np.uint8 else args[0].astype(to)
            return ref, np.zeros(ref.shape)
        case kind if kind.split("_")[0] in ("and", "or"):
            a, b = args[0].astype(bool), args[1].astype(bool)
            a = a[:, None] if kind.endswith("_outer") else a
            b = b[:, None] if kind.endswith("_col") else b
            ref = (a & b) if kind.startswith("and") else (a | b)
            return ref.astype(np.uint8), np.zeros(ref.shape)
        case "where":
            return np.where(args[0] != 0, args[1], args[2]), np.zeros(args[0].shape)
        case "where_const":
            on, off = np.float32(sig.attr("a")), np.float32(sig.attr("b"))
            return np.where(args[0] != 0, on, off), np.zeros(args[0].shape)
        case "gather_nd":
            axes = [size for axis, size in sorted(sig.dims) if axis in "XYZ"]
            data = args[0].reshape(*axes, sig.dim("D"))  # the kernel takes it flattened
            return data[tuple(args[1].T)], np.zeros(args[-1].shape)
    raise AssertionError(sig.kind)


@pytest.fixture(scope="module")
def riscv_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One static binary holding every kernel of CASES."""
    work = tmp_path_factory.mktemp("riscv")
    kernels = [rv.generate_kernel(sig) for sig in CASES]
    sources = []
    for kernel in kernels:
        path = work / f"{kernel.signature.symbol}.S"
        path.write_text(kernel.asm)
        sources.append(str(path))
    decls = "\n".join(f"void {sig.symbol}(void *, void *, void *, void *);" for sig in CASES)
    table = ",\n".join(f'  {{"{sig.symbol}", {sig.symbol}, 0}}' for sig in CASES)
    max_bytes = max(kernel.footprint_bytes + 8 * len(kernel.args) for kernel in kernels)
    harness = work / "harness.c"
    harness.write_text(_HARNESS.format(decls=decls, table=table, max_words=max_bytes // 8 + 1))
    binary = work / "run"
    cmd = [CC, "-static", "-O1", "-march=rv64gc", "-mabi=lp64d", str(harness), *sources]
    subprocess.run([*cmd, "-o", str(binary)], check=True, capture_output=True, text=True)
    return binary


def _padded(nbytes: int) -> int:
    return -(-nbytes // 8) * 8


def _run_qemu(binary: Path, sig: rv.KernelSignature, args: list[np.ndarray]) -> list[np.ndarray]:
    work = binary.parent
    packed = b"".join(a.tobytes().ljust(_padded(a.nbytes), b"\0") for a in args)
    (work / "in.bin").write_bytes(packed)
    sizes = [str(a.nbytes) for a in args]
    cmd = [QEMU, str(binary), sig.symbol, str(work / "in.bin"), str(work / "out.bin"), *sizes]
    subprocess.run(cmd, check=True, timeout=60)
    raw, out, offset = (work / "out.bin").read_bytes(), [], 0
    for a in args:
        out.append(np.frombuffer(raw, a.dtype, a.size, offset).reshape(a.shape))
        offset += _padded(a.nbytes)
    return out


def _check(sig: rv.KernelSignature, args: list[np.ndarray], result: list[np.ndarray]) -> float:
    """Assert the output is within bounds and the inputs untouched; return the worst error."""
    ref, allowed = _reference(sig, args)
    for before, after in zip(args[:-1], result[:-1], strict=True):
        np.testing.assert_array_equal(before, after)
    if result[-1].dtype.kind != "f":  # integers and bools: exact, in their own type
        assert result[-1].dtype == ref.dtype, sig.symbol
        np.testing.assert_array_equal(result[-1], ref, err_msg=sig.symbol)
        return 0.0
    if ref.dtype == np.float32:  # a selection or conversion: bit-exact
        np.testing.assert_array_equal(result[-1], ref, err_msg=sig.symbol)
        return 0.0
    err = np.abs(result[-1].astype(np.float64) - ref)
    assert np.all(np.isfinite(result[-1])), sig.symbol
    worst = int(np.argmax(err - allowed))
    assert np.all(err <= allowed), (
        f"{sig.symbol}: error {err.flat[worst]:.3g} > {allowed.flat[worst]:.3g} at {worst}"
    )
    return float(err.max())


def _py(value: FloatAttr | IntegerAttr) -> float | int:
    """xDSL (>= 0.75) interprets scalars as attributes; the kernels' own math wants numbers."""
    return value.value.data


@register_impls
class _F32Functions(InterpreterFunctions):
    """The ops the expanded kernels use that xDSL's interpreter lacks (scalars are attributes,
    as xDSL's own implementations take them; memrefs of f32 round on every store, as the
    hardware's registers round on every op)."""

    @staticmethod
    def _out(interpreter: Interpreter, op, value: float | int) -> PythonValues:
        return (scalar_attr(value, op.results[0].type, interpreter.index_bitwidth),)

    @impl(arith.DivfOp)
    def run_divf(self, interpreter: Interpreter, op: arith.DivfOp, args: PythonValues):
        return self._out(interpreter, op, _py(args[0]) / _py(args[1]))

    @impl(arith.NegfOp)
    def run_negf(self, interpreter: Interpreter, op: arith.NegfOp, args: PythonValues):
        return self._out(interpreter, op, -_py(args[0]))

    @impl(arith.FPToSIOp)
    def run_fptosi(self, interpreter: Interpreter, op: arith.FPToSIOp, args: PythonValues):
        return self._out(interpreter, op, int(_py(args[0])))

    @impl(arith.SIToFPOp)
    def run_sitofp(self, interpreter: Interpreter, op: arith.SIToFPOp, args: PythonValues):
        # one rounding, to f32 (float() first would round twice for large i64)
        return self._out(
            interpreter, op, float(np.array(_py(args[0]), np.int64).astype(np.float32))
        )

    @impl(arith.ExtUIOp)
    def run_extui(self, interpreter: Interpreter, op: arith.ExtUIOp, args: PythonValues):
        return self._out(interpreter, op, int(_py(args[0])) % (1 << op.input.type.width.data))

    @impl(arith.ExtSIOp)
    def run_extsi(self, interpreter: Interpreter, op: arith.ExtSIOp, args: PythonValues):
        return self._out(interpreter, op, int(_py(args[0])))

    @impl(arith.TruncIOp)
    def run_trunci(self, interpreter: Interpreter, op: arith.TruncIOp, args: PythonValues):
        width = op.result.type.width.data
        value = int(_py(args[0])) % (1 << width)
        return self._out(
            interpreter, op, value - (1 << width) if value >> (width - 1) and width > 1 else value
        )

    @impl(arith.BitcastOp)
    def run_bitcast(self, interpreter: Interpreter, op: arith.BitcastOp, args: PythonValues):
        return self._out(interpreter, op, float(np.array(_py(args[0]), np.int32).view(np.float32)))

    @impl(xmath.CopySignOp)
    def run_copysign(self, interpreter: Interpreter, op: xmath.CopySignOp, args: PythonValues):
        return self._out(interpreter, op, math.copysign(_py(args[0]), _py(args[1])))


def _run_interpreter(sig: rv.KernelSignature, args: list[np.ndarray]) -> list[np.ndarray]:
    """The kernel at the last level before register lowering, with the same math expansions."""
    module = rv.build_kernel_module(sig)
    lowering = (rv.ExpandMathPass(), LinalgGeneralizeNamedOpsPass(), ConvertLinalgToLoopsPass())
    PassPipeline(lowering).apply(Context(), module)
    interpreter = Interpreter(module)
    for functions in (ArithFunctions, MathFunctions, MemRefFunctions, ScfFunctions, FuncFunctions):
        interpreter.register_implementations(functions())
    interpreter.register_implementations(_F32Functions())
    xtypes = {np.float32: f32, np.int64: i64, np.int32: i32, np.uint8: i8}
    buffers = [
        ShapedArray(TypedPtr.new(a.ravel().tolist(), xtype=xtypes[a.dtype.type]), list(a.shape))
        for a in args
    ]
    interpreter.call_op(sig.symbol, buffers)
    return [np.array(b.data, a.dtype).reshape(a.shape) for a, b in zip(args, buffers, strict=True)]


@pytest.mark.parametrize("sig", CASES, ids=lambda s: s.symbol)
def test_kernel(request: pytest.FixtureRequest, sig: rv.KernelSignature) -> None:
    """The assembly under qemu; without the cross toolchain, the interpreter instead."""
    args = _inputs(sig, np.random.default_rng(0))
    if HAVE_QEMU:
        result = _run_qemu(request.getfixturevalue("riscv_binary"), sig, args)
    else:
        result = _run_interpreter(sig, args)
    _check(sig, args, result)


@pytest.mark.parametrize("sig", CASES[1::2], ids=lambda s: s.symbol)
def test_kernel_in_interpreter(sig: rv.KernelSignature) -> None:
    """Keeps the fallback path honest on machines that do have qemu."""
    args = _inputs(sig, np.random.default_rng(1))
    _check(sig, args, _run_interpreter(sig, args))
