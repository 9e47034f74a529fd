"""`aimcc eval`, `aimcc run --trials` and the program-once API, on the small BERT of the corpus.

Metrics are checked against numpy formulas and onnxruntime, drift against its physics (error
grows with time), and the user errors against their messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import model_path, onnxruntime_outputs

from aimcc.backends.aimcb import write_binary
from aimcc.cli import main
from aimcc.commands import random_inputs
from aimcc.compiler import compile_model
from aimcc.errors import AimccError
from aimcc.evaluate import Metric, evaluate, is_embedding, reference_outputs, score
from aimcc.runtime import load
from aimcc.runtime.analog import NoiseSpec

YEAR = 31557600.0


@pytest.fixture(scope="module")
def bert_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "bert.aimcb"
    write_binary(compile_model(model_path("bert"), "hybrid"), path)
    return path


def test_metrics_match_their_formulas() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 3, 8))
    y = ref + 0.3 * rng.normal(size=ref.shape)
    metrics = [
        Metric("e", "relative error"),
        Metric("e", "cosine"),
        Metric("e", "embedding cosine"),
    ]
    outputs = [{"e": y[0]}, {"e": y[1]}]  # two batches of [3, 8] embeddings
    reference = [{"e": ref[0]}, {"e": ref[1]}]
    rel, cos, emb = score(metrics, outputs, reference)
    diff = (y - ref).ravel()
    assert rel == pytest.approx(np.sqrt((diff**2).sum() / (ref**2).sum()), rel=1e-12)
    assert cos == pytest.approx(
        y.ravel() @ ref.ravel() / np.linalg.norm(y) / np.linalg.norm(ref), rel=1e-12
    )
    rows = [
        a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        for a, b in zip(y.reshape(6, 8), ref.reshape(6, 8), strict=True)
    ]
    assert emb == pytest.approx(np.mean(rows), rel=1e-12)
    assert is_embedding("sentence_embedding", (1, 3, 384))
    assert is_embedding("pooled", (1, 384))
    assert not is_embedding("last_hidden_state", (1, 128, 384))


def test_reference_is_onnxruntime_on_the_same_inputs(bert_binary: Path) -> None:
    exe = load(bert_binary)
    feeds = random_inputs(exe, 3)
    (reference,) = reference_outputs(model_path("bert"), exe, [feeds])
    (expected,) = onnxruntime_outputs(model_path("bert"), feeds)
    np.testing.assert_allclose(reference["last_hidden_state"], expected, rtol=1e-5, atol=1e-5)


def test_error_grows_with_drift_time(bert_binary: Path) -> None:
    exe = load(bert_binary)
    batches = [random_inputs(exe, 0), random_inputs(exe, 1)]
    reference = reference_outputs(model_path("bert"), exe, batches)
    times = [("0s", 0.0), ("1d", 86400.0), ("10y", 10 * YEAR)]
    result = evaluate(exe, batches, reference, times, trials=2, seed=0, compensation="global")
    assert result.values.shape == (2, 3, 2)
    rel_error, cosine = result.mean().T
    assert 0 < rel_error[0] < rel_error[1] < rel_error[2] < 0.5
    assert 1 > cosine[0] > cosine[2] > 0.9
    again = evaluate(exe, batches, reference, times, trials=2, seed=0, compensation="global")
    np.testing.assert_array_equal(again.values, result.values)  # deterministic


def test_program_once_then_read_at_several_times(bert_binary: Path) -> None:
    """at_time re-reads the same devices: drift exponents and programmed conductances stay,
    and two reads differ less than two programmings."""
    exe = load(bert_binary)
    exe.set_noise(NoiseSpec("pcm"), seed=0)
    layer = exe.layers[0]
    assert layer.programmed is not None
    nu, g_prog = layer.programmed.nu.clone(), layer.programmed.g_prog.clone()
    first = layer.tiles.weights.clone()
    exe.at_time(3600.0)
    exe.at_time(0.0)
    assert torch.equal(layer.programmed.nu, nu) and torch.equal(layer.programmed.g_prog, g_prog)
    read_spread = (layer.tiles.weights - first).norm()
    exe.set_noise(NoiseSpec("pcm"), seed=1)
    program_spread = (layer.tiles.weights - first).norm()
    # reads differ by sqrt(2) sigma_read, programmings by sqrt(2) (sigma_prog^2 + sigma_read^2)^0.5
    assert read_spread < 0.8 * program_spread


def test_eval_cli_table_and_plot(
    bert_binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    plot = tmp_path / "drift.png"
    argv = [
        "eval",
        str(bert_binary),
        "--reference",
        str(model_path("bert")),
        "--trials",
        "2",
        "--times",
        "0s,1y",
        "--batches",
        "1",
        "--plot",
        str(plot),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "relative error" in out and "1y" in out and "±" in out
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_eval_cli_errors(bert_binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.onnx"
    assert main(["eval", str(bert_binary), "--reference", str(missing), "--trials", "1"]) == 1
    assert "reference model not found" in capsys.readouterr().err
    gpt2 = str(model_path("gpt2"))  # inputs: input_ids, attention_mask (no token_type_ids)
    assert main(["eval", str(bert_binary), "--reference", gpt2, "--trials", "1"]) == 1
    assert "not the model" in capsys.readouterr().err  # the binary records bert's sha256
    exe = load(bert_binary)  # a binary that records no hash: the interfaces are compared
    exe.program["source_sha256"] = None
    with pytest.raises(AimccError, match="do not match the binary's"):
        reference_outputs(Path(gpt2), exe, [random_inputs(exe, 0)])
    assert main(["eval", str(bert_binary), "--reference", gpt2, "--times", "1x"]) == 1
    assert "bad time" in capsys.readouterr().err


def test_run_trials(bert_binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "trials.npz"
    argv = [
        "run",
        str(bert_binary),
        "--random",
        "--noise",
        "pcm",
        "--t-inference",
        "1d",
        "--trials",
        "3",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    assert "3 programmings" in capsys.readouterr().out
    with np.load(out) as data:
        trials = data["last_hidden_state"]
    assert trials.shape == (3, 1, 128, 128)
    assert not np.array_equal(trials[0], trials[1])  # independent programmings
    exe = load(bert_binary)  # trial i is the single run with seed i
    exe.set_noise(NoiseSpec("pcm", 86400.0), seed=2)
    np.testing.assert_array_equal(exe.run(random_inputs(exe, 0))["last_hidden_state"], trials[2])
    assert main(["run", str(bert_binary), "--random", "--trials", "2"]) == 1
    assert "--trials needs --noise pcm" in capsys.readouterr().err
