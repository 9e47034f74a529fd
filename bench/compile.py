"""Compile time of all-MiniLM-L6-v2 against onnxruntime's session creation, same run.

    python bench/compile.py [--model PATH] [--repeat 5] [--target hybrid]

(default model: all-MiniLM-L6-v2 from the per-machine corpus cache, built on first use)

Prints medians and the ratio (target: compile within 3x of session creation), and the time
RISC-V kernel generation (--emit-riscv) adds against the rest of compilation (target: less).
All are timed in-process after one warm-up, so interpreter and library imports are excluded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from aimcc.backends.manifest import emit_riscv
from aimcc.commands.compile import write_outputs
from aimcc.compiler import compile_model, gc_paused

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from corpus_cache import model_path  # noqa: E402


def median_seconds(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Each function's median time over ``repeat`` rounds after a warm-up round; a round runs
    them in turn, so slow spells of a shared machine hit them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeat + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="default: minilm from the corpus cache")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--target", default="hybrid")
    opts = parser.parse_args()
    opts.model = opts.model or model_path("minilm")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2

    def session() -> object:
        return ort.InferenceSession(str(opts.model), options)

    stages: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.aimcb"

        def aimcc_compile() -> None:  # what `aimcc MODEL -q -o OUT` does, over the last OUT
            with gc_paused():
                comp = compile_model(opts.model, opts.target)
                start = time.perf_counter()
                write_outputs(comp, out)
            timed = [*comp.seconds.items(), ("write", time.perf_counter() - start)]
            for name, seconds in timed:
                stages.setdefault(name, []).append(seconds)

        medians = median_seconds({"ort": session, "aimcc": aimcc_compile}, opts.repeat)
        ort_median, aimcc_median = medians["ort"], medians["aimcc"]
        comp = compile_model(opts.model, opts.target)
        riscv = median_seconds(
            {"riscv": lambda: emit_riscv(comp, Path(tmp) / "riscv")}, opts.repeat
        )
        riscv_median = riscv["riscv"]
        kernels = emit_riscv(comp, Path(tmp) / "riscv").kernels
    print(f"model: {opts.model.name}, target {opts.target}, median of {opts.repeat}")
    print(f"onnxruntime session creation: {ort_median * 1e3:8.1f} ms")
    print(f"aimcc compile (to .aimcb):    {aimcc_median * 1e3:8.1f} ms")
    for name, values in stages.items():
        print(f"  {name:<10} {statistics.median(values[1:]) * 1e3:8.1f} ms")  # after warm-up
    print(f"ratio aimcc / onnxruntime:    {aimcc_median / ort_median:8.2f}x  (target <= 3x)")
    extra = sum(statistics.median(stages[name][1:]) for name in ("schedule", "write"))
    proper = sum(statistics.median(v[1:]) for v in stages.values()) - extra
    print(
        f"  of which load to place, verify: {proper * 1e3:6.1f} ms = {proper / ort_median:.2f}x; "
        f"schedule, binary and manifest (no counterpart in onnxruntime): {extra * 1e3:.1f} ms"
    )
    print(
        f"RISC-V kernels ({kernels} files):  {riscv_median * 1e3:8.1f} ms = "
        f"{riscv_median / aimcc_median:.2f}x the rest of compilation (target < 1x)"
    )


if __name__ == "__main__":
    main()
