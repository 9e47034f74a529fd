"""`aimcc MODEL --emit-riscv DIR` end to end: files and hashes match the manifest, emitted
kernels assemble and compute what numpy computes under qemu, `aimcc inspect` shows them, and
every digital kernel of the corpus' hybrid mapping has RISC-V code (or is a view)."""

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import test_riscv_kernels as kt

from aimcc.arch import load_arch
from aimcc.backends.manifest import kernel_manifest
from aimcc.backends.riscv import KernelSignature
from aimcc.cli import main
from aimcc.compiler import compile_model

MODELS = Path(__file__).parent.parent / "examples" / "models"


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("emit")
    argv = [str(MODELS / "bert_lora.onnx"), "-o", str(out / "bl.aimcb"), "-q"]
    assert main([*argv, "--emit-riscv", str(out / "riscv")]) == 0
    return out, json.loads((out / "bl.kernels.json").read_text())


def _calls(manifest: dict) -> list[dict]:
    return [c for k in manifest["kernels"] for c in k["riscv"].get("calls", [])]


def test_every_kernel_has_assembly_with_matching_hash(emitted: tuple[Path, dict]) -> None:
    out, manifest = emitted
    assert {k["riscv"]["status"] for k in manifest["kernels"]} == {"code", "view"}
    files = {p.name for p in (out / "riscv").iterdir()}
    assert files == {c["file"] for c in _calls(manifest)}
    for call in _calls(manifest):
        text = (out / "riscv" / call["file"]).read_bytes()
        assert hashlib.sha256(text).hexdigest() == call["sha256"]
        assert f".globl {call['symbol']}" in text.decode()
        assert call["piece_footprint_bytes"] <= call["tcdm_bytes"] and call["fits"]
        assert call["est_cycles"] > 0
    kinds = {c["kind"] for c in _calls(manifest)}
    assert {"lora_xa", "lora_b_add", "qk", "softmax", "av", "layer_norm", "gather"} <= kinds
    # the attention mask's preparation, on int64 and bool data
    assert {"cast_bool", "gather_nd", "and_outer", "where_const"} <= kinds
    # the presets' fp16 cluster: float kernels in f16, and the files say so
    assert (manifest["cluster"]["dtype"], manifest["riscv_dtype"]) == ("fp16", "f16")
    assert {c["dtype"] for c in _calls(manifest)} == {"f16", "bool", "i64"}
    softmax = next(c for c in _calls(manifest) if c["kind"] == "softmax")
    text = (out / "riscv" / softmax["file"]).read_text()
    assert text.startswith(f"# {softmax['symbol']}: f16 data") and ".option arch, +zfh" in text
    assert "flh" in text and "fsh" in text and "flw" not in text


def _statuses(path: Path) -> dict[str, list[str]]:
    """IR kernel kinds by RISC-V status, from the manifest of the hybrid mapping."""
    manifest = kernel_manifest(compile_model(path, "hybrid", load_arch("paper-512")))
    statuses: dict[str, list[str]] = {}
    for kernel in manifest["kernels"]:
        statuses.setdefault(kernel["riscv"]["status"], []).append(kernel["kind"])
    return statuses


@pytest.mark.parametrize("model", ["bert", "bert_lora", "gpt2", "llama"])
def test_every_corpus_kernel_has_code_or_is_a_view(model: str) -> None:
    statuses = _statuses(MODELS / f"{model}.onnx")
    assert "none" not in statuses, statuses["none"]
    assert {"onnx.Cast", "onnx.GatherND", "onnx.And", "onnx.Where"} <= set(statuses["code"])


@pytest.mark.slow
def test_every_minilm_kernel_has_code_or_is_a_view(minilm_path: Path) -> None:
    statuses = _statuses(minilm_path)
    assert "none" not in statuses, statuses["none"]
    assert statuses["code"].count("onnx.Cast") == 2  # the mask, and its float in mean pooling


def test_split_pieces_cover_the_tokens(emitted: tuple[Path, dict]) -> None:
    """gelu of 128 x 512 fp16 values (in and out: 2 x 128 KiB) cannot sit in 128 KiB: split
    by tokens (the biases are fused into the tiles, so the old bias_add example is gone)."""
    split = [c for c in _calls(emitted[1]) if c["signature"] == "aimcc_gelu_erf_N65536_f16"]
    assert split and all(c["pieces"] > 1 for c in split)
    for call in split:
        assert call["dtype"] == "f16" and call["symbol"].endswith("_f16")
        assert call["pieces"] * call["tokens_per_piece"] == 128
        assert call["pieces"] * call["dims"]["N"] == 128 * 512
        assert call["footprint_bytes"] == 2 * 2 * 128 * 512  # 2 bytes per fp16 element
        assert call["piece_footprint_bytes"] <= call["tcdm_bytes"] == 128 * 1024


@pytest.mark.skipif(not kt.HAVE_QEMU, reason="needs riscv64-linux-gnu-gcc and qemu-riscv64")
def test_emitted_kernels_run_under_qemu(emitted: tuple[Path, dict], tmp_path: Path) -> None:
    """The emitted files themselves, linked into the kernel tests' harness, against numpy."""
    out, manifest = emitted
    wanted = ("lora_xa", "lora_b_add", "layer_norm", "add", "qk", "gelu_erf")
    wanted += ("cast_bool", "gather_nd", "and_outer", "where_const")
    _run_emitted(out, manifest, wanted, tmp_path)


def test_fp32_cluster_emits_f32_kernels(tmp_path: Path) -> None:
    """`--set cluster.dtype=fp32`: every float kernel in f32 (`.s`, 4-byte elements, no Zfh),
    the manifest says so, and the emitted files compute what numpy computes."""
    argv = [str(MODELS / "lora_layer_128.onnx"), "-o", str(tmp_path / "l.aimcb"), "-q"]
    argv += ["--set", "cluster.dtype=fp32", "--emit-riscv", str(tmp_path / "riscv")]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "l.kernels.json").read_text())
    assert (manifest["cluster"]["dtype"], manifest["riscv_dtype"]) == ("fp32", "f32")
    calls = _calls(manifest)
    assert calls and {c["dtype"] for c in calls} == {"f32"}
    for call in calls:
        text = (tmp_path / "riscv" / call["file"]).read_text()
        assert text.startswith(f"# {call['symbol']}: f32 data\n") and "zfh" not in text
        assert ".h " not in text and "flw" in text
    if kt.HAVE_QEMU:
        _run_emitted(tmp_path, manifest, ("lora_xa", "lora_b_add"), tmp_path / "run")


def _run_emitted(out: Path, manifest: dict, wanted: tuple[str, ...], tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    calls = {c["symbol"]: c for c in _calls(manifest) if c["kind"] in wanted}
    sigs = [
        KernelSignature(
            c["kind"],
            tuple(sorted(c["dims"].items())),
            tuple(sorted(c["attrs"].items())),
            c["dtype"],
        )
        for c in calls.values()
    ]
    assert {s.kind for s in sigs} == set(wanted)
    decls = "\n".join(f"void {s.symbol}(void *, void *, void *, void *);" for s in sigs)
    table = ",\n".join(f'  {{"{s.symbol}", {s.symbol}, 0}}' for s in sigs)
    words = max(sum(np.prod(a["shape"]) * 8 + 8 for a in c["args"]) for c in calls.values())
    harness = tmp_path / "harness.c"
    harness.write_text(kt._HARNESS.format(decls=decls, table=table, max_words=words // 8 + 1))
    sources = [str(out / "riscv" / c["file"]) for c in calls.values()]
    binary = tmp_path / "run"
    cmd = [kt.CC, "-static", "-O1", "-march=rv64gc", "-mabi=lp64d", str(harness), *sources]
    subprocess.run([*cmd, "-o", str(binary)], check=True, capture_output=True)
    for sig in sigs:
        args = kt._inputs(sig, np.random.default_rng(2))
        kt._check(sig, args, kt._run_qemu(binary, sig, args))


def test_inspect_shows_summary_and_kernels(
    emitted: tuple[Path, dict], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # symbols are long; rich folds narrow tables
    out, manifest = emitted
    assert main(["inspect", str(out / "bl.aimcb")]) == 0
    text = capsys.readouterr().out
    assert "input_ids" in text and "hybrid" in text and "RISC-V kernels" not in text
    assert main(["inspect", str(out / "bl.aimcb"), "--kernels"]) == 0
    text = capsys.readouterr().out
    code = sum(k["riscv"]["status"] == "code" for k in manifest["kernels"])
    assert "RISC-V kernels" in text and "aimcc_softmax_M128_N128" in text
    assert f"{code} kernels with RISC-V code" in text


def test_inspect_errors(emitted: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = emitted
    assert main(["inspect", str(out / "bl.aimcb"), "--kernels", "--manifest", "nope.json"]) == 1
    assert "no kernel manifest" in capsys.readouterr().err
    assert main(["inspect", str(out / "missing.aimcb")]) == 1


def test_emit_into_a_file_fails_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "riscv"
    blocker.write_text("not a directory")
    argv = [str(MODELS / "lora_layer_128.onnx"), "-o", str(tmp_path / "m.aimcb"), "-q"]
    assert main([*argv, "--emit-riscv", str(blocker)]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["riscv"]
