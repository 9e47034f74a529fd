"""The verifier of a binary's program: what `read_binary` accepts is what `write_binary` writes.

The header is JSON, so its checksum only catches accidents: a file edited and re-hashed (by a
buggy writer, another tool or an attacker) reaches this check. It holds the program to the
shape the writer produces: known keys with the right types, slots numbered in order of
definition (each defined once, before use), tensors that exist with the shapes their use needs,
tiles that cover each analog weight exactly as the arch's tile size cuts it, and numbers in
range. Every failure names the instruction or field and what was expected.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from aimcc.arch import Arch, arch_from_dict
from aimcc.backends.aimcb import DTYPES
from aimcc.errors import AimccError
from aimcc.passes.partition import TARGETS

_PROGRAM_KEYS = {
    "target",
    "source",
    "arch",
    "inputs",
    "outputs",
    "instructions",
    "tiles",
    "slots",
    "schedule",
    "source_sha256",
}
_OPTIONAL_PROGRAM_KEYS: set[str] = set()
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Bad(Exception):
    """A verification failure inside the program; the caller adds the file name."""


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise _Bad(message)


def _int(value: Any, where: str, lo: int = 0, hi: int = 2**62) -> int:
    _expect(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        f"{where} must be an integer in [{lo}, {hi}], got {_show(value)}",
    )
    return value


def _str(value: Any, where: str) -> str:
    _expect(isinstance(value, str), f"{where} must be a string, got {_show(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    _expect(isinstance(value, list), f"{where} must be a list, got {_show(value)}")
    return value


def _dict(value: Any, where: str, keys: set[str], optional: frozenset[str] = frozenset()) -> dict:
    _expect(isinstance(value, dict), f"{where} must be an object, got {_show(value)}")
    missing, extra = keys - value.keys(), value.keys() - keys - optional
    _expect(not missing, f"{where} lacks '{min(missing) if missing else ''}'")
    _expect(not extra, f"{where} has unknown field '{min(extra) if extra else ''}'")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape(value: Any, where: str) -> tuple[int, ...]:
    return tuple(_int(d, f"{where}[{i}]") for i, d in enumerate(_list(value, where)))


def _finite(value: Any, where: str) -> None:
    """Parameters are JSON scalars, lists of them, or tensor references; numbers are finite."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        _expect(math.isfinite(value), f"{where} is not finite ({value})")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")
        return
    _expect(False, f"{where} has an unexpected value {_show(value)}")


def verify_program(program: Any, tensors: dict[str, np.ndarray], where: str) -> Arch:
    """Check ``program`` against the tensors read with it; returns its arch."""
    try:
        return _verify(program, tensors)
    except _Bad as exc:
        raise AimccError(f"{where}: invalid program: {exc}") from None
    except AimccError as exc:
        raise AimccError(f"{where}: invalid program: {exc}") from None


def _verify(program: Any, tensors: dict[str, np.ndarray]) -> Arch:
    _dict(program, "the program", _PROGRAM_KEYS, frozenset(_OPTIONAL_PROGRAM_KEYS))
    _expect(program["target"] in TARGETS, f"target must be one of {', '.join(TARGETS)}")
    _str(program["source"], "source")
    digest = program["source_sha256"]
    _expect(
        digest is None or (isinstance(digest, str) and _SHA256.fullmatch(digest) is not None),
        "source_sha256 must be null or 64 hex digits",
    )
    _expect(isinstance(program["arch"], dict), "arch must be an object")
    arch = arch_from_dict(program["arch"])
    slots = _int(program["slots"], "slots", 0, 2**31)
    defined: dict[int, tuple[str, tuple[int, ...]]] = {}  # slot -> (dtype, shape) where known

    def define(slot: Any, where: str, dtype: str = "", shape: tuple[int, ...] = ()) -> None:
        _int(slot, where, 0, slots - 1)
        _expect(
            slot == len(defined),
            f"{where} defines slot {slot}, the next new slot is "
            f"{len(defined)} (slots are numbered in order of definition)",
        )
        defined[slot] = (dtype, shape)

    def operand(value: Any, where: str) -> None:
        if value is None:
            return
        if isinstance(value, str):
            _expect(value in tensors, f"{where} refers to missing tensor '{value}'")
            return
        _int(value, where, 0, slots - 1)
        _expect(value in defined, f"{where} uses slot {value} before it is defined")

    for i, spec in enumerate(_list(program["inputs"], "inputs")):
        at = f"inputs[{i}]"
        _dict(spec, at, {"name", "slot", "dtype", "shape"})
        _str(spec["name"], f"{at}.name")
        _expect(
            spec["dtype"] in DTYPES,
            f"{at}.dtype {_show(spec['dtype'])} is not one of {', '.join(DTYPES)}",
        )
        define(spec["slot"], at, spec["dtype"], _shape(spec["shape"], f"{at}.shape"))
    _expect(
        len({s["name"] for s in program["inputs"]}) == len(program["inputs"]),
        "two inputs share a name",
    )
    instructions = _list(program["instructions"], "instructions")
    analog_at: dict[int, dict[str, Any]] = {}
    for i, ins in enumerate(instructions):
        at = f"instruction {i}"
        _expect(isinstance(ins, dict), f"{at} must be an object")
        _expect(
            ins.get("op") in ("call", "view", "analog"),
            f"{at} has unknown op {_show(ins.get('op'))} (call, view or analog expected)",
        )
        if ins["op"] == "call":
            _dict(ins, at, {"op", "kind", "args", "outs", "params", "cluster", "kernels", "split"})
            _kernel(ins, at, arch, tensors, operand)
            _int(ins["cluster"], f"{at}.cluster", 0, arch.system_clusters - 1)
            _int(ins["split"], f"{at}.split", 1, arch.system_clusters)
            _kernels(ins["kernels"], at)
            for j, slot in enumerate(_list(ins["outs"], f"{at}.outs")):
                define(slot, f"{at}.outs[{j}]")
        elif ins["op"] == "view":
            _dict(ins, at, {"op", "kind", "args", "outs", "params"})
            _kernel(ins, at, arch, tensors, operand)
            for j, slot in enumerate(_list(ins["outs"], f"{at}.outs")):
                define(slot, f"{at}.outs[{j}]")
        else:
            keys = {"op", "weight", "x", "out", "grid", "tile", "tiles", "layer", "bias"}
            _dict(
                ins,
                at,
                keys | {"cluster", "kernels", "split"},
                frozenset({"replicas", "chunk"}),
            )
            _expect(ins["layer"] is None or isinstance(ins["layer"], str), f"{at}.layer: a name")
            _analog(ins, at, arch, tensors, operand)
            _int(ins["cluster"], f"{at}.cluster", 0, arch.system_clusters - 1)
            _int(ins["split"], f"{at}.split", 1, arch.system_clusters)
            _kernels(ins["kernels"], at)
            define(ins["out"], f"{at}.out")
            analog_at[i] = ins
    _expect(len(defined) == slots, f"slots is {slots}, the program defines {len(defined)}")
    _tiles(program["tiles"], analog_at, arch, tensors)
    for i, spec in enumerate(_list(program["outputs"], "outputs")):
        at = f"outputs[{i}]"
        _dict(spec, at, {"name", "value", "dtype", "shape"})
        _str(spec["name"], f"{at}.name")
        _expect(spec["value"] is not None, f"{at}.value is empty")
        operand(spec["value"], f"{at}.value")
        _expect(spec["dtype"] in DTYPES, f"{at}.dtype {_show(spec['dtype'])} is not known")
        _shape(spec["shape"], f"{at}.shape")
    _schedule(program["schedule"])
    return arch


def _kernel(ins: dict, at: str, arch: Arch, tensors: dict, operand: Any) -> None:
    from aimcc.runtime.kernels import KERNEL_IMPLS
    from aimcc.runtime.onnx_ops import supported_ops

    kind = _str(ins["kind"], f"{at}.kind")
    known = kind in KERNEL_IMPLS or (
        kind.startswith("onnx.") and kind.removeprefix("onnx.") in supported_ops()
    )
    _expect(known, f"{at} has unknown kernel kind {_show(kind)}")
    for j, arg in enumerate(_list(ins["args"], f"{at}.args")):
        operand(arg, f"{at}.args[{j}]")
    params = ins["params"]
    _expect(isinstance(params, dict), f"{at}.params must be an object")
    for name, value in params.items():
        if isinstance(value, dict):
            _dict(value, f"{at}.params.{name}", {"tensor"})
            _expect(value["tensor"] in tensors, f"{at}.params.{name} refers to missing tensor")
        else:
            _finite(value, f"{at}.params.{name}")


def _kernels(kernels: Any, at: str) -> None:
    """The RISC-V kernels an instruction runs: each a valid signature of a known kind."""
    from aimcc.backends.signatures import KernelSignature, check_signature

    for j, k in enumerate(_list(kernels, f"{at}.kernels")):
        where = f"{at}.kernels[{j}]"
        _dict(k, where, {"kind", "dtype", "dims", "attrs", "repeat", "along", "unit"})
        _expect(isinstance(k["dims"], dict) and isinstance(k["attrs"], dict), f"{where}: dicts")
        for name, size in k["dims"].items():
            _int(size, f"{where}.dims.{name}", 1)
        for name, value in k["attrs"].items():
            _finite(value, f"{where}.attrs.{name}")
        _int(k["repeat"], f"{where}.repeat", 1)
        _int(k["unit"], f"{where}.unit", 1)
        sig = KernelSignature(
            _str(k["kind"], f"{where}.kind"),
            tuple(sorted(k["dims"].items())),
            tuple(sorted(k["attrs"].items())),
            _str(k["dtype"], f"{where}.dtype"),
        )
        try:
            check_signature(sig)
        except AimccError as exc:
            _expect(False, f"{where}: {exc}")


def _analog(ins: dict, at: str, arch: Arch, tensors: dict, operand: Any) -> None:
    key = _str(ins["weight"], f"{at}.weight")
    _expect(key in tensors, f"{at} refers to missing weight '{key}'")
    weight = tensors[key]
    _expect(
        weight.ndim == 2 and weight.dtype.kind == "f",
        f"{at}: weight '{key}' must be a float matrix, is {weight.dtype} {list(weight.shape)}",
    )
    _expect(isinstance(ins["x"], int), f"{at}.x must be a slot")
    operand(ins["x"], f"{at}.x")
    tile = _shape(ins["tile"], f"{at}.tile")
    _expect(
        tile == (arch.tile.rows, arch.tile.cols),
        f"{at}: tiles of {list(tile)} do not match the arch's {arch.tile.rows}x{arch.tile.cols}",
    )
    grid = _shape(ins["grid"], f"{at}.grid")
    k, n = weight.shape
    expected = (-(-k // tile[0]), -(-n // tile[1]))
    _expect(
        grid == expected,
        f"{at}: grid {list(grid)} does not tile a {k}x{n} weight ({list(expected)} expected)",
    )
    if ins["bias"] is not None:
        bias = _str(ins["bias"], f"{at}.bias")
        _expect(
            bias in tensors and tensors[bias].shape == (n,) and tensors[bias].dtype.kind == "f",
            f"{at}: bias '{bias}' must be a float vector of {n}",
        )
    ids = _list(ins["tiles"], f"{at}.tiles")
    _expect(len(ids) == grid[0] * grid[1], f"{at}: {len(ids)} tiles for a grid of {list(grid)}")
    _expect(("replicas" in ins) == ("chunk" in ins), f"{at}: replicas need a chunk and back")
    if "replicas" in ins:  # copies of the layer (the replicate pass), tokens dealt by chunk
        _int(ins["chunk"], f"{at}.chunk", 1)
        copies = _list(ins["replicas"], f"{at}.replicas")
        _expect(bool(copies), f"{at}.replicas is empty")
        for j, copy in enumerate(copies):
            _expect(
                len(_list(copy, f"{at}.replicas[{j}]")) == len(ids),
                f"{at}.replicas[{j}] has {len(copy)} tiles, the layer {len(ids)}",
            )


def _tiles(tiles: Any, analog_at: dict[int, dict], arch: Arch, tensors: dict) -> None:
    """Each analog instruction's tiles, in order, cut its weight as the arch's tile size does."""
    seen: set[int] = set()
    by_instruction: dict[int, list[dict]] = {}
    for i, tile in enumerate(_list(tiles, "tiles")):
        at = f"tiles[{i}]"
        _dict(tile, at, {"id", "instruction", "weight", "rows", "cols"})
        tid = _int(tile["id"], f"{at}.id", 0, arch.system_tiles - 1)
        _expect(tid not in seen, f"{at}: tile {tid} is used twice")
        seen.add(tid)
        index = _int(tile["instruction"], f"{at}.instruction")
        _expect(index in analog_at, f"{at} belongs to instruction {index}, not an analog one")
        by_instruction.setdefault(index, []).append(tile)
    for index, ins in analog_at.items():
        for j, copy in enumerate(ins.get("replicas", ())):
            for tid in copy:
                tid = _int(tid, f"instruction {index}.replicas[{j}]", 0, arch.system_tiles - 1)
                _expect(tid not in seen, f"instruction {index}: replica tile {tid} used twice")
                seen.add(tid)
    for index, ins in analog_at.items():
        mine = by_instruction.get(index, [])
        _expect(
            [t["id"] for t in mine] == ins["tiles"],
            f"instruction {index}: its tile list does not match the tile map",
        )
        k, n = tensors[ins["weight"]].shape
        rows, cols = arch.tile.rows, arch.tile.cols
        cuts = [
            ([r, min(r + rows, k)], [c, min(c + cols, n)])
            for r in range(0, k, rows)
            for c in range(0, n, cols)
        ]
        for t, (r, c) in zip(mine, cuts, strict=True):
            _expect(
                t["weight"] == ins["weight"] and t["rows"] == r and t["cols"] == c,
                f"tile {t['id']} of instruction {index}: rows {t['rows']} cols {t['cols']} "
                f"of '{t['weight']}' where the writer cuts rows {r} cols {c}",
            )


_SCHEDULE_KEYS = {
    "strategy",
    "clusters_per_tile",
    "tokens",
    "chunk_per_layer",
    "makespan_ns",
    "energy_nj",
    "lower_bound_ns",
    "units",
}
_BOUND_KEYS = {"busiest_unit", "critical_path", "chain"}
_UNIT_KEYS = {"busy_ns", "utilisation", "energy_nj"}


def _dict_of(value: Any, where: str) -> dict:
    _expect(isinstance(value, dict), f"{where} must be an object, got {_show(value)}")
    return value


def _schedule(schedule: Any) -> None:
    """Informational (reports read it): an object of finite numbers and names, or null."""
    if schedule is None:
        return
    _dict(schedule, "schedule", _SCHEDULE_KEYS)
    _dict(schedule["lower_bound_ns"], "schedule.lower_bound_ns", _BOUND_KEYS)
    for unit, load in _dict_of(schedule["units"], "schedule.units").items():
        _dict(load, f"schedule.units.{unit}", _UNIT_KEYS)

    def walk(value: Any, where: str, depth: int = 0) -> None:
        _expect(depth < 4, f"{where} is nested too deeply")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}", depth + 1)
        else:
            _expect(not isinstance(value, list), f"{where} must not be a list")
            _finite(value, where)

    walk(schedule, "schedule")
