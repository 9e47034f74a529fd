"""The weight store: tensors kept beside the IR and referenced from it by key."""

from __future__ import annotations

import hashlib
import mmap
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


class WeightStore(Mapping[str, np.ndarray]):
    """Key -> array; keys are deterministic and readable (derived from ONNX names).

    Stored arrays are read-only: a pass that changes a weight adds a new one. So a digest
    taken early stays true, and :meth:`hash_in_background` can hash while the passes run.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._digests: dict[str, Future[str]] = {}

    def add(self, hint: str, array: np.ndarray) -> str:
        """Store ``array`` under a fresh key derived from ``hint`` and return the key."""
        base = _UNSAFE.sub("_", hint) or "w"
        key, n = base, 1
        while key in self._arrays:
            key, n = f"{base}.{n}", n + 1
        array = array.view()  # freeze this view, not the caller's array
        array.flags.writeable = False
        self._arrays[key] = array
        return key

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under exactly ``key`` (a weight read from text), which must be new."""
        if key in self._arrays:
            raise KeyError(f"weight '{key}' is already stored")
        array = array.view()
        array.flags.writeable = False
        self._arrays[key] = array

    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def retain(self, keys: set[str]) -> None:
        """Drop every tensor the IR no longer references."""
        self._arrays = {k: v for k, v in self._arrays.items() if k in keys}
        self._digests = {k: v for k, v in self._digests.items() if k in keys}

    def hash_in_background(self) -> None:
        """Start hashing every stored tensor on a second thread (hashlib releases the GIL, so
        this overlaps the passes' Python); :meth:`digest` then finds the work done. Pages of
        a mapped model file that hashing read are released after (:func:`release`)."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="aimcc-digest")
        for key, array in self._arrays.items():
            if key not in self._digests:
                self._digests[key] = pool.submit(_digest_and_release, array)
        pool.shutdown(wait=False)

    def digest(self, key: str) -> str:
        """sha256 (hex) of the tensor's bytes in C order."""
        pending = self._digests.get(key)
        return pending.result() if pending is not None else tensor_digest(self._arrays[key])


def tensor_digest(array: np.ndarray) -> str:
    """sha256 (hex) of an array's bytes in C order: the checksum of a tensor in a binary."""
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8).data).hexdigest()


def _digest_and_release(array: np.ndarray) -> str:
    digest = tensor_digest(array)
    release(array)
    return digest


class FileMap(mmap.mmap):
    """A file's private (copy-on-write) map that arrays view and nothing writes to (a model's
    weights, a binary's tensors): the only memory :func:`release` drops."""


def map_file(fileno: int, size: int = 0) -> np.ndarray:
    """The whole file as bytes of a :class:`FileMap` (slice and view it: :func:`release`
    finds the pages of a slice)."""
    return np.frombuffer(FileMap(fileno, size, access=mmap.ACCESS_COPY), np.uint8)


def release(array: np.ndarray) -> None:
    """Drop the resident pages of an array viewing a :class:`FileMap` (whole pages inside
    it); the next access reads them again from the file (the page cache). The map is private
    and nothing writes to it, so nothing is lost; the process's RSS then holds only what is
    in use. Other arrays: nothing happens."""
    blob = array
    while isinstance(blob.base, np.ndarray):
        blob = blob.base
    owner = blob.base.obj if isinstance(blob.base, memoryview) else blob.base
    if not isinstance(owner, FileMap) or array.nbytes == 0:
        return
    start = array.ctypes.data - blob.ctypes.data
    low = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    high = (start + array.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if high > low:
        owner.madvise(mmap.MADV_DONTNEED, low, high - low)
