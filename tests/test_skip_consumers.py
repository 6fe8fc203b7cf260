"""Consumers of skip-connection structures: MC-dropout nets (the baked weights equal the net with its
dropout masks applied to the activations) and the attacker's InvNet."""

from __future__ import annotations

import pytest
import torch

from hyperobf.models.masknet import _act, _pre, delta_batched
from hyperobf.spec import builtin_spec
from hyperobf.train.sources import build_source
from hyperobf.train.config import TrainConfig


def _masked_delta(src, masks: list[torch.Tensor], i: int, x: torch.Tensor) -> torch.Tensor:
    """Net i by hand: each ReLU layer's output times its keep-mask / (1 − p); skips read the masked output."""
    it, kept, h = iter(masks), {}, x
    for layer in src.spec.layers:
        h = _pre(h, layer)
        if layer.concat:
            h = torch.cat([h, kept[layer.concat]], 1)
        h = _act(getattr(src.net, layer.name)(h), layer)
        if layer.act == "relu":
            h = h * (next(it)[i] / (1 - src.p))[None, :, None, None]
        kept[layer.name] = h
    return src.spec.rho_pixel * torch.tanh(h)


@pytest.mark.parametrize("name", ["D", "U-small"])
def test_baked_masks_equal_masked_activations(name):
    spec = builtin_spec(name, 0.05)
    torch.manual_seed(0)
    src = build_source(spec, TrainConfig(method="mcdropout", structure=name, dropout=0.3))
    masks = src.masks(3, torch.Generator().manual_seed(1))
    x = torch.rand(3, 2, 3, 32, 32)
    with torch.no_grad():
        got = delta_batched(spec, src.bake(masks), x)
        want = torch.stack([_masked_delta(src, masks, i, x[i]) for i in range(3)])
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", ["U", "U-small"])
def test_invnet_mirrors_skip_structures_as_a_chain(name):
    from hyperobf.eval.invnet import InvNet

    net = InvNet(builtin_spec(name))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and float((y - x).abs().max()) <= 0.1 + 1e-6  # a bounded correction
