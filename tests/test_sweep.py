"""`aimcc sweep`: its numbers are `aimcc eval`'s (evaluate.py) and the runtime's for each grid
point, the same whatever runs them (one process, two, Ray), failures land in the table, and
bad grid values are one-line errors that write nothing."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import model_path

from aimcc.adapters import Adapter, LoraWeights, write_adapter
from aimcc.arch import load_arch
from aimcc.backends.aimcb import write_binary
from aimcc.cli import main
from aimcc.commands import random_inputs
from aimcc.compiler import compile_model
from aimcc.evaluate import evaluate, metrics_for, reference_outputs, score
from aimcc.runtime import load
from aimcc.runtime.analog import NoiseSpec
from aimcc.sweep import Grid, parse_seeds, program_seed, read_grid, split_values

MODEL = "lora_layer_128"  # one 128x128 LoRA layer: a task takes milliseconds
TIMES = [("0s", 0.0), ("1d", 86400.0), ("1y", 31557600.0)]


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "layer.aimcb"
    write_binary(compile_model(model_path(MODEL), "hybrid"), path)
    return path


def sweep(binary: Path, out: Path, *args: str) -> int:
    base = ["sweep", str(binary), "--reference", str(model_path(MODEL)), "--batches", "2"]
    return main([*base, "-o", str(out), *args])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_values_parse() -> None:
    assert split_values("6, 8") == ["6", "8"]
    assert split_values("[0.1,0.2],[0.3,0.4]") == ["[0.1,0.2]", "[0.3,0.4]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    assert parse_seeds(["0-2", "7", "1"]) == (0, 1, 2, 7)
    grid = Grid(noise=("ideal", "pcm"), times=tuple(TIMES), seeds=(0, 1), trials=3)
    tasks = grid.tasks()
    assert [t.noise for t in tasks] == ["ideal"] + ["pcm"] * 6  # ideal tiles: one task
    seeds = [t.program_seed for t in tasks[1:]]
    assert len(set(seeds)) == 6  # seed + trial would give 0 1 2 1 2 3
    assert seeds[0] == program_seed(0, 0) and all(0 <= s < 2**63 for s in seeds)
    assert [t.index for t in tasks] == list(range(7))


def test_grid_file_is_the_flags(binary: Path, tmp_path: Path) -> None:
    """A TOML grid and the same flags give the same table; a flag replaces its axis."""
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'noise = ["ideal", "pcm"]\nt_inference = ["0s", "1d"]\nseeds = "0-1"\ntrials = 1\n'
        '[set]\n"tile.adc.bits" = [6, 8]\n'
    )
    parsed = read_grid(grid)
    assert parsed["seeds"] == (0, 1) and parsed["overrides"] == (("tile.adc.bits", ("6", "8")),)
    assert sweep(binary, tmp_path / "file.csv", "--grid", str(grid), "-j", "1") == 0
    flags = ["--noise", "ideal,pcm", "--times", "0s,1d", "--seeds", "0-1"]
    over = ["--set", "tile.adc.bits=6,8"]
    assert sweep(binary, tmp_path / "flags.csv", *flags, *over, "-j", "1") == 0
    assert (tmp_path / "file.csv").read_bytes() == (tmp_path / "flags.csv").read_bytes()
    assert sweep(binary, tmp_path / "one.csv", "--grid", str(grid), "--seeds", "3", "-j", "1") == 0
    assert {r["seed"] for r in read_rows(tmp_path / "one.csv")} == {"", "3"}


def test_rows_are_evaluate_and_the_runtime(binary: Path, tmp_path: Path) -> None:
    """pcm rows are evaluate() with the row's program seed; ideal and quant rows score the
    runtime's outputs; ideal tiles reproduce onnxruntime."""
    out = tmp_path / "s.csv"
    args = ["--noise", "ideal,quant,pcm", "--times", "0s,1d,1y", "--seeds", "0,5", "--trials", "2"]
    assert sweep(binary, out, *args, "-j", "1") == 0
    rows = read_rows(out)
    assert {r["status"] for r in rows} == {"ok"}
    assert len(rows) == (1 + 1 + 2 * 2 * 3) * 2  # tasks x times x (relative error, cosine)
    exe = load(binary)
    batches = [random_inputs(exe, 0), random_inputs(exe, 1)]
    reference = reference_outputs(model_path(MODEL), exe, batches)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's workers compute
    try:
        for r in rows:
            r["value"] = float(r["value"])
        pcm = [r for r in rows if r["noise"] == "pcm"]
        for seed in {int(r["program_seed"]) for r in pcm}:
            result = evaluate(exe, batches, reference, TIMES, 1, seed)
            mine = [r["value"] for r in pcm if int(r["program_seed"]) == seed]
            assert mine == result.values[0].ravel().tolist()
        for noise in ("ideal", "quant"):
            exe.set_noise(NoiseSpec(noise))
            metrics = metrics_for(exe, reference[0])
            expected = score(metrics, [exe.run(f) for f in batches], reference)
            assert [r["value"] for r in rows if r["noise"] == noise] == expected
    finally:
        torch.set_num_threads(threads)
    ideal = {r["metric"]: r["value"] for r in rows if r["noise"] == "ideal"}
    assert ideal["relative error"] < 1e-6 and ideal["cosine"] > 1 - 1e-9
    error_at = {
        t: np.mean(
            [r["value"] for r in pcm if r["metric"] == "relative error" and r["t_inference"] == t]
        )
        for t, _ in TIMES
    }
    assert error_at["0s"] < error_at["1d"] < error_at["1y"]  # drift


def test_override_is_a_binary_compiled_with_it(binary: Path, tmp_path: Path) -> None:
    """--set tile.adc.bits=4 on the binary gives what a binary compiled for 4-bit ADCs gives."""
    out = tmp_path / "s.csv"
    assert sweep(binary, out, "--noise", "quant", "--set", "tile.adc.bits=4,8", "-j", "1") == 0
    rows = read_rows(out)
    got = {r["tile.adc.bits"]: float(r["value"]) for r in rows if r["metric"] == "relative error"}
    arch = load_arch(overrides=["tile.adc.bits=4"])
    four = tmp_path / "adc4.aimcb"
    write_binary(compile_model(model_path(MODEL), "hybrid", arch=arch), four)
    exe = load(four)
    assert exe.arch.tile.adc.bits == 4
    batches = [random_inputs(exe, 0), random_inputs(exe, 1)]
    reference = reference_outputs(model_path(MODEL), exe, batches)
    exe.set_noise(NoiseSpec("quant"))
    (expected, _) = score(metrics_for(exe, reference[0]), [exe.run(f) for f in batches], reference)
    assert got["4"] == pytest.approx(expected, rel=1e-6)
    assert got["4"] > 2 * got["8"]


GRID = ["--noise", "ideal,quant,pcm", "--times", "0s,1y", "--seeds", "0-1"]
GRID += ["--set", "tile.dac.bits=6,8"]


@pytest.fixture(scope="module")
def one_process(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The table of GRID computed in this process (-j 1)."""
    out = tmp_path_factory.mktemp("j1") / "s.csv"
    assert sweep(binary, out, *GRID, "-j", "1") == 0
    return out.read_bytes()


def test_workers_do_not_change_the_table(binary: Path, tmp_path: Path, one_process) -> None:
    assert sweep(binary, tmp_path / "two.csv", *GRID, "-j", "2") == 0
    assert (tmp_path / "two.csv").read_bytes() == one_process


def test_failed_task_is_a_row(binary: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import aimcc.evaluate

    real, bad = aimcc.evaluate.evaluate, program_seed(1, 0)

    def failing(exe, batches, reference, times, trials, seed, *rest, **kw):
        if seed == bad:
            raise RuntimeError("device exploded\nsecond line")
        return real(exe, batches, reference, times, trials, seed, *rest, **kw)

    monkeypatch.setattr(aimcc.evaluate, "evaluate", failing)
    out, plot = tmp_path / "s.csv", tmp_path / "s.png"
    code = sweep(binary, out, "--seeds", "0-2", "--times", "0s,1d", "-j", "1", "--plot", str(plot))
    assert code == 1
    rows = read_rows(out)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == 1 and failed[0]["seed"] == "1"
    assert failed[0]["error"] == "RuntimeError: device exploded" and failed[0]["value"] == ""
    assert len(rows) == 1 + 2 * 2 * 2 and plot.stat().st_size > 0
    assert "1 of 3 tasks failed" in capsys.readouterr().out


def test_adapters_are_swapped_in(binary: Path, tmp_path: Path) -> None:
    exe = load(binary)
    ((name, slot),) = exe.lora_slots.items()
    k, r = slot.a.shape
    rng = np.random.default_rng(0)
    lora = LoraWeights(
        rng.normal(0, 0.1, (k, r)).astype(np.float32),
        rng.normal(0, 0.1, (r, slot.b.shape[1])).astype(np.float32),
        slot.scale,
    )
    folder = write_adapter(tmp_path / "task", Adapter({name: lora}))
    out = tmp_path / "s.csv"
    assert sweep(binary, out, "--noise", "ideal", "--adapter", f"none,{folder}", "-j", "1") == 0
    rows = [r for r in read_rows(out) if r["metric"] == "relative error"]
    assert [r["adapter"] for r in rows] == ["none", str(folder)]
    batches = [random_inputs(exe, 0), random_inputs(exe, 1)]
    reference = reference_outputs(model_path(MODEL), exe, batches)
    exe.set_adapter(folder)
    (expected, _) = score(metrics_for(exe, reference[0]), [exe.run(f) for f in batches], reference)
    assert float(rows[1]["value"]) == pytest.approx(expected, rel=1e-6)
    assert float(rows[0]["value"]) < 1e-6 < expected  # the base model is the reference


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise", "pcm,exact"], "unknown noise model 'exact'"),
        (["--times", "0s,1 eon"], "bad time '1 eon'"),
        (["--seeds", "4-1"], "bad seeds '4-1'"),
        (["--seeds", "a"], "bad seed 'a'"),
        (["--set", "tile.rows=128,256"], "'tile.rows' shaped the compiled program"),
        (["--set", "tile.adc.bitz=4"], "no key 'tile.adc.bitz'"),
        (["--set", "tile.adc.bits=four"], "'tile.adc.bits' has the wrong type"),
        (["--set", "tile.adc.bits=4", "--set", "tile.adc.bits=6"], "a key is swept once"),
        (["--set", "tile.adc.bits=4,,6"], "an empty value"),
        (["--adapter", "nowhere"], "adapter nowhere: no such folder"),
        (["--trials", "0"], "bad trials 0"),
        (["--compensation", "best"], "unknown compensation 'best'"),
        (["-j", "0"], "-j must be at least 1"),
        (["--grid", "missing.toml"], "grid file not found"),
    ],
)
def test_bad_grid_values(binary: Path, tmp_path: Path, capsys, args, message) -> None:
    out = tmp_path / "s.csv"
    assert sweep(binary, out, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("aimcc: error: ") and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_bad_grid_file(binary: Path, tmp_path: Path, capsys) -> None:
    grid = tmp_path / "g.toml"
    for text, message in [
        ("noize = ['pcm']", "unknown grid key 'noize'"),
        ("seeds = [1.5]", "bad seed 1.5"),
        ("set = 3", "'set' must be a table"),
        ("noise = [", "not valid TOML"),
        ("seeds = []", "'seeds' is an empty list"),
        ('[set]\n"tile.adc.bits" = []', "'tile.adc.bits' is an empty list"),
    ]:
        grid.write_text(text)
        assert sweep(binary, tmp_path / "s.csv", "--grid", str(grid)) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s.csv").exists()


def test_parquet_needs_pyarrow(binary: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert sweep(binary, tmp_path / "s.parquet", "--noise", "ideal") == 1
    assert "needs pyarrow" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_ray_is_one_line(binary: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    assert sweep(binary, tmp_path / "s.csv", "--noise", "ideal", "--ray-address", "local") == 1
    assert "needs Ray, which is not installed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_help_imports_no_ray(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aimcc.cli", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "sweep" in done.stdout
    modules = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    assert "aimcc" in modules and not {"ray", "torch"} & modules


def test_ray_gives_the_local_table(binary: Path, tmp_path: Path, one_process) -> None:
    """The same tasks as Ray remote tasks on a local instance started here."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert sweep(binary, tmp_path / "ray.csv", *GRID, "--ray-address", "local") == 0
    finally:
        ray.shutdown()
    assert (tmp_path / "ray.csv").read_bytes() == one_process


def test_task_accuracy_is_evaluate_accuracy(tmp_path: Path) -> None:
    """--data: each adapter's head on the pooled output, as `aimcc eval --data` computes it."""
    from test_adapt import SEQ, SHAPES, random_adapter

    from aimcc.adapt import load_data
    from aimcc.evaluate import accuracy, evaluate_accuracy

    binary = tmp_path / "bert_lora.aimcb"
    write_binary(compile_model(model_path("bert_lora"), "hybrid", input_shapes=SHAPES), binary)
    exe = load(binary)
    adapter = random_adapter(exe, 1)
    folder = write_adapter(tmp_path / "task", adapter)
    ids = np.random.default_rng(0).integers(1, 1000, (12, SEQ))
    data_file = tmp_path / "d.npz"
    np.savez(data_file, input_ids=ids, labels=(ids[:, 0] < 500).astype(np.int64))
    out = tmp_path / "s.csv"
    args = ["sweep", str(binary), "--data", str(data_file), "--adapter", str(folder)]
    args += ["--pooled", "last_hidden_state", "--noise", "ideal,pcm", "--times", "0s,1y"]
    assert main([*args, "--seeds", "3", "-j", "1", "-o", str(out)]) == 0
    rows = read_rows(out)
    assert {r["metric"] for r in rows} == {"accuracy"}
    data = load_data(data_file, exe, None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pcm = evaluate_accuracy(
            exe, data, {"a": adapter}, TIMES[::2], 1, program_seed(3, 0), "last_hidden_state"
        )["a"][0]
        exe.set_noise(NoiseSpec("ideal"))
        ideal = accuracy(exe, data, adapter, "last_hidden_state")
    finally:
        torch.set_num_threads(threads)
    assert [float(r["value"]) for r in rows] == [ideal, *pcm]


def test_summary_fits_80_columns(binary: Path, tmp_path: Path, monkeypatch) -> None:
    import io

    from rich.console import Console

    from aimcc import report

    text = io.StringIO()
    monkeypatch.setattr(report, "console", Console(file=text, width=80))
    args = ["--noise", "quant,pcm", "--times", "0s,10y", "--set", "tile.adc.bits=6,8"]
    args += ["--set", "tile.mapping.clip_sigma=2.5,3.0", "--set", "tile.dac.inp_bound=1.0"]
    assert sweep(binary, tmp_path / "s.csv", *args, "-j", "1") == 0
    lines = text.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    header = next(line for line in lines if line.startswith("noise"))
    assert header.split()[:4] == ["noise", "adc.bits", "mapping.clip_sigma", "dac.inp_bound"]
    assert sum(line.startswith("pcm ") for line in lines) == 2 * 4 * 2  # metrics x configs x times


def test_unreachable_ray_is_one_line(binary: Path, tmp_path: Path, capsys) -> None:
    """Ray retries an address for minutes; nothing listening is refused before any work."""
    pytest.importorskip("ray")
    assert (
        sweep(binary, tmp_path / "s.csv", "--noise", "ideal", "--ray-address", "127.0.0.1:1") == 1
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("aimcc: error: cannot reach Ray at '127.0.0.1:1'") and err.count("\n") == 1
    )
    assert list(tmp_path.iterdir()) == []


def test_parquet_is_the_csv(binary: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    args = ["--noise", "ideal,pcm", "--times", "0s,1y", "--set", "tile.adc.bits=6,8", "-j", "1"]
    assert sweep(binary, tmp_path / "s.csv", *args) == 0
    assert sweep(binary, tmp_path / "s.parquet", *args) == 0
    table = pq.read_table(tmp_path / "s.parquet")
    assert str(table.schema.field("value").type) == "double"
    assert str(table.schema.field("error").type) == "string"
    rows = read_rows(tmp_path / "s.csv")
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in table.to_pylist()]
    assert as_text == rows
