"""Architecture files: presets, overrides, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimcc.arch import PRESET_DIR, arch_from_dict, load_arch, preset_names
from aimcc.errors import AimccError


def test_presets_load_and_cite_sources() -> None:
    assert {"paper-512", "hermes-256"} <= set(preset_names())
    paper, hermes = load_arch("paper-512"), load_arch("hermes-256")
    assert (paper.tile.rows, paper.tile.dac.bits, paper.tile.mapping.g_max_us) == (512, 8, 25.0)
    assert (hermes.tile.rows, hermes.tile.count) == (256, 64)
    for preset in PRESET_DIR.glob("*.toml"):
        for line in preset.read_text().splitlines():
            if "=" in line and not line.startswith(("#", "name", "description", "[")):
                assert "#" in line or line.rstrip().endswith(("[", ",")), f"{preset.name}: {line}"


def test_overrides_and_round_trip() -> None:
    arch = load_arch("paper-512", ["tile.count=7", "tile.adc.bits=6", "tile.pcm.compensation=none"])
    assert (arch.tile.count, arch.tile.adc.bits, arch.tile.pcm.compensation) == (7, 6, "none")
    assert arch_from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace('name = "paper-512"', "name = 1"), "'name' has the wrong type"),
        (lambda text: text + "\n[tile", "not valid TOML"),
    ],
)
def test_bad_files(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "a.toml"
    path.write_text(edit((PRESET_DIR / "paper-512.toml").read_text()))
    with pytest.raises(AimccError, match=message):
        load_arch(str(path))


def test_unknown_and_missing_keys(tmp_path: Path) -> None:
    good = (PRESET_DIR / "paper-512.toml").read_text()
    path = tmp_path / "a.toml"
    path.write_text(good.replace("[tile]", "[tile]\nwarp_drive = 1", 1))
    with pytest.raises(AimccError, match=r"unknown architecture key 'tile.warp_drive'"):
        load_arch(str(path))
    path.write_text(good.replace("rows = 512", "", 1))
    with pytest.raises(AimccError, match=r"missing architecture key 'tile.rows'"):
        load_arch(str(path))
    with pytest.raises(AimccError, match=r"bits' must be between"):
        load_arch("paper-512", ["tile.dac.bits=0"])
    with pytest.raises(AimccError, match=r"no key 'tile.nope'"):
        load_arch("paper-512", ["tile.nope=1"])


def test_cluster_dtype_is_fp16_or_fp32() -> None:
    assert load_arch("paper-512").cluster.kernel_dtype == "f16"  # the preset's fp16 cluster
    assert load_arch("paper-512", ["cluster.dtype=fp32"]).cluster.kernel_dtype == "f32"
    with pytest.raises(AimccError, match=r"'cluster.dtype' must be one of fp16, fp32 \('bf16'\)"):
        load_arch("paper-512", ["cluster.dtype=bf16"])


@pytest.mark.parametrize(("dtype", "size"), [("fp16", 2), ("fp32", 4)])
def test_chunks_and_kernel_pieces_use_one_element_size(dtype: str, size: int) -> None:
    """The cost model sizes chunks with the element size the generated kernels have: a LoRA
    X.A call's footprint in the manifest (its arguments, in the kernel's dtype) is the cost
    model's working set of the same tokens (the paper's formula, docs/REFERENCES.md)."""
    from aimcc.backends.manifest import kernel_manifest
    from aimcc.compiler import compile_model
    from aimcc.cost.model import Stage, dtype_bytes, tcdm_bytes

    arch = load_arch("paper-512", [f"cluster.dtype={dtype}"])
    assert dtype_bytes(arch) == size
    model = Path(__file__).parents[1] / "examples" / "models" / "lora_layer_128.onnx"
    manifest = kernel_manifest(compile_model(model, "hybrid", arch))
    calls = [c for k in manifest["kernels"] for c in k["riscv"].get("calls", [])]
    assert {c["dtype"] for c in calls} == {arch.cluster.kernel_dtype}
    (xa,) = [c for c in calls if c["kind"] == "lora_xa"]
    d = xa["dims"]
    assert xa["footprint_bytes"] == size * (d["T"] * d["K"] + d["K"] * d["R"] + d["T"] * d["R"])
    stage = Stage("xa", "lora_xa", {"K": d["K"], "R": d["R"]}, (), "cluster")
    assert tcdm_bytes(stage, d["T"], arch) == xa["footprint_bytes"]
