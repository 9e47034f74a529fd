"""What the ONNX op library holds, without torch: the compiler reads it, the runtime's torch
kernels (``onnx_ops``) are built on it.

ONNX element type codes (onnx.proto ``TensorProto.DataType``) of the types the runtime holds, and
each one's dtype name (the same in numpy, ml_dtypes and torch).
"""

from __future__ import annotations

ELEM_TYPES: dict[int, str] = {
    1: "float32",  # FLOAT
    2: "uint8",  # UINT8
    3: "int8",  # INT8
    4: "uint16",  # UINT16
    5: "int16",  # INT16
    6: "int32",  # INT32
    7: "int64",  # INT64
    9: "bool",  # BOOL
    10: "float16",  # FLOAT16
    11: "float64",  # DOUBLE
    12: "uint32",  # UINT32
    13: "uint64",  # UINT64
    16: "bfloat16",  # BFLOAT16
}
