"""Half-precision (Zfh) instructions for xDSL's RISC-V dialect, and the lowering of f16 data.

xDSL 0.75's `riscv` dialect has the F and D extensions only (`.s`, `.d`), and its arith and
memref lowerings raise on f16. The kernels keep their float data in the cluster's number
format, so fp16 kernels need the scalar half-precision extension Zfh (RISC-V ISA manual,
"Zfh and Zfhmin Standard Extensions for Half-Precision Floating-Point", ratified 2021): loads
and stores of 2-byte values (`flh`/`fsh`), conversions to and from f32 (`fcvt.s.h`,
`fcvt.h.s`), the arithmetic the kernels do in f16 (`fadd.h`, `fsub.h`, `fmul.h`, `fdiv.h`,
`fmin.h`, `fmax.h`, `fsgnjn.h`) and bit moves (`fmv.x.h`, `fmv.h.x`). They are defined here as
IRDL ops on the same register types and base classes as xDSL's `.s` ops; the assembly name is
the op name without its `riscv.` prefix.

`LowerF16ToRiscvPass` runs before `convert-memref-to-riscv` and `convert-arith-to-riscv` and
rewrites what they would reject: memref loads and stores of f16, f16 constants and the arith
ops above on f16, and `extf`/`truncf` between f16 and f32. (f16 `select` is lowered with the
other selects in riscv.py.) The assembler needs Zfh: each f16 kernel's file says so itself
(`.option arch, +zfh`), so `-march=rv64gc` still assembles it, and a simulator must enable it
(qemu 7.2: `-cpu rv64,Zfh=true`).
"""

import struct
from dataclasses import dataclass

from xdsl.backend.assembly_printer import AssemblyPrinter
from xdsl.backend.riscv.lowering.convert_memref_to_riscv import get_strided_pointer
from xdsl.backend.riscv.lowering.utils import cast_operands_to_regs
from xdsl.context import Context
from xdsl.dialects import arith, memref, riscv, rv32
from xdsl.dialects.builtin import (
    FloatAttr,
    MemRefType,
    ModuleOp,
    UnrealizedConversionCastOp,
    f16,
    f32,
)
from xdsl.dialects.riscv.abstract_ops import (
    RdRsFloatOperation,
    RdRsImmFloatOperation,
    RdRsIntegerOperation,
    RdRsRsFloatOperation,
    RdRsRsFloatOperationWithFastMath,
    RsRsImmFloatOperation,
    assembly_arg_str,
)
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import irdl_op_definition, traits_def
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern
from xdsl.traits import AlwaysSpeculatable, MemoryReadEffect, MemoryWriteEffect

# The line an f16 kernel's assembly starts with: the assembler then accepts Zfh whatever -march
ZFH_DIRECTIVE = ".option arch, +zfh"


@irdl_op_definition
class FLhOp(RdRsImmFloatOperation):
    """Load a half-precision value into the low 16 bits of rd (NaN-boxed)."""

    name = "riscv.flh"
    traits = traits_def(MemoryReadEffect())

    def assembly_line(self) -> str | None:
        args = f"{assembly_arg_str(self.rd)}, {assembly_arg_str(self.immediate)}"
        args += f"({assembly_arg_str(self.rs1)})"
        return AssemblyPrinter.assembly_line(self.assembly_instruction_name(), args, self.comment)


@irdl_op_definition
class FShOp(RsRsImmFloatOperation):
    """Store the half-precision value in the low 16 bits of rs2."""

    name = "riscv.fsh"
    traits = traits_def(MemoryWriteEffect())

    def assembly_line(self) -> str | None:
        args = f"{assembly_arg_str(self.rs2)}, {assembly_arg_str(self.immediate)}"
        args += f"({assembly_arg_str(self.rs1)})"
        return AssemblyPrinter.assembly_line(self.assembly_instruction_name(), args, self.comment)


@irdl_op_definition
class FAddHOp(RdRsRsFloatOperationWithFastMath):
    name = "riscv.fadd.h"
    traits = traits_def(AlwaysSpeculatable())


@irdl_op_definition
class FSubHOp(RdRsRsFloatOperationWithFastMath):
    name = "riscv.fsub.h"
    traits = traits_def(AlwaysSpeculatable())


@irdl_op_definition
class FMulHOp(RdRsRsFloatOperationWithFastMath):
    name = "riscv.fmul.h"
    traits = traits_def(AlwaysSpeculatable())


@irdl_op_definition
class FDivHOp(RdRsRsFloatOperationWithFastMath):
    name = "riscv.fdiv.h"
    traits = traits_def(AlwaysSpeculatable())


@irdl_op_definition
class FMinHOp(RdRsRsFloatOperationWithFastMath):
    name = "riscv.fmin.h"
    traits = traits_def(AlwaysSpeculatable())


@irdl_op_definition
class FMaxHOp(RdRsRsFloatOperationWithFastMath):
    name = "riscv.fmax.h"
    traits = traits_def(AlwaysSpeculatable())


@irdl_op_definition
class FSgnJNHOp(RdRsRsFloatOperation[riscv.FloatRegisterType, riscv.FloatRegisterType]):
    """rs1 with the opposite of rs2's sign (`fneg.h rd, rs` is `fsgnjn.h rd, rs, rs`)."""

    name = "riscv.fsgnjn.h"


@irdl_op_definition
class FCvtSHOp(RdRsFloatOperation[riscv.FloatRegisterType]):
    """f32 from f16: exact."""

    name = "riscv.fcvt.s.h"


@irdl_op_definition
class FCvtHSOp(RdRsFloatOperation[riscv.FloatRegisterType]):
    """f16 from f32, rounded by frm (round to nearest, ties to even, by default)."""

    name = "riscv.fcvt.h.s"


@irdl_op_definition
class FMvXHOp(RdRsIntegerOperation[riscv.FloatRegisterType]):
    """The 16 bits of an f16 into an integer register, sign-extended."""

    name = "riscv.fmv.x.h"


@irdl_op_definition
class FMvHXOp(RdRsFloatOperation[riscv.IntRegisterType]):
    """The low 16 bits of an integer register as an f16."""

    name = "riscv.fmv.h.x"


def f16_bits(value: float) -> int:
    """The IEEE binary16 encoding of ``value`` (rounded to nearest even)."""
    return struct.unpack("<H", struct.pack("<e", value))[0]


_BINARY: dict[type[Operation], type[RdRsRsFloatOperationWithFastMath]] = {
    arith.AddfOp: FAddHOp,
    arith.SubfOp: FSubHOp,
    arith.MulfOp: FMulHOp,
    arith.DivfOp: FDivHOp,
    arith.MinimumfOp: FMinHOp,
    arith.MaximumfOp: FMaxHOp,
}


class _LowerF16ToRiscv(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        freg, ireg = riscv.Registers.UNALLOCATED_FLOAT, riscv.Registers.UNALLOCATED_INT
        match op:
            case memref.LoadOp() | memref.StoreOp():
                self._memory(op, rewriter)
                return
            case arith.ConstantOp() if op.result.type == f16:
                assert isinstance(op.value, FloatAttr)
                bits = rv32.LiOp(f16_bits(op.value.value.data), rd=ireg)
                ops: list[Operation] = [bits, FMvHXOp(bits, rd=freg)]
            case _ if type(op) in _BINARY and op.results[0].type == f16:
                a, b = (self._freg(v) for v in op.operands)
                ops = [a.owner, b.owner, _BINARY[type(op)](a, b, rd=freg)]  # type: ignore[list-item]
            case arith.NegfOp() if op.result.type == f16:
                x = self._freg(op.operand)
                ops = [x.owner, FSgnJNHOp(x, x, rd=freg)]  # type: ignore[list-item]
            case arith.ExtFOp() if op.input.type == f16 and op.result.type == f32:
                x = self._freg(op.input)
                ops = [x.owner, FCvtSHOp(x, rd=freg)]  # type: ignore[list-item]
            case arith.TruncFOp() if op.input.type == f32 and op.result.type == f16:
                x = self._freg(op.input)
                ops = [x.owner, FCvtHSOp(x, rd=freg)]  # type: ignore[list-item]
            case _:
                return
        back = UnrealizedConversionCastOp.get(ops[-1].results, (op.results[0].type,))
        rewriter.replace(op, [*ops, back], back.results)

    @staticmethod
    def _freg(value: SSAValue) -> SSAValue:
        """`value` in a float register (through a cast op the caller inserts: `.owner`)."""
        cast = UnrealizedConversionCastOp.get((value,), (riscv.Registers.UNALLOCATED_FLOAT,))
        return cast.results[0]

    @staticmethod
    def _memory(op: memref.LoadOp | memref.StoreOp, rewriter: PatternRewriter) -> None:
        memref_type = op.memref.type
        assert isinstance(memref_type, MemRefType)
        if memref_type.element_type != f16:
            return
        operands = cast_operands_to_regs(rewriter, op)
        if isinstance(op, memref.LoadOp):
            mem, *indices = operands
            address, ptr = get_strided_pointer(mem, indices, memref_type)
            load = FLhOp(ptr, 0, rd=riscv.Registers.UNALLOCATED_FLOAT)
            back = UnrealizedConversionCastOp.get(load.results, (op.res.type,))
            rewriter.replace(op, [*address, load, back], back.results)
        else:
            value, mem, *indices = operands
            address, ptr = get_strided_pointer(mem, indices, memref_type)
            rewriter.replace(op, [*address, FShOp(ptr, value, 0)], [])


@dataclass(frozen=True)
class LowerF16ToRiscvPass(ModulePass):
    """f16 memory access, constants, arithmetic and f16 <-> f32 conversions to Zfh."""

    name = "aimcc-lower-f16-to-riscv"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(_LowerF16ToRiscv(), apply_recursively=False).rewrite_module(op)
