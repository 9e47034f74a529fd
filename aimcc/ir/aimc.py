"""`aimc`: analog crossbar tiles: programming weight slices, MVMs on tiles, partial sums."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    i32,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from aimcc.ir.attrs import I64_ARRAY, int_array
from aimcc.ir.cluster import KernelAttr
from aimcc.ir.graph import key_of
from aimcc.ir.types import parse_typed_operands, shape_of


@irdl_attr_definition
class TileType(ParametrizedAttribute, TypeAttribute):
    """A physical crossbar of rows x cols devices (inputs on rows, outputs on columns)."""

    name = "aimc.tile"

    rows: IntAttr
    cols: IntAttr

    def __init__(self, rows: int, cols: int):
        super().__init__(IntAttr(rows), IntAttr(cols))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            rows, cols = parser.parse_dimension_list()  # "512x512"
        return (IntAttr(rows), IntAttr(cols))

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.rows.data}x{self.cols.data}>")


def _pair(op: IRDLOperation, name: str, attr: DenseArrayBase) -> tuple[int, int]:
    """The two integers of an ``array<i64: a, b>`` property (the verifier checks the count)."""
    values = attr.get_values()
    if len(values) != 2:
        raise VerifyException(f"{op.name}: {name} must be 2 integers, got {len(values)}")
    return values[0], values[1]


@irdl_op_definition
class MatmulOp(IRDLOperation):
    """y = x @ weight on analog tiles, before tiling: the weight is programmed, not streamed."""

    name = "aimc.matmul"

    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    layer = opt_prop_def(StringAttr)  # the layer's name (nn.linear's), kept to the binary
    result = result_def(TensorType)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$x `,` $weight attr-dict `:` functional-type(operands, results)"

    def __init__(
        self, x: SSAValue, weight: SSAValue, result_type: Attribute, layer: str | None = None
    ):
        super().__init__(
            operands=[x, weight],
            result_types=[result_type],
            properties={"layer": StringAttr(layer)} if layer else {},
        )

    def verify_(self) -> None:
        k, n = shape_of(self.weight)
        if shape_of(self.x)[-1] != k or shape_of(self.result) != (*shape_of(self.x)[:-1], n):
            raise VerifyException(f"aimc.matmul: shapes {shape_of(self.x)} @ {(k, n)} mismatch")


@irdl_op_definition
class ProgramOp(IRDLOperation):
    """Programs weight[rows[0]:rows[1], cols[0]:cols[1]] onto one tile, once, at load time."""

    name = "aimc.program"

    weight = operand_def(TensorType)
    rows = prop_def(I64_ARRAY)  # [first, end) of the weight's rows, printed `rows [0, 512]`
    cols = prop_def(I64_ARRAY)
    tile_id = opt_prop_def(IntegerAttr)
    result = result_def(TileType)

    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$weight `rows` $rows `cols` $cols attr-dict `:` type($weight) `->` type($result)"
    )

    def __init__(
        self, weight: SSAValue, rows: tuple[int, int], cols: tuple[int, int], tile: TileType
    ):
        super().__init__(
            operands=[weight],
            result_types=[tile],
            properties={"rows": int_array(rows), "cols": int_array(cols)},
        )

    @property
    def row_range(self) -> tuple[int, int]:
        return _pair(self, "rows", self.rows)

    @property
    def col_range(self) -> tuple[int, int]:
        return _pair(self, "cols", self.cols)

    def verify_(self) -> None:
        (r0, r1), (c0, c1) = self.row_range, self.col_range
        k, n = shape_of(self.weight)
        tile = self.result.type
        assert isinstance(tile, TileType)
        if not (0 <= r0 < r1 <= k and 0 <= c0 < c1 <= n):
            raise VerifyException(f"aimc.program: slice [{r0}:{r1}, {c0}:{c1}] outside {k}x{n}")
        if r1 - r0 > tile.rows.data or c1 - c0 > tile.cols.data:
            raise VerifyException(
                f"aimc.program: slice {r1 - r0}x{c1 - c0} does not fit a "
                f"{tile.rows.data}x{tile.cols.data} tile"
            )


@irdl_op_definition
class MvmOp(IRDLOperation):
    """partial = x[..., rows] @ tile: the rows come from the tile's programmed slice."""

    name = "aimc.mvm"

    x = operand_def(TensorType)
    tile = operand_def(TileType)
    result = result_def(TensorType)

    assembly_format = (
        "$x `,` $tile attr-dict `:` `(` type($x) `,` type($tile) `)` `->` type($result)"
    )

    def __init__(self, x: SSAValue, tile: SSAValue, result_type: Attribute):
        super().__init__(operands=[x, tile], result_types=[result_type])

    @property
    def program(self) -> ProgramOp:
        owner = self.tile.owner
        assert isinstance(owner, ProgramOp)
        return owner

    def verify_(self) -> None:
        if not isinstance(self.tile.owner, ProgramOp):
            raise VerifyException("aimc.mvm: tile must come from aimc.program")
        c0, c1 = self.program.col_range
        if shape_of(self.result) != (*shape_of(self.x)[:-1], c1 - c0):
            raise VerifyException("aimc.mvm: result must have the tile's column count")


@irdl_op_definition
class AccumulateOp(IRDLOperation):
    """Adds the partial sums of each column of tiles (digitally) and joins the columns.

    Partials come in row-major grid order: grid = [row tiles, column tiles]. ``bias`` (a
    weight, one value per output column) is the bias the tiles' post-processing adds, fused
    by fuse-bias: an operand like any weight, so a small one prints its value in text.
    """

    name = "aimc.accumulate"

    partials = var_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    grid = prop_def(I64_ARRAY)
    layer = opt_prop_def(StringAttr)
    # set by passes: the cluster that adds the partial sums (place), the kernel that does it
    # (lower-cluster, rows of tiles > 1)
    cluster = opt_prop_def(IntegerAttr)
    kernel = opt_prop_def(KernelAttr)
    result = result_def(TensorType)

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    # %y = aimc.accumulate %p0, %p1 bias %b grid [1, 2] {layer = "proj"}
    #      : (partial types, bias type) -> type   (custom, as nn.linear's: the declarative
    # format cannot give the types of a variadic and an optional operand in one list)

    @classmethod
    def parse(cls, parser: Parser) -> AccumulateOp:
        names = [parser.parse_unresolved_operand()]
        while parser.parse_optional_punctuation(",") is not None:
            names.append(parser.parse_unresolved_operand())
        has_bias = parser.parse_optional_keyword("bias") is not None
        if has_bias:
            names.append(parser.parse_unresolved_operand())
        parser.parse_keyword("grid")
        grid = parser.parse_comma_separated_list(
            parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
        )
        values, result, attrs = parse_typed_operands(parser, names, "aimc.accumulate")
        defined = cls.get_irdl_definition().properties
        props = {k: v for k, v in attrs.items() if k in defined}
        props["grid"] = int_array(grid)
        return cls.build(
            operands=[values[: len(values) - has_bias], values[len(values) - has_bias :]],
            result_types=[result],
            properties=props,
            attributes={k: v for k, v in attrs.items() if k not in defined},
        )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_list(self.partials, printer.print_operand)
        if self.bias is not None:
            printer.print_string(" bias ")
            printer.print_operand(self.bias)
        printer.print_string(" grid ")
        with printer.in_square_brackets():
            printer.print_list(self.grid.get_values(), printer.print_int)
        hidden = ("grid", "operandSegmentSizes")
        props = {k: v for k, v in self.properties.items() if k not in hidden}
        printer.print_op_attributes({**self.attributes, **props})
        printer.print_string(" : ")
        printer.print_function_type([o.type for o in self.operands], [self.result.type])

    def __init__(
        self,
        partials: Sequence[SSAValue],
        grid: tuple[int, int],
        result_type: Attribute,
        layer: StringAttr | None = None,
        bias: SSAValue | None = None,
    ):
        props: dict[str, Attribute] = {"grid": int_array(grid)}
        if layer is not None:
            props["layer"] = layer
        super().__init__(operands=[partials, bias], result_types=[result_type], properties=props)

    def set_bias(self, bias: SSAValue) -> None:
        """Add ``bias`` to the accumulation (in place: its properties and attributes kept)."""
        partials = list(self.partials)
        self.operands = [*partials, bias]
        self.properties["operandSegmentSizes"] = DenseArrayBase.from_list(i32, [len(partials), 1])

    @property
    def bias_key(self) -> str | None:
        """The weight-store key of the fused bias (None without one)."""
        return key_of(self.bias) if self.bias is not None else None

    @property
    def grid_shape(self) -> tuple[int, int]:
        return _pair(self, "grid", self.grid)

    def verify_(self) -> None:
        nr, nc = self.grid_shape
        if nr < 1 or nc < 1:
            raise VerifyException(f"aimc.accumulate: grid {nr}x{nc} must be at least 1x1")
        partials, bias = self.partials, self.bias  # each access reads the segment sizes
        if len(partials) != nr * nc:
            raise VerifyException(f"aimc.accumulate: grid {nr}x{nc} needs {nr * nc} partials")
        if not all(isinstance(p.owner, MvmOp) for p in partials):
            raise VerifyException("aimc.accumulate: partials must come from aimc.mvm")
        if bias is not None:
            n = shape_of(self.result)[-1:]
            if shape_of(bias) != n:
                raise VerifyException(f"aimc.accumulate: bias must be {list(n)}")
            if key_of(bias) is None:
                raise VerifyException("aimc.accumulate: bias must come from graph.weight")


def weight_key(op: MatmulOp | ProgramOp) -> str:
    """The weight-store key of the tensor an analog op programs."""
    key = key_of(op.weight)
    if key is None:
        raise VerifyException(f"{op.name}: weight must come from graph.weight")
    return key


AIMC = Dialect("aimc", [MatmulOp, ProgramOp, MvmOp, AccumulateOp], [TileType])
