"""The schedule as a Gantt chart: a row per physical tile and per cluster, a colour per kind.

The colours are fixed per kind of work (not per chart), so two charts compare at a glance.
DMA transfers are drawn as a thin strip under the bars of the cluster whose engine moves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from aimcc.cost.model import ANALOG, DIGITAL_KINDS
from aimcc.cost.pipeline import Schedule, Slot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TRANSFER = "transfer"
# What the chart shows for each stage kind, in legend order, with its colour (one definition).
KIND_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "analog MVM": ("#1f77b4", (ANALOG,)),
    "partial sums": ("#aec7e8", ("accumulate",)),
    "LoRA": ("#d62728", ("lora_xa", "lora_b_add")),
    "digital matmul": ("#8c564b", ("matmul",)),
    "attention QK, AV": ("#ff7f0e", ("qk", "av")),
    "softmax": ("#ffbb78", ("softmax",)),
    "norm": ("#2ca02c", ("layer_norm", "rms_norm")),
    "activation": ("#9467bd", ("gelu_erf", "gelu_tanh", "silu")),
    "add, bias": ("#17becf", ("add", "bias_add")),
    "embedding": ("#bcbd22", ("gather",)),
    "generic ONNX": ("#7f7f7f", ("elementwise",)),
    "DMA transfer": ("#e377c2", (TRANSFER,)),
}
GROUP_OF = {kind: group for group, (_, kinds) in KIND_GROUPS.items() for kind in kinds}
COLOUR_OF = {kind: KIND_GROUPS[group][0] for kind, group in GROUP_OF.items()}
assert set(GROUP_OF) == {ANALOG, TRANSFER, *DIGITAL_KINDS}, "a stage kind has no colour"


def _unit_key(unit: str) -> tuple[int, int]:
    index, _, lane = unit.partition(":")[2].partition(".")
    return int(index), int(lane or 0)


def gantt_rows(
    schedule: Schedule, tiles: Mapping[int, Sequence[int]] | None = None
) -> list[tuple[str, list[Slot]]]:
    """(label, slots) per row: every physical tile, then every cluster (with its DMA), then
    every chip-to-chip link.

    ``tiles`` maps a layer's unit index (its first tile) to all its tile ids; a layer's tiles
    compute the same chunks at the same time. Without it, a layer is one row."""
    by_unit: dict[str, list[Slot]] = {}
    for s in schedule.slots:
        kind, _, rest = s.unit.partition(":")
        unit = f"cluster:{rest}" if kind == "dma" else s.unit
        by_unit.setdefault(unit, []).append(s)
    rows: list[tuple[str, list[Slot]]] = []
    for unit in sorted((u for u in by_unit if u.startswith("tile:")), key=_unit_key):
        first = _unit_key(unit)[0]
        rows += [(f"tile {t}", by_unit[unit]) for t in (tiles or {}).get(first, [first])]
    for unit in sorted((u for u in by_unit if u.startswith("cluster:")), key=_unit_key):
        rows.append((f"cluster {unit.partition(':')[2]}", by_unit[unit]))
    for unit in sorted((u for u in by_unit if u.startswith("link:")), key=_unit_key):
        index = int(unit.partition(":")[2])  # chip-to-chip transfers: a strip of their own
        rows.append((f"link {index}-{index + 1}", by_unit[unit]))
    return rows


def plot_gantt(
    schedule: Schedule,
    path: str | Path | IO[bytes],
    *,
    title: str | None = None,
    tiles: Mapping[int, Sequence[int]] | None = None,
) -> None:
    """Write the chart as a PNG (Agg, no display). ``title`` defaults to the latency."""
    fig = gantt_figure(schedule, title=title, tiles=tiles)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def gantt_figure(
    schedule: Schedule,
    *,
    title: str | None = None,
    tiles: Mapping[int, Sequence[int]] | None = None,
) -> Figure:
    """The chart as a matplotlib figure (see :func:`gantt_rows` for ``tiles``)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = gantt_rows(schedule, tiles)
    ms = schedule.makespan_ns >= 1e6
    scale, unit = (1e6, "ms") if ms else (1e3, "µs")
    fig = Figure(figsize=(12, 1.6 + 0.22 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    for y, (_, slots) in enumerate(rows):
        for kinds, low, height in (
            ([k for k in COLOUR_OF if k != TRANSFER], y - 0.4, 0.6),
            ([TRANSFER], y + 0.25, 0.15),
        ):
            for kind in kinds:
                spans = [
                    (s.start_ns / scale, (s.end_ns - s.start_ns) / scale)
                    for s in slots
                    if s.kind == kind
                ]
                if spans:  # an edge in the same colour keeps sub-pixel bars visible
                    colour = COLOUR_OF[kind]
                    ax.broken_barh(
                        spans, (low, height), facecolors=colour, edgecolors=colour, linewidth=0.8
                    )
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(-0.005 * schedule.makespan_ns / scale, 1.005 * schedule.makespan_ns / scale)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"schedule: {schedule.makespan_ns / scale:.1f} {unit}")
    shown = {GROUP_OF[s.kind] for s in schedule.slots}
    ax.legend(
        handles=[Patch(color=c, label=g) for g, (c, _) in KIND_GROUPS.items() if g in shown],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    return fig
