"""The training-time analog forward: the tiles of :mod:`aimcc.runtime.analog`, differentiable.

AHWA-LoRA trains digital adapters against the hardware's non-idealities (docs/REFERENCES.md
"Training noise"; Li et al., arXiv 2411.17367): each MVM goes through the same tiling, channel-
wise mapping, per-layer clipping, abs-max noise management, 8-bit DAC and ADC and output bound
as the inference path, with Gaussian weight noise (relative to each tile column's max |w|) and
output noise re-drawn on every call. Rounding passes gradients straight through (STE), as in
aihwkit-lightning; the analog weights are frozen, so gradients flow to the inputs only.

It is a separate path from ``analog_matmul`` on purpose: the inference path quantises in place
under ``torch.inference_mode`` and must stay as fast as it is. Like the inference tiles (and
unlike aihwkit-lightning, which clamps), a tile whose ADC saturates re-reads the token at half
the input scale (iterative bound management): MiniLM's last FFN layers need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aimcc.arch import Arch
from aimcc.errors import AimccError
from aimcc.runtime.analog import (
    _col_tile_max,
    _expand_cols,
    _expand_rows,
    _mapping_scale,
    _row_slices,
    periphery_steps,
)


@dataclass(frozen=True)
class TrainNoise:
    """Noise injected while training adapters; defaults are the paper's (docs/REFERENCES.md
    "Training noise"; Li et al., arXiv 2411.17367). ``out_noise`` None means the arch's
    ``tile.adc.out_noise``."""

    weight_noise: float = 0.067  # std of N(0, .) per device, relative to its column's max |w|
    out_noise: float | None = None  # std on the normalised ADC input, per tile
    quantise: bool = True  # 8-bit DAC/ADC with straight-through gradients

    def __post_init__(self) -> None:
        if self.weight_noise < 0 or (self.out_noise is not None and self.out_noise < 0):
            raise AimccError("training noise levels must be >= 0")


class TrainTiles:
    """One frozen analog layer prepared for training: clipped like a programmed layer, mapped
    channel-wise per tile row (normalised weights in [-1, 1] and the column scales)."""

    def __init__(self, weight: torch.Tensor, arch: Arch, clip: bool = True):
        if weight.ndim != 2:
            raise AimccError(f"an analog layer needs a 2-D weight [K, N], got {weight.shape}")
        tile = arch.tile
        weight = weight.detach().float()
        if clip and tile.mapping.clip_sigma > 0:  # as ProgrammedLayer.program
            bound = tile.mapping.clip_sigma * weight.std().item()
            weight = weight.clamp(-bound, bound)
        scale = _mapping_scale(weight, tile)  # [nr, N]
        self.normalised = weight / _expand_rows(scale, tile.rows, weight.shape[0])
        self.scale = scale
        self.slices = _row_slices(weight.shape[0], tile.rows)
        self.arch = arch


class _RoundSTE(torch.autograd.Function):
    """round(x / step) * step forward, identity backward (a straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: float) -> torch.Tensor:  # type: ignore[override]
        return torch.div(x, step).round_().mul_(step)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


def train_matmul(
    x: torch.Tensor,
    tiles: TrainTiles,
    noise: TrainNoise,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x[..., K] -> y[..., N] through the layer's tiles with training noise; differentiable in x.

    Per tile row: x / max|x| (per token) -> DAC (STE) -> crossbar with noisy weights -> output
    noise -> ADC (STE) -> clamp at out_bound (bound management re-reads saturated tokens) ->
    times max|x| and the column scales; tile rows' partial sums are added digitally.
    """
    dac, adc = tiles.arch.tile.dac, tiles.arch.tile.adc
    k = tiles.normalised.shape[0]
    if x.shape[-1] != k:
        raise AimccError(f"analog layer expects {k} inputs, got {x.shape[-1]}")
    if dac.noise_management not in ("abs_max", "none"):
        raise AimccError(f"unknown noise management '{dac.noise_management}' in tile.dac")
    out_noise = adc.out_noise if noise.out_noise is None else noise.out_noise
    inp_step, out_step, limit = periphery_steps(tiles.arch.tile)  # as the inference tiles
    cols = tiles.arch.tile.cols
    # abs-max scaled inputs lie in [-1, 1] (also after rounding): no clamp needed within that
    clamp_inputs = dac.noise_management != "abs_max" or dac.inp_bound < 1.0
    x2d = x.reshape(-1, k)
    y: torch.Tensor | None = None
    for r, rows in enumerate(tiles.slices):
        xs = x2d[:, rows]
        if dac.noise_management == "abs_max":
            in_scale = torch.linalg.vector_norm(xs.detach(), math.inf, -1, keepdim=True)
            in_scale = torch.where(in_scale > 0, in_scale, torch.ones_like(in_scale))
        else:
            in_scale = torch.ones_like(xs[:, :1])
        w = tiles.normalised[rows]
        if noise.weight_noise > 0:
            w = torch.randn(w.shape, generator=generator).mul_(noise.weight_noise).add_(w)

        def convert(scaled: torch.Tensor, w: torch.Tensor = w) -> torch.Tensor:
            """Scaled inputs -> ADC output (before the clamp at out_bound)."""
            if noise.quantise:
                scaled = _RoundSTE.apply(scaled, inp_step)
            if clamp_inputs:
                scaled = scaled.clamp(-dac.inp_bound, dac.inp_bound)
            out = scaled @ w
            if out_noise > 0:
                out = out + torch.randn(out.shape, generator=generator).mul_(out_noise)
            return _RoundSTE.apply(out, out_step) if noise.quantise else out

        raw = convert(xs / in_scale)
        partial = raw.clamp(-adc.out_bound, adc.out_bound) * in_scale
        # iterative bound management as analog._periphery_mvm: tokens of a saturated tile are
        # read again at half the input scale until they fit (out of place, so autograd works)
        pending = _col_tile_max(raw.detach().abs(), cols) > adc.out_bound
        factor = 1.0
        while limit >= 1.0 and factor <= limit and pending.any():
            factor *= 2.0
            tokens = pending.any(1).nonzero().squeeze(1)
            scale = in_scale[tokens] * factor
            again = convert(xs[tokens] / scale)
            take = pending[tokens]
            mask = _expand_cols(take, cols, raw.shape[1])
            fixed = torch.where(
                mask, again.clamp(-adc.out_bound, adc.out_bound) * scale, partial[tokens]
            )
            partial = partial.index_copy(0, tokens, fixed)
            pending = pending.index_copy(
                0, tokens, take & (_col_tile_max(again.detach().abs(), cols) > adc.out_bound)
            )
        partial = partial * tiles.scale[r]
        y = partial if y is None else y + partial
    assert y is not None
    return y.reshape(*x.shape[:-1], y.shape[-1])


def aihwkit_lightning_config(
    arch: Arch, in_features: int, train: bool, noise: TrainNoise = TrainNoise()
):
    """IBM aihwkit-lightning's ``TorchInferenceRPUConfig`` for the same tiles (for comparisons;
    needs the package, in the test extra): per-token abs-max input range, 8-bit DAC/ADC,
    per-column out bound, tiles of ``arch.tile.rows`` inputs and, in training, the same weight
    and output noise. lightning divides out_noise by sqrt(tile rows) (a layer's total noise
    independent of its split); aimcc draws it per tile, so it gets out_noise * sqrt(rows).
    lightning has no bound management: compare with ``tile.adc.bound_management = "none"``."""
    from aihwkit_lightning.simulator.configs import (
        TorchInferenceRPUConfig,
        WeightClipType,
        WeightNoiseInjectionType,
    )

    tile = arch.tile
    rows = math.ceil(in_features / tile.rows)
    cfg = TorchInferenceRPUConfig()
    cfg.mapping.max_input_size = tile.rows
    cfg.pre_post.input_range.enable = True
    cfg.pre_post.input_range.dynamic = True  # per-token abs max = aimcc's noise management
    cfg.forward.inp_res = 2**tile.dac.bits - 2
    cfg.forward.out_res = 2**tile.adc.bits - 2
    cfg.forward.out_bound = tile.adc.out_bound
    cfg.clip.type = WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL  # per-column out bound
    cfg.clip.sigma = tile.mapping.clip_sigma
    if train:
        out_noise = tile.adc.out_noise if noise.out_noise is None else noise.out_noise
        cfg.forward.out_noise = out_noise * math.sqrt(rows)
        cfg.forward.out_noise_per_channel = True
        cfg.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL
        cfg.modifier.std_dev = noise.weight_noise
    return cfg
