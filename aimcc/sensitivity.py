"""Sensitivity of a model's output to analog noise, projection by projection, and the
projections to keep digital under a budget (docs/SENSITIVITY.md).

For each analog projection (a named analog layer of the binary) and each trial (seed):
``analog_only`` is the output error when only that projection is on noisy tiles (the others
ideal), ``digital_only`` the error when every projection but that one is noisy (so
``all_analog - digital_only`` is what keeping it digital recovers). The error is the relative
L2 distance of all float outputs from the ideal-tile (fp32) run over the inputs. A digital
projection runs fp32 on the clusters, which is what an ideal tile computes, so keeping the
top-k digital is measured as ``only = all - top-k``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aimcc.errors import AimccError
from aimcc.runtime.analog import NoiseSpec
from aimcc.runtime.executor import Executable

Feeds = dict[str, np.ndarray]
SENSITIVITY_VERSION = 1


@dataclass
class Sensitivity:
    """Errors per projection (mean over trials and their spread), in the binary's order."""

    names: list[str]
    all_analog: np.ndarray  # [trials]
    analog_only: np.ndarray  # [projections, trials]
    digital_only: np.ndarray  # [projections, trials]
    noise: dict[str, Any]
    pareto: list[dict[str, Any]] = field(default_factory=list)

    def ranking(self) -> list[str]:
        """Most sensitive first: largest error when analog alone (ties: what digital recovers)."""
        order = sorted(
            range(len(self.names)),
            key=lambda i: (-self.analog_only[i].mean(), self.digital_only[i].mean()),
        )
        return [self.names[i] for i in order]

    def to_json(self) -> dict[str, Any]:
        rows = []
        for i, name in enumerate(self.names):
            recovered = self.all_analog.mean() - self.digital_only[i].mean()
            rows.append(
                {
                    "name": name,
                    "analog_only": {
                        "mean": _f(self.analog_only[i].mean()),
                        "std": _f(self.analog_only[i].std()),
                    },
                    "digital_only": {
                        "mean": _f(self.digital_only[i].mean()),
                        "std": _f(self.digital_only[i].std()),
                    },
                    "recovered_share": _f(recovered / self.all_analog.mean())
                    if self.all_analog.mean() > 0
                    else 0.0,
                }
            )
        return {
            "sensitivity_version": SENSITIVITY_VERSION,
            "noise": self.noise,
            "trials": int(self.all_analog.size),
            "metric": "relative L2 error of the float outputs vs ideal tiles (fp32)",
            "all_analog": {"mean": _f(self.all_analog.mean()), "std": _f(self.all_analog.std())},
            "ranking": self.ranking(),
            "projections": rows,
            "pareto": self.pareto,
        }


def _f(x: float) -> float:
    return float(round(float(x), 8))


def projections(exe: Executable) -> list[str]:
    """The binary's analog projections by name, in program order."""
    return list(dict.fromkeys(layer.layer or layer.name for layer in exe.layers))


def output_error(outputs: Sequence[Feeds], reference: Sequence[Feeds]) -> float:
    """Relative L2 error of every float output over every input."""
    num = den = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        for key, r in ref.items():
            if np.asarray(r).dtype.kind != "f":
                continue
            diff = np.asarray(out[key], np.float64) - np.asarray(r, np.float64)
            num += float((diff**2).sum())
            den += float((np.asarray(r, np.float64) ** 2).sum())
    return float(np.sqrt(num / den)) if den > 0 else 0.0


def run_all(exe: Executable, batches: Sequence[Feeds]) -> list[Feeds]:
    return [exe.run(feeds) for feeds in batches]


def error_with(
    exe: Executable,
    batches: Sequence[Feeds],
    reference: Sequence[Feeds],
    spec: NoiseSpec,
    seed: int,
    noisy: set[str],
) -> float:
    """Output error with only the ``noisy`` projections on ``spec`` tiles."""
    exe.set_noise(spec, seed, only=noisy)
    return output_error(run_all(exe, batches), reference)


def analyse(
    exe: Executable,
    batches: Sequence[Feeds],
    spec: NoiseSpec,
    trials: int,
    seed: int = 0,
    step: Callable[[], None] | None = None,
) -> Sensitivity:
    if trials < 1:
        raise AimccError("--trials must be at least 1")
    if spec.model == "ideal":
        raise AimccError("sensitivity needs a noise model: --noise pcm or quant")
    names = projections(exe)
    if not names:
        raise AimccError("the binary has no analog projection: nothing to analyse")
    exe.set_noise(NoiseSpec("ideal"))
    reference = run_all(exe, batches)
    every = set(names)
    base = np.zeros(trials)
    alone = np.zeros((len(names), trials))
    without = np.zeros((len(names), trials))
    for t in range(trials):
        base[t] = error_with(exe, batches, reference, spec, seed + t, every)
        for i, name in enumerate(names):
            alone[i, t] = error_with(exe, batches, reference, spec, seed + t, {name})
            without[i, t] = error_with(exe, batches, reference, spec, seed + t, every - {name})
            if step:
                step()
    exe.set_noise(NoiseSpec("ideal"))
    noise = {"model": spec.model, "t_inference_s": spec.t_inference_s}
    return Sensitivity(names, base, alone, without, noise)


def kept_digital_error(
    exe: Executable,
    batches: Sequence[Feeds],
    spec: NoiseSpec,
    kept: Sequence[str],
    trials: int,
    seed: int = 0,
) -> np.ndarray:
    """Errors over trials with ``kept`` projections digital (fp32) and the rest analog."""
    exe.set_noise(NoiseSpec("ideal"))
    reference = run_all(exe, batches)
    noisy = set(projections(exe)) - set(kept)
    out = np.array(
        [error_with(exe, batches, reference, spec, seed + t, noisy) for t in range(trials)]
    )
    exe.set_noise(NoiseSpec("ideal"))
    return out


def read_sensitivity(path: Any) -> dict[str, Any]:
    """A sensitivity JSON written by ``aimcc sensitivity --json``, checked."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AimccError(f"{path}: not a sensitivity JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("sensitivity_version") != SENSITIVITY_VERSION:
        raise AimccError(f"{path}: not a sensitivity JSON (written by 'aimcc sensitivity')")
    ranking = data.get("ranking")
    if not isinstance(ranking, list) or not all(isinstance(n, str) for n in ranking):
        raise AimccError(f"{path}: 'ranking' must be a list of projection names")
    return data


def choose_digital(data: dict[str, Any], keep: int | None, budget: float | None) -> list[str]:
    """The projections to keep digital: the ``keep`` most sensitive, or the fewest of the
    ranking whose measured error (the JSON's ``pareto``: error with the top k digital) is
    within ``budget``; refused when no measured choice meets it."""
    ranking = data["ranking"]
    if keep is not None:
        if not 0 <= keep <= len(ranking):
            raise AimccError(f"--keep-digital {keep}: the ranking has {len(ranking)} projections")
        return ranking[:keep]
    if budget is None:
        return []
    if not budget >= 0:
        raise AimccError(f"--error-budget {budget}: must be >= 0")
    points = sorted(data.get("pareto") or [], key=lambda p: p["digital"])
    if not points:
        raise AimccError(
            "--error-budget needs measured errors: run 'aimcc sensitivity ... --pareto K'"
        )
    for p in points:
        if p["error"]["mean"] <= budget:
            return ranking[: p["digital"]]
    worst = points[-1]
    raise AimccError(
        f"--error-budget {budget}: no measured choice meets it (top {worst['digital']} "
        f"digital: error {worst['error']['mean']:.4g}); measure more with --pareto"
    )
