"""What the user sees: IR dumps, the compile summary and run outputs, rendered with rich."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.highlighter import RegexHighlighter
from rich.rule import Rule
from rich.table import Table
from rich.theme import Theme
from xdsl.dialects.builtin import ModuleOp

from aimcc.ir.aimc import AccumulateOp, ProgramOp, weight_key
from aimcc.ir.digital import KernelOp
from aimcc.ir.graph import WeightOp

if TYPE_CHECKING:
    from aimcc.compiler import Compilation
    from aimcc.cost import Schedule
    from aimcc.runtime.analog import NoiseSpec


class IRHighlighter(RegexHighlighter):
    """MLIR-style syntax colouring (pygments has no MLIR lexer)."""

    base_style = "ir."
    highlights = [  # noqa: RUF012 (rich reads this class attribute)
        r"(?P<value>%[\w.#]+)",
        r"(?P<op>\b(graph|nn|aimc|digital|func|builtin)\.\w+)",
        r"(?P<type>(tensor|!aimc\.tile)<[^>]*>)",
        r"(?P<string>\"[^\"]*\")",
        r"(?P<symbol>@\w+)",
    ]


THEME = Theme(
    {
        "ir.value": "cyan",
        "ir.op": "bold magenta",
        "ir.type": "green",
        "ir.string": "yellow",
        "ir.symbol": "bold blue",
    }
)
console = Console(highlighter=IRHighlighter(), theme=THEME)


def print_ir(stage: str, module: ModuleOp) -> None:
    console.print(Rule(f"IR after {stage}"))
    console.print(str(module), highlight=True, soft_wrap=True)


@dataclass
class PlacementStats:
    """What the partitioning and placement did, counted from the final IR."""

    analog_layers: int = 0
    tiles: int = 0
    tile_capacity: int = 0
    tile_cells_used: int = 0
    analog_weights: int = 0
    digital_weights: int = 0
    kernels: Counter[str] = field(default_factory=Counter)
    clusters: set[int] = field(default_factory=set)

    @property
    def utilisation(self) -> float:
        return self.tile_cells_used / self.tile_capacity if self.tile_capacity else 0.0


def placement_stats(comp: Compilation) -> PlacementStats:
    stats = PlacementStats()
    analog_keys: set[str] = set()
    digital_keys: set[str] = set()
    tile = comp.arch.tile
    for op in comp.module.walk():
        if isinstance(op, ProgramOp):
            (r0, r1), (c0, c1) = op.row_range, op.col_range
            stats.tiles += 1
            stats.tile_cells_used += (r1 - r0) * (c1 - c0)
            analog_keys.add(weight_key(op))
        elif isinstance(op, AccumulateOp):
            stats.analog_layers += 1
            if op.grid_shape[0] > 1:
                stats.kernels["accumulate"] += 1
        elif isinstance(op, KernelOp):
            stats.kernels[op.kind.data] += 1
            if op.cluster is not None:
                stats.clusters.add(op.cluster.value.data)
            digital_keys.update(a.owner.key.data for a in op.args if isinstance(a.owner, WeightOp))
    stats.tile_capacity = stats.tiles * tile.rows * tile.cols
    stats.analog_weights = sum(comp.ctx.weights[k].size for k in analog_keys)
    stats.digital_weights = sum(comp.ctx.weights[k].size for k in digital_keys)
    return stats


def print_compile_summary(
    comp: Compilation, files: dict[Path, int | None], wall_s: float | None = None
) -> None:
    stats = placement_stats(comp)
    arch = comp.arch
    table = Table(
        title=f"{Path(comp.source).name} -> {comp.target} on {arch.name}",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("analog layers", str(stats.analog_layers))
    table.add_row(
        "tiles used / available",
        f"{stats.tiles} / {arch.tile.count} ({arch.tile.rows}x{arch.tile.cols})",
    )
    table.add_row("tile utilisation", f"{stats.utilisation:.1%}" if stats.tiles else "-")
    table.add_row("analog weights", _count(stats.analog_weights))
    table.add_row("digital weights", _count(stats.digital_weights))
    table.add_row(
        "digital kernels",
        f"{sum(stats.kernels.values())} on {len(stats.clusters)} of {arch.cluster.count} clusters",
    )
    console.print(table, highlight=False)
    kinds = Table("kernel kind", "calls", title="digital kernels", title_justify="left")
    for kind, n in sorted(stats.kernels.items(), key=lambda kv: (-kv[1], kv[0])):
        kinds.add_row(kind, str(n))
    console.print(kinds, highlight=False)
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in comp.input_shapes.items())
    console.print(f"inputs: {shapes}", highlight=False)
    total = sum(comp.seconds.values())
    if wall_s is None:
        console.print(f"compiled in {total:.2f} s", highlight=False)
    else:  # what a stopwatch shows: start-up (imports) included
        console.print(f"compiled in {wall_s:.2f} s ({total:.2f} s in the passes)", highlight=False)
    for path, size in files.items():
        console.print(f"wrote {path}" + (f" ({_bytes(size)})" if size else ""), highlight=False)


def has_lora(comp: Compilation) -> bool:
    return any(isinstance(op, KernelOp) and op.kind.data == "lora" for op in comp.module.walk())


def print_schedule(
    comp: Compilation, timeline: Schedule | None, baseline: Schedule | None, top: int = 8
) -> None:
    """Latency, energy, utilisation, the gap to the lower bound, the busiest layers, LoRA cost.

    ``baseline`` is the same model compiled ``--target aimc`` (LoRA merged into the tiles).
    """
    if timeline is None:
        console.print("schedule: nothing to run on the chip", highlight=False)
        return
    s = timeline
    chunks = sorted(set(s.chunk_per_layer.values()))
    table = Table(
        title=f"schedule: {s.strategy} pipeline, {s.clusters_per_tile} cluster(s) per "
        f"tile, chunks of {'/'.join(map(str, chunks))} tokens",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row(f"latency ({s.tokens} tokens)", _ns(s.makespan_ns))
    table.add_row("energy", f"{s.energy_nj / 1e3:.2f} uJ")
    # a layer's tiles work in parallel and are one unit of the schedule
    for kind, label in (("tile", "analog layers"), ("cluster", "clusters")):
        use = [u.utilisation for u in s.units if u.unit.startswith(kind)]
        if use:
            table.add_row(
                f"{kind}s busy",
                f"{sum(use) / len(use):.1%} mean, {max(use):.1%} max ({len(use)} {label})",
            )
    busiest = max(s.units, key=lambda u: u.busy_ns)
    table.add_row("lower bound", f"{_ns(s.lower_bound_ns)} (gap {s.gap:.1%})")
    table.add_row("  busiest unit", f"{_ns(s.busy_bound_ns)} ({busiest.unit})")
    table.add_row("  critical path", _ns(s.critical_path_ns))
    table.add_row("  chain, units serial", _ns(s.chain_bound_ns))
    if comp.target == "hybrid":
        if baseline is None:
            table.add_row("LoRA overhead", "no LoRA adapters")
        else:
            table.add_row(
                "LoRA overhead vs aimc",
                f"{s.makespan_ns / baseline.makespan_ns - 1:+.1%} latency, "
                f"{s.energy_nj / baseline.energy_nj - 1:+.1%} energy",
            )
    console.print(table, highlight=False)
    layers = _layer_rows(s)
    shown = sorted(layers, key=lambda r: -max(r[2], r[3]))[:top]
    rows = Table(
        "layer",
        "first stage",
        "tile",
        "cluster",
        "dma",
        "chunk",
        "main kernel",
        title=f"busiest layers ({len(shown)} of {len(layers)}, busy time)",
        title_justify="left",
    )
    for layer, name, tile, cluster, dma, kind in shown:
        rows.add_row(
            str(layer),
            name,
            _ns(tile),
            _ns(cluster),
            _ns(dma),
            str(s.chunk_per_layer.get(layer, "-")),
            kind,
        )
    console.print(rows, highlight=False)


def _layer_rows(s: Schedule) -> list[tuple[int, str, float, float, float, str]]:
    """Per layer (tile/cluster pair): first stage, busy time per unit kind, main cluster kind."""
    busy: dict[int, dict[str, float]] = {}
    first: dict[tuple[int, str], str] = {}
    kinds: dict[int, Counter[str]] = {}
    for slot in s.slots:
        kind, _, index = slot.unit.partition(":")
        layer = int(index.partition(".")[0])
        busy.setdefault(layer, {"tile": 0.0, "cluster": 0.0, "dma": 0.0})
        busy[layer][kind] += slot.end_ns - slot.start_ns
        first.setdefault((layer, kind), slot.name)  # slots come in time order
        if kind == "cluster":
            kinds.setdefault(layer, Counter())[slot.kind] += slot.end_ns - slot.start_ns
    return [
        (
            layer,
            first.get((layer, "tile"), first.get((layer, "cluster"), "-")),
            b["tile"],
            b["cluster"],
            b["dma"],
            kinds[layer].most_common(1)[0][0] if layer in kinds else "-",
        )
        for layer, b in sorted(busy.items())
    ]


def _ns(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms" if ns >= 1e6 else f"{ns / 1e3:.2f} us"


def print_outputs(outputs: dict[str, np.ndarray], spec: NoiseSpec, saved: Path | None) -> None:
    title = f"outputs ({spec.model} tiles" + (
        f", t = {spec.t_inference_s:g} s)" if spec.model == "pcm" else ")"
    )
    table = Table(
        "name", "shape", "dtype", "mean", "std", "min", "max", title=title, title_justify="left"
    )
    for name, value in outputs.items():
        v = value.astype(np.float64) if value.size else np.zeros(1)
        table.add_row(
            name,
            "x".join(map(str, value.shape)),
            str(value.dtype),
            *(f"{x:.4g}" for x in (v.mean(), v.std(), v.min(), v.max())),
        )
    console.print(table, highlight=False)
    if saved:
        console.print(f"wrote {saved}", highlight=False)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
