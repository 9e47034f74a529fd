"""One lowering of the digital side: the schedule's stages, the manifest's calls, the RISC-V
functions and the runtime's executed calls are the same kernels (issue 11's first done-when).

Every corpus model is compiled; each consumer's kernels are collected its own way (the
schedule's stage builder, the manifest JSON, the generated assembly, a traced run of the
binary) and compared as sets of RISC-V signatures: no kind, view or fusion may be handled by
one and not by another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_MODELS, model_path

from aimcc.arch import load_arch
from aimcc.backends.aimcb import write_binary
from aimcc.backends.manifest import kernel_manifest, riscv_signatures
from aimcc.backends.signatures import KernelSignature
from aimcc.compiler import compile_model
from aimcc.cost.model import ANALOG
from aimcc.ir.aimc import AccumulateOp
from aimcc.ir.cluster import CallOp, KernelAttr
from aimcc.ir.digital import KernelOp
from aimcc.passes.schedule import stage_builder
from aimcc.runtime import load

# (model, target, arch overrides): every corpus model as shipped, plus forms that exercise
# partial sums (rows of tiles), a column split and the all-digital target.
CASES = [(name, "hybrid", {}) for name in SMALL_MODELS] + [
    ("lora_layer_512x128", "hybrid", {"tile.rows": 128, "tile.cols": 128}),
    ("bert_lora", "hybrid", {"cluster.tcdm_kib": 32}),
    ("bert", "digital", {}),
]


def _symbol(kernel: dict) -> str:
    return KernelSignature(
        kernel["kind"],
        tuple(sorted(kernel["dims"].items())),
        tuple(sorted(kernel["attrs"].items())),
        kernel["dtype"],
    ).symbol


def _feeds(exe) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in exe.inputs:
        if "int" in spec["dtype"]:
            feeds[spec["name"]] = np.ones(spec["shape"], spec["dtype"])  # ids and masks of 1
        else:
            feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    return feeds


@pytest.mark.parametrize(("name", "target", "overrides"), CASES)
def test_every_consumer_runs_the_same_kernels(
    tmp_path: Path, name: str, target: str, overrides: dict
) -> None:
    arch = load_arch(overrides=[f"{k}={v}" for k, v in overrides.items()])
    comp = compile_model(model_path(name), target, arch=arch)
    ops = list(comp.module.walk())
    assert not any(isinstance(o, KernelOp) for o in ops), "lower-cluster left a digital.kernel"
    calls = [o for o in ops if isinstance(o, CallOp)]
    assert calls and not [o.callee.data for o in calls if o.unsupported is not None]

    builder = stage_builder(comp.module, comp.arch)
    assert builder is not None
    digital = [s for s in builder.stages if s.kind != ANALOG]
    assert all(s.name in builder.kernel_of for s in digital), "a stage without a kernel"
    scheduled = {builder.kernel_of[s.name].symbol for s in digital}

    manifest = kernel_manifest(comp)
    entries = [k["riscv"] for k in manifest["kernels"]]
    assert {e["status"] for e in entries} <= {"code", "view"}
    listed = {c["signature"] for e in entries if e["status"] == "code" for c in e["calls"]}

    write_binary(comp, tmp_path / "m.aimcb", manifest=False)
    exe = load(tmp_path / "m.aimcb")
    executed = {_symbol(k) for k in exe.trace_calls(_feeds(exe))}

    assert scheduled == listed == executed
    # the functions the RISC-V backend generates: one per distinct piece of those kernels
    tcdm = comp.arch.cluster.tcdm_kib * 1024
    kernels = {k.symbol: k for o in ops for k in _kernels(o)}
    assert set(kernels) == scheduled
    pieces = {k.piece(tcdm)[0].symbol for k in kernels.values()}
    assert {s.symbol for s in riscv_signatures(comp)} == pieces
    if overrides.get("tile.rows"):  # rows of tiles: their partial sums are a kernel everywhere
        assert any(s.startswith("aimcc_accumulate") for s in scheduled)
    if overrides.get("cluster.tcdm_kib"):
        assert any(o.parts > 1 for o in calls) or any("split" in o.attributes for o in ops)


def _kernels(op) -> list[KernelAttr]:
    if isinstance(op, CallOp):
        return op.part_kernels
    if isinstance(op, AccumulateOp) and op.kernel is not None:
        split = op.attributes.get("split")
        return [op.kernel.column_part(split.value.data if split else 1)]
    return []


def test_generated_functions_are_the_manifests(tmp_path: Path) -> None:
    """The assembly --emit-riscv writes: one file per distinct piece the manifest lists."""
    from aimcc.backends.manifest import emit_riscv

    comp = compile_model(model_path("bert_lora"), "hybrid")
    stats = emit_riscv(comp, tmp_path)
    manifest = kernel_manifest(comp, stats)
    symbols = {
        c["symbol"] for k in manifest["kernels"] if k["riscv"]["status"] == "code"
        for c in k["riscv"]["calls"]
    }  # fmt: skip
    assert set(stats.files) == symbols
    assert sorted(p.stem for p in tmp_path.glob("*.S")) == sorted(symbols)


def test_bias_is_fused_into_the_tiles() -> None:
    """fuse-bias removes every bias_add on an analog layer (directly or after its LoRA)."""
    comp = compile_model(model_path("bert_lora"), "hybrid")
    ops = list(comp.module.walk())
    fused = [o for o in ops if isinstance(o, AccumulateOp) and o.bias is not None]
    assert fused and all(not (isinstance(o, CallOp) and o.callee.data == "bias_add") for o in ops)
