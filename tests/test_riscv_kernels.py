"""Every digital kernel kind, lowered to RISC-V, run under qemu and checked against numpy.

All kernels of a run are assembled and linked into one static rv64gc binary (one gcc call),
which `qemu-riscv64` runs once per case: argv names the kernel and two files holding the
argument buffers before and after the call. Without the cross toolchain the lowered RISC-V
module is run in xDSL's interpreter instead, so the check never silently disappears.

Float kernels run in f16 (the presets' fp16 cluster: every kind, two shapes) and in f32 (the
`cluster.dtype = "fp32"` option: every kind, one shape); `_check` gives the f16 tolerance.
"""

import dataclasses
import functools
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
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, f16, f32, i8, i32, i64
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
EPS16 = float(np.finfo(np.float16).eps)  # 2**-10: rounding to f16 errs by at most EPS16 / 2
F16_MAX = float(np.finfo(np.float16).max)
CC, QEMU = "riscv64-linux-gnu-gcc", "qemu-riscv64"
HAVE_QEMU = shutil.which(CC) is not None and shutil.which(QEMU) is not None
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}

# Two shapes per kind; the second has no power-of-two dims.
FLOAT_KINDS = [
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
_FLOAT_KIND_NAMES = {kind for kind, _, _ in FLOAT_KINDS}
# f16 (the presets' format) at both shapes, f32 at the first (its code is the same but for the
# loads, stores and one-operation kinds; test_f16_is_the_f32_kernel_rounded_once ties the two)
CASES: list[rv.KernelSignature] = [
    rv.KernelSignature(kind, tuple(sorted(dims.items())), tuple(sorted(attrs.items())), dtype)
    for dtype, count in (("f16", 2), ("f32", 1))
    for kind, attrs, shapes in FLOAT_KINDS
    for dims in shapes[:count]
]
# Kinds on integer and bool data (attention-mask preparation), with their dtypes.
NUMPY_DTYPES = {
    "f16": np.float16,
    "f32": np.float32,
    "i64": np.int64,
    "i32": np.int32,
    "bool": np.uint8,
}
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
        *[
            (kind, attrs, dtype, shapes)
            for dtype in ("f16", "f32")
            for kind, attrs, shapes in [
                ("where", {}, [{"M": 4, "N": 32}, {"M": 3, "N": 37}]),
                ("where_const", {"a": 0.0, "b": -3.4028234663852886e38}, [{"M": 4, "N": 32}]),
                ("where_const", {"a": 1.5, "b": -2.25}, [{"M": 3, "N": 37}]),
            ]
        ],
        # the models' mask: one bool per token, picked by (0, t) index pairs
        ("gather_nd", {}, "bool", [{"T": 16, "D": 1, "X": 1, "Y": 16}]),
        ("gather_nd", {}, "f16", [{"T": 5, "D": 3, "X": 7}]),
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
  if (argc < 4) return 0; /* a probe of the simulator's options (see `qemu_cpu`) */
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


def _floats_to_cast(
    source: str, target: str, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Fractions of both signs (truncation), +-0 and, for bool, NaN (true) and infinities;
    magnitudes up to what the source holds (f16: 65504) and the target does not overflow."""
    digits = 4 if source == "f16" else 7 if target == "i32" else 9
    x = rng.uniform(-3, 3, shape) * 10.0 ** rng.integers(0, digits + 1, shape)
    x[:4] = [0.0, -0.0, 0.5, -0.99]
    if target == "bool":
        x[4:7] = [np.nan, np.inf, -np.inf]
    with np.errstate(over="ignore"):  # f32 -> f16 beyond 65504 is inf, as in the kernel
        return x.astype(NUMPY_DTYPES[source])


def _inputs(sig: rv.KernelSignature, rng: np.random.Generator) -> list[np.ndarray]:
    """Argument buffers in calling order; outputs start as garbage unless they are read."""
    arrays = []
    for name, dtype, shape in rv.kernel_args(sig):
        if sig.kind == "gather_nd" and name == "idx":  # in range, negatives counting from the end
            axes = [size for axis, size in sorted(sig.dims) if axis in "XYZ"]
            arrays.append(np.stack([rng.integers(-n, n, shape[0]) for n in axes], axis=1))
        elif dtype == "i64" and sig.kind == "gather":
            arrays.append(rng.integers(0, sig.dim("V"), shape).astype(np.int64))
        elif dtype not in ("f16", "f32"):
            arrays.append(_integers(dtype, shape, rng))
        elif sig.kind.startswith("cast_"):
            arrays.append(_floats_to_cast(dtype, sig.kind.removeprefix("cast_"), shape, rng))
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
    # f16 buffers hold the values rounded to f16 (the reference starts from the same values)
    dtypes = [NUMPY_DTYPES[dtype] for _, dtype, _ in rv.kernel_args(sig)]
    arrays = [a.astype(dt) if dt == np.float16 else a for a, dt in zip(arrays, dtypes, strict=True)]
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
            # one correctly rounded operation per element, as numpy's arithmetic in the same
            # type (f16: computed in f32 and rounded, which equals the correctly rounded f16
            # result as f32 carries 24 >= 2 * 11 + 2 bits): exact
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
            # NaN -> bool is true, as intended; beyond 65504 -> f16 is inf, as in the kernel
            with np.errstate(invalid="ignore", over="ignore"):
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
            # f16 saturates: the mask's -3.4e38 is -65504 on an fp16 cluster
            big = F16_MAX if args[-1].dtype == np.float16 else np.inf
            on, off = (np.clip(sig.attr(k), -big, big).astype(args[-1].dtype) for k in "ab")
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


@functools.cache
def qemu_cpu(binary: Path) -> str:
    """The CPU with Zfh for the f16 kernels, as this qemu spells its option (7.2: `Zfh`,
    later releases: `zfh`); found by running the harness without a kernel."""
    for cpu in ("rv64,zfh=true", "rv64,Zfh=true"):
        if subprocess.run([QEMU, "-cpu", cpu, str(binary)], capture_output=True).returncode == 0:
            return cpu
    raise RuntimeError(f"{QEMU} enables Zfh (half-precision floats) with neither option")


def _run_qemu(binary: Path, sig: rv.KernelSignature, args: list[np.ndarray]) -> list[np.ndarray]:
    work = binary.parent
    packed = b"".join(a.tobytes().ljust(_padded(a.nbytes), b"\0") for a in args)
    (work / "in.bin").write_bytes(packed)
    sizes = [str(a.nbytes) for a in args]
    cmd = [QEMU, "-cpu", qemu_cpu(binary), str(binary), sig.symbol]
    cmd += [str(work / "in.bin"), str(work / "out.bin"), *sizes]
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
    if ref.dtype in (np.float32, np.float16):  # a selection or conversion: bit-exact
        np.testing.assert_array_equal(result[-1], ref, err_msg=sig.symbol)
        return 0.0
    if result[-1].dtype == np.float16:
        if not allowed.any():  # exact in f32 (copies, one operation, accumulate): rounded once
            np.testing.assert_array_equal(result[-1], ref.astype(np.float16), err_msg=sig.symbol)
            return float(np.abs(result[-1] - ref).max())
        allowed = _f16_allowed(sig, ref, allowed)
    err = np.abs(result[-1].astype(np.float64) - ref)
    assert np.all(np.isfinite(result[-1])), sig.symbol
    worst = int(np.argmax(err - allowed))
    assert np.all(err <= allowed), (
        f"{sig.symbol}: error {err.flat[worst]:.3g} > {allowed.flat[worst]:.3g} at {worst}"
    )
    return float(err.max())


def _f16_allowed(sig: rv.KernelSignature, ref: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The error bound of an f16 kernel from its f32 bound ``allowed``.

    The inputs are f16 values, exact in f32, and the f16 kernel computes what the f32 kernel
    computes from them (every reduction and exp/tanh/erf in f32 registers): its value v before
    the store is within ``allowed`` of the reference. The store rounds v to f16 once, to nearest:
    |f16(v) - v| <= EPS16 / 2 |v| (2**-11 relative) + 2**-25 (half the subnormal spacing,
    below 2**-14), and |v| <= |ref| + allowed. softmax rounds twice: its exponentials are
    stored in y (f16) before they are normalised. The reduction length enters through
    ``allowed`` (K eps32 sum|a||b| for a K-term dot product: 1.5e-5 relative at K = 128, well
    below the store's 4.9e-4); a kernel that accumulated in f16 would be off by up to
    K EPS16 / 2 (6 % at K = 128) and fails this bound.
    """
    roundings = 2 if sig.kind == "softmax" else 1
    return allowed + roundings * (EPS16 / 2 * (np.abs(ref) + allowed) + 2.0**-25)


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

    @impl(arith.ExtFOp)
    def run_extf(self, interpreter: Interpreter, op: arith.ExtFOp, args: PythonValues):
        return self._out(interpreter, op, float(_py(args[0])))

    @impl(arith.TruncFOp)
    def run_truncf(self, interpreter: Interpreter, op: arith.TruncFOp, args: PythonValues):
        with np.errstate(over="ignore"):  # beyond 65504: inf, as fcvt.h.s
            return self._out(interpreter, op, float(np.float16(_py(args[0]))))

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
    xtypes = {np.float16: f16, np.float32: f32, np.int64: i64, np.int32: i32, np.uint8: i8}
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


def _run(request: pytest.FixtureRequest, sig: rv.KernelSignature, args: list[np.ndarray]):
    if HAVE_QEMU:
        return _run_qemu(request.getfixturevalue("riscv_binary"), sig, args)
    return _run_interpreter(sig, args)


# every float kind but softmax, which rounds its stored exponentials to f16 (see _f16_allowed)
ROUNDED_ONCE = [s for s in CASES if s.dtype == "f32" and s.kind in _FLOAT_KIND_NAMES - {"softmax"}]


@pytest.mark.parametrize("sig32", ROUNDED_ONCE, ids=lambda s: s.kind)
def test_f16_is_the_f32_kernel_rounded_once(
    request: pytest.FixtureRequest, sig32: rv.KernelSignature
) -> None:
    """On the same (f16) inputs the f16 kernel's output is the f32 kernel's rounded to f16, bit
    for bit: the same f32 arithmetic (one-operation kinds: `.h` instructions, which round as
    f32 then f16 does), one rounding at the store. And it is not the f32 output: where an f32
    kernel's rounding error cannot explain the difference, f16 storage made it."""
    sig16 = dataclasses.replace(sig32, dtype="f16")
    args16 = _inputs(sig16, np.random.default_rng(3))
    args32 = [a.astype(np.float32) if a.dtype == np.float16 else a for a in args16]
    out16 = _run(request, sig16, args16)[-1]
    out32 = _run(request, sig32, args32)[-1]
    np.testing.assert_array_equal(out16, out32.astype(np.float16), err_msg=sig16.symbol)
    _, allowed32 = _reference(sig32, args32)
    copies = ("transpose", "broadcast", "column_slice", "gather", "clip")
    if sig32.kind not in copies:  # (a copy or clip of f16 values is exact in f16)
        assert np.any(np.abs(out16.astype(np.float64) - out32) > allowed32), sig16.symbol
