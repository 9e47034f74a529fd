"""LoRA adapters in peft's folder format, and how their modules find a binary's layers.

AHWA-LoRA keeps the analog weights programmed once; each task is a small digital adapter.
A binary compiled with ``--lora-rank R`` has an empty (zero) LoRA slot on every target layer,
and ``Executable.set_adapter`` swaps adapters into those slots without touching a tile.

The interface (the ``adapt`` helper writes trained tensors through it)::

    LoraWeights(a [K, r], b [r, N], scale)     # y += scale * x @ a @ b  (aimcc orientation:
                                               # a = peft lora_A.weight.T, b = lora_B.weight.T)
    Adapter(lora={module: LoraWeights}, heads={module: {"weight": [out, in], "bias": [out]}},
            config={...adapter_config.json...})
    read_adapter(folder) -> Adapter            # adapter_config.json + adapter_model.safetensors
    write_adapter(folder, adapter) -> Path     # the same format, atomically (temp dir + rename)
    exe.set_adapter(folder | Adapter | {module: LoraWeights | (a, b, scale)} | None)

Module names are torch module paths without peft's ``base_model.model.`` prefix. They attach
to a binary's layers (named from the ONNX file, see ``raise``'s ``layer_name``) when equal or
when one is a dot-suffix of the other (``bert.encoder.layer.0.attention.self.query`` and
``encoder.layer.0.attention.self.query``); a module matching no layer, or several, is an error.
Heads (``modules_to_save``) replace a layer's weight and bias: only a layer compiled digital
(``--digital-layers``) can take one, since an analog layer would have to be reprogrammed.
safetensors is read with the ``safetensors`` package, which never executes code.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aimcc.errors import AimccError, first_line

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<half>[AB])(?:\.[^.]+)?\.weight$")
_UNSUPPORTED = {
    "use_dora": "DoRA",
    "lora_bias": "LoRA bias",
    "use_qalora": "QALoRA",
    "target_parameters": "target_parameters",
    "trainable_token_indices": "trainable tokens",
}


@dataclass(frozen=True)
class LoraWeights:
    """One layer's adapter: ``y += scale * x @ a @ b`` with a [K, r] and b [r, N]."""

    a: np.ndarray
    b: np.ndarray
    scale: float

    @property
    def rank(self) -> int:
        return int(self.a.shape[1])


@dataclass(frozen=True)
class Adapter:
    """A task's adapter: LoRA per module, task heads (modules_to_save), and its peft config."""

    lora: Mapping[str, LoraWeights]
    heads: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)

    def nbytes(self) -> int:
        arrays = [w for lw in self.lora.values() for w in (lw.a, lw.b)]
        arrays += [t for head in self.heads.values() for t in head.values()]
        return sum(int(a.nbytes) for a in arrays)


# -- name patterns -------------------------------------------------------------------------
def split_pattern(pattern: str | Iterable[str] | None) -> tuple[str, ...]:
    """'query,value' -> ('query', 'value'); empty items are dropped."""
    if pattern is None:
        return ()
    items = pattern.split(",") if isinstance(pattern, str) else list(pattern)
    return tuple(i.strip() for i in items if i.strip())


def matches(item: str, name: str) -> bool:
    """A pattern item names a layer: equal, a dot-suffix of it, or an fnmatch glob of it."""
    return name == item or name.endswith("." + item) or fnmatch.fnmatchcase(name, item)


def same_module(module: str, layer: str) -> bool:
    """An adapter's module and a binary's layer are the same when one is a dot-suffix of the
    other (exported models and peft's wrapped model differ by a prefix such as ``bert.``)."""
    return module == layer or module.endswith("." + layer) or layer.endswith("." + module)


def listing(names: Iterable[str], limit: int = 6) -> str:
    """A short, one-line list of names for error messages."""
    names = sorted(set(names))
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown or "none"


# -- reading -------------------------------------------------------------------------------
def read_adapter(path: str | Path) -> Adapter:
    """Read a peft LoRA adapter folder; every problem is one AimccError line."""
    folder = Path(path)
    if not folder.is_dir():
        raise AimccError(
            f"{folder}: not an adapter folder (expected {CONFIG_FILE} and {WEIGHTS_FILE} inside)"
        )
    config = _read_config(folder / CONFIG_FILE)
    tensors = _read_safetensors(folder / WEIGHTS_FILE)
    where = str(folder)
    halves: dict[str, dict[str, np.ndarray]] = {}
    heads: dict[str, dict[str, np.ndarray]] = {}
    head_modules = split_pattern(config.get("modules_to_save") or ())
    for key, array in tensors.items():
        if not key.isprintable():
            raise AimccError(f"{where}: tensor name {key!r} has control characters")
        name = key.removeprefix(PEFT_PREFIX)
        if not np.isfinite(array).all():
            raise AimccError(f"{where}: tensor '{key}' has non-finite values (NaN or inf)")
        if (m := _LORA_KEY.match(name)) is not None:
            halves.setdefault(m["module"], {})[m["half"]] = array
            continue
        module, _, leaf = name.rpartition(".")
        module = module.replace(".modules_to_save.default", "")
        if leaf in ("weight", "bias") and any(matches(h, module) for h in head_modules):
            heads.setdefault(module, {})[leaf] = array
            continue
        raise AimccError(
            f"{where}: unexpected tensor '{key}' (aimcc reads LoRA A/B of linear layers and "
            f"modules_to_save heads {list(head_modules)})"
        )
    lora = {module: _lora_weights(where, config, module, pair) for module, pair in halves.items()}
    for module, head in heads.items():
        if "weight" not in head or head["weight"].ndim != 2:
            raise AimccError(f"{where}: head '{module}' needs a 2-D weight [out, in]")
        bias = head.get("bias")
        if bias is not None and bias.shape != head["weight"].shape[:1]:
            raise AimccError(
                f"{where}: head '{module}': bias {bias.shape} does not match "
                f"weight {head['weight'].shape}"
            )
    if not lora and not heads:
        raise AimccError(f"{where}: the adapter holds no LoRA weights")
    return Adapter(lora, heads, config)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise AimccError(f"{path}: no such file (not a peft adapter folder)") from None
    except (OSError, ValueError) as exc:
        raise AimccError(f"{path}: not a readable JSON file ({first_line(exc)})") from None
    if not isinstance(config, dict):
        raise AimccError(f"{path}: expected a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AimccError(f"{path}: peft_type {config['peft_type']!r} (aimcc reads LORA adapters)")
    for key, what in _UNSUPPORTED.items():
        if config.get(key):
            raise AimccError(f"{path}: {what} ({key}) is not supported (plain LoRA only)")
    if config.get("bias", "none") != "none":
        raise AimccError(
            f"{path}: bias={config['bias']!r} would change the analog layers' "
            "biases; aimcc supports bias='none'"
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key, 8)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 < value < math.inf
        ):
            raise AimccError(f"{path}: '{key}' must be a positive number, got {value!r}")
    for key in ("rank_pattern", "alpha_pattern"):  # peft: {regex: number}
        value = config.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise AimccError(f"{path}: '{key}' must map module patterns to numbers, got {value!r}")
    for key in ("target_modules", "modules_to_save"):  # peft: a name, a list of names, or null
        value = config.get(key)
        names = [value] if isinstance(value, str) else value
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise AimccError(f"{path}: '{key}' must be a module name or a list of them")
    for key in ("use_rslora", "fan_in_fan_out"):
        if not isinstance(config.get(key, False), bool | None):
            raise AimccError(f"{path}: '{key}' must be true or false, got {config[key]!r}")
    return config


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise AimccError(f"{path}: no such file (peft writes the weights there)")
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k).to(torch.float32).numpy() for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise AimccError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's rank_pattern/alpha_pattern lookup: the first key matching the module's tail."""
    for key, value in patterns.items():
        try:
            found = re.match(rf"(.*\.)?({key})$", module)
        except re.error as exc:
            raise AimccError(f"{key!r} in the adapter config is not a regex ({exc})") from None
        if found:
            return value
    return default


def _lora_weights(
    where: str, config: Mapping[str, Any], module: str, pair: Mapping[str, np.ndarray]
) -> LoraWeights:
    if set(pair) != {"A", "B"}:
        missing = "B" if "A" in pair else "A"
        raise AimccError(f"{where}: module '{module}' has no lora_{missing}.weight")
    a, b = pair["A"], pair["B"]  # peft: A [r, in], B [out, r]
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise AimccError(
            f"{where}: module '{module}': lora_A {tuple(a.shape)} and lora_B "
            f"{tuple(b.shape)} are not [r, in] and [out, r]"
        )
    rank = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8))
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
    for what, value in (("rank", rank), ("lora_alpha", alpha)):
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 < value < math.inf
        ):
            raise AimccError(f"{where}: module '{module}': {what} {value!r} is not positive")
    if a.shape[0] != rank:
        raise AimccError(
            f"{where}: module '{module}' has rank {a.shape[0]}, the config says "
            f"{rank} (r / rank_pattern)"
        )
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return LoraWeights(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), scale)


# -- writing -------------------------------------------------------------------------------
def write_adapter(path: str | Path, adapter: Adapter) -> Path:
    """Write ``adapter`` as a peft LoRA folder (loadable with ``PeftModel.from_pretrained``),
    atomically: the folder appears whole or not at all."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise AimccError(f"{folder}: exists and is not a folder")
    tensors: dict[str, np.ndarray] = {}
    for module, lw in sorted(adapter.lora.items()):
        a, b = np.asarray(lw.a, np.float32), np.asarray(lw.b, np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise AimccError(
                f"module '{module}': a {a.shape} and b {b.shape} are not [K, r], [r, N]"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all() and math.isfinite(lw.scale)):
            raise AimccError(f"module '{module}': non-finite LoRA values")
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a.T)
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b.T)
    for module, head in sorted(adapter.heads.items()):
        for leaf, array in head.items():
            array = np.ascontiguousarray(array, np.float32)
            if not np.isfinite(array).all():
                raise AimccError(f"head '{module}': non-finite {leaf}")
            tensors[f"{PEFT_PREFIX}{module}.{leaf}"] = array
    config = _config_for(adapter)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(folder, "tmp")
    tmp.mkdir(0o777)  # the mode the umask leaves, as for any new folder (mkdtemp gives 0700)
    try:
        from safetensors.numpy import save_file

        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _replace_dir(new: Path, folder: Path) -> None:
    """Rename ``new`` to ``folder``; an old folder is moved aside first and removed after."""
    old = None
    if folder.exists():
        old = _beside(folder, "old")
        os.replace(folder, old)
    try:
        os.replace(new, folder)
    except BaseException:
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _beside(folder: Path, kind: str) -> Path:
    """A fresh hidden name next to ``folder`` (same file system, so renames are atomic)."""
    return folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.{kind}")


def _config_for(adapter: Adapter) -> dict[str, Any]:
    """adapter_config.json: r and lora_alpha from the commonest layer; rank_pattern and
    alpha_pattern (full module paths) for the rest, so every layer's scale comes out exact."""
    config = dict(adapter.config)
    rslora = bool(config.get("use_rslora"))
    ranks = {m: lw.rank for m, lw in adapter.lora.items()}
    alphas = {
        m: lw.scale * (math.sqrt(lw.rank) if rslora else lw.rank) for m, lw in adapter.lora.items()
    }
    r = Counter(ranks.values()).most_common(1)[0][0] if ranks else int(config.get("r", 8))
    alpha = Counter(alphas.values()).most_common(1)[0][0] if alphas else config.get("lora_alpha", 8)
    alpha = int(alpha) if float(alpha).is_integer() else alpha
    config.update(
        {
            "peft_type": "LORA",
            "r": r,
            "lora_alpha": alpha,
            "target_modules": sorted(adapter.lora) or config.get("target_modules"),
            "rank_pattern": {re.escape(m): k for m, k in ranks.items() if k != r},
            "alpha_pattern": {re.escape(m): a for m, a in alphas.items() if a != alpha},
            "modules_to_save": sorted(adapter.heads) or None,
            "use_rslora": rslora,
            "bias": "none",
            "lora_dropout": config.get("lora_dropout", 0.0),
            "fan_in_fan_out": bool(config.get("fan_in_fan_out", False)),
            "inference_mode": True,
            "init_lora_weights": config.get("init_lora_weights", True),
        }
    )
    config.setdefault("task_type", None)
    config.setdefault("base_model_name_or_path", None)
    return config


# -- binding an adapter to a binary's slots ------------------------------------------------
@dataclass(frozen=True)
class SlotShape:
    """What one of a binary's LoRA slots takes: A [k, r], B [r, n] under a kernel of ``scale``."""

    k: int
    r: int
    n: int
    scale: float


@dataclass(frozen=True)
class HeadShape:
    """A digital linear layer of a binary that a head can replace: weight [k, n], bias [n]."""

    k: int
    n: int
    has_bias: bool


Bound = tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, Any]]]


def bind(
    adapter: Adapter,
    slots: Mapping[str, SlotShape],
    heads: Mapping[str, HeadShape],
    analog: Iterable[str],
) -> Bound:
    """Check ``adapter`` against a binary's layers and give the tensors its slots take:
    per slot layer (A [k, R], B [R, n]) zero-padded to the slot rank R, B scaled so the
    compiled kernel's scale yields the adapter's; per digital layer (weight [k, n], bias).
    Everything is checked before anything is returned, so a bad adapter changes nothing."""
    analog = set(analog)
    lora: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    owner: dict[str, str] = {}
    for module, lw in adapter.lora.items():
        layer = _layer_for(module, slots, "LoRA module")
        if layer is None:
            elsewhere = [n for n in (*analog, *heads) if same_module(module, n)]
            if elsewhere:
                raise AimccError(
                    f"LoRA module '{module}': layer '{elsewhere[0]}' has no adapter slot "
                    "(compile with --lora-rank R, and --lora-targets to include it)"
                )
            raise AimccError(
                f"LoRA module '{module}' matches no layer of the binary (layers with adapter "
                f"slots: {listing(slots)})"
            )
        if layer in owner:
            raise AimccError(f"LoRA modules '{owner[layer]}' and '{module}' both name '{layer}'")
        owner[layer] = module
        slot = slots[layer]
        a, b = np.asarray(lw.a, np.float32), np.asarray(lw.b, np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise AimccError(
                f"LoRA module '{module}': a {a.shape} and b {b.shape} are not [K, r] and [r, N]"
            )
        if (a.shape[0], b.shape[1]) != (slot.k, slot.n):
            raise AimccError(
                f"LoRA module '{module}' is {a.shape[0]}->{b.shape[1]} but layer '{layer}' is "
                f"{slot.k}->{slot.n} (an adapter for another base model?)"
            )
        if a.shape[1] > slot.r:
            raise AimccError(
                f"LoRA module '{module}' has rank {a.shape[1]}, more than the slot rank "
                f"{slot.r} of layer '{layer}' (compile with --lora-rank {a.shape[1]})"
            )
        ratio = np.float32(lw.scale / slot.scale)
        if a.shape[1] == slot.r:  # the common case, one operation per tensor
            padded_a, padded_b = a.copy(), b * ratio
        else:
            padded_a = np.zeros((slot.k, slot.r), np.float32)
            padded_b = np.zeros((slot.r, slot.n), np.float32)
            padded_a[:, : a.shape[1]] = a
            np.multiply(b, ratio, out=padded_b[: b.shape[0]])
        # NaN and inf propagate into the sums (values so large that a float32 sum overflows
        # are refused too: their products would overflow in the kernel)
        if not math.isfinite(float(padded_a.sum()) + float(padded_b.sum())):
            raise AimccError(f"LoRA module '{module}': non-finite values (NaN or inf)")
        lora[layer] = (padded_a, padded_b)
    swapped: dict[str, tuple[np.ndarray, Any]] = {}
    for module, head in adapter.heads.items():
        layer = _layer_for(module, heads, "head")
        if layer is None:
            on_tiles = [n for n in analog if same_module(module, n)]
            if on_tiles:
                raise AimccError(
                    f"head '{module}' is layer '{on_tiles[0]}' on analog tiles: swapping it "
                    f"would reprogram them (compile with --digital-layers {on_tiles[0]})"
                )
            raise AimccError(
                f"head '{module}' matches no digital layer (digital layers: {listing(heads)})"
            )
        shape = heads[layer]
        weight = np.asarray(head["weight"], np.float32)
        bias = head.get("bias")
        if weight.shape != (shape.n, shape.k):
            raise AimccError(
                f"head '{module}': weight {weight.shape} but layer '{layer}' "
                f"takes [{shape.n}, {shape.k}] ([out, in])"
            )
        if bias is not None and not shape.has_bias:
            raise AimccError(f"head '{module}' has a bias; layer '{layer}' was compiled without")
        if not np.isfinite(weight).all() or (bias is not None and not np.isfinite(bias).all()):
            raise AimccError(f"head '{module}': non-finite values (NaN or inf)")
        if shape.has_bias:
            bias = np.zeros(shape.n, np.float32) if bias is None else np.asarray(bias, np.float32)
            if bias.shape != (shape.n,):
                raise AimccError(f"head '{module}': bias {bias.shape}, expected [{shape.n}]")
        swapped[layer] = (np.ascontiguousarray(weight.T), bias)
    return lora, swapped


def _layer_for(module: str, layers: Mapping[str, Any], what: str) -> str | None:
    if module in layers:
        return module
    found = [n for n in layers if same_module(module, n)]
    if len(found) > 1:
        exact = [n for n in found if n == module]
        if len(exact) == 1:
            return exact[0]
        raise AimccError(f"{what} '{module}' matches several layers: {listing(found)}")
    return found[0] if found else None


def as_adapter(value: Adapter | Mapping[str, Any]) -> Adapter:
    """An Adapter from ``{module: LoraWeights | (a [K, r], b [r, N], scale)}``."""
    if isinstance(value, Adapter):
        return value
    lora = {}
    for module, w in value.items():
        if isinstance(w, LoraWeights):
            lora[module] = w
        else:
            try:
                a, b, scale = w
            except (TypeError, ValueError):
                raise AimccError(
                    f"LoRA module '{module}': expected LoraWeights or (a, b, scale)"
                ) from None
            lora[module] = LoraWeights(np.asarray(a), np.asarray(b), float(scale))
    return Adapter(lora)
