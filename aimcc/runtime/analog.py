"""The simulated analog tile: weight mapping, PCM device model and DAC/ADC periphery.

Semantics follow IBM aihwkit (IOParameters, PCMLikeNoiseModel after Nandakumar et al. ICECS
2019, GlobalDriftCompensation): docs/REFERENCES.md "Analog tile", "PCM noise model" and
"Drift compensation". In short:
a layer W[K, N] (y = x @ W) is cut into a grid of crossbar tiles; each tile maps its columns to a
differential conductance pair, the devices are programmed once (programming noise, drift
exponent), then read at an inference time (drift, accumulated 1/f read noise). An MVM goes
through noise management, the DAC, the crossbar, output noise, the ADC and bound management per
tile, and the tile rows' partial sums are added digitally.

Device state stays in the layer's own [K, N] layout (tile (i, j) is the block of rows
i*rows.. and columns j*cols..), never padded to whole tiles: the tiles of one tile row share
their inputs, so their MVMs are one matmul with that row block, and per-tile quantities (column
scales, ADC saturation, drift compensation) are reductions over blocks. Work is proportional to
the devices in use, and there is no Python loop per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from aimcc.arch import Arch, Pcm, Tile
from aimcc.errors import AimccError
from aimcc.runtime.options import COMPENSATIONS, NOISE_MODELS


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
    """What an MVM needs: a layer's weights in the ADC's units and the digital output scale.

    ``weights`` is [K, N], each tile column normalised so its max |w| maps to 1; ``out_scale``
    is [nr, N] (nr tile rows) and turns tile row r's outputs back into layer units (column
    scale times drift compensation), or None for ideal tiles holding W itself. ``blocks`` are
    the tile rows' weights as [N, rows] matmul operands, packed once per programming or read
    rather than per MVM (see :func:`_pack`).
    """

    weights: torch.Tensor
    out_scale: torch.Tensor | None
    rows: int  # of a tile
    blocks: tuple[torch.Tensor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_weight(self.weights)
        slices = _row_slices(self.weights.shape[0], self.rows)
        blocks = tuple(_pack(self.weights[s].t().contiguous()) for s in slices)
        object.__setattr__(self, "blocks", blocks)

    @classmethod
    def ideal(cls, weight: torch.Tensor, arch: Arch) -> TileWeights:
        """W on exact tiles: the per-tile float MVMs, partial sums added per tile row."""
        return cls(weight, None, arch.tile.rows)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, arch: Arch) -> TileWeights:
        """Exact mapping without clipping or device noise (the "quant" model's weights)."""
        _check_weight(weight)
        scale = _mapping_scale(weight, arch.tile)
        normalised = weight / _expand_rows(scale, arch.tile.rows, weight.shape[0])
        return cls(normalised, scale, arch.tile.rows)


class ProgrammedLayer:
    """One analog layer after programming: device state drawn once, read at any later time.

    Conductances (uS) are kept as [2, K, N]: g+ and g- of each differential pair, in the
    layer's layout. ``nu`` (same shape) is each device's drift exponent, fixed for its life.
    """

    def __init__(self, arch: Arch, g_prog: torch.Tensor, nu: torch.Tensor, scale: torch.Tensor):
        self.arch = arch
        self.g_prog = g_prog
        self.nu = nu
        self.scale = scale  # [nr, N]: layer units per normalised unit
        c, exponent, floor, q_max = arch.tile.pcm.read_q
        x_prog = g_prog / arch.tile.mapping.g_max_us
        self._read_q = (c / (x_prog**exponent).clamp(min=floor)).clamp(max=q_max)
        self.reference = _readouts(self._normalised(g_prog), arch.tile)

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
        scale = _mapping_scale(weight, tile)
        normalised = weight / _expand_rows(scale, tile.rows, weight.shape[0])
        g_target = torch.stack([normalised.clamp(min=0), (-normalised).clamp(min=0)]) * g_max
        g_prog = _programming_noise(g_target, pcm, g_max, generator)
        nu = _drift_exponents(g_target, pcm, g_max, generator)
        return cls(arch, g_prog, nu, scale)

    def conductances_at(self, t_inference_s: float, generator: torch.Generator) -> torch.Tensor:
        """Device conductances [2, K, N] at ``t_inference_s`` after programming.

        Drift uses the exponents drawn at programming; the accumulated 1/f read noise is drawn
        anew for every call. Conductances are never negative, so g + |g| sigma N = g (1 + sigma N).
        """
        pcm = self.arch.tile.pcm
        t = t_inference_s + pcm.t0_s
        g = self.g_prog
        if t > pcm.t0_s:
            g = g * torch.exp(self.nu * -math.log(t / pcm.t0_s))
        spread = math.sqrt(max(math.log((t + pcm.t_read_s) / (2 * pcm.t_read_s)), 0.0))
        noise = torch.randn(g.shape, generator=generator, dtype=g.dtype)
        return noise.mul_(self._read_q).mul_(spread).add_(1.0).mul_(g).clamp_(min=0)

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
        out_scale = self.scale
        if mode != "none":
            index = COMPENSATIONS.index(mode)
            out_scale = out_scale * (
                self.reference[index] / _readouts(weights, self.arch.tile)[index]
            )
        return TileWeights(weights, out_scale, self.arch.tile.rows)

    def _normalised(self, g: torch.Tensor) -> torch.Tensor:
        return torch.sub(g[0], g[1]).div_(self.arch.tile.mapping.g_max_us)


def analog_matmul(
    x: torch.Tensor,
    tiles: TileWeights | torch.Tensor,
    arch: Arch,
    spec: NoiseSpec,
    generator: torch.Generator | None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x[..., K] -> y[..., N] (+ a digital ``bias`` [N]) through the tiles of one layer.

    ``tiles`` is a layer's effective weights (from :meth:`ProgrammedLayer.at_time`,
    :meth:`TileWeights.from_weight` or :meth:`TileWeights.ideal`) or, for "ideal" and "quant",
    the plain weight W[K, N] (mapped on every call: precompute TileWeights for speed).
    "ideal" is the exact per-tile float matmul (one matmul per tile row); "quant" adds noise
    management, the DAC, the ADC and bound management; "pcm" also adds output noise (needs
    programmed devices and a generator). The device noise is in the weights.
    """
    if isinstance(tiles, torch.Tensor):
        if spec.model == "pcm":
            raise AimccError("pcm noise needs programmed tiles (ProgrammedLayer.at_time), not W")
        _check_weight(tiles)
        make = TileWeights.ideal if spec.model == "ideal" else TileWeights.from_weight
        tiles = make(tiles, arch)
    in_features = tiles.weights.shape[0]
    if x.shape[-1] != in_features:
        raise AimccError(f"analog layer expects {in_features} inputs, got {x.shape[-1]}")
    if spec.model == "pcm" and generator is None:
        raise AimccError("pcm noise needs a random generator for the output noise")
    x2d = x.reshape(-1, in_features)
    noise = generator if spec.model == "pcm" else None
    y: torch.Tensor | None = None
    slices = _row_slices(in_features, tiles.rows)
    fuse_bias = bias is not None and spec.model == "ideal" and len(slices) == 1
    for r, rows in enumerate(slices):
        same_dtype = x.dtype == tiles.weights.dtype
        block = tiles.blocks[r] if same_dtype else tiles.weights[rows].t().to(x.dtype)
        if spec.model == "ideal":
            partial = _linear(x2d[:, rows], block, bias if fuse_bias else None)
        else:
            partial = _periphery_mvm(x2d[:, rows], block, arch.tile, noise)
        if tiles.out_scale is not None:
            partial.mul_(tiles.out_scale[r].to(x.dtype))
        y = partial if y is None else y.add_(partial)
    assert y is not None
    if bias is not None and not fuse_bias:
        y.add_(bias)
    return y.reshape(*x.shape[:-1], tiles.weights.shape[1])


def _pack(block: torch.Tensor) -> torch.Tensor:
    """A float32 [N, rows] operand reordered for oneDNN once: its pre-packed matmul is ~12 %
    faster than F.linear on transformer shapes (onnxruntime's MLAS pre-packs constant weights
    the same way). Other dtypes, or torch without oneDNN, keep the plain tensor."""
    if block.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._reorder_linear_weight(block, None)
    return block


def _linear(x: torch.Tensor, block: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, rows] @ block.T (+ bias), block from :func:`_pack`."""
    if block.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, block, bias, "none", [], "")
    return F.linear(x, block, bias)


def periphery_steps(tile: Tile) -> tuple[float, float, float]:
    """DAC and ADC steps (aihwkit: resolution of the full range) and the input reduction
    bound management may reach (0 without it): one definition for inference and training."""
    dac, adc = tile.dac, tile.adc
    inp_step = 2 * dac.inp_bound / (2**dac.bits - 2)
    out_step = 2 * adc.out_bound / (2**adc.bits - 2)
    if adc.bound_management == "iterative":
        return inp_step, out_step, min(adc.bm_max_factor, adc.bm_max_resolution / inp_step)
    if adc.bound_management == "none":
        return inp_step, out_step, 0.0
    raise AimccError(f"unknown bound management '{adc.bound_management}' in tile.adc")


def _periphery_mvm(
    x: torch.Tensor,
    weights: torch.Tensor,
    tile: Tile,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One tile row: DAC -> crossbars -> (noise) -> ADC with iterative bound management.

    x is [M, rows] (this tile row's inputs), weights [N, rows] (all its tiles, transposed);
    returns the tiles' digital outputs [M, N] in normalised units times the input scale. A token
    of a tile whose ADC saturates is repeated with half the input scale until it fits or the
    reduction limit of aihwkit is passed (then the clipped result stands).
    """
    dac, adc = tile.dac, tile.adc
    inp_step, out_step, limit = periphery_steps(tile)
    if dac.noise_management == "abs_max":
        in_scale = x.abs().amax(-1, keepdim=True)
        in_scale = torch.where(in_scale > 0, in_scale, torch.ones_like(in_scale))
    elif dac.noise_management == "none":
        in_scale = torch.ones_like(x[:, :1])
    else:
        raise AimccError(f"unknown noise management '{dac.noise_management}' in tile.dac")

    def convert(scaled: torch.Tensor) -> torch.Tensor:
        """Scaled inputs (a fresh tensor, quantised in place) -> ADC output."""
        y = _linear(_quantise_(scaled, inp_step, dac.inp_bound), weights, None)
        if generator is not None:
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype)
            y.add_(noise.mul_(adc.out_noise))
        return y.div_(out_step).round_().mul_(out_step)

    n_out = weights.shape[0]
    y = convert(x / in_scale)
    out = y.clamp(-adc.out_bound, adc.out_bound)
    pending = _col_tile_max(y.abs(), tile.cols) > adc.out_bound  # [M, nc]
    if limit < 1.0 or not pending.any():
        return out * in_scale
    reduction = torch.ones(pending.shape, dtype=x.dtype)
    factor = 1.0
    while factor <= limit and pending.any():
        factor *= 2.0
        tokens = pending.any(1).nonzero().squeeze(1)
        y = convert(x[tokens] / (in_scale[tokens] * factor))
        take = pending[tokens]
        out[tokens] = torch.where(
            _expand_cols(take, tile.cols, n_out),
            y.clamp(-adc.out_bound, adc.out_bound),
            out[tokens],
        )
        reduction[tokens] = torch.where(take, factor, reduction[tokens])
        pending[tokens] = take & (_col_tile_max(y.abs(), tile.cols) > adc.out_bound)
    return out * _expand_cols(reduction, tile.cols, n_out) * in_scale


def _quantise_(values: torch.Tensor, step: float, bound: float) -> torch.Tensor:
    return values.div_(step).round_().mul_(step).clamp_(-bound, bound)


def _row_slices(k: int, rows: int) -> list[slice]:
    """The rows of each tile row of a K-row layer."""
    return [slice(start, min(start + rows, k)) for start in range(0, k, rows)]


def _per_tile_row(values: torch.Tensor, rows: int, reduce: str) -> torch.Tensor:
    """[K, N] -> [nr, N]: ``reduce`` ("amax" or "sum") over each tile row's rows."""
    return torch.stack([getattr(values[s], reduce)(0) for s in _row_slices(values.shape[0], rows)])


def _col_tile_max(values: torch.Tensor, cols: int) -> torch.Tensor:
    """[..., N] -> [..., nc]: max over each tile's columns."""
    n = values.shape[-1]
    if n <= cols:
        return values.amax(-1, keepdim=True)
    n_col_tiles = -(-n // cols)
    padded = F.pad(values, (0, n_col_tiles * cols - n))  # values are >= 0 here
    return padded.unflatten(-1, (n_col_tiles, cols)).amax(-1)


def _col_tile_sum(values: torch.Tensor, cols: int) -> torch.Tensor:
    n = values.shape[-1]
    n_col_tiles = -(-n // cols)
    padded = F.pad(values, (0, n_col_tiles * cols - n))
    return padded.unflatten(-1, (n_col_tiles, cols)).sum(-1)


def _expand_cols(per_tile: torch.Tensor, cols: int, n: int) -> torch.Tensor:
    """[..., nc] -> [..., N]: one value per tile spread over the tile's columns."""
    if per_tile.shape[-1] == 1:
        return per_tile
    return per_tile.repeat_interleave(cols, -1)[..., :n]


def _expand_rows(per_tile_row: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """[nr, N] -> [K, N]: one row per tile row spread over its rows."""
    return per_tile_row.repeat_interleave(rows, 0)[:k]


def _mapping_scale(weight: torch.Tensor, tile: Tile) -> torch.Tensor:
    """Per tile row and column, the |w| that maps to g_max: [nr, N] (one value per tile if
    not channel-wise). Empty columns get 1 so they stay zero instead of dividing by zero."""
    scale = _per_tile_row(weight.abs(), tile.rows, "amax")
    if not tile.mapping.channelwise:
        scale = _expand_cols(_col_tile_max(scale, tile.cols), tile.cols, weight.shape[1])
        scale = scale.expand(-1, weight.shape[1])
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _programming_noise(
    g_target: torch.Tensor, pcm: Pcm, g_max: float, generator: torch.Generator
) -> torch.Tensor:
    """g_prog = max(0, g_T + sigma_prog(g_T) N(0,1)); sigma_prog a polynomial in g_T / g_max,
    fitted at g_max = pcm.prog_coeff_g_max_us and scaled to this g_max."""
    x = g_target / g_max
    sigma = sum(c * x**i for i, c in enumerate(pcm.prog_coeff)) * (g_max / pcm.prog_coeff_g_max_us)
    noise = torch.randn(g_target.shape, generator=generator, dtype=g_target.dtype)
    return (g_target + sigma * noise).clamp(min=0)


def _drift_exponents(
    g_target: torch.Tensor, pcm: Pcm, g_max: float, generator: torch.Generator
) -> torch.Tensor:
    """nu = |mu(x) + sigma(x) N(0,1)|, both fits clamp(a ln x + b, lo, hi) of x = g_T / g_max."""
    log_x = torch.log((g_target / g_max).clamp(min=pcm.drift_x_floor))
    a, b, lo, hi = pcm.drift_mu
    mu = (a * log_x + b).clamp(lo, hi)
    a, b, lo, hi = pcm.drift_sigma
    sigma = (a * log_x + b).clamp(lo, hi)
    return (mu + sigma * torch.randn(g_target.shape, generator=generator, dtype=mu.dtype)).abs()


def _readouts(weights: torch.Tensor, tile: Tile) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |y| of the identity readout per tile and per column, both as [nr, N], in the order
    of COMPENSATIONS; the identity drives only the rows in use, and only used columns count."""
    k, n = weights.shape
    column_sum = _per_tile_row(weights.abs(), tile.rows, "sum")  # output i is row i of the tile
    n_row_tiles, n_col_tiles = column_sum.shape[0], -(-n // tile.cols)
    used_rows = (k - tile.rows * torch.arange(n_row_tiles)).clamp(max=tile.rows)[:, None]
    used_cols = (n - tile.cols * torch.arange(n_col_tiles)).clamp(max=tile.cols)
    global_mean = _col_tile_sum(column_sum, tile.cols) / (used_rows * used_cols)
    global_mean = _expand_cols(global_mean, tile.cols, n).expand(-1, n)
    floor = tile.pcm.readout_floor
    return global_mean.clamp(min=floor), (column_sum / used_rows).clamp(min=floor)


def _check_compensation(mode: str) -> str:
    if mode not in COMPENSATIONS:
        raise AimccError(f"unknown drift compensation '{mode}': use {', '.join(COMPENSATIONS)}")
    return mode


def _check_weight(weight: torch.Tensor) -> None:
    if weight.ndim != 2:
        raise AimccError(f"an analog layer needs a 2-D weight [K, N], got shape {weight.shape}")
