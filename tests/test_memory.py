"""Runtime memory follows one layer, and PCM devices do not depend on the order of work.

The model is a chain of four 2048 x 2048 linears (64 MiB of weights): large against the
runtime's own allocations, so holding every layer's device state (ten arrays per weight, as
the runtime once did) or a second copy of the weights shows. Peak RSS is measured in a fresh
process: the kernel's high-water mark is reset after the imports and the load, and the run's
peak above that must stay within the budget. `bench/scale.py` measures the same on 134M-1.1B
parameter models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import onnxruntime_outputs, relative_error
from onnx import TensorProto, helper, numpy_helper

from aimcc.backends.aimcb import write_binary
from aimcc.compiler import compile_model
from aimcc.runtime.analog import NoiseSpec, ProgrammedLayer
from aimcc.runtime.executor import load

WIDTH, LAYERS, TOKENS = 2048, 4, 32
WEIGHT_BYTES = LAYERS * WIDTH * WIDTH * 4
MIB = 1 << 20
OVERHEAD = 32 * MIB  # code pages of torch kernels first used, allocator slack


def build_chain(folder: Path, width: int, layers: int) -> tuple[Path, Path]:
    """(model.onnx, model.aimcb): x -> (MatMul, Tanh) x layers, compiled with defaults."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32) / np.float32(np.sqrt(width))
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]),
            helper.make_node("Tanh", [f"h{i}"], [f"y{i}"]),
        ]
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, TOKENS, width])],
        inits,
    )
    model = folder / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), model)
    binary = folder / "chain.aimcb"
    write_binary(compile_model(model), binary)
    return model, binary


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """64 MiB of weights: large against the runtime's own allocations."""
    return build_chain(tmp_path_factory.mktemp("memory"), WIDTH, LAYERS)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three 600 x 600 layers: 2 x 2 tiles of paper-512 each, the last row and column partial."""
    return build_chain(tmp_path_factory.mktemp("small"), 600, 3)


def feeds(width: int = 600) -> dict[str, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((1, TOKENS, width), dtype=np.float32)
    return {"x": x}


# Runs in a fresh process: RSS after imports and load, then the peak of programming (PCM)
# and one run above it.
_PEAK = """
import json, sys
import numpy as np
from aimcc.runtime.analog import NoiseSpec
from aimcc.runtime.executor import load

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

exe = load(sys.argv[1], stream=sys.argv[3] == "stream")
x = np.random.default_rng(1).standard_normal(exe.inputs[0]["shape"], dtype=np.float32)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
if sys.argv[2] != "ideal":
    exe.set_noise(NoiseSpec(sys.argv[2]), seed=0)
exe.run({"x": x})
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def run_peak(binary: Path, noise: str, stream: bool) -> int:
    """Peak RSS of set_noise and one run above the process's RSS before them (bytes)."""
    argv = [sys.executable, "-c", _PEAK, str(binary), noise, "stream" if stream else "keep"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["peak"] - result["before"]


def test_pcm_run_holds_at_most_twice_the_weights(chain: tuple[Path, Path]) -> None:
    """Effective weights (one copy of W) plus one chunk of device work, not ten arrays per
    weight: programming and a run stay within 2x the weights (plus a fixed overhead)."""
    _, binary = chain
    growth = run_peak(binary, "pcm", stream=False)
    assert growth <= 2 * WEIGHT_BYTES + OVERHEAD, f"{growth / MIB:.0f} MiB"


def test_streamed_ideal_run_holds_about_one_layer(chain: tuple[Path, Path]) -> None:
    """Ideal tiles are views of the mapped binary; streaming releases each layer's pages
    after its MVM, so a run holds about one layer (a quarter of the weights here)."""
    _, binary = chain
    growth = run_peak(binary, "ideal", stream=True)
    assert growth <= WEIGHT_BYTES / 4 + OVERHEAD / 2, f"{growth / MIB:.0f} MiB"


def test_ideal_matches_onnxruntime_streamed_or_not(small: tuple[Path, Path]) -> None:
    model, binary = small
    (reference,) = onnxruntime_outputs(model, feeds())
    for stream in (False, True):
        exe = load(binary, stream=stream)
        for _ in range(2):  # the second run reads the released pages again
            (y,) = exe.run(feeds()).values()
            assert relative_error(y, reference) < 1e-5


def test_same_seed_same_devices_in_any_order(small: tuple[Path, Path]) -> None:
    """Devices, reads and output noise are keyed by (seed, layer, tile): programming the
    layers in reverse, or one layer alone, gives the same numbers as a plain run."""
    _, binary = small
    spec = NoiseSpec("pcm", 86400.0)
    plain = load(binary)
    plain.set_noise(spec, seed=7)
    expected = plain.run(feeds())
    reverse = load(binary)
    reverse.set_noise(spec, seed=7)
    for layer in reversed(reverse.layers):
        assert layer.tiles is not None  # programmed and read now, last layer first
    np.testing.assert_array_equal(reverse.run(feeds())["y2"], expected["y2"])
    layer = plain.layers[2]
    alone = ProgrammedLayer.program(layer.weight, plain.arch, (7, 2)).at_time(86400.0, 0)
    assert torch.equal(alone.weights, layer.tiles.weights)
    assert torch.equal(alone.out_scale, layer.tiles.out_scale)
    plain.set_noise(spec, seed=8)
    assert not torch.equal(alone.weights, layer.tiles.weights)


def test_reads_follow_the_read_count_not_the_history(small: tuple[Path, Path]) -> None:
    """A read is keyed by how many reads came before it: the second read at one day is the
    same whether the first was at 0 s or at a year, and differs from the first read."""
    _, binary = small
    reads = []
    for first in (0.0, 3.15e7):
        exe = load(binary)
        exe.set_noise(NoiseSpec("pcm", first), seed=3)
        first_read = exe.layers[0].tiles.weights
        exe.at_time(86400.0)
        reads.append(exe.layers[0].tiles.weights)
    assert torch.equal(reads[0], reads[1])
    assert not torch.equal(first_read, reads[1])
