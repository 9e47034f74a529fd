"""Every package imports on its own, first, in a fresh interpreter (no import cycles), and the
common commands import only what they use (start-up time, issue #14)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import model_path

from aimcc.cost.pipeline import condensation

ENTRY_MODULES = (
    "aimcc.backends.aimcb",
    "aimcc.runtime",
    "aimcc.passes",
    "aimcc.cost",
    "aimcc.frontend.importer",
    "aimcc.backends.manifest",
    "aimcc.cli",
    "aimcc.adapters",
    "aimcc.passes.lora_slots",
)
# Each costs 0.2-2.5 s of start-up; compiling a model like bert needs none of them.
HEAVY = ("torch", "onnx", "ml_dtypes", "networkx", "onnxruntime", "sympy")

_RUNNER = """
import atexit, sys
atexit.register(lambda: print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules)))
from aimcc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_imports_first(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def _heavy_imports(args: list[str]) -> list[str]:
    """The heavy packages in sys.modules when ``aimcc ARGS`` exits, run in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = [s for s in done.stdout.splitlines() if s.startswith("HEAVY:")][-1]
    return [m for m in line.removeprefix("HEAVY:").split(",") if m]


def test_compiling_bert_imports_no_heavy_package(tmp_path: Path) -> None:
    """torch (2.5 s), onnx's package (ml_dtypes, 1.2 s) and networkx stay out of a compile."""
    args = [str(model_path("bert")), "-q", "-o", str(tmp_path / "b.aimcb")]
    assert _heavy_imports(args) == []
    assert (tmp_path / "b.aimcb").is_file()


@pytest.mark.parametrize("command", ["run", "eval", "inspect", "opt", "compile"])
def test_command_help_imports_no_heavy_package(command: str) -> None:
    """(``adapt --help`` still imports torch: its defaults live in the training code.)"""
    assert _heavy_imports([command, "--help"]) == []


def test_condensation_is_networkx_s() -> None:
    """The pipeline's own condensation numbers and orders components as networkx does (the
    schedule, and so the binary, depends on it)."""
    nx = pytest.importorskip("networkx")
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randrange(1, 12)
        nodes = rng.sample(range(20), n)
        edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(rng.randrange(0, 3 * n))]
        edges = [(u, v) for u, v in edges if u != v]
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        graph.add_edges_from(edges)
        merged = nx.condensation(graph)
        order = list(nx.lexicographical_topological_sort(merged))
        want = (merged.graph["mapping"], order, {c: sorted(merged.predecessors(c)) for c in order})
        assert condensation(nodes, edges) == want, trial
