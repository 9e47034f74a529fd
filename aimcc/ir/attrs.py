"""Integer lists in the IR: ``array<i64: 0, 2, 1, 3>`` (a DenseArrayBase), defined once.

Every integer list the compiler writes is one (ONNX ``ints`` attributes in ``params``, an
attention's ``head_clusters``, a layer's ``replicas``, a call's ``reads``, the ``aimc`` ops'
ranges), and every reader goes through :func:`int_list`, which also takes the older
``[0 : i64, 2 : i64]`` ArrayAttr a hand-written file may hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, IntegerAttr, IntegerType, i64
from xdsl.ir import Attribute

I64_ARRAY = DenseArrayBase.constr(i64)  # the constraint of an `array<i64: ...>` property


def int_array(values: Sequence[int]) -> DenseArrayBase:
    """``values`` as ``array<i64: ...>``."""
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def int_list(attr: Attribute | None) -> list[int] | None:
    """The integers of an integer list attribute (``array<iN: ...>`` or an ArrayAttr of
    integers), else None (absent, or not a list of integers)."""
    if isinstance(attr, DenseArrayBase) and isinstance(attr.elt_type, IntegerType):
        return [int(v) for v in attr.get_values()]
    if isinstance(attr, ArrayAttr) and all(isinstance(a, IntegerAttr) for a in attr.data):
        return [a.value.data for a in attr.data]  # type: ignore[union-attr]
    return None
