"""Accuracy of a compiled model on PCM tiles against its fp32 ONNX reference, over drift time.

Each trial programs every tile once (one seed) and reads the same devices at every drift time,
as a deployed chip ages; metrics are taken against onnxruntime's outputs on the same inputs.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch

from aimcc.adapt import HEAD, Dataset, apply_adapter, batches, head_logits
from aimcc.adapters import Adapter
from aimcc.errors import AimccError, first_line
from aimcc.runtime import Executable
from aimcc.runtime.analog import NoiseSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the paper's evaluation times: docs/REFERENCES.md "Analog tile" (Li et al., arXiv 2411.17367)

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Metric:
    """One number per (trial, time): ``kind`` of the model output ``output``."""

    output: str
    kind: str  # "relative error", "cosine" or "embedding cosine"


@dataclass(frozen=True)
class EvalResult:
    times: tuple[str, ...]
    metrics: tuple[Metric, ...]
    values: np.ndarray  # [trials, times, metrics]
    seconds: tuple[float, ...]  # each time after programming, in seconds

    def mean(self) -> np.ndarray:
        return self.values.mean(axis=0)

    def std(self) -> np.ndarray:
        return self.values.std(axis=0)


def reference_outputs(model: Path, exe: Executable, batches: Sequence[Feeds]) -> list[Feeds]:
    """onnxruntime's fp32 outputs for each batch, checked against the binary's interface."""
    import onnxruntime as ort  # here: a sweep's workers only score, and start without it

    if not model.is_file():
        raise AimccError(f"{model}: reference model not found")
    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception as exc:  # onnx raises bare DecodeError and friends
        raise AimccError(f"{model}: not a readable ONNX model ({first_line(exc)})") from None
    initializers = {t.name for t in graph.initializer}
    ref_inputs = sorted(i.name for i in graph.input if i.name not in initializers)
    ref_outputs = [o.name for o in graph.output]
    bin_inputs = sorted(s["name"] for s in exe.inputs)
    bin_outputs = [s["name"] for s in exe.outputs]
    if ref_inputs != bin_inputs:
        raise AimccError(
            f"{model}: reference inputs ({', '.join(ref_inputs)}) do not match the binary's "
            f"({', '.join(bin_inputs)}): was {exe.where} compiled from this model?"
        )
    missing = [name for name in bin_outputs if name not in ref_outputs]
    if missing:
        raise AimccError(f"{model}: reference has no output '{missing[0]}' of {exe.where}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        return [dict(zip(bin_outputs, session.run(bin_outputs, f), strict=True)) for f in batches]
    except Exception as exc:  # onnxruntime's errors share no base class
        raise AimccError(f"{model}: onnxruntime failed on the inputs ({first_line(exc)})") from None


def metrics_for(exe: Executable, reference: Feeds) -> tuple[Metric, ...]:
    """Relative error and cosine of every output, plus the per-row cosine of embeddings."""
    metrics = []
    for spec in exe.outputs:
        name = spec["name"]
        metrics += [Metric(name, "relative error"), Metric(name, "cosine")]
        if is_embedding(name, reference[name].shape):
            metrics.append(Metric(name, "embedding cosine"))
    return tuple(metrics)


def is_embedding(name: str, shape: tuple[int, ...]) -> bool:
    """Sentence-embedding outputs: named so, or pooled to [batch, features]."""
    return "embedding" in name.lower() or len(shape) == 2


def score(metrics: Sequence[Metric], outputs: Sequence[Feeds], reference: Sequence[Feeds]) -> list:
    """The metrics over all batches at once (arrays stacked on a new batch axis)."""
    values = []
    for metric in metrics:
        y = np.stack([o[metric.output] for o in outputs]).astype(np.float64)
        ref = np.stack([r[metric.output] for r in reference]).astype(np.float64)
        if metric.kind == "relative error":
            values.append(_norm(y - ref) / max(_norm(ref), 1e-30))
        elif metric.kind == "cosine":
            values.append(_cosine(y.reshape(1, -1), ref.reshape(1, -1))[0])
        else:
            values.append(_cosine(y.reshape(-1, y.shape[-1]), ref.reshape(-1, y.shape[-1])).mean())
    return values


def _norm(x: np.ndarray) -> float:
    """Euclidean norm by numpy's pairwise sum, not BLAS's dot (np.linalg.norm), whose sum
    order depends on its thread count: a sweep's workers must get the same bits."""
    return float(np.sqrt(np.square(x).sum()))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-30)


def evaluate(
    exe: Executable,
    batches: Sequence[Feeds],
    reference: Sequence[Feeds],
    times: Sequence[tuple[str, float]],
    trials: int,
    seed: int,
    compensation: str | None = None,
    step: Callable[[], None] | None = None,
) -> EvalResult:
    """Trials x drift times on PCM tiles; trial i programs with seed + i. ``times`` pairs a
    label with seconds after programming; ``step`` is called after each (trial, time)."""
    if trials < 1:
        raise AimccError(f"trials must be at least 1, got {trials}")
    if not times:
        raise AimccError("no drift times to evaluate")
    metrics = metrics_for(exe, reference[0])
    values = np.zeros((trials, len(times), len(metrics)))
    for trial in range(trials):
        exe.set_noise(NoiseSpec("pcm", times[0][1], compensation), seed + trial)
        for index, (_, seconds) in enumerate(times):
            if index:
                exe.at_time(seconds)
            outputs = [exe.run(feeds) for feeds in batches]
            values[trial, index] = score(metrics, outputs, reference)
            if step:
                step()
    labels, seconds = zip(*times, strict=True)
    return EvalResult(labels, metrics, values, seconds)


# Ticks of the drift plot's time axis (seconds): the scales a PCM drift study reads.
TIME_TICKS = (
    (1.0, "1 s"),
    (60.0, "1 min"),
    (3600.0, "1 h"),
    (86400.0, "1 d"),
    (604800.0, "1 w"),
    (2629800.0, "1 month"),
    (31557600.0, "1 y"),
    (315576000.0, "10 y"),
    (3155760000.0, "100 y"),
)


def time_axis(seconds: Sequence[float]) -> tuple[np.ndarray, list[float], list[str]]:
    """Positions on a logarithmic time axis, and its ticks. 0 s cannot be on a log axis: it
    sits a decade left of the first later time (at least 1 s), on a tick labelled "0 s"."""
    later = [t for t in seconds if t > 0]
    zero = max(min(later) / 10, 1.0) if later else 1.0
    x = np.array([t if t > 0 else zero for t in seconds])
    ticks = [(zero, "0 s")] if 0 in seconds else []
    ticks += [(t, label) for t, label in TIME_TICKS if x.min() * 0.99 <= t <= x.max() * 1.01]
    ticks += [(t, f"{t:g} s") for t in later if all(abs(t / u - 1) > 0.01 for u, _ in ticks)]
    ticks.sort()
    return x, [t for t, _ in ticks], [label for _, label in ticks]


def plot(result: EvalResult, title: str) -> bytes:
    """The PNG of :func:`drift_figure`."""
    buffer = io.BytesIO()
    drift_figure(result, title).savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    return buffer.getvalue()


def drift_figure(result: EvalResult, title: str) -> Figure:
    """One panel per metric kind, mean ± std against drift time (log axis), a line per output."""
    from matplotlib.figure import Figure  # imported here: only --plot pays for it

    from aimcc.report import shorten_distinct

    kinds = list(dict.fromkeys(m.kind for m in result.metrics))
    names = shorten_distinct({m.output for m in result.metrics}, 32)
    fig = Figure(figsize=(5 * len(kinds), 3.8), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)
    x, ticks, labels = time_axis(result.seconds)
    mean, std = result.mean(), result.std()
    for ax, kind in zip(axes[0], kinds, strict=True):
        for i, metric in enumerate(result.metrics):
            if metric.kind == kind:
                label = names[metric.output]
                ax.errorbar(x, mean[:, i], yerr=std[:, i], marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels, rotation=30)
        ax.minorticks_off()
        if 0 in result.seconds and len(x) > 1:  # the zero tick is not on the log scale
            ax.axvline(x.min() * 10**0.5, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("time after programming (log scale)")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig


# -- task accuracy (labelled data, a digital head from the adapter) --------------------------
def accuracy(exe: Executable, data: Dataset, adapter: Adapter | None, pooled: str) -> float:
    """Fraction of ``data`` the head of ``adapter`` classifies right, on the current tiles."""
    if data.labels is None:
        raise AimccError("task accuracy needs labels (a TSV 'label' column)")
    if adapter is None or HEAD not in adapter.heads:
        raise AimccError(f"task accuracy needs an adapter with a '{HEAD}' head")
    apply_adapter(exe, adapter)
    right = 0
    for feeds, labels, valid in batches(data, exe):
        logits = head_logits(exe.run(feeds), adapter, pooled)
        right += int((logits[:valid].argmax(-1) == labels[:valid]).sum())
    return right / len(data)


def evaluate_accuracy(
    exe: Executable,
    data: Dataset,
    adapters: dict[str, Adapter],
    times: Sequence[tuple[str, float]],
    trials: int,
    seed: int,
    pooled: str,
    compensation: str | None = None,
    step: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """Accuracy [trials, times] per adapter on PCM tiles. Trial i programs the tiles once
    (seed + i); every adapter is switched in on the same devices at each time, as one chip
    serving several tasks (switching an adapter never reprograms a tile)."""
    if trials < 1 or not times:
        raise AimccError("need at least one trial and one drift time")
    result = {name: np.zeros((trials, len(times))) for name in adapters}
    for trial in range(trials):
        exe.set_noise(NoiseSpec("pcm", times[0][1], compensation), seed + trial)
        for index, (_, seconds) in enumerate(times):
            if index:
                exe.at_time(seconds)
            for name, adapter in adapters.items():
                result[name][trial, index] = accuracy(exe, data, adapter, pooled)
            if step:
                step()
    return result
