"""Seeded mutations of the corpus models through the CLI: every bad model gets one clear line.

Each mutant must either compile (and then onnxruntime must accept it too: nothing invalid is
taken) or fail with exit 1 and a single ``aimcc: error:`` line, never an internal error or a
hang, and leave nothing in the output folder. ``AIMCC_FUZZ_SEEDS=N`` runs N seeds per model
instead of the CI default.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from conftest import model_path
from onnx import TensorProto, helper

from aimcc.cli import main

SEEDS = range(int(os.environ.get("AIMCC_FUZZ_SEEDS", "2")))
MODELS = ("lora_layer_128", "bert_lora", "gpt2", "llama")
HANG_SECONDS = 120


def _mutants(model: onnx.ModelProto, rng: random.Random) -> Iterator[tuple[str, onnx.ModelProto]]:
    """The classes of damage a broken exporter, an editor or a hostile file produce."""

    def clone() -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        return m

    def any_node(m: onnx.ModelProto) -> onnx.NodeProto:
        return rng.choice(list(m.graph.node))

    m = clone()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[-1].Clear()
    dims[-1].dim_value = rng.choice([10**7, 2**40, 2**62])
    yield "huge input dim", m
    m = clone()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = -rng.randrange(1, 9)
    yield "negative input dim", m
    m = clone()
    m.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 3
    yield "input rank", m
    m = clone()
    m.graph.input[0].type.tensor_type.elem_type = rng.choice(
        [
            TensorProto.INT4,
            TensorProto.STRING,
            TensorProto.COMPLEX64,
            TensorProto.FLOAT8E4M3FN,
            0,
            999,
        ]
    )
    yield "input dtype", m
    m = clone()
    rng.choice(list(m.graph.initializer)).data_type = rng.choice([TensorProto.STRING, 999, 0])
    yield "initializer dtype", m
    m = clone()
    init = rng.choice(list(m.graph.initializer))
    init.dims[:] = [0, *init.dims[1:]]
    init.raw_data = b""
    yield "zero-size initializer", m
    m = clone()
    value = rng.choice([1, 1.5, "x", [1, 2]])
    any_node(m).attribute.append(helper.make_attribute(f"bogus{rng.randrange(99)}", value))
    yield "unknown attribute", m
    m = clone()
    ints = [(n, a) for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.INT]
    if ints:
        node, attr = rng.choice(ints)
        attr.i = rng.choice([-(2**40), 99, -7, 2**40])
        yield f"bad {node.op_type}.{attr.name}", m
    m = clone()
    ints = [(n, a) for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.INT]
    if ints:
        node, attr = rng.choice(ints)
        attr.type, attr.s = onnx.AttributeProto.STRING, b"nonsense"
        yield "attribute type", m
    m = clone()
    nodes = list(m.graph.node)
    node = rng.choice([n for n in nodes if n.input])
    node.input[rng.randrange(len(node.input))] = rng.choice([o for n in nodes for o in n.output])
    yield "rewired input", m
    m = clone()
    node = rng.choice([n for n in m.graph.node if n.input])
    node.input[0] = "no_such_value"
    yield "undefined input", m
    m = clone()
    node = any_node(m)
    node.output[0] += "_renamed"
    yield "renamed output", m
    m = clone()
    a, b = rng.sample(list(m.graph.node), 2)
    b.output[0] = a.output[0]
    yield "defined twice", m
    m = clone()
    nodes = list(m.graph.node)
    rng.shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    yield "shuffled nodes", m
    m = clone()
    del m.graph.output[:]
    yield "no outputs", m
    m = clone()
    m.graph.output[0].type.tensor_type.elem_type = rng.choice(
        [TensorProto.STRING, TensorProto.INT8]
    )
    yield "output dtype", m
    m = clone()
    any_node(m).op_type = rng.choice(["FooBar", "If", "Loop"])
    yield "unknown op", m
    m = clone()
    m.opset_import[0].version = rng.choice([1, 5, 99])
    yield "opset", m
    m = clone()
    m.graph.node.remove(any_node(m))
    yield "node removed", m


def _cases() -> Iterator[tuple[str, int]]:
    for name in MODELS:
        for seed in SEEDS:
            yield name, seed


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


def _run(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, err.getvalue()


def _onnxruntime_accepts(path: Path) -> bool:
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


@pytest.mark.parametrize(("name", "seed"), list(_cases()), ids=lambda v: str(v))
def test_mutated_models(tmp_path: Path, name: str, seed: int) -> None:
    base = onnx.load(model_path(name))
    rng = random.Random(f"{name}/{seed}")
    failures = []
    for index, (kind, mutant) in enumerate(_mutants(base, rng)):
        src = tmp_path / f"m{index}.onnx"
        onnx.save(mutant, src)
        out = tmp_path / f"out{index}"
        out.mkdir()
        code, err = _run([str(src), "-q", "-o", str(out / "m.aimcb")])
        left = sorted(p.name for p in out.iterdir())
        if code == 0:
            if not _onnxruntime_accepts(src):
                failures.append(f"{kind}: accepted, but onnxruntime refuses the model")
            continue
        lines = err.strip().splitlines()
        if code != 1 or len(lines) != 1 or not lines[0].startswith("aimcc: error: "):
            failures.append(f"{kind}: exit {code}: {err.strip()[:300]}")
        elif left:
            failures.append(f"{kind}: left {left} behind")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("shape", ["input_ids=1x100000000", "input_ids=1x1000000000000"])
def test_oversized_model_refused_under_memory_limit(tmp_path: Path, shape: str) -> None:
    """Under ``ulimit -v`` a model that declares more than the process may hold is refused with
    one line (before allocating, or where an allocation fails), never an internal error."""
    import subprocess
    import sys

    out = tmp_path / "m.aimcb"
    cmd = f'ulimit -v 6000000; exec {sys.executable} -m aimcc.cli "$0" -q -o "$1" --input-shape $2'
    result = subprocess.run(
        ["bash", "-c", cmd, str(model_path("bert")), str(out), shape],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("aimcc: error: "), result.stderr
    assert "GiB" in lines[0] or "out of memory" in lines[0], lines[0]
    assert not list(tmp_path.iterdir())
