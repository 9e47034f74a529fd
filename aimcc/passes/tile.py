"""tile: split every analog weight matrix into crossbar-sized slices.

Each slice is programmed onto its own tile; the MVMs of one row of tiles produce partial sums
that are added digitally, and the columns of tiles are joined.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from aimcc.errors import AimccError
from aimcc.ir import CompileContext
from aimcc.ir.aimc import AccumulateOp, MatmulOp, MvmOp, ProgramOp, TileType
from aimcc.ir.types import dtype_of, shape_of, tensor_type


@dataclass
class TileMatmul(RewritePattern):
    rows: int
    cols: int

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: MatmulOp, rewriter: PatternRewriter) -> None:
        k, n = shape_of(op.weight)
        lead, dtype = shape_of(op.x)[:-1], dtype_of(op.result.type)
        tile = TileType(self.rows, self.cols)
        row_ranges = [(r, min(r + self.rows, k)) for r in range(0, k, self.rows)]
        col_ranges = [(c, min(c + self.cols, n)) for c in range(0, n, self.cols)]
        new_ops: list[Operation] = []
        partials = []
        for rows in row_ranges:
            for cols in col_ranges:
                program = ProgramOp(op.weight, rows, cols, tile)
                mvm = MvmOp(op.x, program.result, tensor_type((*lead, cols[1] - cols[0]), dtype))
                new_ops += [program, mvm]
                partials.append(mvm.result)
        grid = (len(row_ranges), len(col_ranges))
        acc = AccumulateOp(partials, grid, op.result.type, op.layer)
        rewriter.replace(op, [*new_ops, acc], [acc.result])


@dataclass(frozen=True)
class TilePass(ModulePass):
    """Split analog matmuls into tiles; ``rows``/``cols`` 0 take the architecture's tile size."""

    name = "tile"

    rows: int = 0
    cols: int = 0

    def apply(self, ctx: CompileContext, op: ModuleOp) -> None:
        rows = self.rows or ctx.arch.tile.rows
        cols = self.cols or ctx.arch.tile.cols
        if rows < 1 or cols < 1:
            raise AimccError(f"tile: rows and cols must be positive (got {rows}x{cols})")
        walker = PatternRewriteWalker(TileMatmul(rows, cols), apply_recursively=False)
        walker.rewrite_module(op)
