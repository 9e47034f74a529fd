"""Files as every other tool writes them: modes that honour the umask, nothing written into
the source tree, and the README's Python snippet running as written."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import model_path

from aimcc.atomic import current_umask, write_text
from aimcc.cli import main


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], indirect=True)
def test_outputs_honour_the_umask(tmp_path: Path, umask: int) -> None:
    """Binary, manifest, trace, plot, assembly and run outputs: 0666 & ~umask, like open()."""
    assert current_umask() == umask
    binary = tmp_path / "out" / "m.aimcb"
    argv = [str(model_path("lora_layer_128")), "-o", str(binary), "-q"]
    argv += ["--trace", str(tmp_path / "t.json"), "--plot", str(tmp_path / "g.png")]
    assert main([*argv, "--emit-riscv", str(tmp_path / "asm")]) == 0
    assert main(["run", str(binary), "--random", "-o", str(tmp_path / "y.npz")]) == 0
    files = [binary, binary.with_name("m.kernels.json"), tmp_path / "t.json", tmp_path / "g.png"]
    files += [tmp_path / "y.npz", *sorted((tmp_path / "asm").glob("*.S"))]
    assert len(files) > 6
    expected = 0o666 & ~umask
    assert {path.name: oct(_mode(path)) for path in files} == {
        path.name: oct(expected) for path in files
    }
    open(tmp_path / "plain", "w").close()  # what any other tool gets
    assert _mode(tmp_path / "plain") == expected
    assert not list(tmp_path.rglob(".*.tmp"))


def test_umask_is_read_without_changing_it() -> None:
    old = os.umask(0o037)
    try:
        assert current_umask() == 0o037 and current_umask() == 0o037
    finally:
        os.umask(old)


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    write_text(path, "old")
    with pytest.raises(TypeError):
        write_text(path, 1)  # type: ignore[arg-type]
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
