"""Bad option values: one line, exit 1, before any work starts, nothing written."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from conftest import model_path

from aimcc.cli import main

MODEL = "lora_layer_128"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("opts") / "m.aimcb"
    assert main([str(model_path(MODEL)), "-q", "-o", str(out)]) == 0
    return out


def _fails(args: list[str], folder: Path, expect: str) -> None:
    before = sorted(folder.rglob("*"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    lines = err.getvalue().strip().splitlines()
    assert code == 1, err.getvalue()
    assert len(lines) == 1 and lines[0].startswith("aimcc: error: "), err.getvalue()
    assert expect in lines[0], lines[0]
    assert sorted(folder.rglob("*")) == before, "a failing command wrote files"


def test_compile_output_paths(tmp_path: Path) -> None:
    model = str(model_path(MODEL))
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        str(tmp_path / "dir"): "is a directory",
        str(tmp_path / "file" / "x.aimcb"): "is not a directory",
        "": "empty output path",
        str(tmp_path / "file" / "deeper" / "x.aimcb"): "is not a directory",
    }
    for out, expect in cases.items():
        _fails([model, "-q", "-o", out], tmp_path, expect)
    good = str(tmp_path / "ok.aimcb")
    _fails([model, "-q", "-o", good, "--trace", str(tmp_path / "file" / "t.json")], tmp_path, "")
    _fails([model, "-q", "-o", good, "--plot", str(tmp_path / "dir")], tmp_path, "directory")
    _fails([model, "-q", "-o", good, "--emit-riscv", str(tmp_path / "file")], tmp_path, "")


def test_run_options(binary: Path, tmp_path: Path) -> None:
    b = str(binary)
    np.save(tmp_path / "x.npy", np.zeros(3))
    cases = [
        (["--random", "--seed", "-1"], "seed -1"),
        (["--random", "--seed", str(2**70)], "outside"),
        (["--random", "--seed", "x"], "not an integer"),
        (["--random", "--noise", "pcm", "--t-inference", "1e400"], "bad time"),
        (["--random", "--noise", "pcm", "--t-inference=-1d"], "bad time"),
        (["--random", "--noise", "pcm", "--t-inference", "nan"], "bad time"),
        (["--random", "--noise", "bogus"], "invalid choice"),
        (["--inputs", str(tmp_path / "x.npy")], "not an .npz"),
        (["--random", "-o", str(tmp_path)], "is a directory"),
        (["--random", "--trials", "0", "--noise", "pcm"], "at least 1"),
    ]
    for extra, expect in cases:
        _fails(["run", b, *extra], tmp_path, expect)


def test_arch_options(tmp_path: Path) -> None:
    model = str(model_path(MODEL))
    out = str(tmp_path / "m.aimcb")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe[tile]\n")
    cases = [
        (["--set", "tile.rows=99999999999999999999"], "absurdly large"),
        (["--set", "tile.power_w=inf"], "finite"),
        (["--set", "tile.rows=-4"], "negative"),
        (["--set", "tile.nope=1"], "no key"),
        (["--arch", str(tmp_path / "bad.toml")], "UTF-8"),
        (["--arch", "no-such-chip"], "unknown architecture"),
        (["--input-shape", "x=1x0"], "positive"),
    ]
    for extra, expect in cases:
        _fails([model, "-q", "-o", out, *extra], tmp_path, expect)
