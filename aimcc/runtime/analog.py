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
the devices in use; the only Python loop per tile seeds its random stream.

Memory follows one layer, not the model: ideal tiles are views of W (the binary is memory-
mapped), and a PCM layer's device state is regenerated from keyed random streams a chunk at a
time instead of stored (:class:`ProgrammedLayer`); only the effective weights of a read are kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aimcc.arch import Arch, Pcm, Tile
from aimcc.errors import AimccError
from aimcc.runtime.options import COMPENSATIONS, NOISE_MODELS

CHUNK_DEVICES = 1 << 18  # weights per chunk of device work (a 512 x 512 tile): 1 MB per array


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


@dataclass(frozen=True, eq=False)
class TileWeights:
    """What an MVM needs: a layer's weights in the ADC's units and the digital output scale.

    ``blocks`` are the tile rows' weights as [N, rows] matmul operands: views of W itself for
    ideal tiles (no copy), computed weights packed once per programming or read rather than
    per MVM (see :func:`_pack`). Each tile column is normalised so its max |w| maps to 1;
    ``out_scale`` is [nr, N] (nr tile rows) and turns tile row r's outputs back into layer
    units (column scale times drift compensation), or None for ideal tiles holding W itself.
    """

    blocks: tuple[torch.Tensor, ...]
    out_scale: torch.Tensor | None
    rows: int  # of a tile
    shape: tuple[int, int]  # [K, N]
    dtype: torch.dtype

    @classmethod
    def of(
        cls, weights: torch.Tensor, out_scale: torch.Tensor | None, rows: int, pack: bool
    ) -> TileWeights:
        """Tiles holding ``weights`` [K, N]: packed copies per tile row, or views."""
        _check_weight(weights)
        slices = _row_slices(weights.shape[0], rows)
        if pack:
            blocks = tuple(_pack(weights[s].t().contiguous()) for s in slices)
        else:
            blocks = tuple(weights[s].t() for s in slices)
        return cls(blocks, out_scale, rows, (weights.shape[0], weights.shape[1]), weights.dtype)

    @property
    def weights(self) -> torch.Tensor:
        """The effective weights [K, N] (a copy, for inspection)."""
        if not self.blocks:
            return torch.zeros(self.shape, dtype=self.dtype)
        return torch.cat([_dense(b).t() for b in self.blocks])

    @classmethod
    def ideal(cls, weight: torch.Tensor, arch: Arch) -> TileWeights:
        """W on exact tiles: the per-tile float MVMs, partial sums added per tile row. The
        blocks are views of W: a weight mapped from the binary is read, never copied."""
        return cls.of(weight, None, arch.tile.rows, pack=False)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, arch: Arch) -> TileWeights:
        """Exact mapping without clipping or device noise (the "quant" model's weights)."""
        _check_weight(weight)
        scale = _mapping_scale(weight, arch.tile)
        normalised = weight / _expand_rows(scale, arch.tile.rows, weight.shape[0])
        return cls.of(normalised, scale, arch.tile.rows, pack=True)


Key = tuple[int, ...]


def keyed_generator(key: Key, *path: int) -> torch.Generator:
    """The generator of one keyed random stream: numpy's SeedSequence hashes the key and the
    path (its spawn key) into a 64-bit seed. A tile's draws depend only on (key, path), never
    on what was drawn before, so layers can be programmed and read in any order."""
    words = np.random.SeedSequence(
        [k % 2**64 for k in key], spawn_key=tuple(p % 2**64 for p in path)
    ).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(words[0]) | int(words[1]) << 32)


def draw_key(generator: torch.Generator) -> int:
    """A 63-bit key drawn from a sequential generator (its state advances)."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())


class ProgrammedLayer:
    """One analog layer after programming: devices fixed at programming, read at any later time.

    Device state is regenerated, not stored. The layer keeps its weight W [K, N] (a view of
    the mapped binary), the clip bound, the column scales [nr, N] and a key; each tile (i, j)
    draws its programming noise and drift exponents from ``keyed_generator(key, 0, i, j)`` and
    a read's 1/f noise from ``keyed_generator(key, 1, read, i, j)``. Conductances (uS,
    [2, K, N]: g+ and g- of each differential pair) are recomputed a tile-aligned chunk at a
    time, so memory holds one chunk of devices, and the same key gives the same devices
    whatever the order of work.
    """

    def __init__(self, arch: Arch, weight: torch.Tensor, key: Key):
        _check_weight(weight)
        self.arch = arch
        self.weight = weight
        self.key = tuple(key)
        mapping = arch.tile.mapping
        # per layer, at clip_sigma standard deviations
        self.bound = mapping.clip_sigma * weight.std().item() if mapping.clip_sigma > 0 else None
        self.scale = _mapping_scale(weight, arch.tile, self.bound)  # [nr, N]: units per 1
        self._programmed: torch.Tensor | None = None  # the compensation reference (at_time)

    @classmethod
    def program(
        cls, weight: torch.Tensor, arch: Arch, key: torch.Generator | Key
    ) -> ProgrammedLayer:
        """Clip and map W; its devices are drawn from ``key`` (or a key drawn from a
        generator) when they are first needed."""
        if isinstance(key, torch.Generator):
            key = (draw_key(key),)
        return cls(arch, weight, key)

    @property
    def g_prog(self) -> torch.Tensor:
        """Programmed conductances [2, K, N] (uS), before drift and read noise."""
        return self._whole(lambda chunk: self._devices(*chunk)[1])

    @property
    def nu(self) -> torch.Tensor:
        """Drift exponents [2, K, N], fixed for the devices' life."""
        return self._whole(lambda chunk: self._devices(*chunk)[2])

    def conductances_at(self, t_inference_s: float, read: torch.Generator | int) -> torch.Tensor:
        """Device conductances [2, K, N] at ``t_inference_s`` after programming; ``read``
        keys the accumulated 1/f read noise (a generator: a fresh key drawn from it)."""
        read = draw_key(read) if isinstance(read, torch.Generator) else read

        def chunk_at(chunk: tuple[int, slice, int, slice]) -> torch.Tensor:
            _, g_prog, nu = self._devices(*chunk)
            return self._read(g_prog, nu, t_inference_s, self._draws((1, read), *chunk, 1)[0])

        return self._whole(chunk_at)

    def at_time(
        self,
        t_inference_s: float,
        read: torch.Generator | int,
        compensation: str | None = None,
    ) -> TileWeights:
        """Effective weights at an inference time, with the drift-compensation factor.

        ``read`` keys the read noise (an int, or a generator to draw a key from). The
        compensation re-reads each tile with the identity input set (ideal readout) and
        scales its outputs by programmed / current mean |y| (per tile for "global", per
        column for "column"); ``compensation`` None means the arch's choice. Works one tile
        row at a time: each is packed for the MVMs as soon as it is complete.
        """
        mode = _check_compensation(compensation or self.arch.tile.pcm.compensation)
        read = draw_key(read) if isinstance(read, torch.Generator) else read
        k, n = self.weight.shape
        dtype = self.weight.dtype
        programmed = self._programmed
        first = programmed is None
        if programmed is None:  # the compensation's reference: found by the first read
            programmed = torch.zeros(self.scale.shape, dtype=dtype)
        current = torch.zeros(self.scale.shape, dtype=dtype)
        blocks: list[torch.Tensor] = []
        block: torch.Tensor | None = None
        for chunk in self._chunks():
            i, rows, _, cols = chunk
            if block is None:  # [N, rows]: the tile row's MVM operand
                block = torch.empty((n, rows.stop - rows.start), dtype=dtype)
            _, g_prog, nu = self._devices(*chunk)
            weights = self._normalised(
                self._read(g_prog, nu, t_inference_s, self._draws((1, read), *chunk, 1)[0])
            )
            block[cols] = weights.t()
            current[i, cols] = weights.abs().sum(0)
            if first:
                programmed[i, cols] = self._normalised(g_prog).abs_().sum(0)
            if cols.stop == n:
                blocks.append(_pack(block))
                block = None
        self._programmed = programmed
        out_scale = self.scale
        if mode != "none":
            index = COMPENSATIONS.index(mode)
            tile = self.arch.tile
            out_scale = out_scale * (
                _readouts(programmed, k, tile)[index] / _readouts(current, k, tile)[index]
            )
        return TileWeights(tuple(blocks), out_scale, self.arch.tile.rows, (k, n), dtype)

    def _chunks(self) -> list[tuple[int, slice, int, slice]]:
        """Tile-aligned chunks in tile-row order: (tile row i, its rows, first tile column,
        columns), each at most CHUNK_DEVICES weights (or one tile)."""
        k, n = self.weight.shape
        rows, cols = self.arch.tile.rows, self.arch.tile.cols
        per = max(1, CHUNK_DEVICES // (rows * cols))  # tiles per chunk
        return [
            (i, row_slice, j, slice(j * cols, min((j + per) * cols, n)))
            for i, row_slice in enumerate(_row_slices(k, rows))
            for j in range(0, -(-n // cols), per)
        ]

    def _draws(
        self, purpose: tuple[int, ...], i: int, rows: slice, j0: int, cols: slice, count: int
    ) -> list[torch.Tensor]:
        """``count`` arrays of N(0, 1) draws [2, rows, cols] from each tile's stream in turn."""
        width = self.arch.tile.cols
        shape = (2, rows.stop - rows.start)
        parts: list[list[torch.Tensor]] = [[] for _ in range(count)]
        for j in range(j0, -(-cols.stop // width)):
            generator = keyed_generator(self.key, *purpose, i, j)
            size = (*shape, min(width, cols.stop - j * width))
            for part in parts:
                part.append(torch.randn(size, generator=generator, dtype=self.weight.dtype))
        return [p[0] if len(p) == 1 else torch.cat(p, 2) for p in parts]

    def _devices(
        self, i: int, rows: slice, j0: int, cols: slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(g_target, g_prog, nu) of one chunk, each [2, rows, cols]."""
        tile, g_max = self.arch.tile, self.arch.tile.mapping.g_max_us
        weight = self.weight[rows, cols]
        if self.bound is not None:
            weight = weight.clamp(-self.bound, self.bound)
        normalised = weight / self.scale[i, cols]
        g_target = torch.stack([normalised.clamp(min=0), normalised.neg_().clamp_(min=0)])
        g_target.mul_(g_max)
        prog, drift = self._draws((0,), i, rows, j0, cols, 2)
        g_prog = _programming_noise(g_target, tile.pcm, g_max, prog)
        return g_target, g_prog, _drift_exponents(g_target, tile.pcm, g_max, drift)

    def _read(
        self, g_prog: torch.Tensor, nu: torch.Tensor, t_inference_s: float, noise: torch.Tensor
    ) -> torch.Tensor:
        """Conductances ``t_inference_s`` after programming: drift with the devices' own
        exponents, then accumulated 1/f read noise (``noise`` N(0,1), used in place).
        Conductances are never negative, so g + |g| sigma N = g (1 + sigma N)."""
        pcm = self.arch.tile.pcm
        t = t_inference_s + pcm.t0_s
        g = g_prog
        if t > pcm.t0_s:
            g = nu.mul(-math.log(t / pcm.t0_s)).exp_().mul_(g_prog)
        spread = math.sqrt(max(math.log((t + pcm.t_read_s) / (2 * pcm.t_read_s)), 0.0))
        c, exponent, floor, q_max = pcm.read_q
        x_prog = torch.div(g_prog, self.arch.tile.mapping.g_max_us)
        read_q = x_prog.pow_(exponent).clamp_(min=floor).reciprocal_().mul_(c).clamp_(max=q_max)
        return noise.mul_(read_q).mul_(spread).add_(1.0).mul_(g).clamp_(min=0)

    def _whole(self, part: Callable[[tuple[int, slice, int, slice]], torch.Tensor]) -> torch.Tensor:
        """[2, K, N] assembled from each chunk's ``part``."""
        out = torch.empty((2, *self.weight.shape), dtype=self.weight.dtype)
        for chunk in self._chunks():
            out[:, chunk[1], chunk[3]] = part(chunk)
        return out

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
    in_features = tiles.shape[0]
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
        block = tiles.blocks[r]
        if x.dtype != tiles.dtype:
            block = _dense(block).to(x.dtype)
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
    return y.reshape(*x.shape[:-1], tiles.shape[1])


def _pack(block: torch.Tensor) -> torch.Tensor:
    """A float32 [N, rows] operand reordered for oneDNN once: its pre-packed matmul is ~12 %
    faster than F.linear on transformer shapes (onnxruntime's MLAS pre-packs constant weights
    the same way). Other dtypes, or torch without oneDNN, keep the plain tensor."""
    if block.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._reorder_linear_weight(block, None)
    return block


def _dense(block: torch.Tensor) -> torch.Tensor:
    return block.to_dense() if block.is_mkldnn else block


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


def _abs_max(block: torch.Tensor) -> torch.Tensor:
    """max |w| per column without an |w| copy of the block."""
    low, high = torch.aminmax(block, dim=0)
    return torch.maximum(high, low.neg())


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


def _mapping_scale(weight: torch.Tensor, tile: Tile, bound: float | None = None) -> torch.Tensor:
    """Per tile row and column, the |w| that maps to g_max: [nr, N] (one value per tile if
    not channel-wise), of W clipped at ``bound``. Empty columns get 1 so they stay zero
    instead of dividing by zero."""
    scale = torch.stack([_abs_max(weight[s]) for s in _row_slices(weight.shape[0], tile.rows)])
    if bound is not None:
        scale = scale.clamp(max=bound)
    if not tile.mapping.channelwise:
        scale = _expand_cols(_col_tile_max(scale, tile.cols), tile.cols, weight.shape[1])
        scale = scale.expand(-1, weight.shape[1])
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _programming_noise(
    g_target: torch.Tensor, pcm: Pcm, g_max: float, noise: torch.Tensor
) -> torch.Tensor:
    """g_prog = max(0, g_T + sigma_prog(g_T) N(0,1)); sigma_prog a polynomial in g_T / g_max,
    fitted at g_max = pcm.prog_coeff_g_max_us and scaled to this g_max. ``noise`` is used in
    place (this work is most of programming: in-place ops, Horner's rule)."""
    x = g_target / g_max
    *low, top = pcm.prog_coeff
    sigma = torch.full_like(x, top)
    for c in reversed(low):
        sigma.mul_(x).add_(c)
    sigma.mul_(g_max / pcm.prog_coeff_g_max_us)
    return noise.mul_(sigma).add_(g_target).clamp_(min=0)


def _drift_exponents(
    g_target: torch.Tensor, pcm: Pcm, g_max: float, noise: torch.Tensor
) -> torch.Tensor:
    """nu = |mu(x) + sigma(x) N(0,1)|, both fits clamp(a ln x + b, lo, hi) of x = g_T / g_max;
    ``noise`` is used in place."""
    log_x = torch.div(g_target, g_max).clamp_(min=pcm.drift_x_floor).log_()
    a, b, lo, hi = pcm.drift_mu
    mu = torch.mul(log_x, a).add_(b).clamp_(lo, hi)
    a, b, lo, hi = pcm.drift_sigma
    sigma = log_x.mul_(a).add_(b).clamp_(lo, hi)
    return noise.mul_(sigma).add_(mu).abs_()


def _readouts(column_sum: torch.Tensor, k: int, tile: Tile) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |y| of the identity readout per tile and per column, both as [nr, N], in the order
    of COMPENSATIONS, from the column sums of |w| per tile row (output i of the identity
    readout is row i of the tile) of a K-row layer; the identity drives only the rows in use,
    and only used columns count."""
    n = column_sum.shape[1]
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
