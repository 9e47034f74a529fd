"""The `aimcc` command as a user runs it: outputs, exit codes, one-line errors, no debris."""

from __future__ import annotations

import re
import subprocess
import sys
import time
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
    done = aimcc("compile", "--help", cwd=tmp_path)
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


# -- start-up, discoverability ------------------------------------------------------------

HEAVY = ("torch", "onnx", "onnxruntime", "ml_dtypes", "xdsl", "numpy", "rich", "networkx")


def imported_modules(*args: str, cwd: Path) -> set[str]:
    """Top-level packages a real `aimcc ARGS` process imports (python -X importtime)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aimcc.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split("|")[-1] for line in done.stderr.splitlines() if "|" in line]
    return {line.strip().split(".")[0] for line in lines}


def test_top_level_help_and_version_import_nothing_heavy(tmp_path: Path) -> None:
    assert not imported_modules("--help", cwd=tmp_path) & set(HEAVY)
    assert not imported_modules("--version", cwd=tmp_path) & set(HEAVY)


def test_compile_imports_no_riscv_generator_and_no_executor(tmp_path: Path) -> None:
    model = str(model_path("lora_layer_128"))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aimcc.cli", model, "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "aimcc.frontend.importer" in modules  # the check can see aimcc's modules
    for lazy in ("xdsl.dialects.riscv", "aimcc.backends.riscv", "aimcc.runtime.executor", "sympy"):
        assert lazy not in modules, lazy


def test_top_level_help_lists_every_command(tmp_path: Path) -> None:
    done = aimcc("--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    listed = {
        line.split()[0]
        for line in done.stdout.split("commands:")[1].split("options:")[0].splitlines()
        if line.strip()
    }
    commands = Path(__file__).resolve().parents[1] / "aimcc" / "commands"
    assert listed == {p.stem for p in commands.glob("*.py") if p.stem != "__init__"}
    for name in listed:
        assert aimcc(name, "--help", cwd=tmp_path).returncode == 0
    nothing = aimcc(cwd=tmp_path)
    assert nothing.returncode == 2 and "commands:" in nothing.stderr


def test_version_is_the_package_version(tmp_path: Path) -> None:
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    done = aimcc("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"aimcc {version}\n"


def test_compile_is_an_alias_of_the_default(tmp_path: Path) -> None:
    model = str(model_path("lora_layer_128"))
    assert main([model, "-q", "-o", str(tmp_path / "a.aimcb")]) == 0
    assert main(["compile", model, "-q", "-o", str(tmp_path / "b.aimcb")]) == 0
    assert (tmp_path / "a.aimcb").read_bytes() == (tmp_path / "b.aimcb").read_bytes()


def test_list_passes_gives_options_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from aimcc.passes import PASSES

    assert main(["opt", "--list-passes"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split(":")[0]: b for b in out.split("\n") if b and not b.startswith(" ")}
    assert set(PASSES) <= set(blocks)
    assert "    target: str = 'hybrid'" in out
    assert "    rows: int = 0" in out and "    cols: int = 0" in out
    assert "    pipeline: str = 'auto'" in out


# -- compile finishes textual IR at any stage ---------------------------------------------


@pytest.mark.parametrize(
    "stage", ["import", "raise", "partition", "tile", "place", "lower-cluster", "schedule"]
)
def test_compile_textual_ir_from_any_stage(stage: str, tmp_path: Path) -> None:
    """opt -> IR text -> compile gives the binary a direct compile gives, byte for byte."""
    from aimcc.passes import PASSES

    model = model_path("bert_lora")
    direct = tmp_path / "direct.aimcb"
    assert main([str(model), "-q", "-o", str(direct)]) == 0
    passes = list(PASSES)[: list(PASSES).index(stage) + 1] if stage != "import" else []
    ir, weights = tmp_path / f"{stage}.mlir", tmp_path / "w.npz"
    argv = ["opt", str(model), "--save-weights", str(weights), "-o", str(ir)]
    assert main(argv + (["-p", ",".join(passes)] if passes else [])) == 0
    binary = tmp_path / f"{stage}.aimcb"
    assert main(["compile", str(ir), "--weights", str(weights), "-q", "-o", str(binary)]) == 0
    assert binary.read_bytes() == direct.read_bytes()
    assert (tmp_path / f"{stage}.kernels.json").is_file()


def test_ir_binary_runs_like_the_direct_one(tmp_path: Path) -> None:
    from aimcc.runtime import load

    model = model_path("bert")
    ir, weights = tmp_path / "tiled.mlir", tmp_path / "w.npz"
    argv = ["opt", str(model), "-p", "raise,partition,tile", "--save-weights", str(weights)]
    assert main([*argv, "-o", str(ir)]) == 0
    binary = tmp_path / "b.aimcb"
    assert main(["compile", str(ir), "--weights", str(weights), "-q", "-o", str(binary)]) == 0
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, 1000, (1, 128)),
        "token_type_ids": np.zeros((1, 128), np.int64),
        "attention_mask": np.ones((1, 128), np.int64),
    }
    out = load(binary).run(feeds)["last_hidden_state"]
    assert relative_error(out, onnxruntime_outputs(model, feeds)[0]) < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{ir}"], "is not in the weight store (3 missing): pass --weights FILE.npz"),
        (["{ir}", "--weights", "{w}", "--arch", "hermes-256"], "records the architecture"),
        (["{ir}", "--weights", "{w}", "--input-shape", "x=1x2"], "textual IR has static shapes"),
        (["{ir}", "--weights", "{w}", "--target", "aimc"], "--target aimc has no effect"),
        (["{model}", "--weights", "{w}"], "--weights is for textual IR"),
        (["{ir}", "--weights", "{missing}"], "no such file"),
    ],
)
def test_ir_compile_errors(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    model = model_path("lora_layer_128")
    ir, weights = tmp_path / "p.mlir", tmp_path / "w.npz"
    argv = ["opt", str(model), "-p", "raise,partition", "--save-weights", str(weights)]
    assert main([*argv, "-o", str(ir)]) == 0
    capsys.readouterr()
    paths = {"ir": ir, "w": weights, "model": model, "missing": tmp_path / "none.npz"}
    before = set(tmp_path.iterdir())
    assert main(["compile", *(a.format(**paths) for a in args)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aimcc: error:") and message in err[0], err
    assert set(tmp_path.iterdir()) == before


def test_printing_a_stage_the_ir_is_past_warns(tmp_path: Path, capsys) -> None:
    model = model_path("lora_layer_128")
    ir, weights = tmp_path / "p.mlir", tmp_path / "w.npz"
    argv = ["opt", str(model), "-p", "raise,partition", "--save-weights", str(weights)]
    assert main([*argv, "-o", str(ir)]) == 0
    capsys.readouterr()
    argv = ["compile", str(ir), "--weights", str(weights), "-q", "-o", str(tmp_path / "p.aimcb")]
    assert main([*argv, "--print-ir-after", "raise", "--print-ir-after", "tile"]) == 0
    captured = capsys.readouterr()
    assert "IR after tile" in captured.out and "IR after raise" not in captured.out
    assert captured.err == "aimcc: warning: --print-ir-after raise: p.mlir was already past raise\n"


# -- the binary names its model; eval checks it --------------------------------------------


def test_binary_records_the_model_sha256(tmp_path: Path) -> None:
    import hashlib

    from aimcc.backends.aimcb import read_binary

    model = model_path("lora_layer_128")
    assert main([str(model), "-q", "-o", str(tmp_path / "m.aimcb")]) == 0
    program, _ = read_binary(tmp_path / "m.aimcb")
    assert program["source_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_eval_refuses_a_reference_that_is_not_the_model(tmp_path: Path, capsys) -> None:
    model = model_path("lora_layer_128")
    binary = tmp_path / "m.aimcb"
    assert main([str(model), "-q", "-o", str(binary)]) == 0
    other = onnx.load(str(model))
    other.doc_string = "same graph, different file"
    onnx.save(other, tmp_path / "other.onnx")
    capsys.readouterr()
    argv = ["eval", str(binary), "--reference", str(tmp_path / "other.onnx"), "--trials", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the model" in err[0] and "compiled from" in err[0], err
    argv[3] = str(model)
    assert main([*argv, "--times", "0s", "--batches", "1"]) == 0
    assert capsys.readouterr().err == ""


def test_eval_warns_when_the_binary_names_no_model(tmp_path: Path, capsys) -> None:
    """IR without the model's hash (hand-written, or an older aimcc's) can't be checked."""
    model = model_path("lora_layer_128")
    ir, weights = tmp_path / "a.mlir", tmp_path / "w.npz"
    assert main(["opt", str(model), "--save-weights", str(weights), "-o", str(ir)]) == 0
    text, n = re.subn(r', aimc.source_sha256 = "[0-9a-f]{64}"', "", ir.read_text())
    assert n == 1
    ir.write_text(text)
    binary = tmp_path / "a.aimcb"
    assert main(["compile", str(ir), "--weights", str(weights), "-q", "-o", str(binary)]) == 0
    capsys.readouterr()
    argv = ["eval", str(binary), "--reference", str(model), "--trials", "1", "--times", "0s"]
    assert main([*argv, "--batches", "1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aimcc: warning:") and "no model hash" in err[0]


# -- options without effect ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{b}", "--random", "--t-inference", "1d"], "--t-inference needs --noise pcm"),
        (["run", "{b}", "--random", "--noise", "quant", "--t-inference", "0s"], "needs --noise"),
        (["run", "{b}", "--random", "--compensation", "none"], "--compensation needs --noise"),
        (["run", "{b}", "--random", "--trials", "2"], "--trials needs --noise pcm"),
        (["eval", "{b}", "--reference", "{m}", "--inputs", "{i}", "--batches", "2"], "--batches"),
        (["opt", "{m}", "--weights", "{i}"], "--weights is for textual IR"),
        (["inspect", "{b}", "--manifest", "{i}"], "add --kernels"),
    ],
)
def test_options_without_effect_are_refused(args: list[str], message: str, tmp_path, capsys):
    model = model_path("lora_layer_128")
    binary = tmp_path / "m.aimcb"
    assert main([str(model), "-q", "-o", str(binary)]) == 0
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 128, 128), np.float32))
    capsys.readouterr()
    paths = {"b": binary, "m": model, "i": tmp_path / "in.npz"}
    assert main([a.format(**paths) for a in args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aimcc: error:") and message in err[0], err


def test_seed_without_effect_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = model_path("lora_layer_128")
    binary = tmp_path / "m.aimcb"
    assert main([str(model), "-q", "-o", str(binary)]) == 0
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 128, 128), np.float32))
    capsys.readouterr()
    assert main(["run", str(binary), "--inputs", str(tmp_path / "in.npz"), "--seed", "3"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aimcc: warning: --seed has no effect")
    assert main(["run", str(binary), "--random", "--seed", "3"]) == 0
    assert capsys.readouterr().err == ""


# -- progress: on a terminal only -----------------------------------------------------------


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    import contextlib
    import os
    import pty
    import threading

    model = str(model_path("lora_layer_128"))
    piped = aimcc(model, cwd=tmp_path)
    assert piped.returncode == 0 and piped.stderr == ""  # nothing but the summary, on stdout
    assert "compiled in" in piped.stdout and "compiling" not in piped.stdout
    leader, follower = pty.openpty()  # stderr a terminal, stdout a pipe
    chunks: list[bytes] = []

    def drain() -> None:  # the terminal's buffer is small: read while the process writes
        with contextlib.suppress(OSError):  # EIO once the process has closed it
            while chunk := os.read(leader, 65536):
                chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    done = subprocess.run(
        [sys.executable, "-m", "aimcc.cli", model],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=follower,
        timeout=300,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(follower)
    reader.join(timeout=30)
    os.close(leader)
    assert done.returncode == 0
    shown = b"".join(chunks).decode(errors="replace")
    assert "compiling lora_layer_128.onnx: " in shown  # the status line names the stage
    quiet = aimcc(model, "-q", cwd=tmp_path)
    assert quiet.stdout == "" and quiet.stderr == ""


def test_summary_reports_the_process_wall_time(tmp_path: Path) -> None:
    start = time.perf_counter()
    done = aimcc(str(model_path("lora_layer_128")), cwd=tmp_path)
    elapsed = time.perf_counter() - start
    match = re.search(r"compiled in ([0-9.]+) s \(([0-9.]+) s in the passes\)", done.stdout)
    assert match, done.stdout
    wall, passes = map(float, match.groups())
    assert passes < wall <= elapsed + 0.05
