"""The simulated-runtime binary (``.aimcb``): lowering the final IR, writing and reading it.

Layout (little endian), documented in docs/FORMAT.md:

    magic "AIMCB\\0\\r\\n" | u32 format version | u32 flags (0) | u64 header offset
    | u64 header length | 32-byte sha256 of the header | tensor blobs from offset 64, each
    64-byte aligned, in the order the weight store got them | header (UTF-8 JSON), 64-aligned,
    to the end of the file

The header holds the program (instructions over numbered value slots, the tile map, the
architecture) and a table of tensors (dtype, shape, offset, length, sha256). Reading checks
every length, offset and checksum and never executes anything from the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
)
from xdsl.ir import Attribute, SSAValue

from aimcc import atomic
from aimcc.atomic import StreamWriter, atomic_write, write_text
from aimcc.errors import AimccError
from aimcc.ir.aimc import AccumulateOp, MvmOp, ProgramOp, weight_key
from aimcc.ir.attrs import int_list
from aimcc.ir.cluster import CallOp, KernelAttr, ViewOp
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import NAME_ATTR, AbsentOp, TensorRefAttr, WeightOp
from aimcc.ir.types import dtype_of, shape_of
from aimcc.ir.weights import map_file, release, tensor_digest

MAGIC = b"AIMCB\0\r\n"
FORMAT_VERSION = 3  # 2: cluster calls, views, fused biases; 3: tensors first, header last
_PREFIX = struct.Struct("<8sIIQQ32s")  # magic, version, flags, header offset, length, sha256
ALIGN = 64
DATA_START = _PREFIX.size  # 64: the tensors follow the prefix
# Tensors of 1 MiB or more come first, each on a 4 KiB boundary of the file: a mapped model's
# weights (page-aligned there too) are then written with direct I/O from where they lie.
PAGE_ALIGN, PAGE_ALIGN_MIN = 4096, 1 << 20
if TYPE_CHECKING:
    from aimcc.backends.manifest import EmitStats
    from aimcc.compiler import Compilation
    from aimcc.cost import Schedule
    from aimcc.ir.weights import WeightStore

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def lower_program(comp: Compilation) -> dict[str, Any]:
    """The final IR as a flat instruction list over value slots (what the runtime executes).

    An operand is a slot number, a tensor key (a weight) or null (an omitted input).
    """
    main = next(op for op in comp.module.walk() if isinstance(op, func.FuncOp))
    slots: dict[SSAValue, int] = {}

    def slot(value: SSAValue) -> int:
        return slots.setdefault(value, len(slots))

    def operand(value: SSAValue) -> int | str | None:
        owner = value.owner
        if isinstance(owner, WeightOp):
            return owner.key.data
        if isinstance(owner, AbsentOp):
            return None
        return slots[value]

    names = _names(main.arg_attrs)
    inputs = [
        {"name": name, "slot": slot(arg), "dtype": dtype_of(arg.type), "shape": shape_of(arg.type)}
        for name, arg in zip(names, main.body.block.args, strict=True)
    ]
    instructions: list[dict[str, Any]] = []
    tiles: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for op in main.body.block.ops:
        if isinstance(op, CallOp):
            instructions.append(
                {
                    "op": "call",
                    "kind": op.callee.data,
                    "args": [operand(a) for a in op.args],
                    "outs": [slot(r) for r in op.outs],
                    "params": {k: _json_attr(v) for k, v in op.params.data.items()},
                    "cluster": op.cluster.value.data,
                    "split": op.parts,
                    "kernels": [kernel_json(k) for k in op.part_kernels],
                }
            )
        elif isinstance(op, ViewOp):
            instructions.append(
                {
                    "op": "view",
                    "kind": f"onnx.{op.view.data}",
                    "args": [operand(a) for a in op.args],
                    "outs": [slot(r) for r in op.outs],
                    "params": {k: _json_attr(v) for k, v in op.params.data.items()},
                }
            )
        elif isinstance(op, AccumulateOp):
            instructions.append(
                _analog_instruction(op, operand, slot(op.result), tiles, len(instructions))
            )
            _replicas(op, instructions[-1], comp.schedule)
        elif isinstance(op, func.ReturnOp):
            outputs = [
                {
                    "name": name,
                    "value": operand(v),
                    "dtype": dtype_of(v.type),
                    "shape": shape_of(v.type),
                }
                for name, v in zip(_names(main.res_attrs), op.operands, strict=True)
            ]
        elif isinstance(op, KernelOp):
            raise AimccError(f"backend: '{op.kind.data}' is not lowered (run 'lower-cluster')")
        elif not isinstance(op, WeightOp | AbsentOp | ProgramOp | MvmOp):
            raise AimccError(f"backend: '{op.name}' left in the final IR (a pass is missing)")
    return {
        "target": comp.target,
        "source": Path(comp.source).name,
        "source_sha256": comp.source_sha256,
        "arch": comp.arch.to_dict(),
        "inputs": inputs,
        "outputs": outputs,
        "instructions": instructions,
        "tiles": tiles,
        "slots": len(slots),
        "schedule": _schedule_section(comp.schedule) if comp.schedule else None,
    }


def _analog_instruction(
    acc: AccumulateOp, operand: Any, out: int, tiles: list[dict[str, Any]], index: int
) -> dict[str, Any]:
    mvms = [p.owner for p in acc.partials]
    programs = [m.program for m in mvms if isinstance(m, MvmOp)]
    x = {m.x for m in mvms if isinstance(m, MvmOp)}
    keys = {weight_key(p) for p in programs}
    if len(x) != 1 or len(keys) != 1 or len(programs) != len(mvms):
        raise AimccError("backend: an accumulation mixes inputs or weights (not one layer)")
    ids = []
    for p in programs:
        assert p.tile_id is not None, "place runs before the backend"
        ids.append(p.tile_id.value.data)
        tiles.append(
            {
                "id": ids[-1],
                "instruction": index,
                "weight": weight_key(p),
                "rows": list(p.row_range),
                "cols": list(p.col_range),
            }
        )
    tile_type = programs[0].result.type
    if acc.cluster is None:
        raise AimccError("backend: an analog layer has no cluster (run 'place')")
    split = acc.attributes.get("split")  # the split pass's column parts
    parts = split.value.data if isinstance(split, IntegerAttr) else 1
    return {
        "op": "analog",
        "layer": acc.layer.data if acc.layer is not None else None,
        "weight": keys.pop(),
        "bias": acc.bias_key,
        "cluster": acc.cluster.value.data,
        "split": parts,
        "kernels": [kernel_json(acc.kernel.column_part(parts))] if acc.kernel else [],
        "x": operand(x.pop()),
        "out": out,
        "grid": list(acc.grid_shape),
        "tile": [tile_type.rows.data, tile_type.cols.data],
        "tiles": ids,
    }


def _replicas(acc: AccumulateOp, ins: dict[str, Any], found: Schedule | None) -> None:
    """A replicated layer's copies (the replicate pass): each copy's tiles, in the order of
    the layer's own, and the chunk of tokens dealt to the copies in turn (the schedule's)."""
    from aimcc.passes.schedule import replica_firsts  # the compiler's side only

    firsts = replica_firsts(acc)
    if not firsts:
        return
    first = ins["tiles"][0]
    if found is None or first not in found.chunk_per_layer:
        raise AimccError(f"backend: replicated layer on tile {first} has no scheduled chunk")
    ins["replicas"] = [[f + i for i in range(len(ins["tiles"]))] for f in firsts]
    ins["chunk"] = found.chunk_per_layer[first]


def kernel_json(kernel: KernelAttr) -> dict[str, Any]:
    """A kernel as the binary carries it (what the runtime reports having executed)."""
    return {
        "kind": kernel.kind.data,
        "dtype": kernel.dtype.data,
        "dims": dict(kernel.dim_map),
        "attrs": kernel.attr_map,
        "repeat": kernel.repeat.value.data,
        "along": kernel.along.data,
        "unit": kernel.unit.value.data,
    }


def _schedule_section(found: Schedule) -> dict[str, Any]:
    """The binary's "schedule" section: the decision, its timing and each unit's load."""
    return {
        "strategy": found.strategy,
        "clusters_per_tile": found.clusters_per_tile,
        "tokens": found.tokens,
        "chunk_per_layer": {str(k): v for k, v in found.chunk_per_layer.items()},
        "makespan_ns": round(found.makespan_ns, 3),
        "energy_nj": round(found.energy_nj, 3),
        "lower_bound_ns": {
            "busiest_unit": round(found.busy_bound_ns, 3),
            "critical_path": round(found.critical_path_ns, 3),
            "chain": round(found.chain_bound_ns, 3),
        },
        "units": {
            u.unit: {
                "busy_ns": round(u.busy_ns, 3),
                "utilisation": round(u.utilisation, 6),
                "energy_nj": round(u.energy_nj, 3),
            }
            for u in found.units
        },
    }


def _names(attrs: ArrayAttr | None) -> list[str]:
    assert attrs is not None
    return [d.data[NAME_ATTR].data for d in attrs.data if isinstance(d, DictionaryAttr)]


def _json_attr(attr: Attribute) -> Any:
    if isinstance(attr, IntegerAttr):
        return attr.value.data
    if isinstance(attr, FloatAttr):
        return attr.value.data
    if isinstance(attr, StringAttr):
        return attr.data
    if (ints := int_list(attr)) is not None:
        return ints
    if isinstance(attr, ArrayAttr):
        return [_json_attr(a) for a in attr.data]
    if isinstance(attr, TensorRefAttr):
        return {"tensor": attr.key.data}
    raise AimccError(f"backend: cannot serialise attribute {attr}")


def manifest_path(binary: str | Path) -> Path:
    """The kernel manifest beside a binary: model.aimcb -> model.kernels.json."""
    binary = Path(binary)
    return binary.with_name(binary.name.removesuffix(".aimcb") + ".kernels.json")


class BinaryStream:
    """An .aimcb file written while the passes run. :meth:`start` (right after import) hands
    the large tensors (:data:`PAGE_ALIGN_MIN` and more: a model's weight matrices, which the
    passes keep as they are) to a thread that writes them at their places, while a second
    hashes them; :func:`write_binary` then writes the small ones and the header and renames
    the file into place, or, when the passes changed the set of large tensors, writes the
    file anew. Below ``atomic.DIRECT_MIN_BYTES`` of weights it only starts the store's
    background hashing. :meth:`abort` (a failed compile) leaves nothing on disk. The bytes
    are always write_binary's own: the layout depends on the final tensors only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: contextlib.AbstractContextManager[BinaryIO] | None = None
        self._writer: StreamWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._hasher: ThreadPoolExecutor | None = None
        self._ahead = threading.Semaphore(2)
        self._aborted = False
        self._placed: list[tuple[str, int, int]] = []  # (key, offset, nbytes) of the large
        self._digests: dict[str, Future[str]] = {}

    @property
    def streaming(self) -> bool:
        return self._writer is not None

    def start(self, weights: WeightStore) -> None:
        """Stream the large tensors (a large model's); else hash all in the background."""
        if sum(a.nbytes for a in weights.values()) < atomic.DIRECT_MIN_BYTES:
            weights.hash_in_background()
            return
        self._file = atomic_write(self.path)
        f = self._file.__enter__()
        self._writer = StreamWriter(f, atomic.DIRECT_MIN_BYTES)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="aimcc-stream")
        # A second thread hashes the next tensor while one is written (the device's time
        # overlaps the CPU's), at most two tensors ahead: their pages stay mapped till written.
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="aimcc-hash")
        large = _layout(weights, large_only=True)
        self._placed = _placements(large)
        for key, array, offset in large:
            digest = self._hasher.submit(self._hash, array)
            self._digests[key] = self._pool.submit(self._put, offset, array, digest)

    def _hash(self, array: np.ndarray) -> str:
        self._ahead.acquire()  # _put releases it once the tensor is written
        if self._aborted:
            self._ahead.release()  # wake the next one: it stops too
            return ""
        return tensor_digest(array)

    def _put(self, offset: int, array: np.ndarray, digest: Future[str]) -> str:
        assert self._writer is not None
        try:
            self._writer.write(DATA_START + offset, array.view(np.uint8).data)
            hexdigest = digest.result()
            release(array)  # pages of a mapped model file: read again only if used again
        finally:
            self._ahead.release()
        return hexdigest

    def finish(
        self,
        weights: WeightStore,
        places: list[tuple[str, np.ndarray, int]],
        table: dict[str, dict[str, Any]],
        program: dict[str, Any],
    ) -> int | None:
        """Write the small tensors and the header, rename the file into place; its size.
        None (and nothing kept) when the large tensors are not the ones streamed."""
        assert self._writer is not None and self._pool is not None and self._file is not None
        if _placements(_layout(weights, large_only=True)) != self._placed:
            self.abort()
            return None
        for key, digest in self._digests.items():
            table[key]["sha256"] = digest.result()
        self._pool.shutdown()
        assert self._hasher is not None
        self._hasher.shutdown()
        writer, self._writer = self._writer, None
        for key, array, offset in places:
            if key not in self._digests:
                writer.write(DATA_START + offset, array.view(np.uint8).data)
                table[key]["sha256"] = weights.digest(key)
        header_at = _header_offset(table)
        writer.close(header_at)
        size = _write_header(writer.file, program, table, header_at)
        self._file.__exit__(None, None, None)
        return size

    def abort(self) -> None:
        """Remove the partial file (a compile that failed); nothing when not streaming."""
        if self._writer is None or self._file is None:
            return
        self._writer = None
        self._aborted = True
        self._ahead.release()  # a hash waiting for its turn stops
        for pool in (self._pool, self._hasher):
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        failed = AimccError("compile failed")  # atomic_write removes the file on an error
        self._file.__exit__(AimccError, failed, None)


def _placements(places: list[tuple[str, np.ndarray, int]]) -> list[tuple[str, int, int]]:
    """(key, offset, nbytes) of each tensor placed: what a stream compares at the end."""
    return [(key, offset, array.nbytes) for key, array, offset in places]


def _layout(weights: WeightStore, large_only: bool = False) -> list[tuple[str, np.ndarray, int]]:
    """(key, storable array, offset from the data start) of the store's tensors: the large
    ones (:data:`PAGE_ALIGN_MIN` and more) first, on 4 KiB boundaries of the file, then the
    others 64-byte aligned; each group in key order. It depends on the tensors alone (not
    on how the compile got them), and a stream can place the large ones after import."""
    arrays = {key: _storable(weights[key]) for key in sorted(weights.keys())}
    groups = [
        [(k, a) for k, a in arrays.items() if a.nbytes >= PAGE_ALIGN_MIN],
        [] if large_only else [(k, a) for k, a in arrays.items() if a.nbytes < PAGE_ALIGN_MIN],
    ]
    places, offset = [], 0
    for group, align in zip(groups, (PAGE_ALIGN, ALIGN), strict=True):
        for key, array in group:
            offset = -(-(DATA_START + offset) // align) * align - DATA_START
            places.append((key, array, offset))
            offset += array.nbytes
    return places


def _header_offset(table: dict[str, dict[str, Any]]) -> int:
    """The header goes after the last tensor, 64-byte aligned."""
    end = max((DATA_START + e["offset"] + e["nbytes"] for e in table.values()), default=0)
    return _aligned(max(end, DATA_START))


def write_binary(
    comp: Compilation,
    path: str | Path,
    *,
    manifest: bool = True,
    emitted: EmitStats | None = None,
    stream: BinaryStream | None = None,
) -> int:
    """Write ``comp`` as an .aimcb file and, unless ``manifest`` is false, the kernel manifest
    beside it (:func:`manifest_path`; ``emitted`` adds --emit-riscv's files and hashes), as
    the CLI does; each atomically. Returns the binary's size in bytes. ``stream``: the
    :class:`BinaryStream` this compile started for ``path`` (its file is finished).

    The header comes after the tensors (:func:`_layout`), so a stream can write them before
    the program exists. The digests come from the stream, from the weight store (hashed in
    the background during compilation), or from a second thread while the tensors are
    written (all release the GIL).
    """
    program = lower_program(comp)
    weights = comp.ctx.weights
    places = _layout(weights)
    table: dict[str, dict[str, Any]] = {
        key: {
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "offset": offset,
            "nbytes": array.nbytes,
            "sha256": "",
        }
        for key, array, offset in places
    }
    size = None
    if stream is not None and stream.streaming:
        size = stream.finish(weights, places, table, program)
    if size is None:
        size = _write_whole(path, weights, places, table, program)
    if manifest:  # after the binary: built meanwhile, its Python work slowed the writes (GIL)
        from aimcc.backends.manifest import kernel_manifest, manifest_json  # not for the runtime

        write_text(manifest_path(path), manifest_json(kernel_manifest(comp, emitted)))
    return size


def _write_whole(
    path: str | Path,
    weights: WeightStore,
    places: list[tuple[str, np.ndarray, int]],
    table: dict[str, dict[str, Any]],
    program: dict[str, Any],
) -> int:
    header_at = _header_offset(table)
    with atomic_write(path) as f, ThreadPoolExecutor(1) as pool:
        digests = {
            key: pool.submit(weights.digest, key)
            if array.dtype == weights[key].dtype
            else pool.submit(tensor_digest, array)
            for key, array, _ in places
        }
        stream = StreamWriter(f, header_at)
        for _, array, offset in places:
            stream.write(DATA_START + offset, array.view(np.uint8).data)
            release(array)  # pages of a mapped model file: read again only if used again
        stream.close(header_at)  # the gaps read as zeros
        for key, digest in digests.items():
            table[key]["sha256"] = digest.result()
        return _write_header(f, program, table, header_at)


def _write_header(
    f: BinaryIO, program: dict[str, Any], table: dict[str, dict[str, Any]], at: int
) -> int:
    """The header at ``at`` (after the tensors), then the prefix that points at it; the size."""
    header = _header(program, table)
    f.seek(at)
    f.write(header)
    f.truncate(at + len(header))
    f.seek(0)
    f.write(
        _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, at, len(header), hashlib.sha256(header).digest())
    )
    return at + len(header)


def _storable_dtype(dtype: np.dtype) -> np.dtype:
    return dtype if str(dtype) in DTYPES else np.dtype(np.float32)


def _storable(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array if str(array.dtype) in DTYPES else array.astype(_storable_dtype(array.dtype))


def _header(program: dict[str, Any], table: dict[str, dict[str, Any]]) -> bytes:
    doc = {"program": program, "tensors": table}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def read_binary(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check an .aimcb file: (program, tensors), tensors as views of one copy-on-write
    memory map. Checksums are computed from file reads, not through the map, so a tensor's
    pages become resident only when it is used (and :func:`release_pages` drops them)."""
    path = Path(path)
    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(_PREFIX.size)
        if len(raw) < _PREFIX.size or raw[:8] != MAGIC:
            raise AimccError(f"{path}: not an aimcc binary (bad magic)")
        _, version, flags, header_at, header_len, digest = _PREFIX.unpack(raw)
        if version != FORMAT_VERSION or flags != 0:
            older = version < FORMAT_VERSION
            again = " (an older aimcc wrote it: compile the model again)" * older
            raise AimccError(
                f"{path}: format version {version}, this aimcc reads {FORMAT_VERSION}{again}"
            )
        if header_at < DATA_START or header_at % ALIGN or header_at + header_len != size:
            raise AimccError(f"{path}: the header is not at the end of the file (truncated?)")
        f.seek(header_at)
        header = f.read(header_len)
        if hashlib.sha256(header).digest() != digest:
            raise AimccError(f"{path}: header checksum mismatch (file corrupted or tampered)")
        try:
            doc = json.loads(header)
            program, table = doc["program"], doc["tensors"]
        except (ValueError, KeyError, TypeError):
            raise AimccError(f"{path}: header is not a valid program") from None
        if not isinstance(table, dict):
            raise AimccError(f"{path}: header is not a valid program")
        blob = map_file(f.fileno(), header_at)
        tensors: dict[str, np.ndarray] = {}
        for key in table:
            tensors[key] = _tensor(path, f, blob, key, table[key])
        # tensors lie between the prefix and the header, aligned, not overlapping
        end = DATA_START
        for key in sorted(tensors, key=lambda k: int(table[k]["offset"])):
            start = DATA_START + int(table[key]["offset"])
            if start < end or start % ALIGN:
                raise AimccError(f"{path}: tensor '{key}' overlaps another or is misaligned")
            end = start + tensors[key].nbytes
    from aimcc.backends.verify import verify_program  # imports the runtime's kernel table

    verify_program(program, tensors, str(path))
    return program, tensors


# Drop the resident pages of a tensor from :func:`read_binary` (the runtime never writes
# weights): the next access reads them again from the page cache.
release_pages = release


def _tensor(
    path: Path, f: BinaryIO, blob: np.ndarray, key: str, entry: dict[str, Any]
) -> np.ndarray:
    if not isinstance(entry, dict) or set(entry) != {
        "dtype",
        "shape",
        "offset",
        "nbytes",
        "sha256",
    }:
        raise AimccError(f"{path}: tensor '{key}' has a malformed entry")
    try:
        dtype, shape = np.dtype(entry["dtype"]), tuple(int(d) for d in entry["shape"])
        start, nbytes = DATA_START + int(entry["offset"]), int(entry["nbytes"])
        expected = str(entry["sha256"])
    except (KeyError, TypeError, ValueError):
        raise AimccError(f"{path}: tensor '{key}' has a malformed entry") from None
    if entry["dtype"] not in DTYPES or any(d < 0 for d in shape) or start < DATA_START:
        raise AimccError(f"{path}: tensor '{key}' has a bad dtype or shape")
    if nbytes != math.prod(shape) * dtype.itemsize or start + nbytes > len(blob):
        raise AimccError(f"{path}: tensor '{key}' lies outside the file (truncated?)")
    if _file_digest(f, start, nbytes) != expected:
        raise AimccError(f"{path}: tensor '{key}' checksum mismatch (corrupted or tampered)")
    return blob[start : start + nbytes].view(dtype).reshape(shape)


def _file_digest(f: BinaryIO, start: int, nbytes: int, chunk: int = 1 << 22) -> str:
    """sha256 of ``nbytes`` of the file from ``start``, read a chunk at a time."""
    digest = hashlib.sha256()
    buffer = bytearray(min(chunk, nbytes))
    view = memoryview(buffer)
    f.seek(start)
    while nbytes:
        n = f.readinto(view[: min(chunk, nbytes)])
        if not n:
            break
        digest.update(view[:n])
        nbytes -= n
    return digest.hexdigest()


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN
