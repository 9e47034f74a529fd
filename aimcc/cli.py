"""The ``aimcc`` command line: compile by default, or a subcommand.

aimcc model.onnx --target hybrid             compile: model.aimcb + model.kernels.json
aimcc run model.aimcb --inputs inputs.npz    execute in the simulated runtime
aimcc inspect model.aimcb --kernels          program summary and the RISC-V kernel table
aimcc eval model.aimcb --reference m.onnx   accuracy on PCM tiles over drift time
aimcc opt in.mlir -p raise,partition         run passes on textual IR (for pass authors)
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from aimcc.errors import AimccError, first_line

# subcommand -> module in aimcc.commands; anything else is a model to compile
SUBCOMMANDS = {"run": "run", "inspect": "inspect", "eval": "eval", "opt": "opt", "adapt": "adapt"}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    name = SUBCOMMANDS[args.pop(0)] if args and args[0] in SUBCOMMANDS else "compile"
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
