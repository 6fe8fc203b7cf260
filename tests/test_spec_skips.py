"""Skip connections in the spec (``LayerSpec.concat``), the FLOP count, and the new structures U and
U-small through every torch-side consumer: MaskNet module, grouped-conv batch, HyperNet, fingerprint."""

from __future__ import annotations

import json

import pytest
import torch
from torch.func import functional_call, vmap

from hyperobf.models.hypernet import HyperNet
from hyperobf.models.masknet import MaskNet, apply_batched, delta_batched, unbatch
from hyperobf.spec import LayerSpec, MaskNetSpec, builtin_spec, flops, layer_output_sizes

SKIP_STRUCTURES = ("U-small", "U")
PX = 112 * 112


def test_flops_hand_counted():
    """Multiply-adds x2, counted by hand from each structure's layer table (not from spec code)."""
    a = 2 * PX * (3 * 16 * 9 + 16 * 32 * 9 + 32 * 256 + 256 * 3)
    assert flops(builtin_spec("A")) == a == 351_232_000  # the "0.35 GFLOP"
    d = 2 * (56**2 * 16 * 3 * 9 + 28**2 * 32 * 16 * 9 + 14**2 * 48 * 32 * 9 + 14**2 * 48 * 48 * 9
             + 28**2 * 32 * 48 * 9 + 56**2 * 16 * 32 * 9 + PX * 16 * 16 * 9 + PX * 3 * 16)
    assert flops(builtin_spec("D")) == d
    u = 2 * (PX * 16 * 3 * 9 + 56**2 * 64 * 16 * 9 + 28**2 * 128 * 64 * 9 + 28**2 * 128 * 128 * 9
             + 56**2 * 32 * (128 + 64) * 9 + PX * 16 * (32 + 16) * 9 + PX * 3 * 16)
    assert flops(builtin_spec("U")) == u
    assert flops(builtin_spec("A"), 224, 224) == 4 * a  # scales with the pixel count


def test_new_structures_budget():
    """Issue 12: at most 1 GFLOP per 112² face; U is the big one, U-small about half of it."""
    big, small = (flops(builtin_spec(n)) for n in SKIP_STRUCTURES[::-1])
    assert 0.8e9 <= big <= 1.0e9
    assert 0.4e9 <= small <= 0.5e9
    assert builtin_spec("U").num_params() > 4 * builtin_spec("D").num_params()


@pytest.mark.parametrize("name, hw", [("D", (64, 40)), ("U", (48, 80)), ("A", (33, 17))])
def test_layer_output_sizes_match_torch(name, hw):
    spec = builtin_spec(name)
    net = MaskNet(spec)
    seen = []
    for layer in spec.layers:
        getattr(net, layer.name).register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:])))
    with torch.no_grad():
        net(torch.rand(1, 3, *hw))
    assert layer_output_sizes(spec, *hw) == seen


def test_skip_json_and_format():
    u = builtin_spec("U")
    d = u.to_dict()
    assert d["spec_format"] == 2
    assert [(l["name"], l.get("concat")) for l in d["layers"] if "concat" in l] == [("dec2", "enc2"), ("dec1", "enc1")]
    assert MaskNetSpec.from_json(u.to_json()) == u
    assert "concat" not in builtin_spec("D").to_json()  # plain chains keep format 1 JSON
    plain_as_2 = dict(builtin_spec("A").to_dict(), spec_format=2)
    with pytest.raises(ValueError, match="does not match its layers"):
        MaskNetSpec.from_dict(plain_as_2)  # one canonical JSON (and digest) per spec
    with pytest.raises(ValueError, match="does not match its layers"):
        MaskNetSpec.from_dict(dict(d, spec_format=1))
    with pytest.raises(ValueError, match="unsupported spec_format 3"):
        MaskNetSpec.from_dict(dict(d, spec_format=3))


def _skip_net(**dec) -> tuple[LayerSpec, ...]:
    args = dict(name="dec", in_ch=16 + 8, out_ch=8, upsample=2, concat="e1") | dec
    return (LayerSpec("e1", 3, 8), LayerSpec("e2", 8, 16, stride=2), LayerSpec(**args),
            LayerSpec("proj", 8, 3, 1, act="none"))


def test_valid_skip_spec_accepted():
    spec = MaskNetSpec("ok", _skip_net())
    assert spec.spec_format == 2 and spec.skip_sources == {"e1"} and spec.stride_product == 2


@pytest.mark.parametrize("dec, msg", [
    (dict(concat="nope"), "'nope' is not an earlier layer"),
    (dict(concat="proj"), "'proj' is not an earlier layer"),  # a later layer
    (dict(concat="dec"), "'dec' is not an earlier layer"),  # itself
    (dict(concat="e2", in_ch=32), "already its input"),
    (dict(in_ch=16), r"in_ch 16 != previous out_ch 16 \+ concat e1's out_ch \(= 24\)"),  # skip channels not counted
    (dict(upsample=1, in_ch=24), "skip resolution mismatch"),  # e1 at full size, dec's input at 1/2
])
def test_bad_skips_rejected(dec, msg):
    layers = _skip_net(**dec)
    if dec.get("upsample") == 1:  # keep the net's strides cancelling, so only the skip is wrong
        layers = layers[:3] + (LayerSpec("up", 8, 8, upsample=2), LayerSpec("proj", 8, 3, 1, act="none"))
    with pytest.raises(ValueError, match=msg):
        MaskNetSpec("bad", layers)


def test_bad_skip_in_json_is_a_one_line_value_error():
    d = builtin_spec("U").to_dict()
    d["layers"][4]["concat"] = "enc1"  # dec2 (at 56²) asks for enc1 (at 112²)
    with pytest.raises(ValueError, match="skip resolution mismatch"):
        MaskNetSpec.from_json(json.dumps(d))


def test_concat_channel_order_is_input_then_skip():
    """The convention every consumer follows: a skip layer's in-channels are [previous output, skip].
    With the weights on the previous output's channels zeroed, δ cannot depend on e2 at all."""
    torch.manual_seed(0)
    spec = MaskNetSpec("order", _skip_net())
    net = MaskNet(spec).eval()
    with torch.no_grad():
        net.dec.weight[:, :16] = 0  # previous output (e2 upsampled): 16 channels, first
        x = torch.rand(1, 3, 16, 16)
        base = net.delta(x)
        net.e2.bias += 5.0  # changes e2's output (and nothing else)
        assert torch.equal(net.delta(x), base)
        net.e1.bias += 5.0  # the skip source: must change δ
        assert not torch.allclose(net.delta(x), base)


@pytest.mark.parametrize("name", SKIP_STRUCTURES)
def test_batched_and_vmap_equal_module(name):
    torch.manual_seed(0)
    spec = builtin_spec(name)
    params = {k: v.detach() for k, v in HyperNet(spec).generate(3).items()}
    x = torch.rand(3, 2, 3, 32, 48)
    grouped = apply_batched(spec, params, x)
    net = MaskNet(spec)
    via_vmap = vmap(lambda p, xi: functional_call(net, p, (xi,)))(params, x)
    for i in range(3):
        net.load_state_dict(unbatch(params, i))
        with torch.no_grad():
            ref = net(x[i])
        torch.testing.assert_close(grouped[i], ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(via_vmap[i], ref, atol=1e-6, rtol=0)
    assert (grouped[0] - grouped[1]).abs().max() > 1e-4  # the three nets do differ


@pytest.mark.parametrize("name", SKIP_STRUCTURES)
def test_hypernet_generates_every_weight_per_user(name):
    """No shared trunk: every tensor of the MaskNet comes from the HyperNet and differs between users."""
    torch.manual_seed(1)
    spec = builtin_spec(name)
    hyper = HyperNet(spec)
    with torch.no_grad():
        params = hyper.generate(4)
    assert list(params) == list(spec.param_shapes())
    for k, shape in spec.param_shapes().items():
        v = params[k]
        assert tuple(v.shape) == (4, *shape)
        spread = v.std(dim=0)  # across users, per element
        assert (spread > 0).float().mean() > 0.999, k
    assert set(hyper.generators) == {l.name for l in spec.layers}


@pytest.mark.parametrize("name", SKIP_STRUCTURES)
def test_fingerprint_probe_matches_batched(name):
    from hyperobf.psp.fingerprint import Fingerprinter

    torch.manual_seed(2)
    spec = builtin_spec(name)
    with torch.no_grad():
        params = HyperNet(spec).generate(3)
    fp = Fingerprinter()
    got = fp.probe_delta(spec, params)  # (3, D) = δ / ρ on the probe batch
    x = fp.probe.unsqueeze(0).expand(3, *fp.probe.shape)
    want = delta_batched(spec, params, x).reshape(3, -1) / spec.rho_pixel
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
