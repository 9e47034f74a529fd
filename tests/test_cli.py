"""The `aimcc` command as a user runs it: outputs, exit codes, one-line errors, no debris."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import model_path, onnxruntime_outputs, relative_error

from aimcc.cli import main


def aimcc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aimcc.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_compile_then_run_matches_onnxruntime(tmp_path: Path) -> None:
    model = model_path("bert_lora")
    done = aimcc(str(model), "--target", "hybrid", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bert_lora.aimcb").is_file()
    assert (tmp_path / "bert_lora.kernels.json").is_file()
    assert "tiles used / available" in done.stdout and "lora" in done.stdout
    rng = np.random.default_rng(3)
    feeds = {
        "input_ids": rng.integers(0, 1000, (1, 128)),
        "token_type_ids": np.zeros((1, 128), np.int64),
        "attention_mask": np.ones((1, 128), np.int64),
    }
    np.savez(tmp_path / "in.npz", **feeds)
    done = aimcc("run", "bert_lora.aimcb", "--inputs", "in.npz", "-o", "out.npz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        reference = onnxruntime_outputs(model, feeds)[0]
        assert relative_error(out["last_hidden_state"], reference) < 1e-4


def test_print_ir_after_pass(tmp_path: Path) -> None:
    done = aimcc(str(model_path("lora_layer_128")), "--print-ir-after", "tile", "-q", cwd=tmp_path)
    assert done.returncode == 0
    assert "IR after tile" in done.stdout and "aimc.mvm" in done.stdout
    assert "IR after raise" not in done.stdout


def _unsupported_op_model(path: Path) -> Path:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    node = onnx.helper.make_node("MaxRoiPool", ["x", "x"], ["y"], name="pool0", pooled_shape=[2, 2])
    graph = onnx.helper.make_graph([node], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d: ["missing.onnx"], "missing.onnx: no such file"),
        (lambda d: [str(d / "broken.onnx")], "not an ONNX model"),
        (
            lambda d: [str(_unsupported_op_model(d / "op.onnx"))],
            "node 'pool0' (MaxRoiPool): unsupported ONNX op 'MaxRoiPool'",
        ),
        (
            lambda d: [str(model_path("bert")), "--input-shape", "input_ids=1by2"],
            "bad --input-shape",
        ),
        (lambda d: [str(model_path("bert")), "--input-shape", "nope=1x2"], "no input named 'nope'"),
        (lambda d: [str(model_path("bert")), "--arch", "tpu"], "unknown architecture 'tpu'"),
        (lambda d: [str(model_path("bert")), "--set", "tile.cols"], "bad --set"),
        (
            lambda d: [
                *(str(model_path("bert")), "--arch", "hermes-256", "--set", "tile.count=2"),
                *("--chips", "1"),
            ],
            "--chips 1 gives 2",
        ),
        (lambda d: ["run", str(d / "broken.onnx"), "--random"], "not an aimcc binary"),
        (lambda d: ["run", "x.aimcb", "--random", "--t-inference", "soon"], "bad time 'soon'"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(
    make_args,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage that is not protobuf\xff")
    args = make_args(tmp_path)
    before = set(tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aimcc: error:"), captured.err
    assert message in lines[0]
    assert set(tmp_path.iterdir()) == before  # nothing half-written


def test_errors_leave_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    done = aimcc("missing.onnx", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "aimcc: error: missing.onnx: no such file\n"


def test_run_rejects_wrong_input_shape(tmp_path: Path) -> None:
    assert aimcc(str(model_path("lora_layer_128")), "-q", cwd=tmp_path).returncode == 0
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 7, 128), np.float32))
    done = aimcc("run", "lora_layer_128.aimcb", "--inputs", "in.npz", cwd=tmp_path)
    assert done.returncode == 1
    assert (
        "input 'x': shape (1, 7, 128) given, the program was compiled for (1, 128, 128)"
        in done.stderr
    )


def test_help_explains_every_option(tmp_path: Path) -> None:
    done = aimcc("--help", cwd=tmp_path)
    assert done.returncode == 0
    for option in (
        "--target",
        "--arch",
        "--set",
        "--input-shape",
        "--output",
        "--print-ir-after-all",
        "--print-ir-after",
    ):
        assert option in done.stdout
    assert aimcc("run", "--help", cwd=tmp_path).returncode == 0
