"""Write a weight store (.npz) for the `graph.weight` ops of a textual IR test file.

Tests normally carry their weights inline (`graph.weight "key" : tensor<4xf32> = dense<...>`,
aimcc/ir/text.py) and need no store. This is for a test that wants distinct pseudo-random values
in weights too large to write out: every `graph.weight "key" : tensor<AxBxf32>` without a value
gets deterministic values (seeded by the key); a line `// WEIGHT key = v` gives a constant.

    python weights.py IN.mlir OUT.npz
"""

from __future__ import annotations

import re
import sys
import zlib
from pathlib import Path

import numpy as np

WEIGHT = re.compile(
    r'graph\.weight "([^"]+)" : tensor<([0-9x]*?)x?(f16|f32|f64|i64|i32|i1)>$', re.M
)  # not the weights whose value is inline
FIXED = re.compile(r"^// WEIGHT (\S+) = (\S+)$", re.M)
DTYPES = {
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
    "i64": np.int64,
    "i32": np.int32,
    "i1": np.bool_,
}


def main(src: str, out: str) -> None:
    text = Path(src).read_text()
    fixed = dict(FIXED.findall(text))
    store = {}
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    for key, dims, dtype in WEIGHT.findall(code):  # not in the CHECK lines
        shape = tuple(int(d) for d in dims.split("x") if d)
        if key in fixed:
            store[key] = np.full(shape, float(fixed[key])).astype(DTYPES[dtype])
        else:
            rng = np.random.default_rng(zlib.crc32(key.encode()))
            store[key] = (rng.standard_normal(shape) * 0.05).astype(DTYPES[dtype])
    np.savez(out, **store)


if __name__ == "__main__":
    main(*sys.argv[1:])
