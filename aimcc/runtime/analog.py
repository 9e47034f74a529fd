"""The simulated analog tile: weight mapping, PCM device model and DAC/ADC periphery.

Semantics follow IBM aihwkit (REFERENCE.md, "The analog tile" and "PCM statistical model"):
a layer W[K, N] (y = x @ W) is cut into a grid of crossbar tiles; each tile maps its columns to a
differential conductance pair, the devices are programmed once (programming noise, drift
exponent), then read at an inference time (drift, accumulated 1/f noise). An MVM goes through
noise management, the DAC, the crossbar, output noise, the ADC and bound management per tile,
and the row-tiles' partial sums are added digitally. Everything is batched over the tile grid
([n_row_tiles, n_col_tiles, rows, cols]) so there is no Python loop per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aimcc.arch import Arch, Pcm, Tile
from aimcc.errors import AimccError

# Simulator policy constants of aihwkit, not properties of a device (candidates for arch keys):
PROG_COEFF_G_MAX_REF_US = 25.0  # prog_coeff were fitted at g_max = 25 uS (aihwkit pcm.py)
G_RELATIVE_FLOOR = 1e-7  # x clipped away from 0 before ln x in the drift fit (aihwkit _ZERO_CLIP)
READOUT_FLOOR = 1e-4  # drift-compensation readouts are clamped here (aihwkit compensation)
MAX_BM_FACTOR = 1000.0  # iterative bound management stops beyond this reduction (IOParameters)
MAX_BM_RES = 0.25  # ... or when the reduced input resolution is coarser than 2 bits (IOParameters)

NOISE_MODELS = ("ideal", "quant", "pcm")
COMPENSATIONS = ("global", "column", "none")


@dataclass(frozen=True)
class NoiseSpec:
    """What the user asked for: which non-idealities, read at which time, compensated how."""

    model: str
    t_inference_s: float = 0.0
    compensation: str | None = None  # None: arch.tile.pcm.compensation

    def __post_init__(self) -> None:
        if self.model not in NOISE_MODELS:
            raise AimccError(f"unknown noise model '{self.model}': use {', '.join(NOISE_MODELS)}")
        if not self.t_inference_s >= 0.0:
            raise AimccError(f"inference time must be >= 0 s, got {self.t_inference_s}")
        if self.compensation is not None:
            _check_compensation(self.compensation)


@dataclass(frozen=True)
class TileWeights:
    """What an MVM needs: conductance-domain weights per tile and the digital output scale.

    ``weights`` is [nr, nc, rows, cols], normalised so a column's max |w| maps to 1 (the ADC's
    units); ``out_scale`` is [nr, nc, cols] and turns a tile's output back into layer units
    (column scale times drift compensation).
    """

    weights: torch.Tensor
    out_scale: torch.Tensor
    in_features: int
    out_features: int

    @classmethod
    def from_weight(cls, weight: torch.Tensor, arch: Arch) -> TileWeights:
        """Exact mapping without clipping or device noise (the "quant" model's weights)."""
        _check_weight(weight)
        stack = tile_stack(weight, arch.tile.rows, arch.tile.cols)
        scale = _mapping_scale(stack, arch.tile.mapping.channelwise)
        return cls(stack / scale, scale.squeeze(2), weight.shape[0], weight.shape[1])


def tile_stack(weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[K, N] -> [nr, nc, rows, cols], zero-padding the last row and column of tiles."""
    k, n = weight.shape
    nr, nc = -(-k // rows), -(-n // cols)
    padded = torch.nn.functional.pad(weight, (0, nc * cols - n, 0, nr * rows - k))
    return padded.view(nr, rows, nc, cols).permute(0, 2, 1, 3).contiguous()


class ProgrammedLayer:
    """One analog layer after programming: device state drawn once, read at any later time.

    Conductances are kept as [2, nr, nc, rows, cols] (g+ and g- of each differential pair).
    """

    def __init__(
        self,
        arch: Arch,
        g_prog: torch.Tensor,
        nu: torch.Tensor,
        scale: torch.Tensor,
        in_features: int,
        out_features: int,
    ) -> None:
        self.arch = arch
        self.g_prog = g_prog
        self.nu = nu
        self.scale = scale  # [nr, nc, 1, cols]: layer units per normalised unit
        self.in_features = in_features
        self.out_features = out_features
        self.reference = _readouts(self._normalised(g_prog), *self._used())

    @classmethod
    def program(
        cls, weight: torch.Tensor, arch: Arch, generator: torch.Generator
    ) -> ProgrammedLayer:
        """Clip, map to conductance pairs, and draw programming noise and drift exponents."""
        _check_weight(weight)
        tile, pcm, g_max = arch.tile, arch.tile.pcm, arch.tile.mapping.g_max_us
        if tile.mapping.clip_sigma > 0:  # per layer, at clip_sigma standard deviations
            bound = tile.mapping.clip_sigma * weight.std().item()
            weight = weight.clamp(-bound, bound)
        stack = tile_stack(weight, tile.rows, tile.cols)
        scale = _mapping_scale(stack, tile.mapping.channelwise)
        normalised = stack / scale
        g_target = torch.stack([normalised.clamp(min=0), (-normalised).clamp(min=0)]) * g_max
        used = tile_stack(torch.ones_like(weight), tile.rows, tile.cols)  # padding: no device
        g_prog = _programming_noise(g_target, pcm, g_max, generator) * used
        nu = _drift_exponents(g_target, pcm, g_max, generator)
        return cls(arch, g_prog, nu, scale, weight.shape[0], weight.shape[1])

    def conductances_at(self, t_inference_s: float, generator: torch.Generator) -> torch.Tensor:
        """Device conductances [2, nr, nc, rows, cols] at ``t_inference_s`` after programming.

        Drift uses the exponents drawn at programming; the accumulated 1/f read noise is drawn
        anew for every call.
        """
        pcm = self.arch.tile.pcm
        t = t_inference_s + pcm.t0_s
        g = self.g_prog * (t / pcm.t0_s) ** (-self.nu) if t > pcm.t0_s else self.g_prog
        if t <= 0:
            return g
        c, exponent, floor, q_max = pcm.read_q
        x_prog = self.g_prog / self.arch.tile.mapping.g_max_us
        q = (c / (x_prog**exponent).clamp(min=floor)).clamp(max=q_max)
        sigma = q * math.sqrt(max(math.log((t + pcm.t_read_s) / (2 * pcm.t_read_s)), 0.0))
        noise = torch.randn(g.shape, generator=generator, dtype=g.dtype)
        return (g + g.abs() * sigma * noise).clamp(min=0)

    def at_time(
        self,
        t_inference_s: float,
        generator: torch.Generator,
        compensation: str | None = None,
    ) -> TileWeights:
        """Effective weights at an inference time, with the drift-compensation factor.

        The compensation re-reads each tile with the identity input set (ideal readout) and
        scales its outputs by reference / current mean |y| (per tile for "global", per column
        for "column"); ``compensation`` None means the arch's choice.
        """
        mode = _check_compensation(compensation or self.arch.tile.pcm.compensation)
        weights = self._normalised(self.conductances_at(t_inference_s, generator))
        out_scale = self.scale.squeeze(2)
        if mode != "none":
            index = COMPENSATIONS.index(mode)
            alpha = self.reference[index] / _readouts(weights, *self._used())[index]
            out_scale = out_scale * alpha
        return TileWeights(weights, out_scale, self.in_features, self.out_features)

    def _normalised(self, g: torch.Tensor) -> torch.Tensor:
        return (g[0] - g[1]) / self.arch.tile.mapping.g_max_us

    def _used(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [nr, 1, 1] and columns [1, nc, 1] in use per tile: the rest hold no device."""
        rows, cols = self.arch.tile.rows, self.arch.tile.cols
        n_row_tiles, n_col_tiles = self.g_prog.shape[1:3]
        used_rows = (self.in_features - rows * torch.arange(n_row_tiles)).clamp(max=rows)
        used_cols = (self.out_features - cols * torch.arange(n_col_tiles)).clamp(max=cols)
        dtype = self.g_prog.dtype
        return used_rows.to(dtype)[:, None, None], used_cols.to(dtype)[None, :, None]


def analog_matmul(
    x: torch.Tensor,
    tiles: TileWeights | torch.Tensor,
    arch: Arch,
    spec: NoiseSpec,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """x[..., K] -> y[..., N] through the tiles of one layer.

    ``tiles`` is a layer's effective weights (from :meth:`ProgrammedLayer.at_time` or
    :meth:`TileWeights.from_weight`) or, for "ideal" and "quant", the plain weight W[K, N].
    "ideal" is the exact per-tile float matmul; "quant" adds noise management, the DAC, the ADC
    and bound management; "pcm" also adds output noise (needs programmed devices and a
    generator). The device noise is in the weights, so it depends on what ``tiles`` holds.
    """
    if isinstance(tiles, torch.Tensor):
        if spec.model == "pcm":
            raise AimccError("pcm noise needs programmed tiles (ProgrammedLayer.at_time), not W")
        _check_weight(tiles)
        if spec.model == "ideal":
            stack = tile_stack(tiles, arch.tile.rows, arch.tile.cols)
            ones = stack.new_ones(stack.shape[0], stack.shape[1], stack.shape[3])
            tiles = TileWeights(stack, ones, tiles.shape[0], tiles.shape[1])
        else:
            tiles = TileWeights.from_weight(tiles, arch)
    if x.shape[-1] != tiles.in_features:
        raise AimccError(f"analog layer expects {tiles.in_features} inputs, got {x.shape[-1]}")
    if spec.model == "pcm" and generator is None:
        raise AimccError("pcm noise needs a random generator for the output noise")
    lead = x.shape[:-1]
    x2d = x.reshape(-1, tiles.in_features)
    weights = tiles.weights.to(x.dtype)
    n_row_tiles, _, rows, _ = weights.shape
    x_tiles = torch.nn.functional.pad(x2d, (0, n_row_tiles * rows - x2d.shape[1]))
    x_tiles = x_tiles.view(-1, n_row_tiles, rows).transpose(0, 1)  # [nr, M, rows]
    if spec.model == "ideal":
        partial = torch.matmul(x_tiles.unsqueeze(1), weights)
    else:
        noise = generator if spec.model == "pcm" else None
        partial = _periphery_mvm(x_tiles, weights, arch.tile, noise)
    partial = partial * tiles.out_scale.to(x.dtype).unsqueeze(-2)  # [nr, nc, M, cols]
    y = partial.sum(0).transpose(0, 1).reshape(x2d.shape[0], -1)[:, : tiles.out_features]
    return y.reshape(*lead, tiles.out_features)


def _periphery_mvm(
    x_tiles: torch.Tensor,
    weights: torch.Tensor,
    tile: Tile,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Per-tile DAC -> crossbar -> (noise) -> ADC with iterative bound management.

    Returns each tile's digital output [nr, nc, M, cols] in normalised units times the input
    scale. A token row of a tile whose ADC saturates is repeated with half the input scale until
    it fits or the reduction limit of aihwkit is passed (then the clipped result stands).
    """
    dac, adc = tile.dac, tile.adc
    inp_step = 2 * dac.inp_bound / (2**dac.bits - 2)  # aihwkit: resolution of the full range
    out_step = 2 * adc.out_bound / (2**adc.bits - 2)
    if dac.noise_management == "abs_max":
        in_scale = x_tiles.abs().amax(-1, keepdim=True)
        in_scale = torch.where(in_scale > 0, in_scale, torch.ones_like(in_scale))
    elif dac.noise_management == "none":
        in_scale = torch.ones_like(x_tiles[..., :1])
    else:
        raise AimccError(f"unknown noise management '{dac.noise_management}' in tile.dac")
    if adc.bound_management == "iterative":
        limit = min(MAX_BM_FACTOR, MAX_BM_RES / inp_step)
    elif adc.bound_management == "none":
        limit = 0.0
    else:
        raise AimccError(f"unknown bound management '{adc.bound_management}' in tile.adc")

    n_row_tiles, n_col_tiles, _, cols = weights.shape
    n_tokens = x_tiles.shape[1]
    out = x_tiles.new_empty(n_row_tiles, n_col_tiles, n_tokens, cols)
    reduction = x_tiles.new_ones(n_row_tiles, n_col_tiles, n_tokens, 1)
    pending = torch.ones(n_row_tiles, n_col_tiles, n_tokens, dtype=torch.bool)
    tokens = torch.arange(n_tokens)
    factor = 1.0
    while True:
        scaled = x_tiles[:, tokens] / (in_scale[:, tokens] * factor)
        dac_out = _quantise(scaled, inp_step, dac.inp_bound)
        y = torch.matmul(dac_out.unsqueeze(1), weights)  # [nr, nc, m, cols]
        if generator is not None:
            y += adc.out_noise * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        y = torch.round(y / out_step) * out_step
        saturated = (y.abs() > adc.out_bound).any(-1)
        take = pending[:, :, tokens]
        out[:, :, tokens] = torch.where(
            take.unsqueeze(-1), y.clamp(-adc.out_bound, adc.out_bound), out[:, :, tokens]
        )
        reduction[:, :, tokens] = torch.where(take.unsqueeze(-1), factor, reduction[:, :, tokens])
        pending[:, :, tokens] = take & saturated
        if factor > limit or not pending.any():
            break
        tokens = pending.any(1).any(0).nonzero().squeeze(1)
        factor *= 2.0
    return out * reduction * in_scale.unsqueeze(1)


def _quantise(values: torch.Tensor, step: float, bound: float) -> torch.Tensor:
    return (torch.round(values / step) * step).clamp(-bound, bound)


def _mapping_scale(stack: torch.Tensor, channelwise: bool) -> torch.Tensor:
    """Per tile, the |w| that maps to g_max: [nr, nc, 1, cols] (one value per tile if not
    channel-wise). Empty columns get 1 so they stay zero instead of dividing by zero."""
    dims = (2,) if channelwise else (2, 3)
    scale = stack.abs().amax(dim=dims, keepdim=True).expand(-1, -1, 1, stack.shape[3])
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _programming_noise(
    g_target: torch.Tensor, pcm: Pcm, g_max: float, generator: torch.Generator
) -> torch.Tensor:
    """g_prog = max(0, g_T + sigma_prog(g_T) N(0,1)); sigma_prog a polynomial in g_T / g_max."""
    x = g_target / g_max
    sigma = sum(c * x**i for i, c in enumerate(pcm.prog_coeff)) * (g_max / PROG_COEFF_G_MAX_REF_US)
    noise = torch.randn(g_target.shape, generator=generator, dtype=g_target.dtype)
    return (g_target + sigma * noise).clamp(min=0)


def _drift_exponents(
    g_target: torch.Tensor, pcm: Pcm, g_max: float, generator: torch.Generator
) -> torch.Tensor:
    """nu = |mu(x) + sigma(x) N(0,1)|, both fits clamp(a ln x + b, lo, hi) of x = g_T / g_max."""
    log_x = torch.log((g_target / g_max).clamp(min=G_RELATIVE_FLOOR))
    a, b, lo, hi = pcm.drift_mu
    mu = (a * log_x + b).clamp(lo, hi)
    a, b, lo, hi = pcm.drift_sigma
    sigma = (a * log_x + b).clamp(lo, hi)
    return (mu + sigma * torch.randn(g_target.shape, generator=generator, dtype=mu.dtype)).abs()


def _readouts(
    weights: torch.Tensor, used_rows: torch.Tensor, used_cols: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Mean |y| of the identity readout per tile ([nr, nc, 1]) and per column ([nr, nc, cols]),
    in the order of COMPENSATIONS; the identity drives only the rows in use."""
    column_sum = weights.abs().sum(2)  # identity input: output i is row i of the tile
    global_mean = column_sum.sum(2, keepdim=True) / (used_rows * used_cols)
    column_mean = column_sum / used_rows
    return global_mean.clamp(min=READOUT_FLOOR), column_mean.clamp(min=READOUT_FLOOR)


def _check_compensation(mode: str) -> str:
    if mode not in COMPENSATIONS:
        raise AimccError(f"unknown drift compensation '{mode}': use {', '.join(COMPENSATIONS)}")
    return mode


def _check_weight(weight: torch.Tensor) -> None:
    if weight.ndim != 2:
        raise AimccError(f"an analog layer needs a 2-D weight [K, N], got shape {weight.shape}")
