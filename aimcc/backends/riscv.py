"""RISC-V code generation for the digital kernels that run on the PMCA clusters.

Each kernel is built as a `func.func` on static memrefs (linalg where the op is elementwise,
scf loops where an output is a reduction, accumulated in a register), then lowered with
xDSL's plain RISC-V pipeline to rv64gc assembly, following the standard calling convention:
arguments in a0, a1, ... and only caller-saved registers used.

Float data is in the cluster's number format, the signature's dtype: f16 (the presets' fp16
cluster) or f32. f16 is stored as 2 bytes (Zfh `flh`/`fsh`, zfh.py); a kernel that applies one
operation per element computes it in `.h` instructions, and every reduction (dot products,
sums, a norm's statistics) and every polynomial (exp, tanh, erf) runs in f32 registers on
values widened with `fcvt.s.h`, rounded to f16 once when stored (docs/RISCV.md says why).
f32 kernels use the `.s` instructions. Either assembles with stock
`riscv64-linux-gnu-gcc -march=rv64gc` (an f16 file enables Zfh itself).
Integer data (ids, masks) is i64, i32 or bool, a bool being one byte holding 0 or 1.
"""

import math as pymath
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from xdsl.backend.assembly_printer import AssemblyPrinter
from xdsl.backend.riscv.lowering.convert_memref_to_riscv import get_strided_pointer
from xdsl.backend.riscv.lowering.utils import cast_operands_to_regs
from xdsl.context import Context
from xdsl.dialects import arith, func, math, memref, riscv, rv64, scf
from xdsl.dialects.builtin import (
    AffineMapAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    UnrealizedConversionCastOp,
    f16,
    f32,
    i1,
    i8,
    i32,
    i64,
)
from xdsl.dialects.linalg.attrs import IteratorTypeAttr
from xdsl.dialects.linalg.ops import GenericOp, YieldOp
from xdsl.dialects.riscv import riscv_code
from xdsl.dialects.riscv.abstract_ops import (
    AssemblyInstructionArg,
    RdRsFloatOperation,
    RdRsImmIntegerOperation,
    RdRsIntegerOperation,
    RsRsImmIntegerOperation,
    assembly_arg_str,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineMap
from xdsl.irdl import irdl_op_definition, traits_def
from xdsl.passes import ModulePass, PassPipeline
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)
from xdsl.traits import MemoryReadEffect
from xdsl.transforms import get_all_passes

from aimcc.backends.signatures import (
    _BINARY_KINDS,
    _GATHER_ND_AXES,
    _LOGICAL_KINDS,
    DTYPE_BYTES,
    KernelSignature,
    kernel_args,
)
from aimcc.backends.zfh import ZFH_DIRECTIVE, FMvHXOp, FMvXHOp, LowerF16ToRiscvPass


@dataclass(frozen=True)
class KernelAsm:
    """A lowered kernel: its assembly and the buffers it expects in a0, a1, ..."""

    signature: KernelSignature
    asm: str
    args: tuple[tuple[str, str, tuple[int, ...]], ...]
    footprint_bytes: int


class _Emit:
    """Inserts arith/math/memref/scf ops through any `insert` (a Builder's or a rewriter's), so
    kernel bodies and the math expansions read like the formulas they compute."""

    def __init__(self, insert: Callable[[Operation], Operation]) -> None:
        self._insert = insert

    def op(self, op: Operation) -> SSAValue:
        return self._insert(op).results[0]

    def f(self, value: float, typ: Attribute = f32) -> SSAValue:
        """A float constant; in f16 saturated to the largest finite value (the mask's
        -3.4e38 and an unbounded clip's bounds become -+65504), as an fp16 cluster holds them."""
        if typ == f16:
            value = min(max(value, -_F16_MAX), _F16_MAX)
        return self.op(arith.ConstantOp(FloatAttr(value, typ)))

    def widen(self, x: SSAValue) -> SSAValue:
        """f32 from an f16 value (exact); f32 values as they are."""
        return self.op(arith.ExtFOp(x, f32)) if x.type == f16 else x

    def narrow(self, x: SSAValue, typ: Attribute) -> SSAValue:
        """``x`` rounded to ``typ`` (to nearest, ties to even) when that is f16."""
        return self.op(arith.TruncFOp(x, f16)) if typ == f16 and x.type == f32 else x

    def i(self, value: int) -> SSAValue:
        return self.op(arith.ConstantOp.from_int_and_width(value, 32))

    def index(self, value: int) -> SSAValue:
        return self.op(arith.ConstantOp(IntegerAttr.from_index_int_value(value)))

    def add(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(arith.AddfOp(a, b))

    def sub(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(arith.SubfOp(a, b))

    def mul(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(arith.MulfOp(a, b))

    def div(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(arith.DivfOp(a, b))

    def max(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(arith.MaximumfOp(a, b))

    def min(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(arith.MinimumfOp(a, b))

    def neg(self, a: SSAValue) -> SSAValue:
        return self.op(arith.NegfOp(a))

    def horner(self, x: SSAValue, coeffs: Sequence[float]) -> SSAValue:
        """sum coeffs[i] * x**(n-1-i), highest power first."""
        acc = self.f(coeffs[0])
        for c in coeffs[1:]:
            acc = self.add(self.mul(acc, x), self.f(c))
        return acc

    def load(self, mem: SSAValue, *indices: SSAValue) -> SSAValue:
        return self.op(memref.LoadOp.get(mem, indices))

    def store(self, value: SSAValue, mem: SSAValue, *indices: SSAValue) -> None:
        self._insert(memref.StoreOp.get(value, mem, indices))

    def loadf(self, mem: SSAValue, *indices: SSAValue) -> SSAValue:
        """A float element, in f32 to compute with."""
        return self.widen(self.load(mem, *indices))

    def storef(self, value: SSAValue, mem: SSAValue, *indices: SSAValue) -> None:
        """An f32 result into a float buffer, rounded once to its element type."""
        self.store(self.narrow(value, _element_type(mem)), mem, *indices)

    def loop(
        self,
        n: int,
        body: Callable[["_Emit", SSAValue, tuple[SSAValue, ...]], Sequence[SSAValue]],
        init: Sequence[SSAValue] = (),
    ) -> tuple[SSAValue, ...]:
        """scf.for i in [0, n) carrying `init` through iter_args; returns the final carries."""
        block = Block(arg_types=(IndexType(), *(v.type for v in init)))
        inner = _Emit(_Builder(block).insert)
        inner._insert(scf.YieldOp(*body(inner, block.args[0], block.args[1:])))
        lo, hi, step = self.index(0), self.index(n), self.index(1)
        return tuple(self._insert(scf.ForOp(lo, hi, step, init, Region(block))).results)

    def generic(
        self,
        ins: Sequence[SSAValue],
        out: SSAValue,
        maps: Sequence[AffineMap],
        reduced_dims: Sequence[int],
        body: Callable[..., SSAValue],
    ) -> None:
        """linalg.generic writing `out`; `body(emit, *in_elements, out_element)` gives the new
        out element. Dims in `reduced_dims` are reduction iterators."""
        element_types = [_element_type(v) for v in (*ins, out)]
        block = Block(arg_types=element_types)
        inner = _Emit(_Builder(block).insert)
        inner._insert(YieldOp(body(inner, *block.args)))
        iterators = [
            IteratorTypeAttr.reduction() if dim in reduced_dims else IteratorTypeAttr.parallel()
            for dim in range(maps[0].num_dims)
        ]
        self._insert(
            GenericOp(ins, [out], Region(block), [AffineMapAttr(m) for m in maps], iterators)
        )


class _Builder:
    """Appends ops to the end of a block (the only insertion kernels need)."""

    def __init__(self, block: Block) -> None:
        self.block = block

    def insert(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op


def _element_type(value: SSAValue) -> Attribute:
    assert isinstance(value.type, MemRefType)
    return value.type.element_type


_F16_MAX = 65504.0  # the largest finite binary16 value


# ---- math expansions -------------------------------------------------------------------------
# xDSL's `expand-math-to-polynomials` only rewrites math.exp, as a Taylor series around 0 with no
# range reduction: softmax feeds it x - max in [-20, 0], where the alternating series cancels
# catastrophically in f32. So exp is range-reduced here (Cody-Waite), and tanh/erf build on it.

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # 15 significant bits: n * _LN2_HI is exact in f32 for |n| < 2**9
_LN2_LO = 1.4286068203094172e-06  # ln 2 - _LN2_HI
_EXP_CLAMP = (-87.0, 88.0)  # keeps 2**n a normal f32 (n + 127 in [1, 254])


def _expand_exp(e: _Emit, x: SSAValue) -> SSAValue:
    """exp(x) = 2**n * exp(r): n = int(x log2 e), |r| <= ln 2 whichever way fcvt.w.s rounds;
    exp(r) by its degree-9 Taylor polynomial (truncation error < 7e-9 relative on |r| <= ln 2);
    2**n by writing n + 127 into the f32 exponent field."""
    x = e.min(e.max(x, e.f(_EXP_CLAMP[0])), e.f(_EXP_CLAMP[1]))
    n = e.op(arith.FPToSIOp(e.mul(x, e.f(_LOG2E)), i32))
    n_f = e.op(arith.SIToFPOp(n, f32))
    r = e.sub(e.sub(x, e.mul(n_f, e.f(_LN2_HI))), e.mul(n_f, e.f(_LN2_LO)))
    poly = e.horner(r, [1.0 / pymath.factorial(k) for k in range(9, -1, -1)])
    biased = e.op(arith.ShLIOp(e.op(arith.AddiOp(n, e.i(127))), e.i(23)))
    return e.mul(poly, e.op(arith.BitcastOp(biased, f32)))


def _expand_tanh(e: _Emit, x: SSAValue) -> SSAValue:
    """tanh(x) = 1 - 2 / (exp(2x) + 1): saturates to +-1 through the exp clamp."""
    exp2x = _expand_exp(e, e.add(x, x))
    return e.sub(e.f(1.0), e.div(e.f(2.0), e.add(exp2x, e.f(1.0))))


# Abramowitz & Stegun 7.1.26: |error| <= 1.5e-7 for x >= 0.
_ERF_P = 0.3275911
_ERF_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592, 0.0)


def _expand_erf(e: _Emit, x: SSAValue) -> SSAValue:
    a = e.max(x, e.neg(x))
    t = e.div(e.f(1.0), e.add(e.f(1.0), e.mul(e.f(_ERF_P), a)))
    tail = e.mul(e.horner(t, _ERF_A), _expand_exp(e, e.neg(e.mul(a, a))))
    return e.op(math.CopySignOp(e.sub(e.f(1.0), tail), x))


_EXPANSIONS: dict[type[Operation], Callable[[_Emit, SSAValue], SSAValue]] = {
    math.ExpOp: _expand_exp,
    math.TanhOp: _expand_tanh,
    math.ErfOp: _expand_erf,
}


class _ExpandMath(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        expand = _EXPANSIONS.get(type(op))
        if expand is not None and op.results[0].type == f32:
            rewriter.replace(op, [], [expand(_Emit(rewriter.insert), op.operands[0])])


class _LowerFloatBitsToRiscv(RewritePattern):
    """The f32 ops convert-arith-to-riscv leaves alone: sqrt, copysign, i32->f32 bitcast."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        freg, ireg = riscv.Registers.UNALLOCATED_FLOAT, riscv.Registers.UNALLOCATED_INT
        match op:
            case math.SqrtOp() if op.result.type == f32:
                reg_types, make = (freg,), lambda a: riscv.FSqrtSOp(a, rd=freg)
            case math.CopySignOp() if op.result.type == f32:
                reg_types, make = (freg, freg), lambda a, b: riscv.FSgnJSOp(a, b, rd=freg)
            case arith.BitcastOp() if op.result.type == f32 and op.input.type == i32:
                reg_types, make = (ireg,), lambda a: riscv.FMvWXOp(a, rd=freg)
            case _:
                return
        casts = [
            UnrealizedConversionCastOp.get((v,), (t,))
            for v, t in zip(op.operands, reg_types, strict=True)
        ]
        new = make(*(c.results[0] for c in casts))
        back = UnrealizedConversionCastOp.get(new.results, (op.results[0].type,))
        rewriter.replace(op, [*casts, new, back], back.results)


@irdl_op_definition
class FCvtSLOp(RdRsFloatOperation[riscv.IntRegisterType]):
    """f32 from a signed 64-bit integer (rounded by frm, round-to-nearest-even by default)."""

    name = "riscv.fcvt.s.l"


@irdl_op_definition
class FCvtLSRtzOp(RdRsIntegerOperation[riscv.FloatRegisterType]):
    """Signed 64-bit integer from f32, rounded towards zero as a C cast or numpy's astype."""

    name = "riscv.fcvt.l.s"

    def assembly_line_args(self) -> tuple[AssemblyInstructionArg, ...]:
        return self.rd, self.rs, "rtz"


def _offset_form(op: RdRsImmIntegerOperation | RsRsImmIntegerOperation, reg: SSAValue) -> str:
    """`name reg, imm(base)`, the assembler's syntax for a load or store."""
    imm, base = assembly_arg_str(op.immediate), assembly_arg_str(op.rs1)
    line = f"{assembly_arg_str(reg)}, {imm}({base})"
    return AssemblyPrinter.assembly_line(op.assembly_instruction_name(), line, op.comment)


# xDSL 0.74's riscv.lbu and riscv.sb print as `lbu rd, rs1, imm`, which no assembler takes
@irdl_op_definition
class LbuOp(RdRsImmIntegerOperation):
    """Load a byte, zero-extended (a bool stays 0 or 1)."""

    name = "riscv.lbu"
    traits = traits_def(MemoryReadEffect())

    def assembly_line(self) -> str | None:
        return _offset_form(self, self.rd)


@irdl_op_definition
class SbOp(RsRsImmIntegerOperation):
    """Store the low byte of rs2."""

    name = "riscv.sb"

    def assembly_line(self) -> str | None:
        return _offset_form(self, self.rs2)


def _int_width(typ: Attribute) -> int:
    return typ.width.data if isinstance(typ, IntegerType) else 64  # index: the register


class _LowerIntegersToRiscv(RewritePattern):
    """What xDSL's memref and arith lowerings lack for i64/i32/bool data on rv64: byte and
    doubleword memory access (they use lw/sw for every integer), 64-bit constants, integer
    extension and truncation, i64 <-> f32 conversion and select. Registers hold i32 and i64
    sign-extended, bytes (bools) and i1 zero-extended, so extending them is free."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        freg, ireg = riscv.Registers.UNALLOCATED_FLOAT, riscv.Registers.UNALLOCATED_INT
        match op:
            case memref.LoadOp() | memref.StoreOp():
                self._memory(op, rewriter)
                return
            case arith.ConstantOp() if op.result.type == i64:
                assert isinstance(op.value, IntegerAttr)
                ops = [rv64.LiOp(op.value.value.data, rd=ireg)]
            case arith.ExtUIOp() if op.input.type in (i1, i8):
                ops = []
            case arith.ExtSIOp() if op.input.type == i32:
                ops = []
            case arith.TruncIOp():
                x, width = self._reg(op.input, ireg), _int_width(op.result.type)
                if width == 32:
                    ops = [x.owner, riscv.SextWOp(x, rd=ireg)]
                else:
                    ops = [x.owner, riscv.AndiOp(x, (1 << width) - 1, rd=ireg)]
            case arith.SIToFPOp() if op.input.type == i64 and op.result.type == f32:
                x = self._reg(op.input, ireg)
                ops = [x.owner, FCvtSLOp(x, rd=freg)]
            case arith.FPToSIOp() if op.input.type == f32 and op.result.type == i64:
                x = self._reg(op.input, freg)
                ops = [x.owner, FCvtLSRtzOp(x, rd=ireg)]
            case arith.SelectOp():
                ops = self._select(op)
            case _:
                return
        if not ops:  # a no-op extension: the register already holds the wider value
            cast = UnrealizedConversionCastOp.get((op.operands[0],), (op.results[0].type,))
            rewriter.replace(op, cast)
            return
        back = UnrealizedConversionCastOp.get(ops[-1].results, (op.results[0].type,))
        rewriter.replace(op, [*ops, back], back.results)

    @staticmethod
    def _reg(value: SSAValue, reg: Attribute) -> SSAValue:
        """`value` in a register (through a cast op the caller inserts: `result.owner`)."""
        return UnrealizedConversionCastOp.get((value,), (reg,)).results[0]

    def _select(self, op: arith.SelectOp) -> list[Operation]:
        """Branch-free: y = a ^ ((a ^ b) & (c - 1)), c the i1 condition (0 or 1); f32 and f16
        values go through integer registers bit for bit (`fmv.x.w`/`fmv.x.h` and back)."""
        ireg, freg = riscv.Registers.UNALLOCATED_INT, riscv.Registers.UNALLOCATED_FLOAT
        moves = {f32: (riscv.FMvXWOp, riscv.FMvWXOp), f16: (FMvXHOp, FMvHXOp)}
        to_int, to_float = moves.get(op.result.type, (None, None))
        c = self._reg(op.cond, ireg)
        ops: list[Operation] = [c.owner]

        def bits(value: SSAValue) -> SSAValue:
            reg = self._reg(value, freg if to_int else ireg)
            ops.append(reg.owner)
            if to_int:
                ops.append(to_int(reg, rd=ireg))
                return ops[-1].results[0]
            return reg

        a, b = bits(op.lhs), bits(op.rhs)
        mask = riscv.AddiOp(c, -1, rd=ireg)
        diff = riscv.XorOp(a, b, rd=ireg)
        kept = riscv.AndOp(diff, mask, rd=ireg)
        chosen = riscv.XorOp(a, kept, rd=ireg)
        ops += [mask, diff, kept, chosen]
        if to_float:
            ops.append(to_float(chosen, rd=freg))
        return ops

    @staticmethod
    def _memory(op: memref.LoadOp | memref.StoreOp, rewriter: PatternRewriter) -> None:
        """lbu/sb for bools, ld/sd for i64 (xDSL's memref lowering handles f32 and i32)."""
        memref_type = op.memref.type
        assert isinstance(memref_type, MemRefType)
        width = _int_width(memref_type.element_type)
        if not isinstance(memref_type.element_type, IntegerType) or width not in (8, 64):
            return
        operands = cast_operands_to_regs(rewriter, op)
        if isinstance(op, memref.LoadOp):
            mem, *indices = operands
            address, ptr = get_strided_pointer(mem, indices, memref_type)
            load_op = LbuOp if width == 8 else rv64.LdOp
            load = load_op(ptr, 0, rd=riscv.Registers.UNALLOCATED_INT)
            back = UnrealizedConversionCastOp.get(load.results, (op.res.type,))
            rewriter.replace(op, [*address, load, back], back.results)
        else:
            value, mem, *indices = operands
            address, ptr = get_strided_pointer(mem, indices, memref_type)
            store_op = SbOp if width == 8 else rv64.SdOp
            rewriter.replace(op, [*address, store_op(ptr, value, 0)], [])


@dataclass(frozen=True)
class ExpandMathPass(ModulePass):
    """Range-reduced f32 exp/tanh/erf in arith (see `_expand_exp`)."""

    name = "aimcc-expand-math"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(_ExpandMath(), apply_recursively=False).rewrite_module(op)


@dataclass(frozen=True)
class LowerIntegersToRiscvPass(ModulePass):
    """Runs before convert-memref-to-riscv, which would take i64 and bool buffers for i32."""

    name = "aimcc-lower-integers-to-riscv"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(_LowerIntegersToRiscv(), apply_recursively=False).rewrite_module(op)


@dataclass(frozen=True)
class LowerFloatBitsToRiscvPass(ModulePass):
    name = "aimcc-lower-float-bits-to-riscv"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(_LowerFloatBitsToRiscv(), apply_recursively=False).rewrite_module(op)


# ---- kernels ---------------------------------------------------------------------------------


def _maps(fn: Callable[..., tuple], *more: Callable[..., tuple]) -> list[AffineMap]:
    return [AffineMap.from_callable(f) for f in (fn, *more)]


def _row_sum(e: _Emit, n: int, term: Callable[[_Emit, SSAValue], SSAValue]) -> SSAValue:
    """sum_{j<n} term(j), accumulated left to right in an f32 register."""

    def step(inner: _Emit, j: SSAValue, acc: tuple[SSAValue, ...]) -> list[SSAValue]:
        return [inner.add(acc[0], term(inner, j))]

    return e.loop(n, step, [e.f(0.0)])[0]


Index = tuple[SSAValue, ...]


def _reduce(
    e: _Emit,
    out: SSAValue,
    n: int,
    term: Callable[[_Emit, Index, SSAValue], SSAValue],
    finish: Callable[[_Emit, Index, SSAValue], SSAValue] = lambda _, __, acc: acc,
) -> None:
    """out[i] = finish(i, sum_{j<n} term(i, j)) for every index i of ``out``: the sum in an f32
    register, left to right, rounded once to out's element type when stored."""
    shape = out.type.get_shape()  # type: ignore[union-attr]

    def nest(inner: _Emit, index: Index) -> None:
        if len(index) == len(shape):
            total = _row_sum(inner, n, lambda i, j: term(i, index, j))
            inner.storef(finish(inner, index, total), out, *index)
            return

        def body(deeper: _Emit, i: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
            nest(deeper, (*index, i))
            return []

        inner.loop(shape[len(index)], body)

    nest(e, ())


def _matmul(e: _Emit, a: SSAValue, b: SSAValue, out: SSAValue) -> None:
    k_size = a.type.get_shape()[1]  # type: ignore[union-attr]
    _reduce(e, out, k_size, lambda i, mn, k: i.mul(i.loadf(a, mn[0], k), i.loadf(b, k, mn[1])))


def _softmax(e: _Emit, sig: KernelSignature, x: SSAValue, y: SSAValue) -> None:
    m_size, n_size = sig.dim("M"), sig.dim("N")

    def row(r: _Emit, m: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
        def running_max(inner: _Emit, j: SSAValue, acc: tuple[SSAValue, ...]) -> list[SSAValue]:
            return [inner.max(acc[0], inner.loadf(x, m, j))]

        (row_max,) = r.loop(n_size, running_max, [r.loadf(x, m, r.index(0))])

        def exp_and_sum(inner: _Emit, j: SSAValue) -> SSAValue:
            ex = inner.op(math.ExpOp(inner.sub(inner.loadf(x, m, j), row_max)))
            inner.storef(ex, y, m, j)  # (rounded to f16 there: y is the only buffer)
            return ex

        total = _row_sum(r, n_size, exp_and_sum)

        def normalise(inner: _Emit, j: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
            inner.storef(inner.div(inner.loadf(y, m, j), total), y, m, j)
            return []

        r.loop(n_size, normalise)
        return []

    e.loop(m_size, row)


def _norm(
    e: _Emit, sig: KernelSignature, x: SSAValue, gamma: SSAValue, beta: SSAValue | None, y: SSAValue
) -> None:
    """layer_norm when `beta` is given (centred, two-pass variance), else rms_norm."""
    m_size, n_size = sig.dim("M"), sig.dim("N")

    def row(r: _Emit, m: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
        inv_n = r.f(1.0 / n_size)
        if beta is not None:
            mean = r.mul(_row_sum(r, n_size, lambda i, j: i.loadf(x, m, j)), inv_n)
        else:
            mean = r.f(0.0)

        def square(inner: _Emit, j: SSAValue) -> SSAValue:
            d = inner.sub(inner.loadf(x, m, j), mean)
            return inner.mul(d, d)

        var = r.mul(_row_sum(r, n_size, square), inv_n)
        inv_std = r.div(r.f(1.0), r.op(math.SqrtOp(r.add(var, r.f(sig.attr("eps"))))))

        def scale(inner: _Emit, j: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
            v = inner.mul(
                inner.mul(inner.sub(inner.loadf(x, m, j), mean), inv_std), inner.loadf(gamma, j)
            )
            if beta is not None:
                v = inner.add(v, inner.loadf(beta, j))
            inner.storef(v, y, m, j)
            return []

        r.loop(n_size, scale)
        return []

    e.loop(m_size, row)


def _gelu_erf(e: _Emit, x: SSAValue, _: SSAValue) -> SSAValue:
    cdf = e.add(e.f(1.0), e.op(math.ErfOp(e.mul(x, e.f(pymath.sqrt(0.5))))))
    return e.mul(e.mul(e.f(0.5), x), cdf)


def _gelu_tanh(e: _Emit, x: SSAValue, _: SSAValue) -> SSAValue:
    inner = e.mul(
        e.f(pymath.sqrt(2.0 / pymath.pi)), e.add(x, e.mul(e.f(0.044715), e.mul(x, e.mul(x, x))))
    )
    return e.mul(e.mul(e.f(0.5), x), e.add(e.f(1.0), e.op(math.TanhOp(inner))))


def _silu(e: _Emit, x: SSAValue, _: SSAValue) -> SSAValue:
    return e.div(x, e.add(e.f(1.0), e.op(math.ExpOp(e.neg(x)))))


_UNARY = {"gelu_erf": _gelu_erf, "gelu_tanh": _gelu_tanh, "silu": _silu}


def _in_f32(formula: Callable[[_Emit, SSAValue, SSAValue], SSAValue]) -> Callable[..., SSAValue]:
    """A linalg.generic body computing ``formula`` in f32 on an element of any float type,
    rounded once to the output's type."""
    return lambda e, x, out: e.narrow(formula(e, e.widen(x), out), out.type)


def _cast(e: _Emit, x: SSAValue, source: str, target: str) -> SSAValue:
    """One element, with numpy's astype semantics: integers wrap, floats truncate towards zero,
    anything nonzero (NaN included) is true. Integers go through i64 first, floats through f32
    (f16 -> f32 is exact; an integer -> f32 -> f16 rounds once, as every integer that rounds
    differently in f32 is beyond f16's range)."""
    if source in ("f32", "f16"):
        x = e.widen(x)
        if target == "bool":
            nonzero = e.op(arith.CmpfOp(x, e.f(0.0), "une"))
            return e.op(arith.ExtUIOp(nonzero, i8))
        if target in ("f32", "f16"):
            return e.narrow(x, _MLIR_TYPES[target])
        wide = e.op(arith.FPToSIOp(x, i64))
    else:
        extend = arith.ExtUIOp if source == "bool" else arith.ExtSIOp
        wide = x if source == "i64" else e.op(extend(x, i64))
    match target:
        case "f32" | "f16":
            return e.narrow(e.op(arith.SIToFPOp(wide, f32)), _MLIR_TYPES[target])
        case "bool":
            nonzero = e.op(arith.CmpiOp(wide, e.op(arith.ConstantOp(IntegerAttr(0, i64))), "ne"))
            return e.op(arith.ExtUIOp(nonzero, i8))
        case "i32":
            return e.op(arith.TruncIOp(wide, i32))
    return wide


def _is_true(e: _Emit, flag: SSAValue) -> SSAValue:
    """i1 from a stored bool byte (any nonzero byte counts as true)."""
    return e.op(arith.CmpiOp(flag, e.op(arith.ConstantOp(IntegerAttr(0, i8))), "ne"))


def _gather_nd(e: _Emit, sig: KernelSignature, data: SSAValue, idx: SSAValue, y: SSAValue) -> None:
    """y[t] = data[idx[t, 0], idx[t, 1], ...], a slice of D elements per index tuple; negative
    indices count from the end of their axis, as in ONNX. The tuple becomes one row of the
    flattened data first, so a single register stays live in the copy loop."""
    axes = [sig.dim(name) for name in _GATHER_ND_AXES if name in dict(sig.dims)]

    def row(r: _Emit, t: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
        flat = r.index(0)
        for k, size in enumerate(axes):
            i = r.op(arith.IndexCastOp(r.load(idx, t, r.index(k)), IndexType()))
            negative = r.op(arith.CmpiOp(i, r.index(0), "slt"))
            i = r.op(arith.SelectOp(negative, r.op(arith.AddiOp(i, r.index(size))), i))
            flat = r.op(arith.AddiOp(r.op(arith.MuliOp(flat, r.index(size))), i))

        def copy(inner: _Emit, d: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
            inner.store(inner.load(data, flat, d), y, t, d)
            return []

        r.loop(sig.dim("D"), copy)
        return []

    e.loop(sig.dim("T"), row)


def _build_body(e: _Emit, sig: KernelSignature, args: Sequence[SSAValue]) -> None:
    match sig.kind, args:
        case "lora_xa" | "matmul" | "av", (a, b, out):
            _matmul(e, a, b, out)
        case "lora_b_add", (h, b, y):  # y += scale (h B), in place
            scale = sig.attr("scale")
            _reduce(
                e,
                y,
                sig.dim("R"),
                lambda i, tn, r: i.mul(i.loadf(h, tn[0], r), i.loadf(b, r, tn[1])),
                lambda i, tn, acc: i.add(i.loadf(y, *tn), i.mul(i.f(scale), acc)),
            )
        case "qk", (q, kt, s):
            scale = sig.attr("scale")
            _reduce(
                e,
                s,
                sig.dim("D"),
                lambda i, ab, d: i.mul(i.loadf(q, ab[0], d), i.loadf(kt, d, ab[1])),
                lambda i, _, acc: i.mul(acc, i.f(scale)),
            )
        case "softmax", (x, y):
            _softmax(e, sig, x, y)
        case "layer_norm", (x, gamma, beta, y):
            _norm(e, sig, x, gamma, beta, y)
        case "rms_norm", (x, gamma, y):
            _norm(e, sig, x, gamma, None, y)
        case "gelu_erf" | "gelu_tanh" | "silu", (x, y):
            body = _in_f32(_UNARY[sig.kind])
            e.generic([x], y, _maps(lambda n: (n,), lambda n: (n,)), [], body)
        case kind, (a, b, y) if kind in _BINARY_KINDS:
            op, bcast = _BINARY_KINDS[kind]
            b_map = {"": lambda m, n: (m, n), "row": lambda m, n: (n,), "col": lambda m, n: (m,)}
            ident = lambda m, n: (m, n)  # noqa: E731
            apply = getattr(_Emit, op)  # in the element type: one correctly rounded op
            maps = _maps(ident, b_map[bcast], ident)
            e.generic([a, b], y, maps, [], lambda i, av, bv, _: apply(i, av, bv))
        case "clip", (x, y):
            lo, hi, typ = sig.attr("lo"), sig.attr("hi"), _element_type(x)
            e.generic(
                [x],
                y,
                _maps(lambda n: (n,), lambda n: (n,)),
                [],
                lambda i, xv, _: i.min(i.max(xv, i.f(lo, typ)), i.f(hi, typ)),
            )
        case "transpose", (x, y):
            e.generic(
                [x],
                y,
                _maps(lambda a, b, c: (a, b, c), lambda a, b, c: (b, a, c)),
                [],
                lambda i, xv, _: xv,
            )
        case "broadcast", (x, y):
            e.generic(
                [x],
                y,
                _maps(lambda a, b, c: (a, c), lambda a, b, c: (a, b, c)),
                [],
                lambda i, xv, _: xv,
            )
        case "reduce_sum", (x, y):
            _reduce(e, y, sig.dim("B"), lambda i, ac, b: i.loadf(x, ac[0], b, ac[1]))
        case "reduce_l2", (x, y):

            def square(i: _Emit, ac: Index, b: SSAValue) -> SSAValue:
                v = i.loadf(x, ac[0], b, ac[1])
                return i.mul(v, v)

            _reduce(e, y, sig.dim("B"), square, lambda i, _, acc: i.op(math.SqrtOp(acc)))
        case "column_slice", (x, y):

            def row(r: _Emit, m: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
                def copy(inner: _Emit, n: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
                    inner.store(inner.load(x, m, n), y, m, n)
                    return []

                r.loop(sig.dim("N"), copy)
                return []

            e.loop(sig.dim("M"), row)
        case "rope", (x, cos, sin, y):
            half = sig.dim("D") // 2

            def rope_row(r: _Emit, t: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
                def pair(inner: _Emit, j: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
                    k = inner.op(arith.AddiOp(j, inner.index(half)))
                    lo, hi = inner.loadf(x, t, j), inner.loadf(x, t, k)
                    first = inner.sub(
                        inner.mul(lo, inner.loadf(cos, t, j)), inner.mul(hi, inner.loadf(sin, t, j))
                    )
                    second = inner.add(
                        inner.mul(hi, inner.loadf(cos, t, k)), inner.mul(lo, inner.loadf(sin, t, k))
                    )
                    inner.storef(first, y, t, j)
                    inner.storef(second, y, t, k)
                    return []

                r.loop(half, pair)
                return []

            e.loop(sig.dim("T"), rope_row)
        case "accumulate", (parts, y):
            _reduce(e, y, sig.dim("P"), lambda i, mn, p: i.loadf(parts, p, *mn))
        case kind, (x, y) if kind.startswith("cast_"):
            target = kind.removeprefix("cast_")
            e.generic(
                [x],
                y,
                _maps(lambda n: (n,), lambda n: (n,)),
                [],
                lambda i, xv, _: _cast(i, xv, sig.dtype, target),
            )
        case kind, (a, b, y) if kind in _LOGICAL_KINDS:
            op, form = _LOGICAL_KINDS[kind]
            a_map = {"outer": lambda m, n: (m,)}.get(form, lambda m, n: (m, n))
            b_map = {
                "": lambda m, n: (m, n),
                "row": lambda m, n: (n,),
                "col": lambda m, n: (m,),
                "outer": lambda m, n: (n,),
            }[form]
            op_type = arith.AndIOp if op == "and" else arith.OrIOp
            maps = _maps(a_map, b_map, lambda m, n: (m, n))
            e.generic([a, b], y, maps, [], lambda i, av, bv, _: i.op(op_type(av, bv)))
        case "where", (cond, a, b, y):
            ident = lambda m, n: (m, n)  # noqa: E731
            e.generic(
                [cond, a, b],
                y,
                _maps(ident, ident, ident, ident),
                [],
                lambda i, cv, av, bv, _: i.op(arith.SelectOp(_is_true(i, cv), av, bv)),
            )
        case "where_const", (cond, y):
            on, off, typ = sig.attr("a"), sig.attr("b"), _element_type(y)
            e.generic(
                [cond],
                y,
                _maps(lambda m, n: (m, n), lambda m, n: (m, n)),
                [],
                lambda i, cv, _: i.op(arith.SelectOp(_is_true(i, cv), i.f(on, typ), i.f(off, typ))),
            )
        case "gather_nd", (data, idx, y):
            _gather_nd(e, sig, data, idx, y)
        case "gather", (table, idx, y):

            def row(r: _Emit, t: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
                token = r.op(arith.IndexCastOp(r.load(idx, t), IndexType()))

                def copy(inner: _Emit, d: SSAValue, _: tuple[SSAValue, ...]) -> list[SSAValue]:
                    inner.store(inner.load(table, token, d), y, t, d)
                    return []

                r.loop(sig.dim("D"), copy)
                return []

            e.loop(sig.dim("T"), row)
        case _:
            raise AssertionError(sig.kind)


# Forking a worker costs ~20 ms; below this many kernels per worker one process is faster.
KERNELS_PER_WORKER = 8
_MLIR_TYPES: dict[str, Attribute] = {"f16": f16, "f32": f32, "i64": i64, "i32": i32, "bool": i8}


def build_kernel_module(sig: KernelSignature) -> ModuleOp:
    """`func.func @symbol(memrefs...)` in linalg/scf/arith/math on static row-major memrefs."""
    arg_types = [MemRefType(_MLIR_TYPES[dt], shape) for _, dt, shape in kernel_args(sig)]
    block = Block(arg_types=arg_types)
    emit = _Emit(_Builder(block).insert)
    _build_body(emit, sig, block.args)
    emit._insert(func.ReturnOp())
    kernel = func.FuncOp(sig.symbol, (arg_types, []), Region(block))
    return ModuleOp([kernel])


_LOWERING = (
    "linalg-generalize-named-ops,convert-linalg-to-loops,convert-func-to-riscv-func,"
    "convert-memref-to-riscv,convert-arith-to-riscv,convert-scf-to-riscv-scf,"
    # infer-constant-step frees one register per loop: without it the naive allocator runs out
    # on 4-argument kernels with nested loops (layer_norm), as only a*/t* registers are used
    "reconcile-unrealized-casts,riscv-scf-for-infer-constant-step,riscv-allocate-registers,"
    # (a canonicalize before the cut changed no kernel of the corpus: only the last one runs)
    "riscv-lower-parallel-mov,convert-riscv-scf-to-riscv-cf,canonicalize"
)


@cache
def _pipelines() -> tuple[PassPipeline, PassPipeline]:
    """xDSL's plain RISC-V pipeline with the passes above spliced in before lowering,
    cut where loops become labels: everything before runs once on all kernels of a batch (the
    passes' fixed cost is shared), the rest per kernel, since label numbers are module-wide and
    a kernel's text must not depend on what it was generated with."""
    passes = PassPipeline.parse_spec(get_all_passes(), _LOWERING).passes
    names = [p.name for p in passes]
    memory, split = names.index("convert-memref-to-riscv"), names.index("convert-arith-to-riscv")
    cut = names.index("convert-riscv-scf-to-riscv-cf")
    batched = (
        ExpandMathPass(),
        *passes[:memory],
        LowerIntegersToRiscvPass(),
        LowerF16ToRiscvPass(),
        *passes[memory:split],
        LowerFloatBitsToRiscvPass(),
        *passes[split:cut],
    )
    return PassPipeline(batched), PassPipeline(passes[cut:])


def generate_kernels(sigs: Sequence[KernelSignature]) -> list[KernelAsm]:
    """Lower kernels to rv64gc assembly (f16 in Zfh, f32 in F), one per distinct signature in
    first-seen order; the text of each is the same as when generated alone.

    Many kernels are split into one batch per core, lowered in forked workers (the text does
    not depend on the batch, so the output is the same as lowering them in one process)."""
    unique = list(dict.fromkeys(sigs))
    workers = min(os.cpu_count() or 1, len(unique) // KERNELS_PER_WORKER)
    if workers > 1:
        batches = [unique[i::workers] for i in range(workers)]
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            done = pool.map(_lower_to_text, batches)
        text = {
            sig: asm
            for batch, asms in zip(batches, done, strict=True)
            for sig, asm in zip(batch, asms, strict=True)
        }
        texts = [text[sig] for sig in unique]
    else:
        texts = _lower_to_text(unique)
    kernels = []
    for sig, asm in zip(unique, texts, strict=True):
        args = kernel_args(sig)
        footprint = sum(DTYPE_BYTES[dt] * pymath.prod(shape) for _, dt, shape in args)
        kernels.append(KernelAsm(sig, asm, args, footprint))
    return kernels


def _lower_to_text(sigs: Sequence[KernelSignature]) -> list[str]:
    """One batch through the batched stages, then each kernel alone through the rest."""
    funcs = []
    for sig in sigs:
        kernel = build_kernel_module(sig).body.block.first_op
        assert kernel is not None
        kernel.detach()
        funcs.append(kernel)
    batched, per_kernel = _pipelines()
    module = ModuleOp(funcs)
    batched.apply(Context(), module)
    texts = []
    for sig, lowered in zip(sigs, list(module.body.block.ops), strict=True):
        lowered.detach()
        alone = ModuleOp([lowered])
        per_kernel.apply(Context(), alone)
        texts.append(_header(sig) + riscv_code(alone))
    return texts


def _header(sig: KernelSignature) -> str:
    """What the file computes on: its data types, and Zfh enabled where it holds f16."""
    dtypes = list(dict.fromkeys(dt for _, dt, _ in kernel_args(sig)))
    line = f"# {sig.symbol}: {' '.join(dtypes)} data"
    if "f16" in dtypes:
        line += " (Zfh; reductions and exp/tanh/erf in f32)\n" + ZFH_DIRECTIVE
    return line + "\n"


def generate_kernel(sig: KernelSignature) -> KernelAsm:
    """Lower one kernel to rv64gc assembly."""
    return generate_kernels([sig])[0]
