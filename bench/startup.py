"""Start-up time: whole `aimcc` processes against onnxruntime processes, same run.

    python bench/startup.py [--repeat 5] [--model examples/models/bert.onnx] [--baseline DIR]
                            [--no-bytecode-cache]

Times wall clock of fresh processes (interpreter start and every import included, as a user
waits): `aimcc --help` against `python -c "import onnxruntime"` (target: ratio <= 1.0) and
`aimcc MODEL -q` against a process that creates an onnxruntime session for the same model
(target: <= 5). Rounds run the commands in turn, so slow spells of a shared machine hit all
alike; medians of --repeat rounds after one warm-up. Prints the machine's load average before
and after, since other work on the machine inflates every figure. Outputs go to a temporary
directory. --baseline DIR also times the aimcc of another checkout (PYTHONPATH=DIR) in the
same rounds, for before/after figures under the same load.

Every process runs with its bytecode cached (PYTHONPYCACHEPREFIX in the temporary directory,
written by the warm-up round), as an installed package has it: with PYTHONDONTWRITEBYTECODE
set, as in some sandboxes, an editable checkout would compile aimcc's modules from source in
every process (~0.15-0.25 s) while site-packages keep their caches. --no-bytecode-cache keeps
the environment as it is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "examples/models/bert.onnx")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout to time alongside")
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="run with the environment as it is"
    )
    opts = parser.parse_args()
    model = str(opts.model.resolve())
    py = sys.executable
    session = (
        "import onnxruntime as ort, sys; o = ort.SessionOptions(); o.intra_op_num_threads = 2; "
        "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])"
    )
    commands = {
        "import onnxruntime": [py, "-c", "import onnxruntime"],
        "aimcc --help": [py, "-m", "aimcc.cli", "--help"],
        "onnxruntime session": [py, "-c", session, model],
        "aimcc compile -q": [py, "-m", "aimcc.cli", model, "-q", "-o", "model.aimcb"],
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aimcc-startup-") as tmp:
        base = dict(os.environ)
        if not opts.no_bytecode_cache:
            base.pop("PYTHONDONTWRITEBYTECODE", None)
            base["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        env = {**base, "PYTHONPATH": str(ROOT)}
        envs = dict.fromkeys(commands, env)
        if opts.baseline:
            for name in ("aimcc --help", "aimcc compile -q"):
                commands[f"{name} (baseline)"] = commands[name]
                envs[f"{name} (baseline)"] = {**base, "PYTHONPATH": str(opts.baseline)}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(opts.repeat + 1):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, cwd=tmp, check=True, stdout=subprocess.DEVNULL, env=envs[name])
                if round_:  # round 0 warms the page cache
                    times[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    median = {name: statistics.median(values) for name, values in times.items()}
    cache = "no bytecode cache" if opts.no_bytecode_cache else "bytecode cached"
    print(f"{opts.model.name}, medians of {opts.repeat} processes, {os.cpu_count()} cores, {cache}")
    for name, seconds in median.items():
        print(f"  {name:<29} {seconds:6.3f} s")
    help_ratio = median["aimcc --help"] / median["import onnxruntime"]
    compile_ratio = median["aimcc compile -q"] / median["onnxruntime session"]
    print(f"aimcc --help / import onnxruntime      {help_ratio:5.2f}x (target <= 1.0)")
    print(f"aimcc compile / onnxruntime session    {compile_ratio:5.2f}x (target <= 5)")
    if opts.baseline:
        for name, reference in (
            ("aimcc --help", "import onnxruntime"),
            ("aimcc compile -q", "onnxruntime session"),
        ):
            ratio = median[f"{name} (baseline)"] / median[reference]
            print(f"baseline {name} / {reference}: {ratio:5.2f}x")
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.2f}" for x in load_after)
    )


if __name__ == "__main__":
    main()
