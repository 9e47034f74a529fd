"""`aimcc inspect BINARY`: what a compiled binary holds, and which RISC-V kernels it runs."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from aimcc.backends.aimcb import read_binary
from aimcc.commands import Parser
from aimcc.errors import AimccError
from aimcc.report import Col, FitTable, safe


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aimcc inspect",
        description="Show a compiled binary: inputs, outputs, target, architecture, tiles; "
        "with --kernels the RISC-V kernel table from the manifest beside it.",
    )
    p.add_argument("binary", type=Path, help="the .aimcb file")
    p.add_argument("--kernels", action="store_true", help="show the RISC-V kernel table")
    p.add_argument(
        "--manifest",
        type=Path,
        help="kernel manifest to read (default: <binary>.kernels.json beside the binary)",
    )
    return p


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _adapter_slots(program: dict[str, Any], tensors: dict[str, Any]) -> str | None:
    """One line on the digital LoRA slots an adapter can fill (``--adapter``), or None."""
    ranks: Counter[int] = Counter()
    names = []
    for ins in program["instructions"]:
        if ins.get("kind") != "lora":
            continue
        a = tensors.get(ins["args"][2]) if isinstance(ins["args"][2], str) else None
        ranks[int(a.shape[1]) if a is not None and a.ndim == 2 else 0] += 1
        names.append(str(ins["params"].get("layer") or ins.get("layer") or "?"))
    if not names:
        return None
    rank = ", ".join(f"{n} of rank {r}" for r, n in sorted(ranks.items()))
    last = names[-1] if len(names) > 1 else ""
    example = safe(names[0]) + (f" ... {safe(last)}" if last else "")
    return f"{len(names)} LoRA adapter slots ({rank}; {example}): fill them with --adapter DIR"


def _summary(
    console: Console, path: Path, program: dict[str, Any], tensors: dict[str, Any]
) -> None:
    ops = Counter(ins["op"] for ins in program["instructions"])
    arch = program["arch"]
    name, source, arch_name = (
        escape(safe(s)) for s in (path.name, program["source"], arch["name"])
    )
    console.print(
        f"[bold]{name}[/]: {source} -> target [bold]{program['target']}[/], "
        f"arch [bold]{arch_name}[/] ({arch['tile']['rows']}x{arch['tile']['cols']} tiles, "
        f"{arch['cluster']['count']} clusters of {arch['cluster']['tcdm_kib']} KiB TCDM"
        + (f" per chip, {arch['link']['chips']} chips)" if arch["link"]["chips"] > 1 else ")")
    )
    console.print(
        f"{len(program['tiles'])} tiles programmed, {ops['analog']} analog, "
        f"{ops['call']} cluster call and {ops['view']} view instructions"
    )
    slots = _adapter_slots(program, tensors)
    if slots:
        console.print(escape(slots), highlight=False)
    table = FitTable(
        "", Col("name", fit="name"), Col("shape", fit="wrap"), "dtype", title="inputs and outputs"
    )
    for role in ("inputs", "outputs"):
        for io in program[role]:
            table.add_row(role[:-1], io["name"], _shape(io["shape"]), io["dtype"])
    table.print(console)


def _kernel_table(console: Console, manifest: dict[str, Any]) -> None:
    """One row per RISC-V call of each kernel; why a kernel has no code, and how a call is
    split to fit the TCDM, go in notes under the table."""
    tcdm = {
        c["tcdm_bytes"] // 1024 for k in manifest["kernels"] for c in k["riscv"].get("calls", [])
    }
    table = FitTable(
        Col("id", "right"),
        Col("kind", fit="name", optional=True),  # the symbol starts with it
        Col("shapes", fit="wrap"),
        Col("cluster", "right"),
        Col("symbol", fit="name"),
        Col("calls", "right"),
        Col("KiB", "right"),
        Col("cycles", "right"),
        title=f"RISC-V kernels ({manifest['target']}, f32"
        + (f"; KiB of the {'/'.join(map(str, tcdm))} KiB TCDM)" if tcdm else ")"),
    )
    status: Counter[str] = Counter()
    emitted = 0
    for kernel in manifest["kernels"]:
        riscv = kernel["riscv"]
        status[riscv["status"]] += 1
        shapes = ", ".join(_shape(i["shape"]) for i in kernel["inputs"] if i)
        cluster = "-" if kernel["cluster"] is None else str(kernel["cluster"])  # a view: none
        head = [str(kernel["id"]), kernel["kind"], shapes, cluster]
        if riscv["status"] != "code":
            why = table.note(f"{riscv['status']}: {riscv['reason']}")
            style = "dim" if riscv["status"] == "view" else "yellow"
            what = f"{riscv['status']} ({kernel['kind']}) {why}"
            table.add_row(*head, what, "", "", "", style=style)
            continue
        for i, call in enumerate(riscv["calls"]):
            pieces = call["pieces"]
            calls = f"{call['repeat']}x{pieces}" if pieces > 1 else str(call["repeat"])
            use = f"{call['piece_footprint_bytes'] / 1024:.1f}"
            if pieces > 1:
                use += " " + table.note(
                    f"working set of {call['footprint_bytes'] / 1024:.0f} KiB, split into "
                    f"{pieces} pieces of {call['tokens_per_piece']} tokens"
                )
            if not call["fits"]:
                use += " " + table.note("does not fit the TCDM")
            emitted += "file" in call
            symbol = Text(call["symbol"], style="green" if "file" in call else "")
            row = head if i == 0 else ["", "", "", ""]
            style = None if call["fits"] else "red"
            table.add_row(*row, symbol, calls, use, f"{call['est_cycles']:,.0f}", style=style)
    table.print(console)
    console.print(
        f"{status['code']} kernels with RISC-V code, {status['view']} views, "
        f"{status['none']} without code"
        + (f" (assembly emitted for {emitted} calls)" if emitted else " (no assembly emitted)"),
        highlight=False,
    )


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    if opts.manifest and not opts.kernels:
        raise AimccError("--manifest is read for the kernel table: add --kernels")
    program, tensors = read_binary(opts.binary)
    console = Console()
    _summary(console, opts.binary, program, tensors)
    if not opts.kernels:
        return 0
    path = opts.manifest or opts.binary.with_name(
        opts.binary.name.removesuffix(".aimcb") + ".kernels.json"
    )
    if not path.is_file():
        raise AimccError(f"{path}: no kernel manifest (compile again, or pass --manifest)")
    try:
        manifest = json.loads(path.read_text())
        if "riscv" not in (manifest["kernels"] or [{"riscv": 0}])[0]:
            raise KeyError("riscv")
    except (ValueError, KeyError, TypeError, IndexError):
        raise AimccError(f"{path}: not a kernel manifest of this aimcc version") from None
    if manifest["source"] != program["source"] or manifest["target"] != program["target"]:
        raise AimccError(f"{path}: manifest of {manifest['source']}, not of {opts.binary}")
    _kernel_table(console, manifest)
    return 0
