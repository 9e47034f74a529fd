"""Models larger than one cluster or one chip: column splits and multi-chip placement.

The split-layer model is one wide linear (600 -> 22000, then SiLU as x * sigmoid(x)): its
partial sums of one token need 22000 x 3 fp16 = 132 kB, more than a cluster's 128 KiB TCDM
(paper-512 preset), so the default settings must split it. Outputs are compared with
onnxruntime: a split is a mapping decision, the math is the same."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import onnxruntime_outputs
from onnx import TensorProto, helper, numpy_helper
from xdsl.parser import Parser

from aimcc.arch import load_arch
from aimcc.backends.aimcb import write_binary
from aimcc.backends.manifest import kernel_manifest
from aimcc.cli import main
from aimcc.compiler import compile_model
from aimcc.cost import Stage, schedule
from aimcc.cost.model import tcdm_parts
from aimcc.cost.pipeline import cluster_overflow
from aimcc.errors import AimccError
from aimcc.ir import make_context
from aimcc.passes.schedule import module_stages, recorded_schedule
from aimcc.runtime.executor import load


def _linear_silu(path: Path, k: int, n: int, layers: int = 1) -> Path:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((k, n if i == layers - 1 else k)) / np.sqrt(k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]),
            helper.make_node("Sigmoid", [f"h{i}"], [f"s{i}"]),
            helper.make_node("Mul", [f"h{i}", f"s{i}"], [f"y{i}"]),
        ]
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", k])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", n])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    return path


def _matches_onnxruntime(comp, model: Path, tmp_path: Path, seq: int) -> None:
    binary = tmp_path / "model.aimcb"
    write_binary(comp, binary)
    x = np.random.default_rng(1).standard_normal((1, seq, comp.input_shapes["x"][-1]))
    feeds = {"x": x.astype(np.float32)}
    (got,) = load(binary).run(feeds).values()
    (want,) = onnxruntime_outputs(model, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _linear_silu(tmp_path_factory.mktemp("wide") / "wide.onnx", 600, 22000)


def test_a_layer_wider_than_a_cluster_is_split_and_matches_onnxruntime(
    wide: Path, tmp_path: Path
) -> None:
    comp = compile_model(wide, input_shapes={"x": (1, 32, 600)})
    s = comp.schedule
    assert s is not None
    parts = [slot for slot in s.slots if slot.kind == "accumulate"]
    units = {slot.unit for slot in parts}
    assert len(units) >= 2, "the accumulation runs on more than one cluster"
    # every part's cost is in the schedule: the split parts cover all 22000 columns
    stages, _ = module_stages(comp.module, comp.arch)
    acc = [st for st in stages if st.kind == "accumulate"]
    assert sum(st.dims["N"] for st in acc) == 22000 and len(acc) == len(units)
    assert "split" in str(comp.module)  # the decision is in the IR
    manifest = kernel_manifest(comp)  # the kernel plan follows the same split
    split = [k["column_split"] for k in manifest["kernels"] if k["kind"] == "accumulate"]
    assert split[0]["parts"] == len(units) and len(set(split[0]["clusters"])) == len(units)
    calls = next(k["riscv"]["calls"] for k in manifest["kernels"] if k["kind"] == "accumulate")
    assert calls[0]["dims"]["N"] == -(-22000 // len(units))  # one part's columns
    _matches_onnxruntime(comp, wide, tmp_path, 32)


def test_a_kernel_that_cannot_split_is_refused_in_one_line(wide: Path) -> None:
    arch = load_arch("paper-512", ["cluster.tcdm_kib=1"])
    with pytest.raises(AimccError, match="TCDM") as info:
        compile_model(wide, arch=arch, input_shapes={"x": (1, 8, 600)})
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _linear_silu(tmp_path_factory.mktemp("deep") / "deep.onnx", 512, 512, layers=6)


def test_a_model_larger_than_a_chip_is_placed_on_several_and_matches_onnxruntime(
    deep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = load_arch("paper-512", ["tile.count=2", "cluster.count=2"])
    comp = compile_model(deep, arch=arch, input_shapes={"x": (1, 16, 512)})
    assert comp.arch.chips == 3  # 6 tiles, 2 per chip: the fewest that hold the model
    s = comp.schedule
    assert s is not None
    links = [u for u in s.units if u.unit.startswith("link:")]
    assert links and all(u.busy_ns > 0 and u.energy_nj > 0 for u in links)
    # a link transfer costs latency + bytes / bandwidth from the arch file
    slot = next(x for x in s.slots if x.unit.startswith("link:"))
    nbytes = slot.tokens * 512 * 2
    expected = arch.link.latency_ns + nbytes / arch.link.bytes_per_ns
    assert slot.end_ns - slot.start_ns == pytest.approx(expected)
    _matches_onnxruntime(comp, deep, tmp_path, 16)
    out = tmp_path / "cli.aimcb"
    args = [str(deep), "--set", "tile.count=2", "--set", "cluster.count=2", "-o", str(out)]
    assert main([*args, "--input-shape", "x=1x16x512"]) == 0
    text = capsys.readouterr().out
    assert "3 x 2 tiles (automatic" in text
    assert re.search(r"chips? (\d+-)?2 busy", text)  # chips that read alike share a row
    assert "of latency" in text and "of energy" in text


def test_too_few_chips_is_one_line_before_import(
    deep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_import(*args: object, **kwargs: object) -> None:
        raise AssertionError("import ran before the cheap check")

    monkeypatch.setattr("aimcc.frontend.importer.import_graph", no_import)
    args = [str(deep), "--set", "tile.count=2", "--chips", "2", "-o", str(tmp_path / "x.aimcb")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("aimcc: error: the model needs at least 6 tiles")
    assert "--chips 2 gives 4" in err and err.count("\n") == 1
    assert not (tmp_path / "x.aimcb").exists()


def test_split_ir_round_trips_and_replays(wide: Path) -> None:
    """The split is part of the IR: parsed back, the recorded schedule replays to the same
    timeline (the stages come from the attribute, not from a second decision)."""
    comp = compile_model(wide, input_shapes={"x": (1, 16, 600)})
    text = str(comp.module)
    parsed = Parser(make_context(comp.ctx.weights, comp.arch), text).parse_module()
    parsed.verify()
    assert str(parsed) == text
    replayed = recorded_schedule(parsed, comp.arch)
    assert replayed is not None and comp.schedule is not None
    assert replayed.makespan_ns == pytest.approx(comp.schedule.makespan_ns)


def test_a_128_wide_head_fits_one_cluster() -> None:
    """Keys and values of a head stream through double buffers that live only while their
    kernel runs: a Llama-style head (D = 128) at 128 tokens fits, though the two buffers
    together (2 x 64 KiB) are the whole TCDM."""
    arch = load_arch("paper-512")
    dims = {"S": 128, "D": 128, "H": 8}
    stages = [
        Stage("qk", "qk", dims, (), "cluster:0"),
        Stage("p", "softmax", {"N": 128, "H": 8}, ("qk",), "cluster:0"),
        Stage("av", "av", dims, ("p",), "cluster:0"),
    ]
    buffers = sum(tcdm_parts(s, 1, arch)[1] for s in stages)
    assert buffers == arch.cluster.tcdm_kib * 1024  # both resident at once would not fit
    assert cluster_overflow(stages, 128, arch, arch.cluster.compute_cores) == (0, "")
    assert schedule(stages, 128, arch).makespan_ns > 0


def test_a_layer_larger_than_a_chip_sends_its_partials_over_the_link(tmp_path: Path) -> None:
    """512 -> 2048 on chips of two 512 x 512 tiles: the layer spans two chips, the second
    chip's tiles are a stage of their own and their columns cross the link."""
    model = _linear_silu(tmp_path / "span.onnx", 512, 2048)
    arch = load_arch("paper-512", ["tile.count=2", "cluster.count=2"])
    comp = compile_model(model, arch=arch, input_shapes={"x": (1, 16, 512)})
    assert comp.arch.chips == 2 and comp.schedule is not None
    tiles = {u.unit for u in comp.schedule.units if u.unit.startswith("tile:")}
    assert tiles == {"tile:0", "tile:2"}
    crossing = [s for s in comp.schedule.slots if s.unit == "link:0"]
    assert crossing and all("@chip1" in s.name for s in crossing)
    # the second chip's two tiles produce 1024 columns of every token
    assert sum(s.tokens for s in crossing) == 16
    slot = crossing[0]
    nbytes = slot.tokens * 1024 * 2
    assert slot.end_ns - slot.start_ns == pytest.approx(
        arch.link.latency_ns + nbytes / arch.link.bytes_per_ns
    )
    _matches_onnxruntime(comp, model, tmp_path, 16)
