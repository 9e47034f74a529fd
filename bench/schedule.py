"""Cost model and scheduler against the paper: calibration ratios, then the hybrid layer's slowdown.

Run: python bench/schedule.py [--arch paper-512] [--trace DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aimcc.arch import Arch, load_arch
from aimcc.cost import Schedule, Stage, plot_gantt, schedule, stage_ns, tcdm_bytes, to_chrome_trace

# docs/REFERENCES.md "Calibration data" (Li et al., arXiv 2411.17367): best chunk, PMCA / tile;
# with a good pipeline the hybrid layer is ~4 % slower than the fully analog one.
PAPER_RATIO = {128.0: (128, 1.04), 256.0: (8, 0.63), 512.0: (8, 0.32)}
PAPER_SLOWDOWN = 1.04
SEQUENCE = 320


def lora_layer(k: int, n: int, rank: int = 8) -> list[Stage]:
    return [
        Stage("fc", "analog_mvm", {"K": k, "N": n, "tiles": 1}, (), "tile:0"),
        Stage("fc.lora_xa", "lora_xa", {"K": k, "R": rank}, (), "cluster:0"),
        Stage("fc.lora_b", "lora_b_add", {"R": rank, "N": n}, ("fc", "fc.lora_xa"), "cluster:0"),
    ]


def best_chunk(stages: list[Stage], arch: Arch) -> int:
    """The paper's "best t": highest long-sequence throughput, smaller chunk on ties."""
    tile, *digital = stages
    capacity = arch.cluster.tcdm_kib * 1024
    chunks = [arch.cluster.compute_cores * 2**i for i in range(10)]
    chunks = [t for t in chunks if sum(tcdm_bytes(s, t, arch) for s in digital) <= capacity]

    def per_token(t: int) -> float:
        cluster = sum(stage_ns(s, t, arch) for s in digital)
        return max(stage_ns(tile, t, arch), cluster) / t

    return min(chunks, key=lambda t: (round(per_token(t), 6), t))


def calibration(arch_name: str) -> None:
    print("128x128 layer, LoRA rank 8: PMCA time / tile time for one chunk")
    print(f"{'t_int':>6} {'paper t':>8} {'paper':>6} {'model t':>8} {'model':>6} {'err':>6}")
    for t_int, (paper_t, paper) in PAPER_RATIO.items():
        arch = load_arch(arch_name, overrides=[f"tile.integration_time_ns={t_int}"])
        stages = lora_layer(128, 128)
        t = best_chunk(stages, arch)
        ratio = sum(stage_ns(s, t, arch) for s in stages[1:]) / stage_ns(stages[0], t, arch)
        error = ratio / paper - 1
        print(f"{t_int:>6.0f} {paper_t:>8} {paper:>6.2f} {t:>8} {ratio:>6.3f} {error:>+6.1%}")


def slowdown(arch_name: str, trace: Path | None) -> None:
    print(f"\n512x128 layer (K=512 in, N=128 out), LoRA rank 8, {SEQUENCE} tokens: hybrid / analog")
    header = ("t_int", "setting", "ratio", "chunk", "strategy", "gap", "uJ")
    print("{:>6} {:<26} {:>6} {:>6} {:>8} {:>6} {:>7}".format(*header))
    for t_int in PAPER_RATIO:
        arch = load_arch(arch_name, overrides=[f"tile.integration_time_ns={t_int}"])
        stages = lora_layer(512, 128)
        analog = schedule(stages[:1], SEQUENCE, arch).makespan_ns
        rows: list[tuple[str, Schedule]] = [
            ("paper: 1 cluster, intra", schedule(stages, SEQUENCE, arch, strategy="intra"))
        ]
        for lanes in (1, 2, 3, 4):
            rows.append(
                (
                    f"auto, {lanes} cluster(s)/tile",
                    schedule(stages, SEQUENCE, arch, clusters_per_tile=lanes),
                )
            )
        best = min(rows, key=lambda r: (r[1].makespan_ns, r[1].clusters_per_tile))
        for label, s in [*rows, ("best", best[1])]:
            print(
                f"{t_int:>6.0f} {label:<26} {s.makespan_ns / analog:>6.3f} "
                f"{s.chunk_per_layer[0]:>6} {s.strategy:>8} {s.gap:>6.1%} {s.energy_nj / 1e3:>7.2f}"
            )
        verdict = "beats" if best[1].makespan_ns / analog < PAPER_SLOWDOWN else "misses"
        print(f"{'':>6} best {verdict} the paper's ~{PAPER_SLOWDOWN:.2f}: {best[0]}")
        if trace is not None:
            trace.mkdir(parents=True, exist_ok=True)
            stem = trace / f"lora512x128_{t_int:.0f}ns"
            stem.with_suffix(".json").write_text(json.dumps(to_chrome_trace(best[1]), indent=1))
            plot_gantt(best[1], stem.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="paper-512")
    parser.add_argument("--trace", type=Path, help="write Chrome traces and Gantt charts here")
    args = parser.parse_args()
    start = time.perf_counter()
    calibration(args.arch)
    slowdown(args.arch, args.trace)
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
