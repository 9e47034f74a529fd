"""The ``aimcc`` command line: compile by default, or a subcommand.

Only this module and the chosen command's module are imported before the command runs, and
each command imports its heavy dependencies (torch, onnx, xDSL) inside ``main``: ``aimcc
--help`` and ``aimcc --version`` start as fast as Python does.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from aimcc import __version__
from aimcc.errors import AimccError, first_line

# command -> one line of help; each is the module aimcc.commands.<command>
COMMANDS = {
    "compile": "ONNX model or IR from 'opt' -> binary + manifest (the default)",
    "run": "execute a binary in the simulated runtime (ideal, quant, PCM tiles)",
    "eval": "accuracy of a binary on PCM tiles over drift time vs its ONNX model",
    "inspect": "what a binary holds; with --kernels, its RISC-V kernels",
    "opt": "run passes on IR or an imported model, print the IR (pass authors)",
    "sensitivity": "which analog projections the output error comes from; keep-digital Pareto",
    "sweep": "a grid of noise, drift time, seed, --set and adapter, on processes or Ray",
    "adapt": "train LoRA adapters (and a task head) through the simulated tiles (AHWA-LoRA)",
}

USAGE = "usage: aimcc [compile] MODEL.onnx [options]\n       aimcc COMMAND [options]"


def top_help() -> str:
    width = max(map(len, (*COMMANDS, "-h, --help")))
    lines = [
        USAGE,
        "",
        "Compile ONNX transformers onto analog in-memory-computing tiles and RISC-V clusters,",
        "and run the binaries in a simulated runtime.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "options:",
        f"  {'-h, --help':<{width}}  show this help; 'aimcc COMMAND --help' shows a command's",
        f"  {'':<{width}}  options (the compiler's: 'aimcc compile --help')",
        f"  {'--version':<{width}}  print aimcc's version",
        "",
        "example: aimcc examples/models/bert.onnx && aimcc run bert.aimcb --random",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(top_help())
        return 2
    if args[0] in ("-h", "--help"):
        sys.stdout.write(top_help())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"aimcc {__version__}")
        return 0
    name = args.pop(0) if args[0] in COMMANDS else "compile"
    try:
        return importlib.import_module(f"aimcc.commands.{name}").main(args)
    except AimccError as exc:
        print(f"aimcc: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aimcc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("AIMCC_TRACEBACK"):
            raise
        print(
            f"aimcc: internal error: {type(exc).__name__}: {first_line(exc)} "
            "(set AIMCC_TRACEBACK=1 for details)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
