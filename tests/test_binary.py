"""The .aimcb format: deterministic, checked on load, written atomically, never pickled."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import model_path

from aimcc.backends.aimcb import FORMAT_VERSION, MAGIC, read_binary, write_binary
from aimcc.compiler import compile_model
from aimcc.errors import AimccError
from aimcc.runtime import load


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "lora.aimcb"
    write_binary(compile_model(model_path("bert_lora"), "hybrid"), path)
    return path


def test_same_inputs_give_identical_bytes(binary: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.aimcb"
    write_binary(compile_model(model_path("bert_lora"), "hybrid"), again)
    assert (
        hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(binary.read_bytes()).digest()
    )


PREFIX = struct.Struct("<8sIIQQ32s")  # magic, version, flags, header offset, length, sha256


def _parts(raw: bytes) -> tuple[int, int, bytes]:
    """(header offset, header length, header) of a binary's bytes."""
    header_at, header_len = PREFIX.unpack_from(raw)[3:5]
    return header_at, header_len, raw[header_at : header_at + header_len]


def test_layout_is_self_describing(binary: Path) -> None:
    raw = binary.read_bytes()
    magic, version, flags, header_at, header_len, digest = PREFIX.unpack_from(raw)
    assert magic == MAGIC and version == FORMAT_VERSION == 3 and flags == 0
    assert header_at % 64 == 0 and header_at + header_len == len(raw)  # the header is last
    header = raw[header_at:]
    assert hashlib.sha256(header).digest() == digest
    doc = json.loads(header)
    assert doc["program"]["target"] == "hybrid"
    ends = []
    for entry in doc["tensors"].values():
        assert entry["offset"] % 64 == 0
        ends.append(PREFIX.size + entry["offset"] + entry["nbytes"])
    assert max(ends) <= header_at
    program, tensors = read_binary(binary)
    assert program == doc["program"] and set(tensors) == set(doc["tensors"])
    assert b"pickle" not in raw and b"\x80\x04\x95" not in raw[:64]


def _corrupt(src: Path, dst: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def test_tampering_is_detected(binary: Path, tmp_path: Path) -> None:
    raw = binary.read_bytes()
    size = len(raw)
    _, _, header = _parts(raw)
    entry = max(json.loads(header)["tensors"].values(), key=lambda e: e["nbytes"])
    inside = PREFIX.size + entry["offset"] + entry["nbytes"] // 2
    with pytest.raises(AimccError, match=r"header checksum"):
        read_binary(_corrupt(binary, tmp_path / "h.aimcb", size - 100))
    with pytest.raises(AimccError, match=r"tensor '.*' checksum mismatch"):
        read_binary(_corrupt(binary, tmp_path / "t.aimcb", inside))
    with pytest.raises(AimccError, match=r"bad magic"):
        read_binary(_corrupt(binary, tmp_path / "m.aimcb", 0))
    truncated = tmp_path / "short.aimcb"
    truncated.write_bytes(raw[: size // 2])
    with pytest.raises(AimccError, match=r"outside the file|truncated"):
        read_binary(truncated)


def test_forged_header_with_valid_checksum_is_refused(binary: Path, tmp_path: Path) -> None:
    raw = binary.read_bytes()
    header_at, _, header = _parts(raw)
    doc = json.loads(header)
    doc["program"]["instructions"][0] = {"op": "exec", "code": "import os"}
    header = json.dumps(doc, separators=(",", ":")).encode()
    digest = hashlib.sha256(header).digest()
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, 0, header_at, len(header), digest)
    forged = tmp_path / "forged.aimcb"
    forged.write_bytes(prefix + raw[PREFIX.size : header_at] + header)
    with pytest.raises(AimccError, match=r"unknown op 'exec'"):
        load(forged)


def test_an_older_format_is_refused_with_a_reason(binary: Path, tmp_path: Path) -> None:
    """Version 1 binaries (kernels without their RISC-V calls, biases as kernels) are refused
    in one line that says what to do, before anything is read."""
    raw = bytearray(binary.read_bytes())
    struct.pack_into("<I", raw, 8, 1)
    old = tmp_path / "old.aimcb"
    old.write_bytes(bytes(raw))
    reads = rf"format version 1, this aimcc reads {FORMAT_VERSION} \(an older"
    with pytest.raises(AimccError, match=reads) as e:
        load(old)
    assert "compile the model again" in str(e.value) and "\n" not in str(e.value)


def test_write_is_atomic(tmp_path: Path) -> None:
    comp = compile_model(model_path("lora_layer_128"), "hybrid")
    comp.ctx.weights.add("bad", np.array([object()]))  # an unserialisable tensor
    target = tmp_path / "out.aimcb"
    with pytest.raises(Exception):  # noqa: B017 (any failure must leave nothing behind)
        write_binary(comp, target)
    assert list(tmp_path.iterdir()) == []


def test_checksums_are_the_tensor_bytes(binary: Path) -> None:
    """Digests come from a background thread of the weight store: check them independently."""
    raw = binary.read_bytes()
    doc = json.loads(_parts(raw)[2])
    data_start = PREFIX.size
    comp = compile_model(model_path("bert_lora"), "hybrid")
    assert set(doc["tensors"]) == set(comp.ctx.weights)
    for key, entry in doc["tensors"].items():
        start = data_start + entry["offset"]
        blob = raw[start : start + entry["nbytes"]]
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"] == comp.ctx.weights.digest(key)
        expected = np.ascontiguousarray(comp.ctx.weights[key])
        assert blob == expected.tobytes()


def test_stored_weights_are_read_only() -> None:
    weights = compile_model(model_path("lora_layer_128"), "hybrid").ctx.weights
    array = next(iter(weights.values()))
    with pytest.raises(ValueError, match="read-only"):
        array[...] = 0


def test_overwrite_replaces_and_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.aimcb"
    target.write_bytes(b"old")
    comp = compile_model(model_path("lora_layer_128"), "hybrid")
    comp.ctx.weights.add("bad", np.array([object()]))
    with pytest.raises(Exception):  # noqa: B017
        write_binary(comp, target)
    assert target.read_bytes() == b"old"
    comp.ctx.weights.retain(set(comp.ctx.weights) - {"bad"})
    write_binary(comp, target)
    program, _ = read_binary(target)
    assert program["target"] == "hybrid"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aimcb", "out.kernels.json"]
