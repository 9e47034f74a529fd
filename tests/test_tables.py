"""Tables at 80 columns and the plots a researcher reads (issue 14, items 4 and 9).

Every table is rendered through the commands' own code paths, in a subprocess with
COLUMNS=80 and with its output piped to a file (no terminal: rich's 80 columns), and checked:
no line is wider than 80, no header is cut (so none can be cut to another's prefix), and long
names keep their start and end around '…'.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import model_path
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from aimcc import cost, report
from aimcc.arch import load_arch
from aimcc.compiler import compile_model
from aimcc.cost import Schedule, Slot
from aimcc.cost.gantt import COLOUR_OF, gantt_figure, gantt_rows
from aimcc.evaluate import EvalResult, Metric, drift_figure, time_axis
from aimcc.ir.aimc import AccumulateOp, ProgramOp
from aimcc.passes.schedule import replica_firsts
from aimcc.report import Col, FitTable, shorten, shorten_distinct

OUTPUTS = (
    "encoder.layer.0.attention.output.dense_projection",
    "encoder.layer.0.attention.output.dense_activation",
)


def _two_outputs_model(path: Path) -> Path:
    """One analog layer and a Tanh, with two long output names that share a long prefix."""
    x = helper.make_tensor_value_info("hidden_states_input", TensorProto.FLOAT, [1, 16, 64])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16, 64]) for n in OUTPUTS]
    w = np.random.default_rng(0).normal(0, 0.1, (64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["hidden_states_input", "W"], [OUTPUTS[0]]),
        helper.make_node("Tanh", [OUTPUTS[0]], [OUTPUTS[1]]),
    ]
    graph = helper.make_graph(nodes, "g", [x], outs, [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def aimcc(*args: str, cwd: Path, columns: str | None) -> str:
    """The command's stdout, written to a file as `aimcc ... > out.txt` would."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    out = cwd / "out.txt"
    with out.open("w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "aimcc.cli", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr
    return out.read_text()


RULE = set("─━┡┩╇┼├┤╞╡╪┝┥┿")
CELL_GAP = r"\s{2,}|\s*[│┃]\s*"  # two spaces, or a box's vertical line


def header_rows(text: str) -> list[list[str]]:
    """The header row of each table: the line above a rule."""
    lines = text.splitlines()
    return [
        [c for c in re.split(CELL_GAP, lines[i - 1].strip()) if c]
        for i, line in enumerate(lines)
        if line.strip() and set(line.strip()) <= RULE
    ]


def check_80(text: str, names: tuple[str, ...] = ()) -> list[list[str]]:
    """Lines fit 80, headers are whole and distinct, '…' sits inside a name (never at its end),
    and each of ``names`` shows as itself or as its start…end. Returns the header rows."""
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, max(lines, key=len)
    headers = header_rows(text)
    for cells in headers:
        assert not any("…" in c for c in cells), f"a header is cut: {cells}"
        assert len(set(cells)) == len(cells), f"two headers alike: {cells}"
        for a in cells:
            assert not any(b != a and b.startswith(a) for b in cells), cells
    tokens = [t for line in lines for t in re.split(CELL_GAP + r"|\s\[\d+\]", line.strip())]
    for token in (t for t in tokens if "…" in t):
        head, _, tail = token.partition("…")
        assert head and tail, f"cut at an end, not in the middle: {token!r}"
    for name in names:
        shown = [t for t in tokens if t == name or _abbreviates(t, name)]
        assert shown, f"{name} is neither shown nor shortened from the middle"
    return headers


def _abbreviates(token: str, name: str) -> bool:
    head, ellipsis, tail = token.partition("…")
    return (
        bool(ellipsis)
        and len(head) >= 3
        and len(tail) >= 3
        and (name.startswith(head) and name.endswith(tail))
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tables")


@pytest.mark.parametrize("columns", ["80", None], ids=["COLUMNS=80", "piped"])
def test_command_tables_fit_80_columns(workdir: Path, columns: str | None) -> None:
    model = _two_outputs_model(workdir / "two.onnx")
    text = aimcc(str(model), "-o", "two.aimcb", cwd=workdir, columns=columns)
    headers = check_80(text, names=(OUTPUTS[0].replace(".", "_"),))  # the first stage's name
    assert ["layer", "first stage", "tile", "cluster", "dma", "chunk", "main kernel"] in headers

    text = aimcc("inspect", "two.aimcb", "--kernels", cwd=workdir, columns=columns)
    headers = check_80(text, names=OUTPUTS)
    assert any(h[:2] == ["id", "kind"] or h[0] == "id" for h in headers)
    assert "[1] none: no RISC-V kernel for onnx.Tanh" in text  # the note, under the table

    argv = ["run", "two.aimcb", "--random", "--noise", "pcm", "--trials", "2"]
    text = aimcc(*argv, cwd=workdir, columns=columns)
    check_80(text, names=OUTPUTS)
    short = [t for t in re.split(r"\s{2,}|\n", text) if "…" in t]
    assert len(set(short)) == 2, short  # the two outputs stay apart

    argv = ["eval", "two.aimcb", "--reference", "two.onnx", "--trials", "2", "--batches", "1"]
    text = aimcc(*argv, "--times", "0s,1d,10y", cwd=workdir, columns=columns)
    headers = check_80(text)
    assert headers == [["time", "relative error", "cosine"]] * 2  # a table per output
    assert all(f"output {name}" in text for name in OUTPUTS)


def test_kernel_table_of_a_real_model_fits_80(workdir: Path) -> None:
    """bert_lora: 41 calls and views, long symbols, views and split calls (the notes)."""
    text = aimcc(str(model_path("bert_lora")), "-o", "bl.aimcb", cwd=workdir, columns="80")
    check_80(text)
    text = aimcc("inspect", "bl.aimcb", "--kernels", cwd=workdir, columns="80")
    headers = check_80(text, names=("aimcc_lora_b_add_N128_R8_T128_scale4p0_f16",))
    assert ["id", "shapes", "cluster", "symbol", "calls", "KiB", "cycles"] in headers
    assert re.search(r"^\[\d+\] view: Reshape: the consumer's DMA reads through", text, re.M)
    assert re.search(r"^\[\d+\] working set of 256 KiB, split into 2 pieces", text, re.M)
    wide = aimcc("inspect", "bl.aimcb", "--kernels", cwd=workdir, columns="200")
    assert "aimcc_lora_b_add_N128_R8_T128_scale4p0_f16" in wide  # whole when there is room
    assert any(h[:2] == ["id", "kind"] for h in header_rows(wide))


def test_shorten_keeps_start_and_end() -> None:
    name = "encoder.layer.11.attention.self.query"
    assert shorten(name, 100) == name
    for width in (5, 12, 20):
        short = shorten(name, width)
        assert len(short) == width and (_abbreviates(short, name) or width < 7)
        assert short.count("…") == 1
    names = [f"model.layers.{i}.mlp.down_proj.output_{j}" for i in range(12) for j in range(2)]
    short = shorten_distinct(names, 12)
    assert len(set(short.values())) == len(names)  # distinct names stay distinct
    assert all(_abbreviates(short[n], n) for n in names)


def _render(table: FitTable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    table.print(console)
    return console.file.getvalue()


def test_fit_table_shortens_folds_drops_and_splits() -> None:
    table = FitTable(
        Col("name", fit="name"),
        Col("shape", fit="wrap"),
        Col("kind", fit="name", optional=True),
        *(Col(f"statistic {i}", "right") for i in range(3)),
        title="a title longer than the table itself, which wraps at the console width " * 2,
    )
    for i in range(5):
        note = table.note("a note that is long enough to wrap under the table " * 3)
        table.add_row(
            f"layer_{i}_{'x' * 50}_output", "1x128x128, 128x4", "onnx.Transpose", note, "", ""
        )
    names = [f"layer_{i}_{'x' * 50}_output" for i in range(5)]
    text = _render(table, 80)
    assert check_80(text, names=names)
    assert "onnx.T" in text and "(continued)" not in text
    assert text.count("[1] a note") == 1  # one note for five rows, under the table
    assert len(text.split("[1] a note")[1].splitlines()[0]) <= 80 - len("[1] ")
    narrow = _render(table, 66)  # kind is optional: left out rather than splitting
    assert "onnx.T" not in narrow and "(continued)" not in narrow
    assert max(map(len, narrow.splitlines())) <= 66
    tiny = _render(table, 40)  # statistics move to a continued table that repeats the name
    assert "(continued)" in tiny and max(map(len, tiny.splitlines())) <= 40
    assert "onnx.T" in tiny  # kept: a split is needed anyway
    assert all(h[0] == "name" for h in header_rows(tiny))


# ---- plots ----


def _compiled(name: str, *overrides: str):
    return compile_model(model_path(name), "hybrid", load_arch("paper-512", overrides=overrides))


def _pixels(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def test_gantt_has_every_tile_and_cluster_and_fixed_colours() -> None:
    """lora_layer_512x128 on 128x128 tiles: one layer of 4 tiles (plus partial sums)."""
    comp = _compiled("lora_layer_512x128", "tile.rows=128", "tile.cols=128")
    tiles = sorted(op.tile_id.value.data for op in comp.module.walk() if isinstance(op, ProgramOp))
    assert len(tiles) == 4
    copies = [
        f for o in comp.module.walk() if isinstance(o, AccumulateOp) for f in replica_firsts(o)
    ]
    tiles += [f + i for f in copies for i in range(4)]  # the replicate pass's copies, if any
    rows = gantt_rows(comp.schedule, report.layer_tiles(comp))
    labels = [label for label, _ in rows]
    assert [lab for lab in labels if lab.startswith("tile")] == [f"tile {t}" for t in tiles]
    clusters = {s.unit for s in comp.schedule.slots if s.unit.startswith("cluster")}
    assert len(labels) == len(tiles) + len(clusters)

    title = "lora_layer_512x128 — hybrid, paper-512: 1.0 µs"
    fig = gantt_figure(comp.schedule, title=title, tiles=report.layer_tiles(comp))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    assert ax.get_title() == title

    # The same kind has the same colour in another model's chart.
    other = _compiled("bert_lora")
    fig2 = gantt_figure(other.schedule, tiles=report.layer_tiles(other))
    for chart in (fig, fig2):
        legend = chart.axes[0].get_legend()
        colours = {
            t.get_text(): h.get_facecolor()[:3]
            for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
        }
        assert colours["analog MVM"] == pytest.approx(to_rgb(COLOUR_OF["analog_mvm"]))
        assert colours["DMA transfer"] == pytest.approx(to_rgb(COLOUR_OF["transfer"]))
        if "LoRA" in colours:
            assert colours["LoRA"] == pytest.approx(to_rgb(COLOUR_OF["lora_xa"]))


def test_gantt_shows_analog_bars_of_50_ns_in_a_1_ms_chart() -> None:
    """A 50 ns MVM is 0.05 px wide at this scale; every one must still colour pixels, on
    every tile of its layer."""
    mvms = [Slot(f"mvm{i}", "analog_mvm", i, 8, "tile:0", i * 1e5, i * 1e5 + 50) for i in range(10)]
    norm = Slot("ln", "layer_norm", 0, 128, "cluster:0", 0.0, 1e6)
    timeline = Schedule("both", 1, 128, {0: 8}, (*mvms, norm), 1e6, (), 0.0, 0.0, 0.0, 0.0)
    fig = gantt_figure(timeline, tiles={0: [0, 1, 2]})
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "tile 0",
        "tile 1",
        "tile 2",
        "cluster 0",
    ]
    image = _pixels(fig)
    analog = np.array(to_rgb(COLOUR_OF["analog_mvm"])) * 255
    for y in range(3):
        row = round(image.shape[0] - ax.transData.transform((0, y - 0.1))[1])
        for mvm in mvms:
            x = round(ax.transData.transform((mvm.start_ns / 1e6, 0))[0])  # ms axis
            distance = np.abs(image[row, x - 1 : x + 2] - analog).sum(axis=1).min()
            assert distance < 120, f"{mvm.name} invisible on tile {y}"


def test_compile_plot_title_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    comp = _compiled("lora_layer_128")
    captured = {}

    def keep(schedule, path, *, title, tiles) -> None:
        captured["title"] = title

    monkeypatch.setattr(cost, "plot_gantt", keep)
    report.plot_schedule(comp, tmp_path / "g.png")
    assert re.fullmatch(r"lora_layer_128 — hybrid, paper-512: [\d.]+ (µs|ms)", captured["title"])


def test_drift_plot_has_a_log_time_axis() -> None:
    seconds = (0.0, 3600.0, 86400.0, 31557600.0, 315576000.0)
    result = EvalResult(
        ("0s", "1h", "1d", "1y", "10y"),
        (Metric("out", "relative error"), Metric("out", "cosine")),
        np.random.default_rng(0).random((2, 5, 2)),
        seconds,
    )
    fig = drift_figure(result, "bert.aimcb on pcm tiles vs bert.onnx, 2 trials")
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "0 s" and "1 h" in labels and labels[-1] == "10 y"
        (line,) = ax.get_lines()[:1]
        x = line.get_xdata()
        assert np.all(np.diff(x) > 0) and x[0] == pytest.approx(360.0)  # 0 s: a decade left
    x, _, labels = time_axis((0.0, 1.0, 60.0))
    assert x[0] == 1.0 and labels[0] == "0 s"  # never left of 1 s
