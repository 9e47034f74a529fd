"""AHWA-LoRA training: digital adapters fitted through the simulated tiles of a compiled binary.

The binary's program is executed again with torch autograd: analog layers through the
training forward of :mod:`aimcc.runtime.train` (or exactly, for digital training), the LoRA
A/B of every ``lora`` kernel (and an optional digital task head on one output) as the only
trainable tensors, everything else frozen. Objectives: ``task`` (cross-entropy of the head's
logits against labels) and ``distill`` (match the fp32 model with the starting adapter: MSE on
the pooled output, plus KL on the head's logits if there is a head).

Data is a TSV of ``sentence<TAB>label`` tokenised with a Hugging Face tokenizer folder, or an
.npz with one array per model input (and optionally ``labels``), padded to the binary's static
[batch, seq] shape. Adapters are peft folders (adapter_config.json +
adapter_model.safetensors), read and written by :mod:`aimcc.adapters`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aimcc.adapters import Adapter, LoraWeights
from aimcc.errors import AimccError, first_line
from aimcc.runtime import Executable
from aimcc.runtime.kernels import KERNEL_IMPLS
from aimcc.runtime.train import TrainNoise, TrainTiles, train_matmul

OBJECTIVES = ("task", "distill")
HEAD = "classifier"  # the task head's module name in the adapter (peft modules_to_save)


# -- data ------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Model inputs [n, seq] per input name, and labels [n] (None without labels)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, n: int | None, seed: int) -> Dataset:
        """``n`` examples drawn without replacement with ``seed`` (all if None or too few)."""
        if n is None or n >= len(self):
            return self
        pick = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        labels = None if self.labels is None else self.labels[pick]
        return Dataset({k: v[pick] for k, v in self.inputs.items()}, labels)


def load_data(
    path: Path, exe: Executable, tokenizer: Path | None, limit: int | None = None, seed: int = 0
) -> Dataset:
    """A TSV (``sentence<TAB>label``, with a header) through ``tokenizer``, or an .npz;
    ``limit`` keeps that many examples drawn with ``seed`` (before tokenising)."""
    if not path.is_file():
        raise AimccError(f"{path}: no such file")
    seq = _static_seq(exe)
    if path.suffix == ".npz":
        from aimcc.commands import read_npz

        arrays = read_npz(path)
        labels = arrays.pop("labels", None)
        names = {s["name"] for s in exe.inputs}
        if set(arrays) - names or "input_ids" not in arrays:
            raise AimccError(
                f"{path}: arrays {sorted(arrays)} do not match the binary's inputs "
                f"{sorted(names)} (plus optional 'labels')"
            )
        ids = arrays["input_ids"]
        if ids.ndim != 2 or ids.shape[1] != seq:
            raise AimccError(f"{path}: input_ids must be [n, {seq}], got {list(ids.shape)}")
        arrays.setdefault("attention_mask", (ids != 0).astype(np.int64))
        arrays.setdefault("token_type_ids", np.zeros_like(ids))
        inputs = {k: arrays[k].astype(np.int64) for k in names}
        labels = None if labels is None else labels.astype(np.int64)
        return Dataset(inputs, labels).subset(limit, seed)
    if tokenizer is None:
        raise AimccError(f"{path}: a TSV needs --tokenizer DIR (a Hugging Face tokenizer folder)")
    sentences, labels = _read_tsv(path)
    if limit is not None and limit < len(sentences):
        pick = np.sort(np.random.default_rng(seed).choice(len(sentences), limit, replace=False))
        sentences = [sentences[i] for i in pick]
        labels = None if labels is None else labels[pick]
    encoded = _tokenise(sentences, tokenizer, seq)
    names = {s["name"] for s in exe.inputs}
    missing = names - set(encoded)
    if missing:
        raise AimccError(f"the tokenizer gives no '{sorted(missing)[0]}' input for the binary")
    return Dataset({k: encoded[k] for k in names}, labels)


def _read_tsv(path: Path) -> tuple[list[str], np.ndarray | None]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[0].strip() != "sentence":
        raise AimccError(f"{path}: expected a header 'sentence<TAB>label'")
    has_labels = len(lines[0].split("\t")) > 1
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        sentences.append(fields[0].strip())
        if has_labels:
            try:
                labels.append(int(fields[1]))
            except (IndexError, ValueError):
                raise AimccError(f"{path}:{number}: label must be an integer") from None
    if not sentences:
        raise AimccError(f"{path}: no sentences")
    return sentences, np.array(labels, np.int64) if has_labels else None


def _tokenise(sentences: list[str], tokenizer: Path, seq: int) -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not tokenizer.is_dir():
        raise AimccError(f"{tokenizer}: tokenizer folder not found")
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except ImportError:
        raise AimccError("--tokenizer needs the 'transformers' package") from None
    except Exception as exc:  # transformers raises many kinds
        raise AimccError(f"{tokenizer}: not a tokenizer folder ({first_line(exc)})") from None
    encoded = tok(sentences, padding="max_length", truncation=True, max_length=seq)
    return {k: np.asarray(v, np.int64) for k, v in encoded.items()}


def _static_seq(exe: Executable) -> int:
    for spec in exe.inputs:
        if spec["name"] == "input_ids":
            return int(spec["shape"][1])
    raise AimccError(f"{exe.where}: the binary has no 'input_ids' input (not a token model)")


def batches(data: Dataset, exe: Executable, order: np.ndarray | None = None) -> Iterator[tuple]:
    """(feeds, labels, valid) at the binary's static batch size; the last batch is padded with
    copies of its first example, and only the first ``valid`` rows count."""
    size = int(exe.inputs[0]["shape"][0])
    order = np.arange(len(data)) if order is None else order
    for start in range(0, len(order), size):
        pick = order[start : start + size]
        valid = len(pick)
        pick = np.concatenate([pick, np.full(size - valid, pick[0])])
        feeds = {k: v[pick] for k, v in data.inputs.items()}
        labels = None if data.labels is None else data.labels[pick]
        yield feeds, labels, valid


# -- adapters --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """One ``lora`` kernel of the binary: its module name and A/B tensor keys."""

    index: int
    name: str
    a: str
    b: str
    scale: float


def lora_slots(exe: Executable) -> list[Slot]:
    """The binary's LoRA slots, named by the layer the compiler recorded or, failing that, by
    the bias added after them (peft's ``<module>.base_layer.bias``)."""
    instructions = exe.program["instructions"]
    bias_of = {  # the analog layer's output a LoRA adds to -> the bias fused into its tiles
        ins["out"]: ins["bias"]
        for ins in instructions
        if ins["op"] == "analog" and isinstance(ins.get("bias"), str)
    }
    slots = []
    for i, ins in enumerate(instructions):
        if ins.get("kind") != "lora":
            continue
        _, _, a, b = ins["args"]
        name = ins["params"].get("layer") or ins.get("layer")
        if not name and ins["args"][1] in bias_of:
            name = bias_of[ins["args"][1]].removesuffix(".bias").removesuffix(".base_layer")
        slots.append(Slot(i, name or f"lora{len(slots)}", a, b, float(ins["params"]["scale"])))
    if len({s.name for s in slots}) != len(slots):
        raise AimccError(f"{exe.where}: LoRA slots with the same layer name")
    return slots


def with_base(adapter: Adapter, base: str) -> Adapter:
    """The adapter with peft's ``base_model_name_or_path`` set to what it was trained on."""
    return Adapter(adapter.lora, adapter.heads, {**adapter.config, "base_model_name_or_path": base})


def apply_adapter(exe: Executable, adapter: Adapter | None) -> None:
    """Load an adapter's LoRA into the binary's slots (``set_adapter``: no tile is touched);
    layers it does not name keep their compiled (zero) LoRA. Heads are applied by
    :func:`head_logits` on the pooled output, outside the program."""
    exe.set_adapter(None if adapter is None else Adapter(adapter.lora, config=adapter.config))


def _pool(x: Any) -> Any:
    """A [batch, seq, features] output is mean-pooled over its tokens; [batch, features] stays."""
    return x.mean(1) if x.ndim == 3 else x


def head_logits(outputs: dict[str, Any], adapter: Adapter | None, output: str) -> Any | None:
    """The digital task head (``classifier``) on the pooled ``output``, or None without one."""
    if adapter is None or HEAD not in adapter.heads:
        return None
    head = adapter.heads[HEAD]
    x = _pool(outputs[output])
    if isinstance(x, np.ndarray):
        return x @ head["weight"].T + head.get("bias", 0.0)
    return F.linear(x, torch.as_tensor(head["weight"]), torch.as_tensor(head["bias"]))


# -- training --------------------------------------------------------------------------------
class TrainProgram:
    """The binary's program as a differentiable torch function of its LoRA (and head).

    ``analog`` True runs analog layers through the training forward (tiling, DAC/ADC, noise);
    False runs them exactly in fp32 (digital training, and the distillation teacher).
    """

    def __init__(self, exe: Executable, analog: bool, noise: TrainNoise, seed: int):
        self.exe = exe
        self.analog = analog
        self.noise = noise
        self.generator = torch.Generator().manual_seed(seed)
        self.slots = lora_slots(exe)
        by_index = {s.index: s for s in self.slots}
        self.a: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}
        for s in self.slots:
            self.a[s.name] = exe._tensors[s.a].detach().clone().float()
            self.b[s.name] = exe._tensors[s.b].detach().clone().float()
        self._steps = [
            self._analog(ins) if ins["op"] == "analog" else self._kernel(i, ins, by_index)
            for i, ins in enumerate(exe.program["instructions"])
        ]

    def parameters(self) -> list[torch.Tensor]:
        return [*self.a.values(), *self.b.values()]

    def set_lora(self, adapter: Adapter | None) -> None:
        """Start from ``adapter`` (padded to the slot rank, scale folded into B) or zero."""
        lora = {} if adapter is None else adapter.lora
        for s in self.slots:
            a, b = self.a[s.name], self.b[s.name]
            with torch.no_grad():
                a.zero_()
                b.zero_()
                if s.name in lora:
                    w = lora[s.name]
                    a[:, : w.a.shape[1]] = torch.from_numpy(np.asarray(w.a, np.float32))
                    b[: w.b.shape[0]] = torch.from_numpy(np.asarray(w.b * (w.scale / s.scale)))

    def adapter(self, heads: dict[str, dict[str, np.ndarray]]) -> Adapter:
        lora = {
            s.name: LoraWeights(
                self.a[s.name].detach().numpy().copy(),
                self.b[s.name].detach().numpy().copy(),
                s.scale,
            )
            for s in self.slots
        }
        return Adapter(lora, heads)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        env: list[Any] = [None] * self.exe.program["slots"]
        for spec in self.exe.inputs:
            env[spec["slot"]] = torch.from_numpy(np.ascontiguousarray(feeds[spec["name"]]))
        for step in self._steps:
            step(env)
        result = {}
        for spec in self.exe.outputs:
            value = self.exe._resolve(spec["value"])
            result[spec["name"]] = env[value] if isinstance(value, int) else value
        return result

    def _analog(self, ins: dict[str, Any]) -> Callable[[list[Any]], None]:
        weight = self.exe._resolve(ins["weight"])
        assert isinstance(weight, torch.Tensor)
        x, out = ins["x"], ins["out"]
        bias = self.exe._resolve(ins["bias"]) if ins.get("bias") is not None else 0.0
        if not self.analog:
            w = weight.float()

            def exact(env: list[Any]) -> None:
                env[out] = torch.matmul(env[x], w) + bias

            return exact
        tiles = TrainTiles(weight, self.exe.arch)

        def noisy(env: list[Any]) -> None:
            env[out] = train_matmul(env[x], tiles, self.noise, self.generator) + bias

        return noisy

    def _kernel(
        self, index: int, ins: dict[str, Any], slots: dict[int, Slot]
    ) -> Callable[[list[Any]], None]:
        if index in slots:
            s = slots[index]
            x, y, out = ins["args"][0], ins["args"][1], ins["outs"][0]
            a, b, scale = self.a[s.name], self.b[s.name], s.scale

            def lora(env: list[Any]) -> None:
                env[out] = env[y] + torch.matmul(torch.matmul(env[x], a), b) * scale

            return lora
        if ins["kind"] == "attention":  # the runtime's kernel cleans NaNs in place
            args = [self.exe._resolve(v) for v in ins["args"]]
            params = ins["params"]
            out = ins["outs"][0]

            def attention(env: list[Any]) -> None:
                q, kt, v, *mask = (env[a] if isinstance(a, int) else a for a in args)
                scores = torch.matmul(q, kt) * params["scale"]
                if mask and mask[0] is not None:
                    scores = scores + mask[0]
                probs = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
                env[out] = torch.matmul(probs, v)

            return attention
        assert ins["kind"] in KERNEL_IMPLS or ins["kind"].startswith("onnx.")
        return self.exe._kernel_step(ins)


@dataclass
class TrainConfig:
    objective: str = "task"
    analog: bool = True  # train through the simulated tiles (False: exact fp32, digital)
    noise: TrainNoise = field(default_factory=TrainNoise)
    epochs: float = 1.0
    lr: float = 1e-3  # the head's
    lora_lr: float | None = None  # None: lr
    seed: int = 0
    output: str = "sentence_embedding"  # the pooled output the head reads / distill matches
    classes: int = 2
    train_head: bool = True
    # learning-rate schedule (Hugging Face Trainer's "linear"): warm up over this fraction of
    # the steps, then decay linearly to 0. The decay matters under training noise: the last
    # steps average the noise out instead of leaving the adapter at one noisy step's end.
    warmup: float = 0.1


@dataclass
class TrainResult:
    adapter: Adapter
    losses: list[float]
    seconds: float
    steps: int


def train(
    exe: Executable,
    data: Dataset,
    config: TrainConfig,
    init: Adapter | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fit the binary's LoRA (and the head for ``task``) on ``data``; ``progress(step, total,
    loss)`` after each step. Same seed and data give the same adapter."""
    if config.objective not in OBJECTIVES:
        raise AimccError(f"unknown objective '{config.objective}': use {', '.join(OBJECTIVES)}")
    if config.objective == "task" and data.labels is None:
        raise AimccError("the task objective needs labels (a TSV 'label' column or 'labels')")
    if config.output not in {s["name"] for s in exe.outputs}:
        raise AimccError(f"{exe.where} has no output '{config.output}'")
    torch.manual_seed(config.seed)
    program = TrainProgram(exe, config.analog, config.noise, config.seed)
    program.set_lora(init)
    _init_a(program, config.seed)
    lora_params = program.parameters()
    for p in lora_params:
        p.requires_grad_(True)
    head = _init_head(init, exe, config)
    groups = [{"params": lora_params, "lr": config.lora_lr or config.lr}]
    if config.objective == "task" and config.train_head:
        for p in head.values():
            p.requires_grad_(True)
        groups.append({"params": list(head.values()), "lr": config.lr})
    teacher = None
    if config.objective == "distill":
        teacher = TrainProgram(exe, False, config.noise, config.seed)
        teacher.set_lora(init)
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    size = int(exe.inputs[0]["shape"][0])
    per_epoch = -(-len(data) // size)
    total = max(1, round(config.epochs * per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _linear(total, config.warmup))
    losses: list[float] = []
    start = time.perf_counter()
    step = 0
    while step < total:
        for feeds, labels, valid in batches(data, exe, rng.permutation(len(data))):
            outputs = program(feeds)
            pooled = _pool(outputs[config.output][:valid])
            logits = F.linear(pooled, head["weight"], head["bias"])
            if config.objective == "task":
                loss = F.cross_entropy(logits, torch.from_numpy(labels[:valid]))
            else:
                assert teacher is not None
                with torch.no_grad():
                    target = _pool(teacher(feeds)[config.output][:valid])
                    target_logits = F.linear(target, head["weight"], head["bias"])
                loss = F.mse_loss(pooled, target) / target.pow(2).mean().clamp(min=1e-12)
                if init is not None and HEAD in init.heads:
                    loss = loss + F.kl_div(
                        F.log_softmax(logits, -1),
                        F.log_softmax(target_logits, -1),
                        log_target=True,
                        reduction="batchmean",
                    )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if progress:
                progress(step, total, losses[-1])
            if step >= total:
                break
    heads = {}
    if config.objective == "task" or (init is not None and HEAD in init.heads):
        heads[HEAD] = {k: v.detach().numpy().copy() for k, v in head.items()}
    return TrainResult(program.adapter(heads), losses, time.perf_counter() - start, step)


def _linear(total: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor after ``step`` steps: linear warm-up over ``warmup * total``
    steps, then linear decay to 0 at ``total`` (as transformers' linear schedule)."""
    ramp = max(1, round(warmup * total)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return max(0.0, (total - step) / max(1, total - ramp))

    return factor


def _init_a(program: TrainProgram, seed: int) -> None:
    """A slot whose A and B are both zero would never learn: give A peft's default init
    (Kaiming-uniform, a = sqrt(5)), drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    for s in program.slots:
        a, b = program.a[s.name], program.b[s.name]
        if not a.any() and not b.any():
            bound = 1.0 / math.sqrt(a.shape[0])  # kaiming_uniform_(a=sqrt(5)) on [r, K]
            with torch.no_grad():
                a.copy_(torch.empty(a.shape).uniform_(-bound, bound, generator=generator))


def _init_head(init: Adapter | None, exe: Executable, config: TrainConfig) -> dict:
    if init is not None and HEAD in init.heads:
        return {k: torch.from_numpy(v.copy()) for k, v in init.heads[HEAD].items()}
    features = next(s["shape"][-1] for s in exe.outputs if s["name"] == config.output)
    return {
        "weight": torch.zeros(config.classes, features),
        "bias": torch.zeros(config.classes),
    }
