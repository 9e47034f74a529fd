"""The schedule pass on placed IR: stages from the IR, the recorded decision, binary, CLI report."""
# ruff: noqa: E501 (the textual IR keeps its one-op-per-line form)

import json
import math
from pathlib import Path

import pytest
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr
from xdsl.parser import Parser

from aimcc.arch import load_arch
from aimcc.backends.aimcb import read_binary, write_binary
from aimcc.commands import compile as compile_command
from aimcc.compiler import compile_model
from aimcc.ir import make_context
from aimcc.ir.aimc import AccumulateOp, MvmOp
from aimcc.ir.cluster import CallOp
from aimcc.passes.lower_cluster import LowerClusterPass
from aimcc.passes.replicate import ReplicatePass
from aimcc.passes.schedule import SCHEDULE_ATTR, SchedulePass, module_stages, recorded_schedule

MODELS = Path(__file__).parent.parent / "examples" / "models"
SMALL = ["bert", "bert_lora", "gpt2", "llama", "lora_layer_128", "lora_layer_512x128"]


def harp_token_ns(n_cols: int, t_int: float = 512.0) -> float:
    """HARP: t_int + (8-cycle post-processing + columns / 64 lanes) at 500 MHz (paper-512)."""
    return t_int + (8 + math.ceil(min(n_cols, 512) / 64)) * 2.0


PLACED = """
builtin.module {
  func.func @main(%x: tensor<1x16x600xf32>) -> tensor<1x16x2x32xf32> {
    %w = graph.weight "w" : tensor<600x64xf32>
    %s = graph.weight "s" : tensor<4xi64>
    %t0 = aimc.program %w rows [0, 512] cols [0, 64] {tile_id = 0 : i64} : tensor<600x64xf32> -> !aimc.tile<512x512>
    %t1 = aimc.program %w rows [512, 600] cols [0, 64] {tile_id = 1 : i64} : tensor<600x64xf32> -> !aimc.tile<512x512>
    %p0 = aimc.mvm %x, %t0 : (tensor<1x16x600xf32>, !aimc.tile<512x512>) -> tensor<1x16x64xf32>
    %p1 = aimc.mvm %x, %t1 : (tensor<1x16x600xf32>, !aimc.tile<512x512>) -> tensor<1x16x64xf32>
    %y = aimc.accumulate %p0, %p1 grid [2, 1] {cluster = 0 : i64} : (tensor<1x16x64xf32>, tensor<1x16x64xf32>) -> tensor<1x16x64xf32>
    %v = "digital.kernel"(%y, %s) <{kind = "onnx.Reshape", params = {}, cluster = 0 : i64}> : (tensor<1x16x64xf32>, tensor<4xi64>) -> tensor<1x16x2x32xf32>
    %g = "digital.kernel"(%v) <{kind = "gelu_erf", params = {}, cluster = 0 : i64}> : (tensor<1x16x2x32xf32>) -> tensor<1x16x2x32xf32>
    func.return %g : tensor<1x16x2x32xf32>
  }
}
"""


def test_pass_on_hand_written_placed_module() -> None:
    arch = load_arch("paper-512")
    module = Parser(make_context(arch=arch), PLACED).parse_module()
    LowerClusterPass().apply(make_context(arch=arch), module)
    assert SCHEDULE_ATTR not in module.attributes
    stages, tokens = module_stages(module, arch)
    assert tokens == 16
    # Two row tiles in parallel, their partial sums on the paired cluster, the reshape free.
    assert [(s.name, s.kind, s.unit, s.deps) for s in stages] == [
        ("y", "analog_mvm", "tile:0", ()),
        ("y.acc", "accumulate", "cluster:0", ("y",)),
        ("g", "gelu_erf", "cluster:0", ("y.acc",)),
    ]
    assert stages[0].dims == {"K": 600, "N": 64, "tiles": 2}
    assert stages[1].dims == {"N": 64, "P": 2}
    assert stages[2].dims == {"N": 64}  # per token: 2 x 32 elements
    SchedulePass(pipeline="serial").apply(make_context(arch=arch), module)
    attr = module.attributes[SCHEDULE_ATTR]
    assert isinstance(attr, DictionaryAttr)
    assert attr.data["strategy"].data == "serial"
    assert attr.data["tokens"] == IntegerAttr(16, 64)
    text = str(module)
    assert 'builtin.module attributes {aimc.schedule = {strategy = "serial"' in text
    # Reparsed, the attribute replays to the same timeline.
    reparsed = Parser(make_context(arch=arch), text).parse_module()
    timeline = recorded_schedule(reparsed, arch)
    assert timeline is not None
    assert round(timeline.makespan_ns) == attr.data["makespan_ns"].value.data
    tile = next(u for u in timeline.units if u.unit == "tile:0")
    assert tile.busy_ns == pytest.approx(16 * harp_token_ns(64))


def analog_layers(module) -> list[tuple[int, int]]:
    """(tokens, output columns) of every analog layer, read straight from the IR."""
    layers = []
    for op in module.walk():
        if isinstance(op, AccumulateOp):
            mvm = op.partials[0].owner
            assert isinstance(mvm, MvmOp)
            x = mvm.x.type.get_shape()
            layers.append((math.prod(x[:-1]), op.result.type.get_shape()[-1]))
    return layers


@pytest.mark.parametrize("model", SMALL)
def test_pass_on_corpus(model: str, tmp_path: Path) -> None:
    comp = compile_model(MODELS / f"{model}.onnx", "hybrid")
    timeline = recorded_schedule(comp.module, comp.arch)
    assert timeline is not None and timeline.tokens == 128
    # Every analog layer is one stage, and the tiles' busy time is HARP's per-token time.
    stages, _ = module_stages(comp.module, comp.arch)
    layers = analog_layers(comp.module)
    assert sum(s.kind == "analog_mvm" for s in stages) == len(layers)
    tile_busy = sum(u.busy_ns for u in timeline.units if u.unit.startswith("tile"))
    assert tile_busy == pytest.approx(sum(t * harp_token_ns(n) for t, n in layers))
    # docs/SCHEDULING.md: within 5 % of the lower bound on the example corpus.
    assert timeline.lower_bound_ns <= timeline.makespan_ns * (1 + 1e-9)
    assert timeline.gap < 0.05
    # The binary carries the schedule.
    path = tmp_path / "m.aimcb"
    write_binary(comp, path)
    program, _ = read_binary(path)
    section = program["schedule"]
    assert section["strategy"] == timeline.strategy
    assert section["makespan_ns"] == pytest.approx(timeline.makespan_ns, abs=1e-3)
    assert section["chunk_per_layer"] == {str(k): v for k, v in timeline.chunk_per_layer.items()}
    assert set(section["units"]) == {u.unit for u in timeline.units}
    assert section["lower_bound_ns"]["busiest_unit"] == max(
        u["busy_ns"] for u in section["units"].values()
    )


def test_tokens_and_clusters_options() -> None:
    comp = compile_model(
        MODELS / "lora_layer_128.onnx",
        schedule=SchedulePass(pipeline="intra", clusters_per_tile=2, tokens=64),
        replicate=ReplicatePass(replicas="off"),  # tile:0 alone does the analog work
    )
    timeline = recorded_schedule(comp.module, comp.arch)
    assert timeline is not None
    assert (timeline.strategy, timeline.clusters_per_tile, timeline.tokens) == ("intra", 2, 64)
    assert {u.unit for u in timeline.units} >= {"tile:0", "cluster:0", "cluster:0.1"}
    tile = next(u for u in timeline.units if u.unit == "tile:0")
    assert tile.busy_ns == pytest.approx(64 * harp_token_ns(128))


def run_cli(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    trace, plot = tmp_path / "trace.json", tmp_path / "gantt.png"
    argv = [str(model), "-o", str(tmp_path / "m.aimcb"), "--trace", str(trace), "--plot", str(plot)]
    argv += extra
    assert compile_command.main(argv) == 0
    with trace.open() as f:
        doc = json.load(f)
    spans = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert spans
    for e in spans:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(e)
        assert e["dur"] >= 0 and e["ts"] >= 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return capsys.readouterr().out


def test_cli_reports_latency_energy_and_lora_overhead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = run_cli(MODELS / "bert_lora.onnx", tmp_path, capsys)
    assert "not compiled (--compare aimc)" in plain  # the baseline only when asked for
    out = run_cli(MODELS / "bert_lora.onnx", tmp_path, capsys, "--compare", "aimc")
    for words in ("latency (128 tokens)", "energy", "tiles busy", "clusters busy", "lower bound"):
        assert words in out
    assert "LoRA overhead vs aimc" in out and "busiest layers" in out
    hybrid = recorded_schedule(compile_model(MODELS / "bert_lora.onnx").module, load_arch())
    merged = recorded_schedule(compile_model(MODELS / "bert_lora.onnx", "aimc").module, load_arch())
    assert hybrid is not None and merged is not None
    # The adapters add cluster work and energy; the merged model has none of it.
    assert hybrid.energy_nj > merged.energy_nj
    assert hybrid.makespan_ns >= merged.makespan_ns


def test_cli_without_adapters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(MODELS / "bert.onnx", tmp_path, capsys)
    assert "no LoRA adapters" in out


@pytest.mark.slow
def test_minilm(minilm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = minilm_path
    out = run_cli(model, tmp_path, capsys)
    assert "latency (128 tokens)" in out and "no LoRA adapters" in out
    comp = compile_model(model)
    timeline = recorded_schedule(comp.module, comp.arch)
    assert timeline is not None and timeline.gap < 0.05
    assert comp.seconds["schedule"] < 2.0  # the auto search is budgeted (docs/SCHEDULING.md)


def test_model_without_linear_layers_is_scheduled(tmp_path: Path) -> None:
    """onnxruntime's int8 quantize_dynamic leaves no float linear: every kernel lands on one
    cluster, whose TCDM holds all resident weights but only two kernels' chunks at a time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = tmp_path / "bert_int8.onnx"
    quantize_dynamic(str(MODELS / "bert.onnx"), str(quantized), weight_type=QuantType.QInt8)
    comp = compile_model(quantized, "hybrid")
    assert comp.schedule is not None and comp.schedule.makespan_ns > 0
    assert {op.cluster.value.data for op in comp.module.walk() if isinstance(op, CallOp)} == {0}


@pytest.mark.parametrize("model", ["bert_lora", "gpt2", "llama"])
@pytest.mark.parametrize("lanes", [1, 2])
def test_search_bounds_hold_against_simulation(model: str, lanes: int) -> None:
    """The search skips a strategy on its work bound and never simulates serial: the bounds
    must stay below the simulated makespans, and serial's total work must be its makespan."""
    from aimcc.cost.pipeline import STRATEGIES, _check, _Simulator

    comp = compile_model(MODELS / f"{model}.onnx", "hybrid")
    stages, tokens = module_stages(comp.module, comp.arch)
    layers = _check(stages, comp.arch, lanes)
    sim = _Simulator(stages, layers, tokens, comp.arch, lanes)
    for size in (8, 24, 128):
        choice = dict.fromkeys(set(layers.values()), size)
        for strategy in STRATEGIES:
            simulated = sim.timeline(strategy, choice).makespan_ns
            assert 0 <= sim.bound_ns(strategy, choice) <= simulated * (1 + 1e-12)
        serial = sim.timeline("serial", choice).makespan_ns
        assert sim.makespan("serial", choice) == pytest.approx(serial, rel=1e-12)
    # the intra bound is not vacuous: it is what lets the search skip intra on these models
    eights = dict.fromkeys(set(layers.values()), 8)
    assert sim.bound_ns("intra", eights) > sim.timeline("both", eights).makespan_ns
