"""aimcc sensitivity: which analog projections the model's output error comes from
(docs/SENSITIVITY.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aimcc.commands import (
    Parser,
    output_file,
    parse_time,
    random_inputs,
    read_npz,
    seed,
    shows_progress,
    status,
)
from aimcc.errors import AimccError


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aimcc sensitivity",
        description="Per analog projection: the output error (vs ideal tiles, fp32) when only "
        "it is on noisy tiles, and when only it is digital; ranked.",
    )
    p.add_argument("binary", type=Path, help="the compiled model (.aimcb)")
    src = p.add_argument_group("inputs (default: random token ids, --seed)")
    src.add_argument("--input", type=Path, metavar="X.npz", help="inputs by name (one example)")
    src.add_argument(
        "--data", type=Path, help="TSV 'sentence<TAB>label' (with --tokenizer) or .npz"
    )
    src.add_argument("--tokenizer", type=Path, help="Hugging Face tokenizer folder (for a TSV)")
    src.add_argument("--limit", type=int, default=8, metavar="N", help="examples of --data (8)")
    p.add_argument("--noise", choices=("pcm", "quant"), default="pcm", help="tile model (pcm)")
    p.add_argument(
        "--t-inference", default="1y", metavar="T", help="pcm read time after programming (1y)"
    )
    p.add_argument("--trials", type=int, default=3, metavar="N", help="seeds per measurement (3)")
    p.add_argument("--seed", type=seed, default=0, help="first seed (inputs and noise; 0)")
    p.add_argument("--json", type=output_file, metavar="OUT.json", help="write the results")
    p.add_argument("--plot", type=output_file, metavar="OUT.png", help="plot the ranking")
    p.add_argument(
        "--pareto",
        type=int,
        metavar="K",
        help="also keep the top 0..K digital: measured error, and latency, energy and tiles "
        "from recompiling --model with them digital",
    )
    p.add_argument("--model", type=Path, metavar="X.onnx", help="the ONNX model (for --pareto)")
    return p


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    from aimcc import report
    from aimcc.atomic import atomic_write, write_text
    from aimcc.runtime.analog import NoiseSpec
    from aimcc.runtime.executor import load
    from aimcc.sensitivity import analyse, kept_digital_error

    if opts.pareto is not None and (opts.pareto < 0 or opts.model is None):
        raise AimccError("--pareto K needs K >= 0 and --model X.onnx (to recompile)")
    if opts.input is not None and opts.data is not None:
        raise AimccError("give --input or --data, not both")
    spec = NoiseSpec(opts.noise, parse_time(opts.t_inference) if opts.noise == "pcm" else 0.0)
    exe = load(opts.binary)
    if opts.input is not None:
        batches = [read_npz(opts.input)]
    elif opts.data is not None:
        from aimcc.adapt import load_data

        data = load_data(opts.data, exe, opts.tokenizer, opts.limit, opts.seed)
        batches = [{k: v[i : i + 1] for k, v in data.inputs.items()} for i in range(len(data))]
    else:
        batches = [random_inputs(exe, opts.seed)]
    with status(shows_progress()) as update:
        done = [0]

        def step() -> None:
            done[0] += 1
            update(f"sensitivity: {done[0]} of {opts.trials} x projections measured")

        result = analyse(exe, batches, spec, opts.trials, opts.seed, step)
        ranking = result.ranking()
        if opts.pareto is not None:
            result.pareto = pareto(opts, exe, batches, spec, ranking, kept_digital_error, update)
    noise = f"{spec.model}" + (f" at {opts.t_inference}" if spec.model == "pcm" else "")
    base = result.all_analog
    table = report.FitTable(
        report.Col("#", "right"),
        report.Col("projection", fit="name"),
        report.Col("analog only", "right"),
        report.Col("digital only", "right"),
        report.Col("recovers", "right"),
        title=f"{opts.binary.name}: output error, {noise}, {opts.trials} trials "
        f"(all analog {base.mean():.4g} ± {base.std():.2g})",
    )
    index = {n: i for i, n in enumerate(result.names)}
    for rank, name in enumerate(ranking, 1):
        i = index[name]
        share = (base.mean() - result.digital_only[i].mean()) / base.mean() if base.mean() else 0
        table.add_row(
            str(rank),
            name,
            f"{result.analog_only[i].mean():.4g}",
            f"{result.digital_only[i].mean():.4g}",
            f"{100 * share:.1f} %",
        )
    table.print()
    if result.pareto:
        front = report.FitTable(
            report.Col("digital", "right"),
            report.Col("error", "right"),
            report.Col("recovered", "right"),
            report.Col("latency", "right"),
            report.Col("energy", "right"),
            report.Col("tiles", "right"),
            title="keeping the most sensitive projections digital",
        )
        for p in result.pareto:
            share = 1 - p["error"]["mean"] / base.mean() if base.mean() else 0.0
            front.add_row(
                str(p["digital"]),
                f"{p['error']['mean']:.4g} ± {p['error']['std']:.2g}",
                f"{100 * share:.1f} %",
                f"{p['latency_ns'] / 1e3:.2f} us",
                f"{p['energy_nj'] / 1e3:.2f} uJ",
                str(p["tiles"]),
            )
        front.print()
    if opts.json:
        body = {"binary": opts.binary.name, **result.to_json()}
        write_text(opts.json, json.dumps(body, indent=1) + "\n")
        print(f"wrote {opts.json}")
    if opts.plot:
        with atomic_write(opts.plot) as f:
            figure(result, f"{opts.binary.stem}: {noise}").savefig(f, format="png", dpi=120)
        print(f"wrote {opts.plot}")
    return 0


def pareto(opts, exe, batches, spec, ranking, kept_digital_error, update) -> list[dict]:
    """Error (measured) and cost (recompiled) of keeping the top 0..K projections digital."""
    from aimcc.compiler import compile_model
    from aimcc.ir.aimc import ProgramOp
    from aimcc.passes.lora_slots import LoraSlotsPass

    shapes = {i["name"]: tuple(i["shape"]) for i in exe.inputs}
    points = []
    for k in range(min(opts.pareto, len(ranking)) + 1):
        update(f"sensitivity: {k} digital, compiling {opts.model.name}")
        kept = ranking[:k]
        slots = LoraSlotsPass(digital=",".join(kept))
        comp = compile_model(opts.model, "hybrid", exe.arch.with_chips(0), shapes, slots=slots)
        s = comp.schedule
        errors = kept_digital_error(exe, batches, spec, kept, opts.trials, opts.seed)
        points.append(
            {
                "digital": k,
                "kept": kept,
                "error": {"mean": float(errors.mean()), "std": float(errors.std())},
                "latency_ns": float(s.makespan_ns) if s else 0.0,
                "energy_nj": float(s.energy_nj) if s else 0.0,
                "tiles": sum(1 for o in comp.module.walk() if isinstance(o, ProgramOp)),
            }
        )
    return points


def figure(result, title: str):
    """Horizontal bars: error with only that projection analog, most sensitive on top."""
    from matplotlib.figure import Figure  # imported here: only --plot pays for it

    ranking = result.ranking()
    index = {n: i for i, n in enumerate(result.names)}
    means = [result.analog_only[index[n]].mean() for n in ranking]
    stds = [result.analog_only[index[n]].std() for n in ranking]
    recovered = [result.all_analog.mean() - result.digital_only[index[n]].mean() for n in ranking]
    fig = Figure(figsize=(9, 1.5 + 0.22 * len(ranking)), layout="constrained")
    ax = fig.add_subplot()
    y = range(len(ranking))
    ax.barh(list(y), means, xerr=stds, color="#c44e52", label="error, only this analog")
    ax.barh(list(y), recovered, height=0.35, color="#4c72b0", label="error recovered if digital")
    ax.set_yticks(list(y), ranking, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("relative output error vs ideal tiles")
    ax.axvline(result.all_analog.mean(), color="k", ls=":", lw=1, label="all analog")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return fig
