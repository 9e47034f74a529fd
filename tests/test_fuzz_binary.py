"""Tampered binaries whose checksums were recomputed after the edit (what a buggy writer,
another tool or an attacker produces): each is refused by the verifier with one line, by both
``run`` and ``inspect``, or, for text fields, shown escaped. ``AIMCC_FUZZ_SEEDS=N`` runs more.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import model_path

from aimcc.backends.aimcb import ALIGN, FORMAT_VERSION, MAGIC
from aimcc.cli import main
from aimcc.compiler import compile_model

PREFIX = struct.Struct("<8sIIQQ32s")
SEEDS = range(int(os.environ.get("AIMCC_FUZZ_SEEDS", "3")))
Doc = dict[str, Any]


@pytest.fixture(scope="module", params=["lora_layer_128", "bert_lora"])
def binary(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aimcc.backends.aimcb import write_binary

    path = tmp_path_factory.mktemp("bin") / f"{request.param}.aimcb"
    write_binary(compile_model(model_path(request.param), "hybrid"), path, manifest=False)
    return path


def _split(raw: bytes) -> tuple[Doc, bytes]:
    """(header, tensor area): the area from the data start (offsets count from there)."""
    header_at, header_len = PREFIX.unpack_from(raw)[3:5]
    return json.loads(raw[header_at : header_at + header_len]), raw[PREFIX.size : header_at]


def _join(doc: Doc, area: bytes) -> bytes:
    """A consistent file: the tensor area, then the header re-hashed, as the writer lays it."""
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    header_at = PREFIX.size + len(area) + (-(PREFIX.size + len(area)) % ALIGN)
    digest = hashlib.sha256(header).digest()
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, 0, header_at, len(header), digest)
    return prefix + area + b"\0" * (header_at - PREFIX.size - len(area)) + header


def _rehash(doc: Doc, area: bytes, key: str) -> None:
    """Recompute a tensor's checksum for wherever its entry now points (a forger would)."""
    e = doc["tensors"][key]
    try:
        start, n = int(e["offset"]), int(e["nbytes"])
        e["sha256"] = hashlib.sha256(area[start : start + n]).hexdigest()
    except (TypeError, ValueError, KeyError):
        pass


def _mutations(rng: random.Random) -> Iterator[tuple[str, Callable[[Doc, bytes], None]]]:
    def pick(seq: Any) -> Any:
        return rng.choice(list(seq))

    def kernels(d: Doc) -> list[Doc]:
        return [i for i in d["program"]["instructions"] if i["op"] == "call"]  # cluster calls

    def analog(d: Doc) -> list[Doc]:
        return [i for i in d["program"]["instructions"] if i["op"] == "analog"]

    def neg_offset(d: Doc, a: bytes) -> None:
        k = pick(d["tensors"])
        d["tensors"][k]["offset"] = -rng.choice([64, 128, d["tensors"][k]["offset"] + 64])
        _rehash(d, a, k)

    def overlap(d: Doc, a: bytes) -> None:
        k1, k2 = rng.sample(sorted(d["tensors"]), 2)
        d["tensors"][k2]["offset"] = d["tensors"][k1]["offset"]
        d["tensors"][k2]["nbytes"] = min(d["tensors"][k1]["nbytes"], d["tensors"][k2]["nbytes"])
        _rehash(d, a, k2)

    def dtype(d: Doc, a: bytes) -> None:
        pick(d["tensors"].values())["dtype"] = rng.choice(["object", "complex64", "<U4", 7, "O"])

    def tensor_shape(d: Doc, a: bytes) -> None:
        pick(d["tensors"].values())["shape"] = rng.choice(["abc", [2.5], [-1], [2**62, 2**62]])

    def slot_range(d: Doc, a: bytes) -> None:
        ins = pick(kernels(d))
        field = rng.choice(["outs", "args"])
        if ins[field]:
            ins[field][0] = rng.choice([-1, 10**9, d["program"]["slots"] + 5])

    def alias(d: Doc, a: bytes) -> None:
        ks = kernels(d)
        if len(ks) < 2:  # one call after the analog layer: it writes the layer's slot
            ks[0]["outs"] = [analog(d)[0]["out"]]
            return
        i, j = sorted(rng.sample(range(len(ks)), 2))
        ks[j]["outs"] = list(ks[i]["outs"])

    def use_before_def(d: Doc, a: bytes) -> None:
        ks = kernels(d)
        later = ks[-1]["outs"][0]
        if len(ks) < 2:  # the analog layer before it reads the call's output
            analog(d)[0]["x"] = later
            return
        ins = ks[rng.randrange(len(ks) - 1)]
        ints = [n for n, v in enumerate(ins["args"]) if isinstance(v, int)]
        if ints:
            ins["args"][ints[0]] = later

    def riscv_kernel(d: Doc, a: bytes) -> None:
        k = pick(pick([i for i in kernels(d) if i["kernels"]])["kernels"])
        rng.choice(
            [
                lambda: k.update(kind=rng.choice(["exec", "gelu", 7])),
                lambda: k["dims"].update({pick(k["dims"]): rng.choice([-1, 0, "8", 2**70])}),
                lambda: k["dims"].update(Q=4),
                lambda: k.update(repeat=0),
                lambda: k.pop("along"),
            ]
        )()

    def slots(d: Doc, a: bytes) -> None:
        d["program"]["slots"] = rng.choice([10**12, -3, 0, "9"])

    def kind(d: Doc, a: bytes) -> None:
        pick(kernels(d))["kind"] = rng.choice(["exec", "onnx.If", "onnx.FooBar", 3, None])

    def params(d: Doc, a: bytes) -> None:
        ins = pick(kernels(d))
        key = pick(ins["params"]) if ins["params"] else "scale"
        ins["params"][key] = rng.choice([float("nan"), float("inf"), [1, {}], {"tensor": "no"}])

    def structure(d: Doc, a: bytes) -> None:
        field = rng.choice(["instructions", "inputs", "outputs", "tiles", "arch", "schedule"])
        d["program"][field] = rng.choice([{}, "x", 5, [None], [[1]]])

    def tile_range(d: Doc, a: bytes) -> None:
        tile = pick(d["program"]["tiles"])
        tile[rng.choice(["rows", "cols"])] = rng.choice([[0, 5], [1, 129], [-5, 3]])

    def tile_id(d: Doc, a: bytes) -> None:
        tiles = d["program"]["tiles"]
        tiles[-1]["id"] = rng.choice([tiles[0]["id"], -1, 10**6]) if len(tiles) > 1 else -1

    def grid(d: Doc, a: bytes) -> None:
        pick(analog(d))["grid"] = rng.choice([[9, 9], [0, 1], [1]])

    def input_spec(d: Doc, a: bytes) -> None:
        spec = pick(d["program"]["inputs"])
        field = rng.choice(["shape", "dtype", "slot"])
        spec[field] = {"shape": ["128"], "dtype": "complex128", "slot": 999}[field]

    def arch(d: Doc, a: bytes) -> None:
        tile = d["program"]["arch"]["tile"]
        rng.choice([lambda: tile.pop("rows"), lambda: tile.update(rows=-1)])()

    def extra_field(d: Doc, a: bytes) -> None:
        target = rng.choice([d["program"], pick(d["program"]["instructions"])])
        target["payload"] = "import os"

    def output_value(d: Doc, a: bytes) -> None:
        pick(d["program"]["outputs"])["value"] = rng.choice([None, -1, "missing", 10**9])

    yield from (
        (f.__name__, f)
        for f in (
            neg_offset, overlap, dtype, tensor_shape, slot_range, alias, use_before_def, slots,
            kind, params, structure, tile_range, tile_id, grid, input_spec, arch, extra_field,
            output_value, riscv_kernel,
        )
    )  # fmt: skip


def _cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("seed", SEEDS)
def test_tampered_binaries_are_refused(binary: Path, tmp_path: Path, seed: int) -> None:
    doc, area = _split(binary.read_bytes())
    rng = random.Random(f"{binary.name}/{seed}")
    failures = []
    for name, mutate in _mutations(rng):
        forged = copy.deepcopy(doc)
        mutate(forged, area)
        if forged == doc:
            continue
        path = tmp_path / f"{name}.aimcb"
        path.write_bytes(_join(forged, area))
        for command in (["run", str(path), "--random"], ["inspect", str(path)]):
            code, _, err = _cli(command)
            lines = err.strip().splitlines()
            if code != 1 or len(lines) != 1 or not lines[0].startswith("aimcc: error: "):
                failures.append(f"{name} ({command[0]}): exit {code}: {err.strip()[:240]}")
    assert not failures, "\n".join(failures)


def test_untampered_rewrite_is_accepted(binary: Path, tmp_path: Path) -> None:
    """The harness itself changes nothing: a re-joined, unedited file runs."""
    doc, area = _split(binary.read_bytes())
    path = tmp_path / "same.aimcb"
    path.write_bytes(_join(doc, area))
    assert _cli(["run", str(path), "--random"])[0] == 0


def test_names_from_the_file_are_printed_escaped(binary: Path, tmp_path: Path) -> None:
    doc, area = _split(binary.read_bytes())
    hostile = "[/][bold red]x\x1b[2J\x07"
    doc["program"]["outputs"][0]["name"] = hostile
    doc["program"]["source"] = hostile
    path = tmp_path / "names.aimcb"
    path.write_bytes(_join(doc, area))
    for command in (["inspect", str(path)], ["run", str(path), "--random"]):
        code, out, err = _cli(command)
        assert code == 0, err
        assert "\x1b" not in out and "\x07" not in out, command
        assert "[/]" in out or "[/" in out, command  # shown literally, not taken as markup
