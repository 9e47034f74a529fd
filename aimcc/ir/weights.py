"""The weight store: tensors kept beside the IR and referenced from it by key."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


class WeightStore(Mapping[str, np.ndarray]):
    """Key -> array; keys are deterministic and readable (derived from ONNX names)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def add(self, hint: str, array: np.ndarray) -> str:
        """Store ``array`` under a fresh key derived from ``hint`` and return the key."""
        base = _UNSAFE.sub("_", hint) or "w"
        key, n = base, 1
        while key in self._arrays:
            key, n = f"{base}.{n}", n + 1
        self._arrays[key] = array
        return key

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def retain(self, keys: set[str]) -> None:
        """Drop every tensor the IR no longer references."""
        self._arrays = {k: v for k, v in self._arrays.items() if k in keys}
