"""Sensitivity analysis finds a projection made fragile on purpose; the budgeted choice of
digital projections never exceeds its budget (docs/SENSITIVITY.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aimcc.cli import main as cli
from aimcc.commands import parse_time
from aimcc.commands import random_inputs as random_feeds
from aimcc.errors import AimccError
from aimcc.ir.aimc import ProgramOp
from aimcc.ir.cluster import CallOp
from aimcc.runtime.analog import NoiseSpec
from aimcc.runtime.executor import load
from aimcc.sensitivity import (
    analyse,
    choose_digital,
    kept_digital_error,
    read_sensitivity,
)

LAYERS = ("proj_a", "proj_b", "proj_c", "proj_d")
FRAGILE = "proj_c"


def _model(path: Path) -> Path:
    """Four 64x64 projections with tanh between them. proj_c's input feature 0 is always 0
    (a digital mask clears it) while proj_c's row 0 is 200x the rest: on tiles, every
    column is scaled to that outlier, so the weights that matter sit in ~1 % of the
    conductance range and programming noise swamps them."""
    rng = np.random.default_rng(0)
    weights = {n: rng.normal(0, 1 / 8, (64, 64)).astype(np.float32) for n in LAYERS}
    weights[FRAGILE][0, :] = 25.0
    mask = np.ones(64, np.float32)
    mask[0] = 0.0
    weights["mask"] = mask
    nodes, x = [], "x"
    for i, name in enumerate(LAYERS):
        if name == FRAGILE:
            nodes.append(helper.make_node("Mul", [x, "mask"], ["masked"]))
            x = "masked"
        nodes.append(helper.make_node("MatMul", [x, name], [f"{name}_out"]))
        x = f"{name}_out"
        if i < len(LAYERS) - 1:
            nodes.append(helper.make_node("Tanh", [x], [f"act{i}"]))
            x = f"act{i}"
    graph = helper.make_graph(
        nodes,
        "fragile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 16, 64])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("fragile")
    onnx_path = _model(work / "fragile.onnx")
    assert cli([str(onnx_path), "-o", str(work / "fragile.aimcb"), "-q"]) == 0
    return onnx_path, work / "fragile.aimcb"


def test_ranking_finds_the_fragile_projection(fragile) -> None:
    _, binary = fragile
    exe = load(binary)
    result = analyse(exe, [random_feeds(exe, 0)], NoiseSpec("pcm", parse_time("1y")), trials=2)
    assert sorted(result.names) == sorted(LAYERS)
    assert result.ranking()[0] == FRAGILE
    i = result.names.index(FRAGILE)
    others = [result.analog_only[j].mean() for j in range(len(LAYERS)) if j != i]
    assert result.analog_only[i].mean() > 3 * max(others)
    # keeping it digital recovers most of the all-analog error
    assert result.digital_only[i].mean() < 0.5 * result.all_analog.mean()


def test_cli_pareto_and_budget_never_exceeded(
    fragile, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path, binary = fragile
    out = tmp_path / "s.json"
    args = [str(binary), "--trials", "1", "--pareto", "2", "--model", str(onnx_path)]
    monkeypatch.setenv("COLUMNS", "80")
    assert cli(["sensitivity", *args, "--json", str(out), "--plot", str(tmp_path / "s.png")]) == 0
    text = capsys.readouterr().out
    table = [line for line in text.splitlines() if not line.startswith("wrote ")]  # paths
    assert max(map(len, table)) <= 80
    assert "analog only" in text and "recovered" in text  # the ranking and the front
    data = read_sensitivity(out)
    assert data["ranking"][0] == FRAGILE and (tmp_path / "s.png").stat().st_size > 0
    points = data["pareto"]
    assert [p["digital"] for p in points] == [0, 1, 2]
    assert [p["tiles"] for p in points] == [4, 3, 2]  # one 64x64 tile per analog projection
    exe = load(binary)
    feeds = [random_feeds(exe, 0)]
    spec = NoiseSpec("pcm", parse_time("1y"))
    for budget in sorted({p["error"]["mean"] for p in points} | {1.0}):
        kept = choose_digital(data, None, budget)
        assert kept_digital_error(exe, feeds, spec, kept, 1).mean() <= budget
    with pytest.raises(AimccError, match="no measured choice"):
        choose_digital(data, None, 0.5 * min(p["error"]["mean"] for p in points))
    # compile keeps the chosen projection digital: one matmul kernel, one tile fewer
    from aimcc.commands.compile import adapter_slots, parser
    from aimcc.compiler import compile_model

    opts = parser().parse_args([str(onnx_path), "--sensitivity", str(out), "--keep-digital", "1"])
    comp = compile_model(onnx_path, slots=adapter_slots(opts))
    matmuls = [o for o in comp.module.walk() if isinstance(o, CallOp) and o.callee.data == "matmul"]
    assert [o.params.data["layer"].data for o in matmuls] == [FRAGILE]
    assert sum(isinstance(o, ProgramOp) for o in comp.module.walk()) == 3
    body = json.loads(out.read_text())
    assert body["projections"] and body["noise"]["model"] == "pcm"


def test_partition_option_keeps_named_projections_digital(
    fragile, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_path, _ = fragile
    assert cli(["opt", str(onnx_path), "-p", f"raise,partition{{digital={FRAGILE}}}"]) == 0
    out = capsys.readouterr().out
    assert out.count('kind = "matmul"') == 1 and out.count("aimc.matmul") == 3
    assert cli(["opt", str(onnx_path), "-p", "raise,partition{digital=nope}"]) == 1
    assert "digital 'nope' matches no linear layer" in capsys.readouterr().err
