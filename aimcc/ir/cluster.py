"""`cluster`: digital work lowered to calls of the RISC-V clusters' kernels.

``lower-cluster`` turns every ``digital.kernel`` into a ``cluster.call`` (or a
``cluster.view``). A call keeps its operands and results (what the runtime computes, named by
``callee``: ``matmul``, ``lora``, ``attention``, ``onnx.Add``, ...) and lists the RISC-V kernels
that compute it, in order, as ``#cluster.kernel`` attributes: a kind from the closed set of
:data:`aimcc.backends.signatures.KERNEL_KINDS`, static dims, compile-time scalars, the element
type, how many times it runs per call (``repeat``: heads, batch blocks) and the dim that holds
the call's tokens (``along``, ``unit`` elements per token) along which a call is cut into
chunks or TCDM pieces. ``reads`` gives, per kernel, the call operands it reads (a kernel after
the first also reads the one before it).

Everything a consumer needs of a kernel is a method of :class:`KernelAttr`, defined once: its
signature and arguments (`signatures.py`), TCDM footprint, the cost model's stage and cycles,
its piece for a TCDM and one part of a column split. The schedule makes one stage per kernel,
the manifest prints them, the RISC-V backend generates one function per distinct piece, and
the runtime executes the calls (the binary carries the kernels, which the runtime reports).

A ``cluster.view`` only re-indexes its operand (reshape, transpose, slice, split, expand): no
kernel runs; the DMA transfer of its consumer reads through it with strides.

In text (custom formats, as the ``nn`` ops'; a callee is a string, as emitc.call_opaque's: it
names what the runtime computes, no symbol of the module)::

    #cluster.kernel<qk f32 [D = 8, S = 16, S2 = 16] {scale = 2.500000e-01} repeat 2 along S>
    %a = cluster.call "attention"(%q, %kt, %v, %mask) on cluster 0 kernels [
           #cluster.kernel<qk ...> reads [0, 1], #cluster.kernel<add ...> reads [3], ...]
           params {scale = 2.500000e-01 : f32} : (tensor<..>, ...) -> tensor<..>
    %e = cluster.call "onnx.Relu"(%r) on cluster 0 unsupported "no RISC-V kernel for onnx.Relu"
           : (tensor<..>) -> tensor<..>
    %t = cluster.view "Transpose"(%h) params {perm = array<i64: 0, 1, 3, 2>} : (..) -> ..

(one line each). A kernel prints its kind, element type, dims, then its scalars, ``repeat`` and
``along``/``unit`` where they are not the defaults ({}, 1, none, 1); a scalar prints as MLIR
prints an f64 (a NaN or infinity as its bits in hex).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f64,
    i64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import AttrParser, Parser, UnresolvedOperand
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from aimcc.backends.signatures import (
    KERNEL_KINDS,
    KernelSignature,
    check_signature,
    kernel_args,
    tcdm_bytes,
)
from aimcc.errors import AimccError
from aimcc.ir.attrs import int_array, int_list

# ONNX ops a call never computes: they only re-index (cluster.view).
VIEW_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Slice"}
    | {"Split"}
)
# Kernel kinds a column split deals out by their N (output columns).
_COLUMN_KINDS = frozenset(
    {"accumulate", "matmul", "bias_add", "gelu_erf", "gelu_tanh", "silu", "clip"}
    | {k for k in KERNEL_KINDS if k.split("_")[0] in ("add", "sub", "mul", "div")}
)
# Kernel kind -> the cost model's stage kind (cost/model.py) where it has its own arithmetic;
# every other kernel is per-element work ("elementwise", ops per element from _ELEMENT_OPS).
_COST_KINDS = frozenset(
    {"lora_xa", "lora_b_add", "matmul", "qk", "av", "softmax", "layer_norm", "rms_norm"}
    | {"gelu_erf", "gelu_tanh", "silu", "add", "bias_add", "accumulate", "gather"}
)
_ELEMENT_OPS = {"rope": 3}  # x * cos + rotate(x) * sin; other kernels: 1 per element
_T = TypeVar("_T")
_Op = TypeVar("_Op", bound=IRDLOperation)


@irdl_attr_definition
class KernelAttr(ParametrizedAttribute):
    """One RISC-V kernel of a call: kind, dtype, dims, attrs, repeat, along, unit; in text
    ``#cluster.kernel<qk f32 [D = 8, S = 16, S2 = 16] {scale = 2.500000e-01} repeat 2 along S>``
    (see the module docstring)."""

    name = "cluster.kernel"

    kind: StringAttr
    dtype: StringAttr
    dims: DictionaryAttr
    attrs: DictionaryAttr
    repeat: IntegerAttr
    along: StringAttr
    unit: IntegerAttr

    def __init__(
        self,
        kind: str,
        dims: dict[str, int],
        attrs: dict[str, float] | None = None,
        dtype: str = "f32",
        repeat: int = 1,
        along: str = "",
        unit: int = 1,
    ):
        super().__init__(
            StringAttr(kind),
            StringAttr(dtype),
            DictionaryAttr({k: IntegerAttr(v, i64) for k, v in sorted(dims.items())}),
            DictionaryAttr({k: FloatAttr(float(v), f64) for k, v in sorted((attrs or {}).items())}),
            IntegerAttr(repeat, i64),
            StringAttr(along),
            IntegerAttr(unit, i64),
        )

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            kind = parser.parse_identifier_or_str_literal(" (the kernel's kind)")
            dtype = parser.parse_identifier_or_str_literal(" (the kernel's element type)")
            dims = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: _parse_entry(parser, _parse_int)
            )
            attrs = parser.parse_optional_comma_separated_list(
                parser.Delimiter.BRACES, lambda: _parse_entry(parser, _parse_f64)
            )
            repeat = _parse_int(parser) if parser.parse_optional_keyword("repeat") else 1
            along, unit = "", 1
            if parser.parse_optional_keyword("along"):
                along = parser.parse_identifier_or_str_literal(" (the dim of the tokens)")
                unit = _parse_int(parser) if parser.parse_optional_keyword("unit") else 1
        return (
            StringAttr(kind),
            StringAttr(dtype),
            DictionaryAttr({k: IntegerAttr(v, i64) for k, v in sorted(dims)}),  # as __init__
            DictionaryAttr({k: FloatAttr(v, f64) for k, v in sorted(attrs or [])}),
            IntegerAttr(repeat, i64),
            StringAttr(along),
            IntegerAttr(unit, i64),
        )

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_identifier_or_string_literal(self.kind)
            printer.print_string(" ")
            printer.print_identifier_or_string_literal(self.dtype)
            printer.print_string(" ")
            with printer.in_square_brackets():
                printer.print_list(
                    self.dim_map.items(), lambda kv: _print_entry(printer, kv, printer.print_int)
                )
            if self.attrs.data:
                printer.print_string(" ")
                with printer.in_braces():
                    printer.print_list(
                        self.attr_map.items(),
                        lambda kv: _print_entry(printer, kv, lambda v: printer.print_float(v, f64)),
                    )
            if self.repeat.value.data != 1:
                printer.print_string(f" repeat {self.repeat.value.data}")
            if self.along.data:
                printer.print_string(" along ")
                printer.print_identifier_or_string_literal(self.along)
                if self.unit.value.data != 1:
                    printer.print_string(f" unit {self.unit.value.data}")

    def verify(self) -> None:
        super().verify()
        if self.kind.data not in KERNEL_KINDS:
            raise VerifyException(f"cluster.kernel: unknown kind '{self.kind.data}'")
        try:
            check_signature(self.signature)
        except AimccError as exc:
            raise VerifyException(f"cluster.kernel: {exc}") from None
        along, unit = self.along.data, self.unit.value.data
        if self.repeat.value.data < 1 or unit < 1:
            raise VerifyException("cluster.kernel: repeat and unit must be positive")
        if along and (along not in self.dim_map or self.dim_map[along] % unit):
            raise VerifyException(f"cluster.kernel: no dim '{along}' of {unit}-element tokens")

    # --- what the kernel is -------------------------------------------------------------
    def _derived(self, what: str, arg: object, make: Callable[[], _T]) -> _T:
        """``what`` of ``arg``, made once per instance: attributes are immutable, and the
        schedule's search and the verifier ask again and again (a cache keyed by the value
        would hash the attribute's dicts on every lookup)."""
        memo = self.__dict__.setdefault("_derived_memo", {})
        if (what, arg) not in memo:
            memo[what, arg] = make()
        return memo[what, arg]

    @property
    def dim_map(self) -> dict[str, int]:
        return dict(self.signature.dims)

    @property
    def attr_map(self) -> dict[str, float]:
        return dict(self.signature.attrs)

    @property
    def signature(self) -> KernelSignature:
        """The RISC-V function this kernel calls (all its tokens at once)."""
        return self._derived("signature", None, lambda: _signature(self))

    @property
    def symbol(self) -> str:
        return self.signature.symbol

    def args(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """(name, dtype, shape) of each argument of the function, outputs last."""
        return kernel_args(self.signature)

    def tcdm_bytes(self) -> int:
        """Bytes one call keeps in the cluster's TCDM (signatures.tcdm_bytes)."""
        return tcdm_bytes(self.signature)

    @property
    def tokens(self) -> int:
        """Tokens (rows along ``along``) of one call; 1 when it has none."""
        return self.dim_map[self.along.data] // self.unit.value.data if self.along.data else 1

    def at(self, tokens: int) -> KernelAttr:
        """The same kernel on ``tokens`` tokens."""
        if not self.along.data or tokens == self.tokens:
            return self
        return self._derived("at", tokens, lambda: self._at(tokens))

    def _at(self, tokens: int) -> KernelAttr:
        dims = {**self.dim_map, self.along.data: tokens * self.unit.value.data}
        return KernelAttr(
            self.kind.data, dims, self.attr_map, self.dtype.data, self.repeat.value.data,
            self.along.data, self.unit.value.data,
        )  # fmt: skip

    def piece(self, tcdm: int) -> tuple[KernelAttr, int, bool]:
        """(piece, pieces, fits): the whole kernel when it fits ``tcdm`` bytes, else the
        fewest equal token pieces (a divisor) that fit; the generated function is the piece's."""
        tokens = self.tokens
        for pieces in range(1, tokens + 1):
            if tokens % pieces == 0:
                part = self.at(tokens // pieces)
                if part.tcdm_bytes() <= tcdm:
                    return part, pieces, True
        return self.at(1), tokens, False

    # --- column splits ------------------------------------------------------------------
    @property
    def column_splittable(self) -> bool:
        return self.kind.data in _COLUMN_KINDS and "N" in self.dim_map

    @property
    def columns(self) -> int:
        """Output columns per token (what a column split deals out)."""
        n = self.dim_map.get("N", 1)
        return self.unit.value.data if self.along.data == "N" else n * self.repeat.value.data

    def column_part(self, parts: int) -> KernelAttr:
        """The kernel of one of ``parts`` column parts (the largest: sizes rounded up)."""
        if parts <= 1:
            return self
        return self._derived("column_part", parts, lambda: self._column_part(parts))

    def _column_part(self, parts: int) -> KernelAttr:
        if not self.column_splittable:
            raise AimccError(f"cluster.kernel {self.symbol}: no column split")
        dims, unit, repeat = dict(self.dim_map), self.unit.value.data, self.repeat.value.data
        if self.along.data == "N":
            unit = -(-unit // parts)
            dims["N"] = self.tokens * unit
        elif repeat > 1 and repeat % parts == 0:  # whole column blocks (accumulate)
            repeat //= parts
        else:
            dims["N"] = -(-dims["N"] * repeat // parts)
            repeat = 1
        return KernelAttr(
            self.kind.data, dims, self.attr_map, self.dtype.data, repeat, self.along.data, unit
        )

    # --- cost ---------------------------------------------------------------------------
    def stage(self, per: int | None) -> tuple[str, dict[str, int]]:
        """The cost model's stage kind and dims: of one of ``per`` tokens the call's work is
        spread over (the schedule cuts it into chunks of tokens), or with ``per`` None of all
        of its rows at once (dim ``T``)."""
        kind, dims = self._derived("stage", per, lambda: self._stage(per))
        return kind, dict(dims)  # the caller's to change

    def _stage(self, per: int | None) -> tuple[str, dict[str, int]]:
        d, kind, h = self.dim_map, self.kind.data, self.repeat.value.data
        tokens = self.tokens
        rows = {} if per else {"T": tokens}
        if kind in ("lora_xa", "lora_b_add", "matmul"):
            dims = {k: v for k, v in d.items() if k not in ("T", "M")}
            if h > 1:  # batched: the blocks' rows run once
                rows = {"T": tokens * h}
            return kind, {**dims, **rows}
        if kind in ("qk", "av"):
            return kind, {"S": d["S2"], "D": d["D"], "H": h, **rows}
        if kind == "softmax":
            return kind, {"N": d["N"], "H": h, **rows}
        if kind == "accumulate":
            return kind, {"N": d["N"] * h, "P": d["P"], **rows}
        if kind == "gather":
            return kind, {"N": d["D"], **rows}
        out = math.prod(self.args()[-1][2]) * h // max(per or tokens, 1)  # per token
        if kind in _COST_KINDS:
            return kind, {"N": out, **rows}
        return "elementwise", {"elements": out, "ops": _ELEMENT_OPS.get(kind, 1), **rows}

    def cycles(self, tokens: int, arch: object) -> float:
        """Cycles of one call on ``tokens`` tokens (the cost model's cluster unit cost)."""
        from aimcc.cost.model import Stage, cluster_cycles

        kind, dims = self.stage(per=self.tokens)
        return cluster_cycles(Stage(self.symbol, kind, {**dims, "T": tokens}, (), "cluster"),
                              tokens, arch)  # type: ignore[arg-type]  # fmt: skip


def _parse_entry(parser: AttrParser, value: Callable[[AttrParser], _T]) -> tuple[str, _T]:
    name = parser.parse_identifier_or_str_literal(" (a dim or scalar name)")
    parser.parse_punctuation("=")
    return name, value(parser)


def _print_entry(printer: Printer, entry: tuple[str, _T], value: Callable[[_T], None]) -> None:
    printer.print_identifier_or_string_literal(entry[0])
    printer.print_string(" = ")
    value(entry[1])


def _parse_int(parser: AttrParser) -> int:
    return parser.parse_integer(allow_boolean=False)


def _parse_f64(parser: AttrParser) -> float:
    """A scalar as MLIR prints an f64: a number, or the bits of a NaN or infinity in hex."""
    hexadecimal = parser._current_token.text[:2] in ("0x", "0X")  # as xDSL's own float parse
    at = parser.pos
    value = parser.parse_number()
    if isinstance(value, int) and hexadecimal:
        if value.bit_length() > 64:
            parser.raise_error("hexadecimal f64 out of range", at)
        return struct.unpack("<d", value.to_bytes(8, "little"))[0]
    return float(value)


def _signature(kernel: KernelAttr) -> KernelSignature:
    dims = {k: v.value.data for k, v in kernel.dims.data.items()}  # type: ignore[union-attr]
    attrs = {k: v.value.data for k, v in kernel.attrs.data.items()}  # type: ignore[union-attr]
    return KernelSignature(
        kernel.kind.data,
        tuple(sorted(dims.items())),
        tuple(sorted(attrs.items())),
        kernel.dtype.data,
    )


@irdl_op_definition
class CallOp(IRDLOperation):
    """``callee`` on the cluster ``cluster``, computed by the RISC-V ``kernels`` in order
    (``reads``: the operands each kernel reads); ``split``: column parts on consecutive
    clusters (the split pass); ``layer``: the linear layer it belongs to."""

    name = "cluster.call"

    callee = prop_def(StringAttr)
    kernels = prop_def(ArrayAttr[KernelAttr])
    reads = prop_def(ArrayAttr[DenseArrayBase])  # of array<i64: ...>
    params = prop_def(DictionaryAttr)
    cluster = prop_def(IntegerAttr)
    split = opt_prop_def(IntegerAttr)
    unsupported = opt_prop_def(StringAttr)  # why no RISC-V kernel computes it
    args = var_operand_def()
    outs = var_result_def(TensorType)

    def __init__(
        self,
        callee: str,
        args: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        kernels: Sequence[KernelAttr],
        reads: Sequence[Sequence[int]],
        params: DictionaryAttr,
        cluster: int,
        unsupported: str = "",
    ):
        props: dict[str, Attribute] = {
            "callee": StringAttr(callee),
            "kernels": ArrayAttr(kernels),
            "reads": ArrayAttr([int_array(r) for r in reads]),
            "params": params,
            "cluster": IntegerAttr(cluster, i64),
        }
        if unsupported:
            props["unsupported"] = StringAttr(unsupported)
        super().__init__(operands=[args], result_types=[result_types], properties=props)

    @property
    def parts(self) -> int:
        return self.split.value.data if self.split is not None else 1

    @property
    def part_kernels(self) -> list[KernelAttr]:
        """The kernels one cluster runs: one column part's under a split."""
        return [k.column_part(self.parts) for k in self.kernels.data]

    def kernel_reads(self) -> list[list[int]]:
        return [int_list(r) or [] for r in self.reads.data]

    @property
    def column_splittable(self) -> bool:
        return bool(self.kernels.data) and all(k.column_splittable for k in self.kernels.data)

    @classmethod
    def parse(cls, parser: Parser) -> CallOp:
        callee = parser.parse_str_literal(" (the callee: what the call computes)")
        names = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN, parser.parse_unresolved_operand
        )
        parser.parse_keyword("on")
        parser.parse_keyword("cluster")
        props: dict[str, Attribute] = {
            "callee": StringAttr(callee),
            "cluster": IntegerAttr(parser.parse_integer(allow_boolean=False), i64),
        }
        if parser.parse_optional_keyword("split"):
            props["split"] = IntegerAttr(parser.parse_integer(allow_boolean=False), i64)
        kernels: list[tuple[KernelAttr, DenseArrayBase]] = []
        if parser.parse_optional_keyword("kernels"):
            kernels = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: _parse_kernel(parser)
            )
        props["kernels"] = ArrayAttr([k for k, _ in kernels])
        props["reads"] = ArrayAttr([r for _, r in kernels])
        if parser.parse_optional_keyword("unsupported"):
            props["unsupported"] = StringAttr(parser.parse_str_literal(" (why no kernel)"))
        props["params"] = _parse_params(parser)
        return _build(cls, parser, names, props)

    def print(self, printer: Printer) -> None:
        _print_head(printer, self.callee, self.args)
        printer.print_string(f" on cluster {self.cluster.value.data}")
        if self.split is not None:
            printer.print_string(f" split {self.split.value.data}")
        if self.kernels.data:
            printer.print_string(" kernels ")
            with printer.in_square_brackets():
                printer.print_list(
                    zip(self.kernels.data, self.reads.data, strict=False),
                    lambda kr: _print_kernel(printer, *kr),
                )
        if self.unsupported is not None:
            printer.print_string(" unsupported ")
            printer.print_string_literal(self.unsupported.data)
        _print_tail(printer, self)

    def verify_(self) -> None:
        kernels, reads = self.kernels.data, self.kernel_reads()
        if len(reads) != len(kernels):
            raise VerifyException(
                f"cluster.call: {len(kernels)} kernels but {len(reads)} operand lists"
            )
        if any(i < 0 or i >= len(self.args) for r in reads for i in r):
            raise VerifyException(f"cluster.call: a kernel reads beyond {len(self.args)} operands")
        if not kernels and self.unsupported is None:
            raise VerifyException("cluster.call: no kernels and no reason ('unsupported')")
        if self.parts > 1 and not self.column_splittable:
            raise VerifyException(f"cluster.call '{self.callee.data}': its kernels do not split")


@irdl_op_definition
class ViewOp(IRDLOperation):
    """``view`` (an ONNX op type in :data:`VIEW_OPS`) of its operand: no kernel runs."""

    name = "cluster.view"

    view = prop_def(StringAttr)
    params = prop_def(DictionaryAttr)
    args = var_operand_def()
    outs = var_result_def(TensorType)

    def __init__(
        self,
        view: str,
        args: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        params: DictionaryAttr,
    ):
        super().__init__(
            operands=[args],
            result_types=[result_types],
            properties={"view": StringAttr(view), "params": params},
        )

    @classmethod
    def parse(cls, parser: Parser) -> ViewOp:
        view = parser.parse_str_literal(" (the ONNX op type of the view)")
        names = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN, parser.parse_unresolved_operand
        )
        props = {"view": StringAttr(view), "params": _parse_params(parser)}
        return _build(cls, parser, names, props)

    def print(self, printer: Printer) -> None:
        _print_head(printer, self.view, self.args)
        _print_tail(printer, self)

    def verify_(self) -> None:
        if self.view.data not in VIEW_OPS:
            raise VerifyException(f"cluster.view: '{self.view.data}' is not a view")
        if not self.args:
            raise VerifyException("cluster.view: needs the tensor it views")


# --- the text of calls and views -----------------------------------------------------------
def _parse_kernel(parser: Parser) -> tuple[KernelAttr, DenseArrayBase]:
    at = parser.pos
    kernel = parser.parse_attribute()
    if not isinstance(kernel, KernelAttr):
        parser.raise_error(f"cluster.call: expected a #cluster.kernel, got {kernel}", at)
    parser.parse_keyword("reads", " (the operands the kernel reads)")
    reads = parser.parse_comma_separated_list(
        parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
    )
    return kernel, int_array(reads)


def _print_kernel(printer: Printer, kernel: Attribute, reads: Attribute) -> None:
    printer.print_attribute(kernel)
    printer.print_string(" reads ")
    with printer.in_square_brackets():
        printer.print_list(int_list(reads) or [], printer.print_int)


def _parse_params(parser: Parser) -> DictionaryAttr:
    if not parser.parse_optional_keyword("params"):
        return DictionaryAttr({})
    at = parser.pos
    params = parser.parse_attribute()
    if not isinstance(params, DictionaryAttr):
        parser.raise_error(f"expected the params dictionary, got {params}", at)
    return params


def _print_head(printer: Printer, name: StringAttr, args: Sequence[SSAValue]) -> None:
    printer.print_string(" ")
    printer.print_string_literal(name.data)
    with printer.in_parens():
        printer.print_list(args, printer.print_operand)


def _print_tail(printer: Printer, op: CallOp | ViewOp) -> None:
    """``params {...}`` (when any), the other attributes, ``: (operand types) -> results``."""
    if op.params.data:
        printer.print_string(" params ")
        printer.print_attribute(op.params)
    printer.print_op_attributes(op.attributes)
    printer.print_string(" : ")
    printer.print_function_type([a.type for a in op.args], [r.type for r in op.outs])


def _build(
    cls: type[_Op], parser: Parser, names: list[UnresolvedOperand], props: dict[str, Attribute]
) -> _Op:
    attrs = parser.parse_optional_attr_dict()
    parser.parse_punctuation(":")
    at = parser.pos
    typ = parser.parse_function_type()
    args = parser.resolve_operands(names, typ.inputs.data, at)
    return cls.build(
        operands=[args], result_types=[typ.outputs.data], properties=props, attributes=attrs
    )


Cluster = Dialect("cluster", [CallOp, ViewOp], [KernelAttr])
