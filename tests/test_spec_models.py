"""Spec <-> MaskNet <-> HyperNet consistency, functional evaluation, the per-pixel budget."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from hyperobf.models.hypernet import HyperNet, param_variance
from hyperobf.models.masknet import MaskNet, apply_batched, delta_batched, unbatch
from hyperobf.spec import BUILTIN, LayerSpec, MaskNetSpec, builtin_spec


@pytest.mark.parametrize("name", BUILTIN)
def test_spec_shapes_match_state_dict(name):
    spec = builtin_spec(name)
    sd = MaskNet(spec).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == spec.param_shapes()
    assert sum(v.numel() for v in sd.values()) == spec.num_params()


def test_thesis_structures():
    a, b, c = (builtin_spec(s) for s in "ABC")
    assert [l.out_ch for l in a.layers] == [16, 32, 256, 3]
    assert [l.out_ch for l in b.layers] == [16, 32, 128, 3]
    assert [l.out_ch for l in c.layers] == [32, 32, 256, 3]
    assert a.num_params() == 14307


@pytest.mark.parametrize("name", BUILTIN)
def test_spec_json_roundtrip_and_digest(name):
    spec = builtin_spec(name)
    again = MaskNetSpec.from_json(spec.to_json())
    assert again == spec and again.digest() == spec.digest()
    assert builtin_spec(name, rho_pixel=0.05).digest() != spec.digest()


@pytest.mark.parametrize(
    "layers, msg",
    [
        ((LayerSpec("a", 3, 8), LayerSpec("b", 4, 3, act="none")), "in_ch"),
        ((LayerSpec("a", 3, 8), LayerSpec("b", 8, 4, act="none")), "output 3"),
        ((LayerSpec("a", 3, 3),), "act='none'"),
        ((LayerSpec("a", 3, 8, stride=2), LayerSpec("b", 8, 3, act="none")), "cancel"),
    ],
)
def test_invalid_specs_rejected(layers, msg):
    with pytest.raises(ValueError, match=msg):
        MaskNetSpec("bad", layers)


@pytest.mark.parametrize("n", [1, 64])
@pytest.mark.parametrize("name", ["A", "tiny", "D"])
def test_hypernet_outputs_match_spec(name, n):
    spec = builtin_spec(name)
    params = HyperNet(spec).generate(n)
    assert list(params) == list(spec.param_shapes())
    for k, shape in spec.param_shapes().items():
        assert tuple(params[k].shape) == (n, *shape)


@pytest.mark.parametrize("name", ["tiny", "D"])
def test_batched_functional_equals_module(name):
    torch.manual_seed(0)
    spec = builtin_spec(name)
    params = HyperNet(spec).generate(3)
    x = torch.rand(3, 2, 3, 32, 32)
    grouped = apply_batched(spec, params, x)
    net = MaskNet(spec)
    # torch.func path: one module, many weight sets via vmap(functional_call)
    via_vmap = vmap(lambda p, xi: functional_call(net, p, (xi,)))(params, x)
    for i in range(3):
        net.load_state_dict(unbatch(params, i))
        ref = net(x[i])
        torch.testing.assert_close(grouped[i], ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(via_vmap[i], ref, atol=1e-6, rtol=0)


def test_perturbation_within_pixel_budget():
    torch.manual_seed(1)
    spec = builtin_spec("tiny", rho_pixel=0.02)
    params = HyperNet(spec).generate(4)
    # extreme inputs included: all-black, all-white, noise scaled way beyond the weight init
    with torch.no_grad():
        for k in params:
            params[k] = params[k] * 50
    x = torch.cat([torch.zeros(4, 1, 3, 16, 16), torch.ones(4, 1, 3, 16, 16), torch.rand(4, 2, 3, 16, 16)], 1)
    y = apply_batched(spec, params, x)
    assert (y - x).abs().max() <= 0.02 + 1e-6
    assert y.min() >= 0 and y.max() <= 1
    assert delta_batched(spec, params, x).abs().max() > 0.019  # the scaled nets do saturate the budget


def test_two_users_nets_differ():
    spec = builtin_spec("A")
    hyper = HyperNet(spec)
    params = hyper.generate(2)
    x = torch.rand(1, 3, 32, 32)
    d = apply_batched(spec, params, x.expand(2, 1, 3, 32, 32).contiguous())
    assert not torch.equal(params["conv1.weight"][0], params["conv1.weight"][1])
    assert (d[0] - d[1]).abs().max() > 1e-4
    assert param_variance(params) > 0
