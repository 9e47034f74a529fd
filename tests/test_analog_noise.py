"""Statistics of the simulated analog tile against the published formulas, recomputed in numpy.

The PCM constants below are typed in from docs/REFERENCES.md "PCM noise model" (aihwkit
PCMLikeNoiseModel, Nandakumar et al. ICECS 2019) on purpose: a wrong preset or a wrong formula
in the implementation both make these tests fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aimcc.arch import Arch, load_arch
from aimcc.errors import AimccError
from aimcc.runtime.analog import (
    NoiseSpec,
    ProgrammedLayer,
    TileWeights,
    analog_matmul,
)

G_MAX = 25.0
T0 = 20.0
T_READ = 250e-9
DAY = 86400.0
YEAR = 365 * DAY
LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)  # target conductances as a fraction of g_max
LOW_LEVEL = 0.02  # where the drift fit's spread is widest and nu = |...| folds


def sigma_prog(g: np.ndarray) -> np.ndarray:
    x = g / G_MAX
    return (0.26348 + 1.9650 * x - 1.1731 * x**2) * G_MAX / 25


def nu_mu_sigma(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    log_x = np.log(np.maximum(g / G_MAX, 1e-7))
    mu = np.clip(-0.0155 * log_x + 0.0244, 0.049, 0.1)
    sigma = np.clip(-0.0125 * log_x - 0.0059, 0.008, 0.045)
    return mu, sigma


def sigma_read(g_prog: np.ndarray, t_inference: float) -> np.ndarray:
    t = t_inference + T0
    q = np.minimum(0.0088 / np.maximum((g_prog / G_MAX) ** 0.65, 1e-3), 0.2)
    return q * np.sqrt(np.log((t + T_READ) / (2 * T_READ)))


def folded_normal_moments(mu: float, sigma: float) -> tuple[float, float]:
    """Mean and std of |N(mu, sigma^2)|."""
    mean = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * math.erf(
        mu / (sigma * math.sqrt(2))
    )
    return mean, math.sqrt(mu**2 + sigma**2 - mean**2)


@pytest.fixture(scope="module")
def arch() -> Arch:
    return load_arch("paper-512")


@pytest.fixture(scope="module")
def level_layer(arch: Arch) -> tuple[np.ndarray, ProgrammedLayer]:
    """A 1536 x 512 layer (three tiles) whose devices sit on known target conductances.

    The first row of each tile is +1 so every tile column maps max |w| = 1 to g_max; the other
    weights are +-LEVELS or +-LOW_LEVEL, so each level has > 1e5 devices (and as many
    zero-target partners). No weight is clipped: 3 std(W) is well above 1.
    """
    rng = np.random.default_rng(0)
    shape = (1536, 512)
    w = rng.choice((LOW_LEVEL, *LEVELS), size=shape) * rng.choice((-1.0, 1.0), size=shape)
    w[[0, 512, 1024]] = 1.0
    layer = ProgrammedLayer.program(
        torch.tensor(w, dtype=torch.float32), arch, torch.Generator().manual_seed(1)
    )
    g_target = np.stack([np.maximum(w, 0), np.maximum(-w, 0)]) * G_MAX
    return g_target, layer


def test_programming_noise_matches_sigma_prog(level_layer: tuple) -> None:
    g_target, layer = level_layer
    g_prog = layer.g_prog.double().numpy()
    for level in LEVELS:
        at_level = np.isclose(g_target, level * G_MAX)
        assert at_level.sum() > 1e5
        error = g_prog[at_level] - g_target[at_level]
        expected = sigma_prog(np.array(level * G_MAX))
        assert error.std() == pytest.approx(expected, rel=0.01)
        assert abs(error.mean()) < 0.02 * expected
    # zero targets: max(0, sigma_prog(0) N) has mean sigma_prog(0) / sqrt(2 pi)
    zero = g_prog[g_target == 0]
    assert zero.mean() == pytest.approx(
        sigma_prog(np.array(0.0)) / math.sqrt(2 * math.pi), rel=0.03
    )
    assert zero.min() == 0.0


def test_drift_exponents_match_fit(level_layer: tuple) -> None:
    g_target, layer = level_layer
    nu = layer.nu.double().numpy()
    assert nu.min() >= 0.0
    for level in (0.0, LOW_LEVEL, *LEVELS):
        at_level = np.isclose(g_target, level * G_MAX)
        assert at_level.sum() > 1e5
        mu, sigma = nu_mu_sigma(np.array(level * G_MAX))
        mean, std = folded_normal_moments(float(mu), float(sigma))
        assert nu[at_level].mean() == pytest.approx(mean, rel=0.005)
        assert nu[at_level].std() == pytest.approx(std, rel=0.01)


def test_read_noise_after_one_day(level_layer: tuple) -> None:
    g_target, layer = level_layer
    nu_before = layer.nu.clone()
    g = layer.conductances_at(DAY, torch.Generator().manual_seed(2)).double().numpy()
    assert torch.equal(layer.nu, nu_before)  # devices keep their drift exponent
    g_prog = layer.g_prog.double().numpy()
    g_drift = g_prog * ((DAY + T0) / T0) ** (-layer.nu.double().numpy())
    for level in LEVELS:  # low enough noise that the clamp at 0 never bites
        at = np.isclose(g_target, level * G_MAX)
        z = (g[at] - g_drift[at]) / (g_drift[at] * sigma_read(g_prog[at], DAY))
        assert z.std() == pytest.approx(1.0, rel=0.01)
        assert abs(z.mean()) < 0.01


@pytest.fixture(scope="module")
def gaussian_layer(arch: Arch) -> tuple[np.ndarray, np.ndarray, ProgrammedLayer]:
    """A 768 x 600 layer: 2 x 2 tiles, the last row and column of tiles partial."""
    rng = np.random.default_rng(3)
    w = rng.normal(0.0, 0.05, size=(768, 600))
    x = rng.normal(0.0, 1.0, size=(256, 768))
    layer = ProgrammedLayer.program(
        torch.tensor(w, dtype=torch.float32), arch, torch.Generator().manual_seed(4)
    )
    return w, x, layer


@pytest.mark.parametrize("compensation", ["global", "column"])
def test_drift_compensation_restores_output_scale(
    arch: Arch, gaussian_layer: tuple, compensation: str
) -> None:
    w, x, layer = gaussian_layer
    reference = np.abs(x @ w).mean()
    x_t = torch.tensor(x, dtype=torch.float32)
    spec = NoiseSpec("pcm", YEAR, compensation)

    def mean_output(mode: str) -> float:
        tiles = layer.at_time(YEAR, torch.Generator().manual_seed(5), mode)
        y = analog_matmul(x_t, tiles, arch, spec, torch.Generator().manual_seed(6))
        return y.abs().mean().item()

    assert mean_output("none") / reference < 0.7  # a year of drift loses a third or more
    assert mean_output(compensation) / reference == pytest.approx(1.0, abs=0.03)


def test_global_compensation_factor_is_the_readout_ratio(gaussian_layer: tuple) -> None:
    """alpha per tile = mean |G_prog| / mean |G_t| over the devices in use (identity readout)."""
    _, _, layer = gaussian_layer
    compensated = layer.at_time(YEAR, torch.Generator().manual_seed(7), "global")
    plain = layer.at_time(YEAR, torch.Generator().manual_seed(7), "none")
    alpha = (compensated.out_scale / plain.out_scale).double().numpy()
    g_now = layer.conductances_at(YEAR, torch.Generator().manual_seed(7)).double().numpy()
    g_prog = layer.g_prog.double().numpy()
    assert alpha.shape == (2, 600)  # tile rows x layer columns
    for i, rows in enumerate((slice(0, 512), slice(512, 768))):
        for cols in (slice(0, 512), slice(512, 600)):  # the second tile column is partial
            before = np.abs(g_prog[0] - g_prog[1])[rows, cols].mean()
            after = np.abs(g_now[0] - g_now[1])[rows, cols].mean()
            np.testing.assert_allclose(alpha[i, cols], before / after, rtol=1e-5)


def tile_arch(rows: int, cols: int) -> Arch:
    return load_arch("paper-512", [f"tile.rows={rows}", f"tile.cols={cols}"])


def test_ideal_equals_matmul_on_partial_tiles() -> None:
    rng = np.random.default_rng(8)
    w = rng.normal(size=(150, 100))
    x = rng.normal(size=(2, 5, 150))
    arch = tile_arch(64, 48)  # 3 x 3 tiles, last row and column partial
    spec = NoiseSpec("ideal")
    w_t = torch.tensor(w, dtype=torch.float32)
    x_t = torch.tensor(x, dtype=torch.float32)
    for tiles in (w_t, TileWeights.from_weight(w_t, arch)):
        y = analog_matmul(x_t, tiles, arch, spec, None).double().numpy()
        np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)


def test_quant_exact_for_values_on_the_grids() -> None:
    """Inputs on the DAC grid and sums on the ADC grid pass both converters unchanged.

    Per tile: row 0 carries the token's max |x| against zero weights; the other inputs are
    multiples of the ADC step (12/127 of the max) and weights are 0 or +-column scale.
    """
    rng = np.random.default_rng(9)
    rows, cols, k, n, tokens = 8, 4, 24, 12, 16
    levels = rng.integers(-1, 2, size=(k, n)).astype(float)
    levels[np.arange(k) % rows == 1] = rng.choice((-1.0, 1.0), size=(k // rows, n))
    levels[np.arange(k) % rows == 0] = 0.0
    w = levels * rng.uniform(0.5, 2.0, size=n)
    token_max = rng.uniform(0.5, 3.0, size=(tokens, 1))
    x = token_max * rng.integers(-1, 2, size=(tokens, k)) * 12 / 127
    x[:, np.arange(k) % rows == 0] = token_max
    arch = tile_arch(rows, cols)
    y = analog_matmul(torch.tensor(x), torch.tensor(w), arch, NoiseSpec("quant"), None)
    np.testing.assert_allclose(y.numpy(), x @ w, rtol=1e-12, atol=1e-12)


def test_quant_error_within_converter_steps() -> None:
    rng = np.random.default_rng(10)
    rows, cols = 64, 48
    w = rng.normal(size=(150, 100))
    x = rng.normal(size=(40, 150))
    arch = tile_arch(rows, cols)
    y = analog_matmul(torch.tensor(x), torch.tensor(w), arch, NoiseSpec("quant"), None).numpy()
    dac_step, adc_step = 2 * 1.0 / 254, 2 * 12.0 / 254
    bound = np.zeros_like(y)
    for start in range(0, 150, rows):
        x_slice, w_slice = x[:, start : start + rows], w[start : start + rows]
        in_scale = np.abs(x_slice).max(axis=1, keepdims=True)
        col_scale = np.concatenate(
            [np.abs(w_slice[:, c : c + cols]).max(axis=0) for c in range(0, 100, cols)]
        )
        assert np.abs((x_slice / in_scale) @ (w_slice / col_scale)).max() < 11  # no saturation
        bound += in_scale * (dac_step / 2 * np.abs(w_slice).sum(axis=0) + adc_step / 2 * col_scale)
    error = np.abs(y - x @ w)
    assert (error <= bound * (1 + 1e-9)).all()
    assert error.max() > 0.1 * bound.max()  # the converters really act


def numpy_periphery(x: np.ndarray, w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """aihwkit's forward per tile and token: abs-max noise management, 8-bit DAC and ADC
    (resolution 1/254 of the range, bounds 1 and 12), iterative bound management halving the
    input until the ADC does not saturate or the reduction passes min(1000, 0.25 / DAC step)."""
    dac_step, adc_step, out_bound = 2 / 254, 24 / 254, 12.0
    limit = min(1000.0, 0.25 / dac_step)
    y = np.zeros((x.shape[0], w.shape[1]))
    for r0 in range(0, w.shape[0], rows):
        for c0 in range(0, w.shape[1], cols):
            tile = w[r0 : r0 + rows, c0 : c0 + cols]
            col_scale = np.abs(tile).max(axis=0)
            for m in range(x.shape[0]):
                inputs = x[m, r0 : r0 + rows]
                in_scale = np.abs(inputs).max() or 1.0
                reduction = 1.0
                while True:
                    dac = np.round(inputs / (in_scale * reduction) / dac_step) * dac_step
                    out = np.round(np.clip(dac, -1, 1) @ (tile / col_scale) / adc_step) * adc_step
                    if np.abs(out).max() <= out_bound or reduction > limit:
                        break
                    reduction *= 2
                out = np.clip(out, -out_bound, out_bound)
                y[m, c0 : c0 + cols] += out * in_scale * reduction * col_scale
    return y


def test_quant_per_tile_converters_and_bound_management() -> None:
    rng = np.random.default_rng(11)
    w = rng.uniform(-0.5, 1.0, size=(512, 40))  # biased weights: long sums saturate the ADC
    x = np.abs(rng.normal(size=(24, 512)))
    w[:, 0] = rng.uniform(
        0.9, 1.0, size=512
    )  # (not constant: sums of equal weights tie in the ADC)
    x[0] = 1.0  # token 0, column 0: y ~ 486 > 32 * 12, still saturated at the last reduction
    results = {}
    for rows in (512, 128):
        y = analog_matmul(
            torch.tensor(x), torch.tensor(w), tile_arch(rows, 16), NoiseSpec("quant"), None
        )
        np.testing.assert_allclose(y.numpy(), numpy_periphery(x, w, rows, 16), rtol=1e-9, atol=1e-9)
        results[rows] = y.numpy()
    assert not np.allclose(results[512], results[128])  # tiling changes the quantised result
    single_tile_saturates = np.abs((x / x.max(1, keepdims=True)) @ (w / np.abs(w).max(0))) > 12
    assert single_tile_saturates.any()  # bound management was exercised


def test_same_seed_same_output(arch: Arch) -> None:
    w = torch.randn(700, 300, generator=torch.Generator().manual_seed(12)) * 0.05
    x = torch.randn(32, 700, generator=torch.Generator().manual_seed(13))

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        layer = ProgrammedLayer.program(w, arch, generator)
        tiles = layer.at_time(3600.0, generator)
        return analog_matmul(x, tiles, arch, NoiseSpec("pcm", 3600.0), generator)

    assert torch.equal(run(14), run(14))
    assert not torch.equal(run(14), run(15))


def test_bad_requests_are_user_errors(arch: Arch) -> None:
    with pytest.raises(AimccError, match="noise model"):
        NoiseSpec("gaussian")
    with pytest.raises(AimccError, match="compensation"):
        NoiseSpec("pcm", 1.0, "per-tile")
    with pytest.raises(AimccError, match="programmed tiles"):
        analog_matmul(torch.ones(2, 3), torch.ones(3, 4), arch, NoiseSpec("pcm"), None)
    with pytest.raises(AimccError, match="expects 3 inputs"):
        analog_matmul(torch.ones(2, 5), torch.ones(3, 4), arch, NoiseSpec("ideal"), None)
