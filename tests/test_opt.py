"""`aimcc opt`: passes on textual IR for pass authors, the mlir-opt workflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import model_path

from aimcc.cli import main
from aimcc.compiler import compile_model
from aimcc.errors import AimccError
from aimcc.ir.text import print_ir
from aimcc.passes import PASSES


def opt(*args: str | Path) -> None:
    assert main(["opt", *map(str, args)]) == 0


def test_stage_by_stage_through_text_equals_the_compiler(tmp_path: Path) -> None:
    """import -> text -> raise -> text -> the rest: same IR as compiling in one go."""
    model = model_path("bert_lora")
    opt(model, "-p", "raise", "--save-weights", tmp_path / "w.npz", "-o", tmp_path / "raised.mlir")
    assert "= nn.linear %" in (tmp_path / "raised.mlir").read_text()
    opt(
        tmp_path / "raised.mlir",
        "--weights",
        tmp_path / "w.npz",
        "-p",
        "partition{target=hybrid},tile,fuse-bias,place,head-split,lower-cluster,split,replicate",
        "-o",
        tmp_path / "placed.mlir",
    )
    direct = compile_model(model, "hybrid")
    placed = (tmp_path / "placed.mlir").read_text()
    direct.module.attributes.pop("aimc.schedule")  # the schedule pass did not run in opt
    assert placed == print_ir(direct.module, direct.ctx.weights) + "\n"


def test_options_reach_the_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opt(model_path("lora_layer_128"), "-p", "raise,partition{target=aimc},tile{rows=64 cols=64}")
    out = capsys.readouterr().out
    assert out.count("aimc.program") == 4 and "!aimc.tile<64x64>" in out
    assert 'kind = "lora"' not in out  # merged into the analog weights


def test_printing_without_passes_round_trips(tmp_path: Path) -> None:
    opt(model_path("gpt2"), "--save-weights", tmp_path / "w.npz", "-o", tmp_path / "a.mlir")
    opt(tmp_path / "a.mlir", "--weights", tmp_path / "w.npz", "-o", tmp_path / "b.mlir")
    assert (tmp_path / "a.mlir").read_text() == (tmp_path / "b.mlir").read_text()


@pytest.mark.parametrize(
    ("passes", "message"),
    [
        ("fuse", "unknown pass 'fuse'"),
        ("partition{targt=aimc}", "not found in expected arguments"),
        ("tile{rows=x}", "Incompatible types"),
        ("tile{rows=1", "Malformed pass arguments"),
    ],
)
def test_bad_pipelines_are_refused_before_work(passes: str, message: str) -> None:
    from aimcc.compiler import parse_passes

    with pytest.raises(AimccError, match=message):
        parse_passes(passes)


def test_text_without_its_weights_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opt(model_path("lora_layer_128"), "-o", tmp_path / "a.mlir")
    assert main(["opt", str(tmp_path / "a.mlir"), "-p", "raise"]) == 1
    assert "is not in the weight store" in capsys.readouterr().err
    (tmp_path / "bad.mlir").write_text("builtin.module {\n  %x = foo.bar\n}\n")
    assert main(["opt", str(tmp_path / "bad.mlir")]) == 1
    assert "bad.mlir:3:1: Operation foo.bar is not registered" in capsys.readouterr().err


def test_every_pass_is_registered() -> None:
    assert list(PASSES) == [
        "raise",
        "lora-slots",
        "partition",
        "tile",
        "fuse-bias",
        "place",
        "head-split",
        "lower-cluster",
        "split",
        "replicate",
        "schedule",
    ]


def test_compile_and_opt_share_one_pipeline(tmp_path: Path) -> None:
    """`aimcc MODEL -p SPEC` with the default spec written out makes the same binary as the
    default compile; a changed option in the spec changes it."""
    from aimcc.compiler import DEFAULT_PIPELINE

    model = model_path("lora_layer_128")
    assert main([str(model), "-q", "-o", str(tmp_path / "a.aimcb")]) == 0
    assert main([str(model), "-q", "-p", DEFAULT_PIPELINE, "-o", str(tmp_path / "b.aimcb")]) == 0
    assert (tmp_path / "a.aimcb").read_bytes() == (tmp_path / "b.aimcb").read_bytes()
    spec = DEFAULT_PIPELINE.replace("partition", "partition{target=aimc}")
    assert main([str(model), "-q", "-p", spec, "-o", str(tmp_path / "c.aimcb")]) == 0
    assert (tmp_path / "c.aimcb").read_bytes() != (tmp_path / "a.aimcb").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "raise,partition,tile,place"], "needs the pipeline to end with schedule"),
        (["-p", "raise,schedule", "--target", "aimc"], "--target configures the default"),
        (["-p", "raise,schedule", "--lora-rank", "4"], "--lora-rank configures the default"),
        (["--target", "digital", "--compare", "aimc"], "compiled for digital"),
    ],
)
def test_compile_refuses_pipelines_it_cannot_honour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "m.aimcb"
    assert main([str(model_path("lora_layer_128")), "-q", "-o", str(out), *args]) == 1
    assert message in capsys.readouterr().err and not out.exists()


def test_a_pass_that_breaks_the_ir_is_named() -> None:
    """opt verifies after every pass; compile (the same runner) by default after the last."""
    from dataclasses import dataclass

    from xdsl.dialects.builtin import StringAttr
    from xdsl.passes import ModulePass

    from aimcc.compiler import run_passes

    @dataclass(frozen=True)
    class Nothing(ModulePass):
        name = "nothing"

        def apply(self, ctx: object, op: object) -> None:
            pass

    @dataclass(frozen=True)
    class Breaks(ModulePass):
        name = "breaks"

        def apply(self, ctx: object, op: object) -> None:
            program = next(o for o in op.walk() if o.name == "aimc.program")
            program.properties["tile_id"] = StringAttr("x")  # a string where an index belongs

    comp = compile_model(model_path("lora_layer_128"), "hybrid")
    with pytest.raises(AimccError, match="IR after 'breaks' does not verify"):
        run_passes(comp.module, comp.ctx, [Breaks()])
    # compile's default verifies once, after the last pass: the error lists the unverified
    # passes and points at --verify-each
    comp = compile_model(model_path("lora_layer_128"), "hybrid")
    with pytest.raises(AimccError) as caught:
        run_passes(comp.module, comp.ctx, [Breaks(), Nothing()], verify_each=False)
    assert str(caught.value).startswith(
        "IR after 'nothing' (verified once after breaks, nothing; --verify-each names the pass)"
        " does not verify"
    )


def test_a_filecheck_file_is_a_complete_test_case(tmp_path: Path) -> None:
    """tile.mlir (weights inline, aimc.arch recorded) compiles to a binary with no --weights and
    runs to numpy's answer: y = x @ W + 2 * (x @ A) @ B + bias, every weight 0.01."""
    from aimcc.runtime import load

    source = Path(__file__).parent / "filecheck" / "tile" / "tile.mlir"
    binary = tmp_path / "tile.aimcb"
    assert main(["compile", str(source), "-q", "-o", str(binary)]) == 0
    x = np.random.default_rng(0).standard_normal((1, 16, 16)).astype(np.float32)
    w, a, b, bias = (np.full(s, 0.01, np.float32) for s in ((16, 16), (16, 4), (4, 16), (16,)))
    want = x @ w + 2.0 * (x @ a) @ b + bias
    got = load(binary).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
