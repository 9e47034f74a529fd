"""Files as every other tool writes them: modes that honour the umask, nothing written into
the source tree, and the README's Python snippet running as written."""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corpus_cache
import numpy as np
import pytest
from conftest import (
    ROOT,
    model_path,
    onnxruntime_outputs,
    relative_error,
    tree_changes,
    tree_state,
)

from aimcc import atomic
from aimcc.atomic import atomic_write, current_umask, write_text
from aimcc.backends.aimcb import manifest_path, write_binary
from aimcc.cli import main
from aimcc.compiler import compile_model


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


@pytest.mark.parametrize("direct", [False, True])
def test_stream_writer_writes_regions_and_zero_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Direct I/O (stages of a few pages, so several flushes and a padded last one) and
    buffered writes give the same file: the regions at their offsets, zeros between."""
    monkeypatch.setattr(atomic, "DIRECT_MIN_BYTES", 0 if direct else 1 << 62)
    monkeypatch.setattr(atomic.StreamWriter, "STAGE", 3 * mmap.PAGESIZE)
    rng = np.random.default_rng(0)
    regions = [(100, rng.bytes(5000)), (5100, rng.bytes(1)), (20000, rng.bytes(3 * 4096 + 7))]
    size = 40_000
    expected = bytearray(size)
    for offset, data in regions:
        expected[offset : offset + len(data)] = data
    with atomic_write(tmp_path / "f.bin") as f:
        stream = atomic.StreamWriter(f, size)
        for offset, data in regions:
            stream.write(offset, data)
        stream.close(size)
        f.seek(0)
        f.write(b"head")  # after close: buffered writes work again (the binary's header)
    expected[:4] = b"head"
    assert (tmp_path / "f.bin").read_bytes() == bytes(expected)
    bad = tmp_path / "g.bin"
    with pytest.raises(ValueError, match="increasing offset"), atomic_write(bad) as f:
        stream = atomic.StreamWriter(f, size)
        stream.write(10, b"ab")
        stream.write(5, b"cd")
    assert not bad.exists()


def test_binary_through_direct_io_is_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = compile_model(model_path("lora_layer_128"))
    write_binary(comp, tmp_path / "buffered.aimcb", manifest=False)
    monkeypatch.setattr(atomic, "DIRECT_MIN_BYTES", 0)
    write_binary(comp, tmp_path / "direct.aimcb", manifest=False)
    assert (tmp_path / "direct.aimcb").read_bytes() == (tmp_path / "buffered.aimcb").read_bytes()


@pytest.mark.parametrize(
    ("model", "large", "finished"),
    [("lora_layer_128", 1024, True), ("bert", 4096, True), ("gpt2", 64, False)],
)
def test_a_streamed_binary_is_the_written_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, large: int, finished: bool
) -> None:
    """The CLI streams a large model's large tensors into its binary while the passes run;
    with the thresholds lowered, these small models stream: the bytes are write_binary's.
    gpt2's passes drop biases the stream had written (large at 64 B): the stream is
    abandoned and the file written anew."""
    from aimcc.backends import aimcb

    results: list[int | None] = []
    monkeypatch.setattr(atomic, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setattr(aimcb, "PAGE_ALIGN_MIN", large)
    monkeypatch.setattr(aimcb.BinaryStream, "finish", _spy(aimcb.BinaryStream.finish, results))
    assert main([str(model_path(model)), "-q", "-o", str(tmp_path / "cli.aimcb")]) == 0
    assert len(results) == 1 and (results[0] is not None) == finished
    write_binary(compile_model(model_path(model)), tmp_path / "py.aimcb", manifest=False)
    assert (tmp_path / "cli.aimcb").read_bytes() == (tmp_path / "py.aimcb").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cli.aimcb", "cli.kernels.json", "py.aimcb"
    ]  # fmt: skip


def test_a_failed_compile_leaves_no_streamed_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aimcc.errors import AimccError
    from aimcc.passes.split import SplitPass

    def refuse(self: object, ctx: object, op: object) -> None:
        raise AimccError("split refused")

    monkeypatch.setattr(atomic, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setattr(SplitPass, "apply", refuse)
    assert main([str(model_path("bert")), "-q", "-o", str(tmp_path / "out.aimcb")]) == 1
    assert "split refused" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _spy(method: Any, calls: list[Any]) -> Any:
    def spied(self: Any, *args: Any) -> Any:
        calls.append(method(self, *args))
        return calls[-1]

    return spied


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_tree_check_sees_what_a_test_could_leave(tmp_path: Path) -> None:
    """The session check (conftest.source_tree_untouched) on a scratch repository: a new
    git-ignored model, a rewritten file that was already modified, a deleted file and a
    binary in the working directory all show; Python's own caches do not."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / ".gitignore").write_text("models/big*\n*.aimcb\n__pycache__/\n")
    (repo / "models" / "README.md").write_text("v1\n")
    (repo / "models" / "small.onnx").write_bytes(b"x")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (repo / "models" / "README.md").write_text("v2 edited by hand\n")
    before = tree_state(repo)
    assert before is not None and list(before) == ["models/README.md"]

    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "m.pyc").write_bytes(b"")
    assert tree_changes(before, tree_state(repo) or {}) == []

    (repo / "models" / "big.onnx").write_bytes(b"0" * 10)
    (repo / "models" / "README.md").write_text("v3 rewritten by a test\n")
    (repo / "models" / "small.onnx").unlink()
    (repo / "model.aimcb").write_bytes(b"")
    assert tree_changes(before, tree_state(repo) or {}) == [
        "model.aimcb",
        "models/README.md",
        "models/big.onnx",
        "models/small.onnx",
    ]
    assert tree_state(tmp_path / "not-a-repo") is None  # outside git: no check, no failure


def test_tree_check_watches_this_checkout() -> None:
    assert tree_state(ROOT) is not None or not (ROOT / ".git").exists()


def test_uncommitted_models_come_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIMCC_CACHE", str(tmp_path / "c"))
    assert corpus_cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AIMCC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    key = corpus_cache.builder_key()
    assert corpus_cache.cached_path("minilm") == tmp_path / "x/aimcc/models" / key / "minilm.onnx"
    assert model_path("bert") == ROOT / "examples" / "models" / "bert.onnx"

    # a committed model gone missing is built into the cache, not back into the tree
    monkeypatch.setattr(corpus_cache, "COMMITTED_DIR", tmp_path / "empty")
    built = corpus_cache.model_path("lora_layer_128")
    assert built == corpus_cache.cached_path("lora_layer_128") and built.is_file()
    assert built.read_bytes() == (ROOT / "examples/models/lora_layer_128.onnx").read_bytes()
    stamp = built.stat().st_mtime_ns
    assert corpus_cache.model_path("lora_layer_128").stat().st_mtime_ns == stamp  # reused

    # a changed builder gets a new key, so it builds anew
    builder = tmp_path / "build_corpus.py"
    builder.write_text(corpus_cache.BUILDER.read_text() + "\n# changed\n")
    monkeypatch.setattr(corpus_cache, "BUILDER", builder)
    assert corpus_cache.builder_key() != key


def _readme_python() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert len(blocks) == 1, "README.md: expected one Python snippet"
    return blocks[0]


def test_readme_python_snippet_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fresh directory holding only the shipped example, as the README's cwd would."""
    models = tmp_path / "examples" / "models"
    models.mkdir(parents=True)
    shutil.copy(ROOT / "examples/models/bert_lora.onnx", models)
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(_readme_python(), "README.md", "exec"), scope)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bert_lora.aimcb",
        "bert_lora.kernels.json",
        "examples",
    ]
    kernels = json.loads((tmp_path / "bert_lora.kernels.json").read_text())["kernels"]
    assert any(entry["riscv"]["status"] == "code" for entry in kernels)
    feeds, outputs = scope["feeds"], scope["outputs"]
    assert isinstance(feeds, dict) and isinstance(outputs, dict)
    [reference] = onnxruntime_outputs(models / "bert_lora.onnx", feeds)
    assert outputs["last_hidden_state"].shape == reference.shape == (1, 128, 128)
    assert relative_error(outputs["last_hidden_state"], reference) < 1e-4


def test_write_binary_writes_the_manifest_the_cli_writes(tmp_path: Path) -> None:
    model = model_path("lora_layer_128")
    comp = compile_model(model)
    write_binary(comp, tmp_path / "py.aimcb")
    assert main([str(model), "-o", str(tmp_path / "cli.aimcb"), "-q"]) == 0
    py, cli = manifest_path(tmp_path / "py.aimcb"), tmp_path / "cli.kernels.json"
    assert py == tmp_path / "py.kernels.json"
    assert json.loads(py.read_text()) == json.loads(cli.read_text())
    assert (tmp_path / "py.aimcb").read_bytes() == (tmp_path / "cli.aimcb").read_bytes()
    write_binary(comp, tmp_path / "alone.aimcb", manifest=False)
    assert not manifest_path(tmp_path / "alone.aimcb").exists()


_TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".sh", ".json", ".yml", ".yaml", ""}
_SKIPPED_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}
# docs/REFERENCES.md "Section" (also as a markdown link, or several sections in a row)
_DOC_CITE = re.compile(
    r'REFERENCES\.md(?:\]\(REFERENCES\.md\))?\s*[(:]?\s*((?:"[^"\n]+"(?:,\s*|\s+and\s+)?)+)'
)
_PRESET_CITE = re.compile(r"REFS \[([^\]]+)\](?: \(([^)]*)\))?")  # REFS [Section] (sources)


def _project_texts() -> dict[Path, str]:
    texts = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in _TEXT_SUFFIXES and path.stat().st_size < 2_000_000:
                texts[path] = path.read_text(errors="replace")
    return texts


def test_the_project_cites_its_own_references_page() -> None:
    """No file points at the steering notes outside the repository; every section cited exists
    in docs/REFERENCES.md, and every source key a preset names is in its table."""
    outside = re.compile("shared/" + "REFERENCE|" + "REFERENCE" + r"(\.md| \[| \"|'s)")
    texts = _project_texts()
    assert ROOT / "aimcc/arch/presets/paper-512.toml" in texts
    assert not [f"{p.relative_to(ROOT)}" for p, text in texts.items() if outside.search(text)]

    page = (ROOT / "docs" / "REFERENCES.md").read_text()
    sections = set(re.findall(r"^## (.+)$", page, re.M))
    keys = set(re.findall(r"^\| \[(\w+)\] \|", page, re.M))
    cited: dict[str, set[str]] = {}
    for path, text in texts.items():
        for match in _DOC_CITE.finditer(text):
            for section in re.findall(r'"([^"]+)"', match.group(1)):
                cited.setdefault(section, set()).add(path.name)
        for section, sources in _PRESET_CITE.findall(text):
            cited.setdefault(section, set()).add(path.name)
            for key in re.findall(r"\b([A-Z][A-Za-z]+\d{4}|HARP)\b", sources):
                assert key in keys, f"{path.name}: source {key} not in docs/REFERENCES.md"
    assert {"Analog tile", "PCM noise model", "Calibration data", "Digital cluster"} <= set(cited)
    cited.pop("Section", None)  # the placeholder where the form is explained
    assert not {s: sorted(files) for s, files in cited.items() if s not in sections}
    assert set(re.findall(r"\[(\w+)\]", page.split("## Method", 1)[1])) <= keys
