"""The replicate pass: copies of the analog layers that hold up the pipeline on spare tiles,
each taking a share of the tokens; the cost model, the binary and the runtime follow them.
Checked against the same model compiled with ``--replicate off`` and against onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import model_path, onnxruntime_outputs, relative_error

import aimcc.runtime
from aimcc.arch import load_arch
from aimcc.backends.aimcb import lower_program, read_binary, write_binary
from aimcc.backends.verify import verify_program
from aimcc.compiler import Compilation, compile_model
from aimcc.cost import Stage, schedule
from aimcc.errors import AimccError
from aimcc.ir.aimc import AccumulateOp, ProgramOp
from aimcc.passes.replicate import UNREPLICATED_ATTR, ReplicatePass
from aimcc.passes.schedule import replica_firsts
from aimcc.runtime.analog import NoiseSpec


@pytest.fixture(scope="module")
def compiled() -> dict[str, Compilation]:
    """lora_layer_128 (one analog layer whose tile is the bottleneck at 512 ns per token)
    with replication off, at most 2 copies, and auto."""
    model = model_path("lora_layer_128")
    return {
        r: compile_model(model, replicate=ReplicatePass(replicas=r)) for r in ("off", "2", "auto")
    }


def _copies(comp: Compilation) -> list[list[int]]:
    return [replica_firsts(o) for o in comp.module.walk() if isinstance(o, AccumulateOp)]


def test_copies_cut_the_latency(compiled: dict[str, Compilation]) -> None:
    off, two, auto = compiled["off"], compiled["2"], compiled["auto"]
    assert _copies(off) == [[]] and UNREPLICATED_ATTR not in off.module.attributes
    assert len(_copies(two)[0]) == 1  # at most 2 copies: the original and one more
    assert len(_copies(auto)[0]) >= 2
    latency = {r: c.schedule.makespan_ns for r, c in compiled.items()}
    assert latency["auto"] < latency["2"] < 0.6 * latency["off"]
    recorded = auto.module.attributes[UNREPLICATED_ATTR]
    assert recorded.value.data == round(latency["off"])
    # each copy on free tiles of its own, on the chip; the tiles work in turn on the chunks
    placed = {o.tile_id.value.data for o in auto.module.walk() if isinstance(o, ProgramOp)}
    copies = [set(range(f, f + len(placed))) for f in _copies(auto)[0]]
    assert not any(c & placed for c in copies)
    assert len(set().union(*copies)) == sum(map(len, copies))
    assert max(max(c) for c in copies) < auto.arch.system_tiles
    units = {s.unit for s in auto.schedule.slots if s.kind == "analog_mvm"}
    assert units == {"tile:0", *(f"tile:{f}" for f in _copies(auto)[0])}


def test_outputs_match_onnxruntime_and_pcm_is_deterministic(
    compiled: dict[str, Compilation], tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(1, 128, 128)).astype(np.float32)}
    exes = {}
    for r in ("off", "auto"):
        write_binary(compiled[r], tmp_path / f"{r}.aimcb", manifest=False)
        exes[r] = aimcc.runtime.load(tmp_path / f"{r}.aimcb")
    program, _ = read_binary(tmp_path / "auto.aimcb")
    (analog,) = [i for i in program["instructions"] if i["op"] == "analog"]
    assert len(analog["replicas"]) == len(_copies(compiled["auto"])[0])
    assert analog["chunk"] == compiled["auto"].schedule.chunk_per_layer[0]
    ideal = {r: exe.run(feeds)["y"] for r, exe in exes.items()}
    np.testing.assert_array_equal(ideal["auto"], ideal["off"])  # the copies hold the same weights
    (reference,) = onnxruntime_outputs(model_path("lora_layer_128"), feeds)
    assert relative_error(ideal["auto"], reference) < 1e-4
    pcm = {}
    for r, exe in exes.items():
        exe.set_noise(NoiseSpec("pcm"), seed=5)
        pcm[r] = exe.run(feeds)["y"]
    exes["auto"].set_noise(NoiseSpec("pcm"), seed=5)
    np.testing.assert_array_equal(exes["auto"].run(feeds)["y"], pcm["auto"])  # same seed
    chunk = analog["chunk"]
    # the first copy is the layer's own devices (its chunk matches the unreplicated run);
    # the next chunk runs on another copy's devices
    np.testing.assert_array_equal(pcm["auto"][0, :chunk], pcm["off"][0, :chunk])
    assert not np.array_equal(pcm["auto"][0, chunk : 2 * chunk], pcm["off"][0, chunk : 2 * chunk])
    assert 0.01 < relative_error(pcm["auto"], ideal["off"]) < 0.5


def test_cost_model_deals_chunks_to_the_copies() -> None:
    arch = load_arch()
    x = Stage("mvm", "analog_mvm", {"K": 128, "N": 128, "tiles": 1}, (), "tile:0")
    after = Stage("b", "bias_add", {"N": 128}, ("mvm",), "cluster:0")
    alone = schedule([x, after], 128, arch, strategy="both", chunk=8)
    x2 = Stage("mvm", "analog_mvm", x.dims, (), "tile:0", ("tile:7",))
    two = schedule([x2, after], 128, arch, strategy="both", chunk=8)
    busy = {u.unit: u.busy_ns for u in two.units}
    assert (
        busy["tile:0"]
        == pytest.approx(busy["tile:7"])
        == pytest.approx(next(u.busy_ns for u in alone.units if u.unit == "tile:0") / 2)
    )
    assert two.makespan_ns < 0.6 * alone.makespan_ns
    for bad in (("tile:0",), ("cluster:3",), ("tile:x",)):
        with pytest.raises(AimccError, match="replica"):
            schedule([Stage("mvm", "analog_mvm", x.dims, (), "tile:0", bad)], 128, arch)


def test_the_binary_refuses_a_copy_on_a_used_tile(compiled: dict[str, Compilation]) -> None:
    comp = compiled["auto"]
    program = json.loads(json.dumps(lower_program(comp)))  # as the binary holds it
    tensors = {k: np.asarray(comp.ctx.weights[k]) for k in comp.ctx.weights}
    verify_program(program, tensors, "ok")
    (analog,) = [i for i in program["instructions"] if i["op"] == "analog"]
    analog["replicas"][0] = list(analog["tiles"])
    with pytest.raises(AimccError, match="replica tile 0 used twice"):
        verify_program(program, tensors, "forged")
    del analog["chunk"]
    with pytest.raises(AimccError, match="replicas need a chunk"):
        verify_program(program, tensors, "forged")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicate", "0"], "--replicate '0': use auto, off or a copy count N >= 1"),
        (["--replicate", "many"], "--replicate 'many': use auto, off"),
        (["-p", "raise,partition,tile,place,replicate{replicas=x},schedule"], "replicas 'x'"),
        (
            ["-p", "raise,partition,tile,place,schedule", "--replicate", "off"],
            "--replicate configures",
        ),
    ],
)
def test_bad_values_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aimcc.cli", str(model_path("lora_layer_128")), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("aimcc: error:") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written
