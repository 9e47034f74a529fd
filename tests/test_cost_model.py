"""Cost model against the paper's RTL calibration, HARP's tile formula and pipeline theory."""

import itertools
import json

import pytest

from aimcc.arch import load_arch
from aimcc.cost import (
    STRATEGIES,
    Stage,
    plot_gantt,
    schedule,
    stage_ns,
    tcdm_bytes,
    tile_token_ns,
    to_chrome_trace,
    transfer_ns,
)
from aimcc.errors import AimccError

# docs/REFERENCES.md "Calibration data" (Li et al., arXiv 2411.17367): (integration time ns,
# best chunk t, PMCA / tile latency).
PAPER = [(128.0, 128, 1.04), (256.0, 8, 0.63), (512.0, 8, 0.32)]
TCDM = 128 * 1024  # docs/REFERENCES.md "Digital cluster" (Li et al., arXiv 2411.17367)


def lora_layer(
    k: int = 128, n: int = 128, r: int = 8, index: int = 0, src: str = ""
) -> list[Stage]:
    deps = (src,) if src else ()
    name = f"layer{index}.fc"
    return [
        Stage(name, "analog_mvm", {"K": k, "N": n, "tiles": 1}, deps, f"tile:{index}"),
        Stage(f"{name}.lora_xa", "lora_xa", {"K": k, "R": r}, deps, f"cluster:{index}"),
        Stage(
            f"{name}.lora_b",
            "lora_b_add",
            {"R": r, "N": n},
            (name, f"{name}.lora_xa"),
            f"cluster:{index}",
        ),
    ]


def lora_fits(t: int, m: int = 128, r: int = 8, n: int = 128) -> bool:
    """docs/REFERENCES.md "Digital cluster": (t*M + M*R + R*N) * 2 B, plus the buffers X.A (t*R)
    and the tile output (t*N)."""
    return (t * m + m * r + r * n + t * r + t * n) * 2 <= TCDM


@pytest.mark.parametrize(("t_int", "paper_t", "paper_ratio"), PAPER)
def test_calibration_ratio_and_best_chunk(t_int: float, paper_t: int, paper_ratio: float) -> None:
    arch = load_arch("paper-512", overrides=[f"tile.integration_time_ns={t_int}"])
    tile, xa, b = lora_layer()

    def pmca_over_tile(t: int) -> float:
        return (stage_ns(xa, t, arch) + stage_ns(b, t, arch)) / stage_ns(tile, t, arch)

    assert pmca_over_tile(paper_t) == pytest.approx(paper_ratio, rel=0.10)
    # Best chunk: the highest long-sequence throughput (slower of tile and cluster per token),
    # the smaller chunk on ties; chunks are multiples of the 8 compute cores that fit the TCDM.
    chunks = [t for t in (8, 16, 32, 64, 128, 256, 512) if lora_fits(t)]
    assert chunks[-1] == 128

    def per_token(t: int) -> float:
        return max(stage_ns(tile, t, arch), stage_ns(xa, t, arch) + stage_ns(b, t, arch)) / t

    best = min(chunks, key=lambda t: (round(per_token(t), 6), t))
    assert best == paper_t


def test_tcdm_matches_reference_formula() -> None:
    arch = load_arch("paper-512")
    _, xa, b = lora_layer(k=512, r=8, n=128)
    for t in (1, 8, 64):
        expected = (t * 512 + 512 * 8 + 8 * 128 + t * 8 + t * 128) * 2
        assert tcdm_bytes(xa, t, arch) + tcdm_bytes(b, t, arch) == expected


def test_tile_time_is_harp_form() -> None:
    # HARP: 512 x 512 tile, 350 ns integration; + (8 + 512 / 64) cycles at 500 MHz = 32 ns.
    arch = load_arch("paper-512", overrides=["tile.integration_time_ns=350"])
    tile = Stage("l", "analog_mvm", {"K": 512, "N": 512, "tiles": 1}, (), "tile:0")
    assert tile_token_ns(tile, arch) == pytest.approx(382.0)
    assert stage_ns(tile, 10, arch) == pytest.approx(3820.0)
    # DMA at 8 B/cycle and 500 MHz: 4096 B = 512 cycles + 16 set-up cycles.
    assert transfer_ns(4096, arch) == pytest.approx((512 + 16) * 2.0)


def test_pipeline_matches_flow_shop_formula() -> None:
    """Identical chunks through a linear pipeline: sum of one chunk's stages + (n-1) x slowest."""
    arch = load_arch("paper-512")
    stages = [
        Stage("l0", "analog_mvm", {"K": 256, "N": 256, "tiles": 1}, (), "tile:0"),
        Stage("l0.bias", "bias_add", {"N": 256}, ("l0",), "cluster:0"),
        Stage("l0.act", "gelu_erf", {"N": 256}, ("l0.bias",), "cluster:0"),
    ]
    tokens, chunk = 96, 16
    tile = stage_ns(stages[0], chunk, arch)
    move = transfer_ns(chunk * 256 * 2, arch)
    digital = stage_ns(stages[1], chunk, arch) + stage_ns(stages[2], chunk, arch)
    n = tokens // chunk
    both = schedule(stages, tokens, arch, strategy="both", chunk=chunk)
    expected = tile + move + digital + (n - 1) * max(tile, move, digital)
    assert both.makespan_ns == pytest.approx(expected)
    serial = schedule(stages, tokens, arch, strategy="serial", chunk=chunk)
    assert serial.makespan_ns == pytest.approx(n * (tile + move + digital))
    # Energy: busy time x HARP power (0.07 W tile, 0.192 W PMCA, the DMA core 1/9 of it).
    joules = n * (tile * 0.07 + digital * 0.192 + move * 0.192 / 9)
    assert serial.energy_nj == pytest.approx(joules)
    assert both.energy_nj == pytest.approx(joules)


def two_layer_model() -> list[Stage]:
    first = lora_layer(k=128, n=128, index=0)
    second = lora_layer(k=128, n=128, index=1, src=first[-1].name)
    return [*first, *second]


def test_strategies_bounds_and_auto() -> None:
    arch = load_arch("paper-512", overrides=["tile.integration_time_ns=256"])
    stages = two_layer_model()
    found = {name: schedule(stages, 128, arch, strategy=name) for name in STRATEGIES}
    for s in found.values():
        assert s.lower_bound_ns <= s.makespan_ns * (1 + 1e-12)
        assert s.gap >= -1e-12
        assert all(0.0 <= u.utilisation <= 1.0 + 1e-12 for u in s.units)
        # No unit runs two tasks at once.
        for unit in {slot.unit for slot in s.slots}:
            spans = sorted((x.start_ns, x.end_ns) for x in s.slots if x.unit == unit)
            assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans))
    assert found["both"].makespan_ns < found["cross"].makespan_ns < found["serial"].makespan_ns
    assert found["intra"].makespan_ns < found["serial"].makespan_ns
    auto = schedule(stages, 128, arch)
    assert auto.makespan_ns == min(s.makespan_ns for s in found.values())


def test_more_clusters_hide_a_slow_adapter() -> None:
    # A 512-input LoRA costs ~2.5x the tile per token at 128 ns: one cluster cannot keep up,
    # three can, leaving the tile as the bottleneck (makespan -> tokens x tile time).
    arch = load_arch("paper-512", overrides=["tile.integration_time_ns=128"])
    stages = lora_layer(k=512, n=128)
    analog = 320 * tile_token_ns(stages[0], arch)
    one = schedule(stages, 320, arch, clusters_per_tile=1)
    three = schedule(stages, 320, arch, clusters_per_tile=3)
    assert one.makespan_ns > 2 * analog
    assert analog < three.makespan_ns < 1.04 * analog


def test_tcdm_overflow_refused() -> None:
    arch = load_arch("paper-512")
    with pytest.raises(AimccError, match="TCDM"):
        schedule(lora_layer(), 512, arch, chunk=256)
    with pytest.raises(AimccError, match="TCDM"):
        schedule(lora_layer(k=70000, n=128), 64, arch)


def test_trace_and_gantt(tmp_path) -> None:
    arch = load_arch("paper-512")
    s = schedule(two_layer_model(), 64, arch, clusters_per_tile=2)
    trace = to_chrome_trace(s)
    text = json.dumps(trace, sort_keys=True)
    assert text == json.dumps(
        to_chrome_trace(schedule(two_layer_model(), 64, arch, clusters_per_tile=2)), sort_keys=True
    )
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(s.slots)
    assert max(e["ts"] + e["dur"] for e in spans) == pytest.approx(s.makespan_ns / 1e3)
    path = tmp_path / "gantt.png"
    plot_gantt(s, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timelines_keep_each_strategy_constraint() -> None:
    """The definitions in docs/SCHEDULING.md, checked on the timeline of each strategy."""
    arch = load_arch("paper-512", overrides=["tile.integration_time_ns=256"])
    stages = two_layer_model()

    def layer(slot) -> int:  # a transfer belongs to the layer it feeds
        unit = slot.name.rpartition("->")[2] if slot.kind == "transfer" else slot.unit
        return int(unit.partition(":")[2].partition(".")[0])

    def overlap(a, b) -> bool:
        return a.start_ns < b.end_ns - 1e-9 and b.start_ns < a.end_ns - 1e-9

    for lanes in (1, 2):
        found = {
            name: schedule(stages, 64, arch, strategy=name, clusters_per_tile=lanes, chunk=8)
            for name in STRATEGIES
        }
        # serial: one task at a time, and never idle while one is ready (non-delay).
        serial = found["serial"].slots
        assert not any(overlap(a, b) for a, b in itertools.combinations(serial, 2))
        assert found["serial"].makespan_ns == pytest.approx(
            sum(s.end_ns - s.start_ns for s in serial)
        )
        # cross: the units of one layer never overlap one another.
        cross = found["cross"].slots
        assert not any(
            overlap(a, b) for a, b in itertools.combinations(cross, 2) if layer(a) == layer(b)
        )
        assert any(overlap(a, b) for a, b in itertools.combinations(cross, 2))
        # intra: layer 1 starts after every task of layer 0 (which it reads) has ended.
        intra = found["intra"].slots
        first_of_1 = min(s.start_ns for s in intra if layer(s) == 1)
        assert first_of_1 >= max(s.end_ns for s in intra if layer(s) == 0) - 1e-9
