"""What the user sees: IR dumps, the compile summary and run outputs, rendered with rich."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
from rich import box
from rich.console import Console, JustifyMethod, RenderableType
from rich.highlighter import RegexHighlighter
from rich.rule import Rule
from rich.table import Table
from rich.text import Text
from rich.theme import Theme
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr

from aimcc.ir.aimc import AccumulateOp, ProgramOp, weight_key
from aimcc.ir.cluster import CallOp
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


ELLIPSIS = "…"
NAME_MIN = 12  # a shortened name keeps at least this many characters


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe(text: str) -> str:
    """Text from a file, fit for a terminal: control characters (escape sequences, bells)
    shown as escapes; wrap in ``rich.markup.escape`` too where it joins markup."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def shorten(text: str, width: int) -> str:
    """``text`` in ``width`` characters: its start and its end with '…' between, since
    names (stage, kernel, output) differ at both ends."""
    if len(text) <= width:
        return text
    head = max(width - 1, 0) - (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS[: max(width, 0)] + (text[len(text) - tail :] if tail > 0 else "")


def shorten_distinct(texts: Iterable[str], width: int) -> dict[str, str]:
    """Each text shortened to ``width``, or a little wider where two texts would look alike."""
    done: dict[str, str] = {}
    pending = set(texts)
    while pending:
        short = {t: shorten(t, width) for t in pending}
        seen = Counter([*short.values(), *done.values()])
        for t, s in short.items():
            if seen[s] == 1 or s == t:
                done[t] = s
        pending -= done.keys()
        width += 1
    return done


@dataclass(frozen=True)
class Col:
    """A column of a :class:`FitTable`. ``fit``: ``keep`` (never narrower than its widest
    cell), ``name`` (cells shortened in the middle, down to NAME_MIN) or ``wrap`` (cells
    folded at spaces). Headers are never cut; an ``optional`` column (one whose facts other
    columns repeat) is left out when the table would not fit otherwise."""

    header: str
    justify: JustifyMethod = "left"
    fit: Literal["keep", "name", "wrap"] = "keep"
    style: str | None = None
    optional: bool = False  # left out when the table does not fit otherwise


Cell = str | Text


class FitTable:
    """A table that fits the console's width (e.g. COLUMNS=80, or 80 when piped to a file).

    Name cells are shortened in the middle (start…end, distinct names stay distinct), wrap
    cells fold, headers stay whole (so no two are cut to the same prefix), notes go under the
    table with a marker in the row, optional columns are left out, and columns that still do
    not fit move to a second table that repeats the first ``keys`` columns. Cells are plain
    text (no markup)."""

    def __init__(
        self, *columns: Col | str, title: str | None = None, header: bool = True, keys: int = 1
    ) -> None:
        self.columns = [c if isinstance(c, Col) else Col(c) for c in columns]
        self.title, self.header, self.keys = title, header, keys
        self.rows: list[tuple[list[Text], str | None]] = []
        self.notes: list[str] = []
        self._memo: dict[tuple[str, int, int], Any] = {}  # measurements, until a row is added

    def add_row(self, *cells: Cell, style: str | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(([c if isinstance(c, Text) else Text(safe(c)) for c in cells], style))
        self._memo.clear()

    def note(self, text: str) -> str:
        """The marker of a note printed under the table (one per distinct text)."""
        if text not in self.notes:
            self.notes.append(text)
        return f"[{self.notes.index(text) + 1}]"

    def print(self, out: Console | None = None) -> None:
        """Print to ``out`` (default: this module's console) at its width."""
        out = out or console
        for part in self.render(out.width):
            out.print(part, highlight=False)

    def render(self, width: int) -> list[RenderableType]:
        """The table (or tables, when columns had to move) and the notes, at most ``width``."""
        shown = list(range(len(self.columns)))
        required = [i for i in shown if not self.columns[i].optional]
        if self._widths(shown, width) is None and self._widths(required, width) is not None:
            for i in reversed(shown):  # leave out optional columns, the last first
                if self.columns[i].optional and self._widths(shown, width) is None:
                    shown.remove(i)
        keys, rest = shown[: self.keys], shown[self.keys :]
        groups: list[list[int]] = []
        if self._widths(shown, width) is not None or not rest:
            groups = [rest]
        else:
            for i in rest:
                if groups and self._widths([*keys, *groups[-1], i], width) is not None:
                    groups[-1].append(i)
                else:
                    groups.append([i])
        parts: list[RenderableType] = []
        for n, group in enumerate(groups):
            columns = [*keys, *group]
            widths = self._widths(columns, width) or [self._minimum(i) for i in columns]
            if self.title is not None:  # above the table, wrapped at the console's width
                more = " (continued)" if n else ""
                parts.append(Text(self.title + more, style="table.title", justify="left"))
            parts.append(self._table(columns, widths))
        parts += [Text(f"[{n}] {text}") for n, text in enumerate(self.notes, start=1)]
        return parts

    def _cells(self, i: int) -> list[Text]:
        return [cells[i] for cells, _ in self.rows]

    def _header_width(self, i: int) -> int:
        return max(len(line) for line in self.columns[i].header.split("\n"))

    def _natural(self, i: int) -> int:
        key = ("natural", i, 0)
        if key not in self._memo:
            self._memo[key] = max([self._header_width(i), *(c.cell_len for c in self._cells(i))])
        return self._memo[key]

    def _minimum(self, i: int) -> int:
        fit = self.columns[i].fit
        if fit == "name":
            return self._name_width(i, NAME_MIN)
        if fit == "wrap":
            key = ("words", i, 0)
            if key not in self._memo:
                words = [len(w) for c in self._cells(i) for w in c.plain.split()]
                self._memo[key] = max([self._header_width(i), *words])
            return self._memo[key]
        return self._natural(i)

    def _shortened(self, i: int, cap: int) -> dict[str, str]:
        key = ("short", i, cap)
        if key not in self._memo:
            self._memo[key] = shorten_distinct({c.plain for c in self._cells(i)}, cap)
        return self._memo[key]

    def _name_width(self, i: int, cap: int) -> int:
        return max([self._header_width(i), *map(len, self._shortened(i, cap).values())])

    def _widths(self, columns: Sequence[int], width: int) -> list[int] | None:
        """Column widths that fit ``width``: wrap columns fold first (nothing is lost), then
        names shorten, the widest first; None if even that is too wide."""
        budget = width - 2 * (len(columns) - 1)  # two spaces between columns
        widths = {i: self._natural(i) for i in columns}
        for fit in ("wrap", "name"):
            shrink = [i for i in columns if self.columns[i].fit == fit]
            if sum(widths.values()) <= budget or not shrink:
                continue
            for cap in range(max(widths[i] for i in shrink), -1, -1):
                for i in shrink:
                    if widths[i] > cap:
                        fitted = self._name_width(i, cap) if fit == "name" else cap
                        widths[i] = max(fitted, self._minimum(i))
                if sum(widths.values()) <= budget or all(
                    widths[i] == self._minimum(i) for i in shrink
                ):
                    break
        return list(widths.values()) if sum(widths.values()) <= budget else None

    def _table(self, columns: list[int], widths: list[int]) -> Table:
        table = Table(
            show_header=self.header,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for i, w in zip(columns, widths, strict=True):
            col = self.columns[i]
            table.add_column(
                col.header,
                justify=col.justify,
                width=w,
                no_wrap=col.fit != "wrap",
                overflow="fold" if col.fit == "wrap" else "ellipsis",
                style=col.style,
            )
        short = {
            i: self._shortened(i, w)
            for i, w in zip(columns, widths, strict=True)
            if self.columns[i].fit == "name"
        }
        for cells, style in self.rows:
            table.add_row(
                *(
                    Text(short[i][cells[i].plain], style=cells[i].style) if i in short else cells[i]
                    for i in columns
                ),
                style=style,
            )
        return table


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
    replicated_layers: int = 0  # layers the replicate pass copied
    copies: int = 0  # the copies it added (their tiles are counted in ``tiles``)
    copy_tiles: int = 0

    @property
    def utilisation(self) -> float:
        return self.tile_cells_used / self.tile_capacity if self.tile_capacity else 0.0


def placement_stats(comp: Compilation) -> PlacementStats:
    from aimcc.passes.schedule import replica_firsts  # the compiler's side only

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
            copies = len(replica_firsts(op))
            if copies:  # each copy holds the same slices on tiles of its own
                stats.replicated_layers += 1
                stats.copies += copies
                stats.copy_tiles += copies * len(op.partials)
                for partial in op.partials:
                    (r0, r1), (c0, c1) = (
                        partial.owner.program.row_range,
                        partial.owner.program.col_range,
                    )
                    stats.tile_cells_used += copies * (r1 - r0) * (c1 - c0)
        elif isinstance(op, KernelOp | CallOp):
            stats.kernels[op.kind.data if isinstance(op, KernelOp) else op.callee.data] += 1
            if op.cluster is not None:
                stats.clusters.add(op.cluster.value.data)
            digital_keys.update(a.owner.key.data for a in op.args if isinstance(a.owner, WeightOp))
    stats.tiles += stats.copy_tiles
    stats.tile_capacity = stats.tiles * tile.rows * tile.cols
    stats.analog_weights = sum(comp.ctx.weights[k].size for k in analog_keys)
    stats.digital_weights = sum(comp.ctx.weights[k].size for k in digital_keys)
    return stats


def print_compile_summary(
    comp: Compilation, files: dict[Path, int | None], wall_s: float | None = None
) -> None:
    stats = placement_stats(comp)
    arch = comp.arch
    table = _facts(f"{Path(comp.source).name} -> {comp.target} on {arch.name}")
    table.add_row("analog layers", str(stats.analog_layers))
    table.add_row(
        "tiles used / available",
        f"{stats.tiles} / {arch.system_tiles} ({arch.tile.rows}x{arch.tile.cols})",
    )
    table.add_row("tile utilisation", f"{stats.utilisation:.1%}" if stats.tiles else "-")
    if stats.copies:
        table.add_row(
            "weight replicas",
            f"+{stats.copies} copies of {stats.replicated_layers} layer(s) on "
            f"{stats.copy_tiles} tiles",
        )
    table.add_row("analog weights", _count(stats.analog_weights))
    table.add_row("digital weights", _count(stats.digital_weights))
    table.add_row(
        "digital kernels",
        f"{sum(stats.kernels.values())} on {len(stats.clusters)} of "
        f"{arch.system_clusters} clusters",
    )
    table.print()
    kinds = FitTable(Col("kernel kind", fit="name"), Col("calls", "right"), title="digital kernels")
    for kind, n in sorted(stats.kernels.items(), key=lambda kv: (-kv[1], kv[0])):
        kinds.add_row(kind, str(n))
    kinds.print()
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in comp.input_shapes.items())
    console.print(f"inputs: {shapes}", highlight=False)
    total = sum(comp.seconds.values())
    if wall_s is None:
        console.print(f"compiled in {total:.2f} s", highlight=False)
    else:  # what a stopwatch shows: start-up (imports) included
        console.print(f"compiled in {wall_s:.2f} s ({total:.2f} s in the passes)", highlight=False)
    for path, size in files.items():
        console.print(f"wrote {path}" + (f" ({_bytes(size)})" if size else ""), highlight=False)


def _facts(title: str) -> FitTable:
    """A two-column table of labelled facts, no header."""
    return FitTable(
        Col("", fit="wrap", style="bold"), Col("", "right", fit="wrap"), title=title, header=False
    )


def layer_tiles(comp: Compilation) -> dict[int, list[int]]:
    """Every analog layer's tiles, keyed by its first tile (the schedule's unit ``tile:i``),
    and every copy's (the replicate pass), keyed by the copy's first tile."""
    from aimcc.passes.schedule import replica_firsts

    layers = {}
    for op in comp.module.walk():
        if isinstance(op, AccumulateOp):
            ids = []
            for partial in op.partials:
                program = partial.owner.program  # an aimc.mvm reads its tile's aimc.program
                ids.append(program.tile_id.value.data)
            layers[ids[0]] = sorted(set(ids))
            for first in replica_firsts(op):
                layers[first] = list(range(first, first + len(ids)))
    return layers


def plot_schedule(comp: Compilation, out: str | Path | IO[bytes]) -> None:
    """The Gantt chart of the compiled schedule, titled model — target, arch: latency."""
    from aimcc.cost import plot_gantt

    s = comp.schedule
    assert s is not None
    latency = (
        f"{s.makespan_ns / 1e6:.2f} ms"
        if s.makespan_ns >= 1e6
        else (f"{s.makespan_ns / 1e3:.1f} µs")
    )
    title = f"{Path(comp.source).stem} — {comp.target}, {comp.arch.name}: {latency}"
    plot_gantt(s, out, title=title, tiles=layer_tiles(comp))


def has_lora(comp: Compilation) -> bool:
    return any(
        (isinstance(op, KernelOp) and op.kind.data == "lora")
        or (isinstance(op, CallOp) and op.callee.data == "lora")
        for op in comp.module.walk()
    )


def print_schedule(
    comp: Compilation, timeline: Schedule | None, baseline: Schedule | None, top: int = 8
) -> None:
    """Latency, energy, utilisation, the gap to the lower bound, the busiest layers, LoRA cost.

    ``baseline`` is the same model compiled ``--target aimc`` (LoRA merged into the tiles),
    when ``--compare aimc`` asked for it.
    """
    if timeline is None:
        console.print("schedule: nothing to run on the chip", highlight=False)
        return
    s = timeline
    chunks = sorted(set(s.chunk_per_layer.values()))
    table = _facts(
        f"schedule: {s.strategy} pipeline, {s.clusters_per_tile} cluster(s) per "
        f"tile, chunks of {'/'.join(map(str, chunks))} tokens"
    )
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
    _chip_rows(table, comp, s)
    from aimcc.passes.replicate import UNREPLICATED_ATTR

    copies = layer_copies(comp)
    before = comp.module.attributes.get(UNREPLICATED_ATTR)
    if copies and isinstance(before, IntegerAttr):
        counts = Counter(len(c) + 1 for c in copies.values())
        shape = ", ".join(f"{n} layer(s) x{k}" for k, n in sorted(counts.items()))
        table.add_row("weight replicas", f"{shape}; {_ns(before.value.data)} without")
    busiest = max(s.units, key=lambda u: u.busy_ns)
    table.add_row("lower bound", f"{_ns(s.lower_bound_ns)} (gap {s.gap:.1%})")
    table.add_row("  busiest unit", f"{_ns(s.busy_bound_ns)} ({busiest.unit})")
    table.add_row("  critical path", _ns(s.critical_path_ns))
    table.add_row("  chain, units serial", _ns(s.chain_bound_ns))
    if comp.target == "hybrid":
        if not has_lora(comp):
            table.add_row("LoRA overhead", "no LoRA adapters")
        elif baseline is None:
            table.add_row("LoRA overhead vs aimc", "not compiled (--compare aimc)")
        else:
            table.add_row(
                "LoRA overhead vs aimc",
                f"{s.makespan_ns / baseline.makespan_ns - 1:+.1%} latency, "
                f"{s.energy_nj / baseline.energy_nj - 1:+.1%} energy",
            )
    table.print()
    layers = _layer_rows(s, {t: layer for layer, c in copies.items() for t in c})
    shown = sorted(layers, key=lambda r: -max(r[2], r[3]))[:top]
    rows = FitTable(
        Col("layer", "right"),
        Col("first stage", fit="name"),
        Col("tile", "right"),
        Col("cluster", "right"),
        Col("dma", "right"),
        Col("chunk", "right"),
        Col("main kernel", fit="name"),
        title=f"busiest layers ({len(shown)} of {len(layers)}, busy time)",
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
    rows.print()


def _chip_rows(table: Any, comp: Compilation, s: Schedule) -> None:
    """A multi-chip system: how the chip count was chosen, each chip's utilisation, and the
    share of latency and energy the chip-to-chip transfers take."""
    arch = comp.arch
    if arch.chips == 1:
        return
    how = comp.module.attributes.get("aimc.chips")
    note = "automatic: the fewest that fit" if how == StringAttr("automatic") else "--chips"
    table.add_row("chips (pipeline)", f"{arch.chips} x {arch.tile.count} tiles ({note})")
    runs: list[tuple[int, int, str]] = []  # chips in a row that read the same: one row
    for chip in range(arch.chips):
        parts = []
        for kind in ("tile", "cluster"):
            use = [
                u.utilisation
                for u in s.units
                if u.unit.startswith(kind + ":") and arch.chip_of(u.unit) == chip
            ]
            if use:
                parts.append(f"{kind}s {sum(use) / len(use):.1%}")
        text = ", ".join(parts) or "idle"
        if runs and runs[-1][2] == text:
            runs[-1] = (runs[-1][0], chip, text)
        else:
            runs.append((chip, chip, text))
    for first, last, text in runs:
        which = f"chip {first}" if first == last else f"chips {first}-{last}"
        table.add_row(f"  {which} busy", text)
    links = [u for u in s.units if u.unit.startswith("link:")]
    busy = sum(u.busy_ns for u in links)
    energy = sum(u.energy_nj for u in links)
    share = busy / s.makespan_ns
    table.add_row("  chip-to-chip links", f"{_ns(busy)} busy, {share:.1%} of latency")
    table.add_row("  link energy", f"{energy / 1e3:.2f} uJ, {energy / s.energy_nj:.1%} of energy")


def layer_copies(comp: Compilation) -> dict[int, list[int]]:
    """Replicated analog layers: first tile -> the first tile of each copy (unit indices)."""
    from aimcc.passes.schedule import replica_firsts

    copies = {}
    for op in comp.module.walk():
        if isinstance(op, AccumulateOp) and replica_firsts(op):
            first = op.partials[0].owner.program.tile_id
            copies[first.value.data] = replica_firsts(op)
    return copies


def _layer_rows(
    s: Schedule, copy_of: dict[int, int] | None = None
) -> list[tuple[int, str, float, float, float, str]]:
    """Per layer (tile/cluster pair): first stage, busy time per unit kind, main cluster kind;
    the tiles of a layer's copies (``copy_of``: their unit index -> the layer's) count as the
    layer's."""
    busy: dict[int, dict[str, float]] = {}
    first: dict[tuple[int, str], str] = {}
    kinds: dict[int, Counter[str]] = {}
    for slot in s.slots:
        kind, _, index = slot.unit.partition(":")
        if kind == "link":  # chip-to-chip: its own rows in the summary
            continue
        layer = int(index.partition(".")[0])
        if kind == "tile":
            layer = (copy_of or {}).get(layer, layer)
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
    table = FitTable(
        Col("name", fit="name"),
        Col("shape", fit="wrap"),
        *(Col(s, "right") for s in ("mean", "std", "min", "max")),
        title=title,
    )
    for name, value in outputs.items():
        v = value.astype(np.float64) if value.size else np.zeros(1)
        table.add_row(
            name,
            f"{'x'.join(map(str, value.shape)) or 'scalar'} {value.dtype}",
            *(f"{x:.4g}" for x in (v.mean(), v.std(), v.min(), v.max())),
        )
    table.print()
    if saved:
        console.print(f"wrote {saved}", highlight=False)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
