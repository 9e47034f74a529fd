"""Seeded mutations of a peft adapter folder through ``aimcc run --adapter``: a damaged config
or safetensors file is refused with one line (exit 1, no output written), never an internal
error; a mutation peft itself would accept may load. ``AIMCC_FUZZ_SEEDS=N`` runs more."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import struct
from pathlib import Path

import pytest
from test_adapters import bert_base, peft_bert  # noqa: F401 (the fixture is used by name)

from aimcc.cli import main

SEEDS = range(int(os.environ.get("AIMCC_FUZZ_SEEDS", "2")))
JUNK = [None, -1, 0, 2**70, 1.5, float("nan"), "x", [], {}, ["query", 3], {"(": 1}]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adapter") / "good"
    peft_bert(r=8, lora_alpha=16, target_modules=["query", "value"]).save_pretrained(folder)
    return folder


def _config(folder: Path, rng: random.Random) -> None:
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    keys = ["r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "use_rslora"]
    keys += ["modules_to_save", "peft_type", "fan_in_fan_out", "use_dora"]
    key = rng.choice(keys)
    config[key] = rng.choice(JUNK)
    path.write_text(json.dumps(config))


def _header(folder: Path, rng: random.Random) -> None:
    """Edit the safetensors JSON header (dtype, shape, offsets) and keep the file consistent."""
    path = folder / "adapter_model.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    key = rng.choice([k for k in header if k != "__metadata__"])
    field = rng.choice(["dtype", "shape", "data_offsets"])
    header[key][field] = {
        "dtype": rng.choice(["F64", "I64", "BOOL", "U8", "F8_E4M3", "X"]),
        "shape": rng.choice([[1], [8, 8, 8], [], [-1, 4], [2**40, 2]]),
        "data_offsets": rng.choice([[0, 4], [-8, 0], [10**12, 10**12 + 4]]),
    }[field]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _bytes(folder: Path, rng: random.Random) -> None:
    path = folder / rng.choice(["adapter_model.safetensors", "adapter_config.json"])
    raw = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        del raw[rng.randrange(len(raw)) :]
    else:
        for _ in range(8):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))


def _remove(folder: Path, rng: random.Random) -> None:
    (folder / rng.choice(["adapter_model.safetensors", "adapter_config.json"])).unlink()


@pytest.mark.parametrize("seed", SEEDS)
def test_damaged_adapters(
    bert_base: Path,  # noqa: F811
    adapter: Path,
    tmp_path: Path,
    seed: int,
) -> None:
    rng = random.Random(seed)
    failures = []
    for i, mutate in enumerate([_config, _config, _header, _header, _bytes, _bytes, _remove] * 2):
        folder = tmp_path / f"a{i}"
        shutil.copytree(adapter, folder)
        mutate(folder, rng)
        out = tmp_path / f"out{i}.npz"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(
                ["run", str(bert_base), "--random", "--adapter", str(folder), "-o", str(out)]
            )
        lines = err.getvalue().strip().splitlines()
        if code == 0:
            continue  # e.g. a flipped bit inside a weight: still a valid adapter
        if code != 1 or len(lines) != 1 or not lines[0].startswith("aimcc: error: "):
            failures.append(f"{mutate.__name__}: exit {code}: {err.getvalue().strip()[:300]}")
        elif out.exists():
            failures.append(f"{mutate.__name__}: wrote {out.name} although it failed")
    assert not failures, "\n".join(failures)
