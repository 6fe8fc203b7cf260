"""Evaluation harness building blocks: ResNet bank, dlib port parity, ONNX batching, splits, InvNet."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from conftest import shared_path
from hyperobf.eval.resnet import ResNetBank


def test_resnet_bank_equals_independent_models():
    """A bank of m models computes exactly what m separate ResNets with the same weights compute."""
    torch.manual_seed(0)
    bank = ResNetBank(2, 5, width=4).eval()
    singles = [ResNetBank(1, 5, width=4).eval() for _ in range(2)]
    sd = bank.state_dict()
    for k, net in enumerate(singles):
        own = {}
        for name, v in net.state_dict().items():
            b = sd[name]
            if v.dim() == 0:
                own[name] = b
            elif name.startswith("fc_"):
                own[name] = b[k:k + 1]
            else:  # grouped params / BN channels: model k's slice of the first dimension
                n = v.shape[0]
                own[name] = b[k * n:(k + 1) * n]
        net.load_state_dict(own)
    x = torch.rand(2, 3, 3, 64, 64)
    out = bank(x)
    for k, net in enumerate(singles):
        torch.testing.assert_close(out[k], net(x[k:k + 1])[0], atol=1e-5, rtol=1e-5)
    # ...and model 0's output does not depend on model 1's images.
    x2 = x.clone()
    x2[1] = torch.rand_like(x2[1])
    torch.testing.assert_close(bank(x2)[0], out[0])


def test_resnet_bank_trunk_replication():
    src = ResNetBank(1, 7, width=4)
    bank = ResNetBank(3, 4, width=4).eval()
    bank.load_trunk_replicated(src.trunk_state())
    src.eval()
    x = torch.rand(1, 2, 3, 64, 64)
    f1 = src.features(x)[0]
    fb = bank.features(x.expand(3, -1, -1, -1, -1))
    for k in range(3):
        torch.testing.assert_close(fb[k], f1, atol=1e-5, rtol=1e-5)


def test_dlib_port_matches_numpy_reference():
    folder = shared_path("models", "dlib_resnet_faceapi")
    faces = shared_path("data", "faces", "glint24")
    spec = importlib.util.spec_from_file_location("faceapi_ref", folder / "faceapi_dlib_resnet_numpy_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ref.D = str(folder) + "/"
    from PIL import Image

    from hyperobf.eval.dlib_resnet import load_dlib_resnet

    files = sorted(faces.rglob("*.png"))[:: 400][:3]
    imgs = np.stack([np.asarray(Image.open(f).convert("RGB").resize((150, 150), Image.BILINEAR)) for f in files])
    want = ref.forward(imgs.astype(np.float32), ref.load_weights())
    got = load_dlib_resnet(folder)(torch.from_numpy(imgs).permute(0, 3, 1, 2).float()).numpy()
    assert np.abs(got - want).max() < 1e-4
    # Different people get different embeddings (not a constant output).
    assert np.linalg.norm(want[0] - want[1]) > 0.1


def test_mobilefacenet_batched_equals_batch_of_one():
    path = shared_path("models", "mobilefacenet.onnx")
    import onnxruntime as ort

    from hyperobf.eval.embedders import OnnxEmbedder

    x = torch.rand(5, 3, 112, 112)
    emb = OnnxEmbedder(path, batch=4).embed(x)  # two batches: 4 + 1
    one = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i in (0, 4):
        e = one.run(None, {one.get_inputs()[0].name: ((x[i:i + 1] * 255 - 127.5) / 128).numpy()})[0]
        e = torch.nn.functional.normalize(torch.from_numpy(e), dim=1)[0]
        torch.testing.assert_close(emb[i], e, atol=1e-5, rtol=1e-5)


def test_split_is_identity_disjoint_and_seeded(tmp_path):
    from hyperobf.eval.scales import get_scale
    from hyperobf.eval.splits import make_split
    from hyperobf.eval.synthetic import write_synthetic_faces

    root = write_synthetic_faces(tmp_path / "faces", {"glint24": (5, 8), "celeba299": (14, 10)})
    sc = get_scale("tiny")
    a, b = make_split(root, sc, 3), make_split(root, sc, 3)
    assert a == b
    c = make_split(root, sc, 4)
    assert c["targets"] != a["targets"] or c["distractors"] != a["distractors"]
    t, d = set(a["targets"]), set(a["distractors"])
    pub = {f.split("/")[0] for f in a["public"]["files"]}
    assert len(t) == sc.n_targets and len(d) == sc.n_distractors
    assert not (t & d) and not (pub & (t | d))
    for v in a["targets"].values():
        assert len(v["train"]) == sc.train_per_class and v["test"] and not set(v["train"]) & set(v["test"])
    with pytest.raises(ValueError, match="needs"):
        make_split(root, get_scale("tiny", n_distractors=40), 0)


def test_holdout_split_never_uses_the_test_users(tmp_path):
    from hyperobf.eval.scales import get_scale
    from hyperobf.eval.splits import make_split
    from hyperobf.eval.synthetic import write_synthetic_faces

    root = write_synthetic_faces(tmp_path / "faces", {"glint24": (5, 8), "celeba299": (14, 10)})
    sc = get_scale("tiny")
    for seed in range(4):
        test, val = make_split(root, sc, seed), make_split(root, sc, seed, holdout=True)
        assert val["holdout"] is True and "holdout" not in test
        used = set(val["targets"]) | set(val["distractors"]) | {f.split("/")[0] for f in val["public"]["files"]}
        assert len(val["targets"]) == sc.n_targets and not used & set(test["targets"])
        assert make_split(root, sc, seed, holdout=True) == val
    with pytest.raises(ValueError, match="held-out"):  # 14 identities: 2 test + 2 held-out + 11 distractors
        make_split(root, get_scale("tiny", n_distractors=11), 0, holdout=True)


def test_invnet_mirrors_masknet_and_restores_a_fixed_perturbation():
    from hyperobf.eval.invnet import InvNet, train_invnet
    from hyperobf.eval.scales import get_scale
    from hyperobf.models.masknet import MaskNet, apply_batched
    from hyperobf.spec import builtin_spec

    spec = builtin_spec("tiny", rho_pixel=0.05)
    inv = InvNet(spec)
    assert [c.out_channels for c in inv.encoder] == [4, 8, 16]
    assert [c.out_channels for c in inv.decoder] == [8, 4, 3]
    assert any(isinstance(c, torch.nn.ConvTranspose2d) for c in inv.decoder)
    torch.manual_seed(0)
    net = MaskNet(spec)
    with torch.no_grad():  # a strong, structured perturbation to remove
        net.proj.bias.copy_(torch.tensor([3.0, -3.0, 3.0]))
    params = {k: v.detach()[None] for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    faces = (torch.rand(48, 3, 1, 1, generator=g) * 0.6 + 0.2).expand(48, 3, 32, 32)
    faces = (faces + 0.1 * torch.rand(48, 3, 32, 32, generator=g)).mul(255).byte()
    sc = get_scale("tiny", inv_epochs=30, inv_batch=16, inv_lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is fastest (and far faster on a busy CPU)
    try:
        inv = train_invnet(spec, params, faces, sc, torch.device("cpu"), 0)
    finally:
        torch.set_num_threads(threads)
    x = faces[:16].float() / 255
    xp = apply_batched(spec, params, x[None])[0]
    with torch.no_grad():
        err_before = (xp - x).abs().mean()
        err_after = (inv(xp) - x).abs().mean()
    assert err_after < 0.5 * err_before


def test_invnet_identity_start_returns_its_input_until_trained():
    from hyperobf.eval.invnet import InvNet
    from hyperobf.spec import builtin_spec

    spec = builtin_spec("tiny", 0.05)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    assert torch.equal(InvNet(spec, 0.1, identity_start=True)(x), x)
    torch.manual_seed(0)
    assert (InvNet(spec, 0.1)(x) - x).abs().mean() > 1e-3  # the thesis's random start adds noise


def test_attacker_shift_translates_each_image_and_keeps_banks_aligned():
    from hyperobf.train.flipshift import random_shift

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 5, 3, 16, 16)
    assert random_shift(x, 0, g) is x
    y = random_shift(x, 3, g)
    assert y.shape == x.shape
    pad = torch.nn.functional.pad(x.flatten(0, 1), (3,) * 4, mode="reflect").view(2, 5, 3, 22, 22)
    moved = 0
    for i in range(5):  # each image is one 16x16 window of its reflect-padded self, the same for both models
        hits = [(dy, dx) for dy in range(7) for dx in range(7)
                if torch.equal(pad[0, i, :, dy:dy + 16, dx:dx + 16], y[0, i])]
        assert hits and torch.equal(pad[1, i, :, hits[0][0]:hits[0][0] + 16, hits[0][1]:hits[0][1] + 16], y[1, i])
        moved += hits[0] != (3, 3)
    assert moved  # not all at the centre


def test_invnet_training_perturbation_obeys_the_budget_rule():
    from hyperobf.eval.invnet import _perturb
    from hyperobf.models.masknet import MaskNet
    from hyperobf.spec import builtin_spec
    from hyperobf.train.losses import dssim

    spec = builtin_spec("tiny", rho_pixel=0.05)
    torch.manual_seed(0)
    net = MaskNet(spec)
    with torch.no_grad():
        net.proj.bias.copy_(torch.tensor([3.0, -3.0, 3.0]))  # |δ| at the clip: far over a small DSSIM budget
    params = {k: v.detach()[None] for k, v in net.state_dict().items()}
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    free, _ = _perturb(spec, params, x, torch.Generator().manual_seed(2))
    fit, xs = _perturb(spec, params, x, torch.Generator().manual_seed(2), budget=(0.002, 0.05))
    assert float(dssim(free, xs).max()) > 0.002
    assert float(dssim(fit, xs).max()) <= 0.002
    assert torch.equal(fit, (fit * 255).round() / 255)  # 8-bit, as the device writes it


def test_scale_overrides_are_checked_and_typed():
    from hyperobf.cli.common import parse_sets
    from hyperobf.eval.scales import get_scale

    sc = get_scale("reduced", **parse_sets(["fr_epochs=30", "fr_onecycle=true", "held_counts=[1, 3]"]))
    assert (sc.fr_epochs, sc.fr_onecycle, sc.held_counts) == (30, True, (1, 3))
    assert get_scale("reduced").fr_epochs == 10  # the table itself is untouched
    with pytest.raises(ValueError, match="unknown scale setting"):
        get_scale("reduced", fr_epochz=3)


def test_squeezing_resnet_attacker_sees_every_image_through_its_counter():
    """--resnet-counters: distractors, validation, the target's test photos and its uploads all squeezed."""
    from types import SimpleNamespace

    from hyperobf.eval.counters import get_counter
    from hyperobf.eval.fr import Job, ResNetAttacker, to_u8
    from hyperobf.eval.scales import get_scale

    g = torch.Generator().manual_seed(0)
    img = lambda n: (torch.rand(n, 3, 16, 16, generator=g) * 255).to(torch.uint8)  # noqa: E731
    d = SimpleNamespace(images=img(6), labels=torch.tensor([0, 0, 0, 1, 1, 1]), classes=["a", "b"])
    v = SimpleNamespace(images=img(2), labels=torch.tensor([0, 1]), classes=["a", "b"])
    targets = [SimpleNamespace(test=img(3))]
    sq = lambda x: to_u8(get_counter("gray+jpeg10")(x.float() / 255.0))  # noqa: E731
    plain = ResNetAttacker(None, d, v, targets, get_scale("tiny"), torch.device("cpu"), 0)
    att = ResNetAttacker(None, d, v, targets, get_scale("tiny"), torch.device("cpu"), 0, counter="gray+jpeg10")
    assert torch.equal(plain.d_x, d.images) and torch.equal(plain.tests[0], targets[0].test)
    assert torch.equal(att.d_x, sq(d.images)) and torch.equal(att.v_x, sq(v.images))
    assert torch.equal(att.tests[0], sq(targets[0].test)) and not torch.equal(att.tests[0], targets[0].test)
    up = img(4)
    assert torch.equal(att._squeeze(up), sq(up)) and torch.equal(att._squeeze(up.float() / 255.0), sq(up))
    r = att.run([Job(0, up)])  # trains on the squeezed uploads end to end
    assert 0.0 <= r[0]["acc"] <= 1.0
