"""Executes a loaded program: analog layers through the tile simulator, kernels in torch.

Instructions are turned into closures once at load time so a run is a tight loop over them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aimcc.adapters import (
    Adapter,
    HeadShape,
    SlotShape,
    as_adapter,
    bind,
    read_adapter,
)
from aimcc.arch import Arch, arch_from_dict
from aimcc.backends.aimcb import read_binary, release_pages
from aimcc.errors import AimccError
from aimcc.runtime.analog import (
    NoiseSpec,
    ProgrammedLayer,
    TileWeights,
    analog_matmul,
    draw_key,
    keyed_generator,
)
from aimcc.runtime.kernels import KERNEL_IMPLS
from aimcc.runtime.onnx_ops import run_op, supported_ops

IDEAL = NoiseSpec("ideal")

Operand = int | torch.Tensor | None
Step = Callable[[list[Any]], None]
# Binaries whose tensors exceed this stream their large weights through the page cache
# (Executable.stream): a run then holds about one layer. Smaller ones keep them resident,
# which saves re-reading them at every run.
STREAM_BYTES = 256 << 20
STREAM_MIN_TENSOR = 1 << 20  # kernel tensors smaller than this stay resident


class AnalogLayer:
    """One analog instruction: its weight and the tiles the current noise model makes of it.

    The weight [K, N] (crossbar orientation) is a view of the mapped binary. Tiles are made at
    first use and kept until the noise model or the read changes: ideal tiles are views of the
    weight; quant and PCM tiles are computed from it (PCM programs the layer, keyed by the
    seed and the layer's index, on first use), after which the weight's pages are released.

    A replicated layer (the replicate pass) has ``copies`` copies of its weight on tiles of
    their own: chunk k of ``chunk`` tokens runs on copy k mod copies. Ideal and quant copies
    compute the same numbers, so only PCM copies (each its own devices, keyed by the copy
    too) are told apart.
    """

    def __init__(
        self,
        name: str,
        weight: torch.Tensor,
        arch: Arch,
        index: int,
        layer: str | None = None,
        release: Callable[[], None] = lambda: None,
        copies: int = 1,
        chunk: int = 1,
    ):
        self.name = name
        self.weight = weight
        self.arch = arch
        self.index = index  # among the program's analog layers: part of its devices' key
        self.layer = layer  # the layer's name from the ONNX file
        self.release = release  # drops the weight's mapped pages (read again when needed)
        self.copies, self.chunk = copies, chunk
        self.noisy = True  # False: ideal tiles whatever the noise model (set_noise's ``only``)
        self._state = (NoiseSpec("ideal"), 0, 0)  # noise, seed, read
        self._programmed: dict[int, ProgrammedLayer] = {}  # per copy
        self._tiles: dict[int, TileWeights] = {}

    def set_state(self, spec: NoiseSpec, seed: int, read: int, reprogram: bool) -> None:
        """Tiles for ``spec`` (and PCM devices of ``seed``, at read number ``read``) from the
        next use on; ``reprogram`` False keeps the programmed devices."""
        if reprogram:
            self._programmed = {}
        self._tiles = {}
        self._state = (spec, seed, read)

    def key(self, copy: int = 0) -> tuple[int, ...]:
        """The path of a copy's random streams under a key: the layer, then the copy (the
        first copy has the path of an unreplicated layer)."""
        return (self.index, copy) if copy else (self.index,)

    @property
    def programmed(self) -> ProgrammedLayer | None:
        """The PCM devices (programmed on first use), or None for other tile models."""
        return self.programmed_copy(0)

    def programmed_copy(self, copy: int) -> ProgrammedLayer | None:
        """The PCM devices of one copy (programmed on first use), None for other models."""
        spec, seed, _ = self._state
        if spec.model != "pcm":
            return None
        if copy not in self._programmed:
            self._programmed[copy] = ProgrammedLayer.program(
                self.weight, self.arch, (seed, *self.key(copy))
            )
        return self._programmed[copy]

    @property
    def tiles(self) -> TileWeights:
        """The tiles of the current noise model and read (made on first use)."""
        return self.tiles_of(0)

    def tiles_of(self, copy: int) -> TileWeights:
        """One copy's tiles of the current noise model and read (made on first use)."""
        if copy not in self._tiles:
            spec, _, read = self._state
            if spec.model == "ideal":
                self._tiles[copy] = TileWeights.ideal(self.weight, self.arch)
                return self._tiles[copy]
            if spec.model == "quant":
                tiles = TileWeights.from_weight(self.weight, self.arch)
            else:
                programmed = self.programmed_copy(copy)
                assert programmed is not None
                tiles = programmed.at_time(spec.t_inference_s, read, spec.compensation)
            if len(self._tiles) + 1 >= (self.copies if spec.model == "pcm" else 1):
                self.release()  # the tiles hold what the MVMs read
            self._tiles[copy] = tiles
        return self._tiles[copy]

    def matmul(
        self,
        x: torch.Tensor,
        spec: NoiseSpec,
        run_key: int,
        bias: torch.Tensor | None,
        arch: Arch,
    ) -> torch.Tensor:
        """x[..., K] -> y[..., N] through the tiles (each PCM copy on its chunks), with the
        periphery of ``arch`` (the executable's: a sweep may change it)."""
        if spec.model != "pcm" or self.copies == 1:
            noise = keyed_generator((run_key,), *self.key()) if spec.model == "pcm" else None
            return analog_matmul(x, self.tiles, arch, spec, noise, bias)
        rows = x.reshape(-1, x.shape[-1])
        owner = torch.arange(rows.shape[0]) // self.chunk % self.copies
        y = torch.empty((rows.shape[0], self.weight.shape[1]), dtype=x.dtype)
        for copy in range(self.copies):
            mine = (owner == copy).nonzero().squeeze(1)
            if len(mine):
                noise = keyed_generator((run_key,), *self.key(copy))
                y[mine] = analog_matmul(rows[mine], self.tiles_of(copy), arch, spec, noise, bias)
        return y.reshape(*x.shape[:-1], y.shape[-1])


@dataclass
class LoraSlot:
    """A layer's LoRA tensors, read by its `lora` kernel at every run: set_adapter swaps them
    (y += scale * x @ a @ b, with the compiled kernel's scale; adapters fold theirs into b)."""

    layer: str
    a: torch.Tensor  # [K, R]
    b: torch.Tensor  # [R, N]
    scale: float
    compiled: tuple[torch.Tensor, torch.Tensor]


@dataclass
class DigitalLinear:
    """A linear layer kept on the clusters: weight [K, N] and bias its kernels read at every
    run, so a task head (peft modules_to_save) can be swapped in."""

    layer: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    compiled: tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter checked against one program: the tensors its slots and heads will read."""

    source: Adapter | None
    lora: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    heads: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]]


class Executable:
    """A program ready to run on ideal tiles (default) or a non-ideal tile model.

    Program once, then evaluate at several drift times; the devices keep their programming
    noise and drift exponents between reads, as real ones do::

        exe = aimcc.runtime.load("model.aimcb")
        exe.set_noise(NoiseSpec("pcm"), seed=0)  # program every tile (draws device noise)
        for t in (0.0, 3600.0, 86400.0):
            exe.at_time(t)  # re-read the same devices t seconds after programming
            outputs = exe.run(feeds)

    Each ``at_time`` draws fresh read noise; the same seed and sequence of calls gives the
    same outputs.

    ``stream`` (default: when the tensors exceed STREAM_BYTES) releases the mapped pages of
    large weights after each step that reads them, so a run holds about one layer's weights
    (they are read again from the page cache on the next run); values are dropped after
    their last use either way.
    """

    def __init__(
        self,
        program: dict[str, Any],
        tensors: dict[str, np.ndarray],
        where: str,
        stream: bool | None = None,
    ):
        self.program = program
        self.where = where
        self.arch: Arch = arch_from_dict(program["arch"])
        self._arrays = tensors  # numpy views of the mapped binary
        if stream is None:
            stream = sum(a.nbytes for a in tensors.values()) > STREAM_BYTES
        self.stream = stream
        self._tensors = {k: torch.from_numpy(v) for k, v in tensors.items()}
        self.layers: list[AnalogLayer] = []
        self.lora_slots: dict[str, LoraSlot] = {}
        self.digital_linears: dict[str, DigitalLinear] = {}
        self.adapter: Adapter | None = None
        self.spec = NoiseSpec("ideal")
        self._seed = 0
        self._read = 0  # at_time calls since set_noise: keys the read noise
        self._generator: torch.Generator | None = None  # draws a key per run (output noise)
        self._run_key = 0
        instructions = program["instructions"]
        # the RISC-V kernels each run executes, in order (None: not recorded; see trace_calls)
        self.calls: list[dict[str, Any]] | None = None
        self._steps = [self._compile(i, ins) for i, ins in enumerate(instructions)]
        self._after = self._last_uses(instructions, program["outputs"])
        self.inputs = program["inputs"]
        self.outputs = program["outputs"]

    def _last_uses(
        self,
        instructions: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
    ) -> list[tuple[list[int], list[np.ndarray]]]:
        """Per step: the slots read for the last time (dropped after it) and, when
        streaming, the large mapped kernel tensors it reads (their pages released)."""
        step_of = list(range(len(instructions)))
        last: dict[int, int] = {}
        streamed: list[list[np.ndarray]] = [[] for _ in self._steps]
        for i, ins in enumerate(instructions):
            for a in [*ins.get("args", ()), ins.get("x")]:
                if isinstance(a, int):
                    last[a] = step_of[i]
                elif self.stream and ins["op"] in ("call", "view") and isinstance(a, str):
                    array = self._arrays.get(a)
                    if array is not None and array.nbytes >= STREAM_MIN_TENSOR:
                        streamed[step_of[i]].append(array)
        kept = {o["value"] for o in outputs if isinstance(o["value"], int)}
        drops: list[list[int]] = [[] for _ in self._steps]
        for slot, at in last.items():
            if slot not in kept:
                drops[at].append(slot)
        return list(zip(drops, streamed, strict=True))

    # -- noise -----------------------------------------------------------------------------
    def set_noise(self, spec: NoiseSpec, seed: int = 0, only: set[str] | None = None) -> None:
        """Choose the tile model; for pcm, program the tiles with ``seed`` (each layer on
        first use: programming noise and drift exponents drawn from streams keyed by the seed,
        the layer and the tile, so the order layers are used in does not matter) and read
        them at ``spec.t_inference_s``. ``only`` (layer names, ``AnalogLayer.layer`` else its
        weight key): those layers get the model, the others ideal tiles (sensitivity analysis:
        one projection noisy at a time)."""
        self.spec = spec
        self._seed, self._read = seed, 0
        self._generator = torch.Generator().manual_seed(seed)
        for layer in self.layers:
            layer.noisy = only is None or (layer.layer or layer.name) in only
            layer.set_state(spec if layer.noisy else IDEAL, seed, 0, reprogram=True)

    def at_time(self, t_inference_s: float) -> None:
        """Read the programmed devices ``t_inference_s`` after programming: same devices and
        drift exponents, fresh read noise (keyed by the number of reads since programming);
        later ``run`` calls use this read."""
        if self.spec.model != "pcm" or self._generator is None:
            raise AimccError("at_time needs pcm noise: call set_noise(NoiseSpec('pcm')) first")
        self.spec = NoiseSpec("pcm", t_inference_s, self.spec.compensation)
        self._read += 1
        for layer in self.layers:
            if layer.noisy:
                layer.set_state(self.spec, self._seed, self._read, reprogram=False)

    # -- adapters --------------------------------------------------------------------------
    def set_adapter(
        self, adapter: str | Path | Adapter | Mapping[str, Any] | PreparedAdapter | None
    ) -> None:
        """Load a LoRA adapter (a peft folder, an Adapter, ``{module: (a, b, scale)}``, or
        one made ready by :meth:`prepare_adapter`) into the slots, or restore the compiled
        ones (None). Only digital tensors change: no tile is reprogrammed, and programmed
        devices and their drift stay the same objects. The adapter is checked whole first, so
        a bad one leaves the previous in place."""
        if not isinstance(adapter, PreparedAdapter):
            adapter = self.prepare_adapter(adapter)
        for name, slot in self.lora_slots.items():
            slot.a, slot.b = adapter.lora.get(name, slot.compiled)
        for name, linear in self.digital_linears.items():
            linear.weight, linear.bias = adapter.heads.get(name, linear.compiled)
        self.adapter = adapter.source

    def prepare_adapter(
        self, adapter: str | Path | Adapter | Mapping[str, Any] | None
    ) -> PreparedAdapter:
        """Read and check an adapter against this program's slots, and make the tensors its
        kernels will read; set_adapter of the result is a swap of references (microseconds),
        like onnxruntime's multi-LoRA keeping several adapters ready for one base model."""
        if adapter is None:
            return PreparedAdapter(None, {}, {})
        if isinstance(adapter, str | Path):
            adapter = read_adapter(adapter)
        adapter = as_adapter(adapter)
        lora, heads = bind(
            adapter,
            {n: SlotShape(*s.a.shape, s.b.shape[1], s.scale) for n, s in self.lora_slots.items()},
            {
                n: HeadShape(*d.weight.shape, d.bias is not None)
                for n, d in self.digital_linears.items()
            },
            [layer.layer for layer in self.layers if layer.layer],
        )
        return PreparedAdapter(
            adapter,
            {n: (torch.from_numpy(a), torch.from_numpy(b)) for n, (a, b) in lora.items()},
            {
                n: (torch.from_numpy(w), torch.from_numpy(b) if b is not None else None)
                for n, (w, b) in heads.items()
            },
        )

    def adapter_slots(self) -> dict[str, tuple[int, int, int]]:
        """Layers with a LoRA slot: name -> (K, R, N)."""
        return {n: (*s.a.shape, s.b.shape[1]) for n, s in self.lora_slots.items()}

    def layer_names(self) -> dict[str, str]:
        """Named linear layers of the program: name -> "analog" or "digital"."""
        names = {layer.layer: "analog" for layer in self.layers if layer.layer}
        return names | {n: "digital" for n in self.digital_linears}

    def index_bounds(self) -> dict[str, int]:
        """Inputs used directly as embedding ids, with the number of rows of their table."""
        by_slot = {spec["slot"]: spec["name"] for spec in self.inputs}
        bounds: dict[str, int] = {}
        for ins in self.program["instructions"]:
            if ins["op"] == "call" and ins["kind"] == "embedding":
                table, ids = (self._resolve(a) for a in ins["args"])
                if isinstance(ids, int) and ids in by_slot and isinstance(table, torch.Tensor):
                    name = by_slot[ids]
                    bounds[name] = min(bounds.get(name, table.shape[0]), table.shape[0])
        return bounds

    # -- execution -------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute on named inputs; returns named outputs."""
        env: list[Any] = [None] * self.program["slots"]
        for spec in self.inputs:
            env[spec["slot"]] = self._feed(spec, feeds)
        extra = sorted(set(feeds) - {s["name"] for s in self.inputs})
        if extra:
            raise AimccError(
                f"unknown input '{extra[0]}' (inputs: {', '.join(s['name'] for s in self.inputs)})"
            )
        if self.spec.model == "pcm" and self._generator is not None:
            self._run_key = draw_key(self._generator)  # each layer's output noise: its own
        with torch.inference_mode():
            for step, (drop, release) in zip(self._steps, self._after, strict=True):
                step(env)
                for slot in drop:
                    env[slot] = None
                for array in release:
                    release_pages(array)
        result = {}
        for spec in self.outputs:
            value = self._resolve(spec["value"])
            tensor = env[value] if isinstance(value, int) else value
            result[spec["name"]] = tensor.numpy().copy()
        return result

    def _feed(self, spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> torch.Tensor:
        name = spec["name"]
        if name not in feeds:
            raise AimccError(
                f"missing input '{name}' (shape {tuple(spec['shape'])}, {spec['dtype']})"
            )
        array = np.asarray(feeds[name])
        if tuple(array.shape) != tuple(spec["shape"]):
            raise AimccError(
                f"input '{name}': shape {tuple(array.shape)} given, the program "
                f"was compiled for {tuple(spec['shape'])}"
            )
        if array.dtype != np.dtype(spec["dtype"]):
            if array.dtype.kind != np.dtype(spec["dtype"]).kind:
                raise AimccError(
                    f"input '{name}': dtype {array.dtype} given, expected {spec['dtype']}"
                )
            array = array.astype(spec["dtype"])
        return torch.from_numpy(np.ascontiguousarray(array))

    def _resolve(self, operand: int | str | None) -> Operand:
        if operand is None or isinstance(operand, int):
            return operand
        if operand not in self._tensors:
            raise AimccError(f"{self.where}: program refers to missing tensor '{operand}'")
        return self._tensors[operand]

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            k: self._tensors[v["tensor"]].numpy() if isinstance(v, dict) else v
            for k, v in params.items()
        }

    def _compile(self, index: int, ins: dict[str, Any]) -> Step:
        try:
            if ins["op"] == "analog":
                return self._traced(ins, self._analog_step(ins))
            if ins["op"] in ("call", "view"):
                return self._traced(ins, self._kernel_step(ins))
        except (KeyError, TypeError, ValueError) as exc:
            raise AimccError(f"{self.where}: instruction {index} is malformed ({exc})") from None
        raise AimccError(f"{self.where}: instruction {index} has unknown op '{ins.get('op')}'")

    def _traced(self, ins: dict[str, Any], step: Step) -> Step:
        """The step, reporting its RISC-V kernels to ``calls`` while a trace records."""
        kernels = ins.get("kernels") or []
        if not kernels:
            return step

        def traced(env: list[Any]) -> None:
            if self.calls is not None:
                self.calls.extend(kernels)
            step(env)

        return traced

    def trace_calls(self, feeds: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run once and return the RISC-V kernels the run executed, in order (the binary's
        calls: what the schedule costed and the manifest lists)."""
        self.calls = []
        try:
            self.run(feeds)
            return self.calls
        finally:
            self.calls = None

    def _kernel_step(self, ins: dict[str, Any]) -> Step:
        kind: str = ins["kind"]
        params = self._params(ins["params"])
        if isinstance(params.get("layer"), str) and kind in ("lora", "matmul", "bias_add"):
            named = self._layer_step(kind, params["layer"], ins, params)
            if named is not None:
                return named
        if kind.startswith("onnx."):
            op_type = kind.removeprefix("onnx.")
            if op_type not in supported_ops():
                raise AimccError(f"{self.where}: unsupported ONNX op '{op_type}'")

            def impl(args: list[Any], p: dict[str, Any]) -> list[torch.Tensor]:
                return run_op(op_type, args, p)
        elif kind in KERNEL_IMPLS:
            impl = KERNEL_IMPLS[kind]
        else:
            raise AimccError(f"{self.where}: unknown kernel kind '{kind}'")
        args = [self._resolve(a) for a in ins["args"]]
        slots = [i for i, a in enumerate(args) if isinstance(a, int)]
        outs: list[int] = ins["outs"]

        def step(env: list[Any]) -> None:
            values = list(args)
            for i in slots:
                values[i] = env[args[i]]
            for slot, value in zip(outs, impl(values, params), strict=False):
                env[slot] = value

        return step

    def _layer_step(
        self, kind: str, name: str, ins: dict[str, Any], params: dict[str, Any]
    ) -> Step | None:
        """Steps of a named layer's kernels that read swappable tensors (adapter slots, digital
        weights) at run time; None for a kernel that has nothing to swap."""
        args = [self._resolve(a) for a in ins["args"]]
        (out,) = ins["outs"]
        if kind == "lora":
            x, y, a, b = args
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                return None
            scale = float(params["scale"])
            if scale == 0.0:  # adapters fold their scale into b relative to this one
                raise AimccError(f"{self.where}: LoRA kernel of '{name}' has scale 0")
            slot = self.lora_slots.get(name)
            if slot is None or slot.a.shape != a.shape or slot.b.shape != b.shape:
                slot = LoraSlot(name, a.float(), b.float(), scale, (a.float(), b.float()))
                self.lora_slots[name] = slot

            def lora(env: list[Any]) -> None:
                env[out] = env[y] + torch.matmul(torch.matmul(env[x], slot.a), slot.b) * scale

            return lora
        if kind == "matmul":
            x, w = args
            if not isinstance(w, torch.Tensor) or w.ndim != 2:
                return None
            linear = self.digital_linears.setdefault(name, DigitalLinear(name, w, None, (w, None)))
            if linear.compiled[0] is not w:
                return None  # another layer of the same name: not swappable

            def matmul(env: list[Any]) -> None:
                env[out] = torch.matmul(env[x], linear.weight)

            return matmul
        linear = self.digital_linears.get(name)
        y, bias = args
        if linear is None or not isinstance(bias, torch.Tensor):
            return None
        if linear.compiled[1] is None:
            linear.bias, linear.compiled = bias, (linear.compiled[0], bias)
        elif linear.compiled[1] is not bias:
            return None

        def bias_add(env: list[Any]) -> None:
            env[out] = env[y] + linear.bias

        return bias_add

    def _analog_step(self, ins: dict[str, Any]) -> Step:
        weight = self._resolve(ins["weight"])
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise AimccError(f"{self.where}: analog weight '{ins['weight']}' is not a matrix")
        if list(ins["tile"]) != [self.arch.tile.rows, self.arch.tile.cols]:
            raise AimccError(f"{self.where}: tiles of {ins['tile']} do not match the arch")
        array = self._arrays[ins["weight"]]
        layer = AnalogLayer(
            ins["weight"],
            weight.float(),
            self.arch,
            len(self.layers),
            ins.get("layer"),
            lambda: release_pages(array),
            1 + len(ins.get("replicas", ())),
            ins.get("chunk", 1),
        )
        self.layers.append(layer)
        x, out, bias = ins["x"], ins["out"], None
        if ins.get("bias") is not None:  # fused into the tiles' post-processing (fuse-bias)
            bias = self._resolve(ins["bias"])
            if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != tuple(weight.shape[1:]):
                raise AimccError(f"{self.where}: bias of '{ins['weight']}' is no [N] vector")
            bias = bias.float()

        def step(env: list[Any]) -> None:
            spec = self.spec if layer.noisy else IDEAL
            env[out] = layer.matmul(env[x], spec, self._run_key, bias, self.arch)
            if self.stream and spec.model == "ideal":
                layer.release()  # ideal tiles are views of the weight: read again next run

        return step


def load(path: str | Path, stream: bool | None = None) -> Executable:
    """Load an .aimcb binary (checked; nothing in it is executed); ``stream``: see
    :class:`Executable` (default: for binaries over STREAM_BYTES)."""
    program, tensors = read_binary(path)
    for key in ("arch", "inputs", "outputs", "instructions", "slots"):
        if key not in program:
            raise AimccError(f"{path}: program has no '{key}' (not an aimcc binary?)")
    try:
        return Executable(program, tensors, str(path), stream)
    except AimccError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise AimccError(f"{path}: malformed program ({exc})") from None
