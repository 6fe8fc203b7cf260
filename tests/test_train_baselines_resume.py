"""Baselines train and issue like HyperNet nets; resuming continues bit-identically."""

from __future__ import annotations

import json

import pytest
import torch
from _train_support import tiny_cfg

from hyperobf.models.masknet import MaskNet, apply_batched
from hyperobf.spec import builtin_spec
from hyperobf.train.baselines import MCDropoutSource, z_digest
from hyperobf.train.checkpoint import load_checkpoint
from hyperobf.train.loop import train


@pytest.mark.parametrize("method", ["static", "ensemble", "mcdropout"])
def test_baseline_trains_and_issues_spec_shaped_nets(method, tmp_path):
    res = train(tiny_cfg(method=method), tmp_path)
    assert res.metrics[-1]["holdout"]["delta_max"] <= 0.03 + 1e-6
    loaded = load_checkpoint(res.checkpoint)
    assert loaded.config.method == method
    z = torch.randn(5, loaded.source.z_dim, generator=torch.Generator().manual_seed(0))
    params = loaded.source.issue(z)
    shapes = loaded.spec.param_shapes()
    assert list(params) == list(shapes)
    assert all(tuple(v.shape) == (5, *shapes[k]) for k, v in params.items())
    again = loaded.source.issue(z)  # reproducible from z alone
    assert all(torch.equal(params[k], again[k]) for k in params)
    if method != "static":  # users differ (5 users over 3 members / random masks)
        w = params["conv1.weight" if "conv1.weight" in params else next(iter(params))].flatten(1)
        assert len({tuple(r.tolist()) for r in w}) + len({tuple(r.tolist()) for r in params["fc.weight"].flatten(1)}) > 2


def test_ensemble_member_is_hash_of_z(tmp_path):
    loaded = load_checkpoint(train(tiny_cfg(method="ensemble", ensemble_size=3), tmp_path).checkpoint)
    z = torch.randn(4, loaded.source.z_dim, generator=torch.Generator().manual_seed(3))
    params = loaded.source.issue(z)
    for i in range(4):
        member = z_digest(z[i]) % 3
        assert torch.equal(params["proj.weight"][i], loaded.source.members["proj__weight"][member])


def test_mcdropout_baked_mask_equals_channel_dropout():
    spec = builtin_spec("tiny")
    cfg = tiny_cfg(method="mcdropout", dropout=0.5)
    src = MCDropoutSource(spec, cfg)
    masks = src.masks(2, torch.Generator().manual_seed(0))
    baked = src.bake(masks)
    x = torch.rand(2, 1, 3, 16, 16)
    got = apply_batched(spec, baked, x)
    net: MaskNet = src.net
    for i in range(2):  # reference: the plain net with channel dropout applied by hand after each ReLU
        h = x[i]
        it = iter(masks)
        for layer in spec.layers:
            h = getattr(net, layer.name)(h)
            if layer.act == "relu":
                h = torch.relu(h) * next(it)[i][None, :, None, None] / (1 - 0.5)
        ref = (x[i] + spec.rho_pixel * torch.tanh(h)).clamp(0, 1)
        torch.testing.assert_close(got[i], ref, atol=1e-6, rtol=1e-5)


def test_baselines_export_like_hypernet_nets(tmp_path):
    from hyperobf.export.issue import issue_users

    for method in ("ensemble", "mcdropout"):
        loaded = load_checkpoint(train(tiny_cfg(method=method), tmp_path / method).checkpoint)
        report = issue_users(loaded, 2, tmp_path / f"{method}_models")
        assert report.n_users == 2 and report.verified["onnx"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("method", ["hypernet", "mcdropout"])
def test_resume_continues_identically(method, tmp_path):
    kw = dict(method=method, jpeg_prob=0.5, resize_prob=0.5)  # augmentation draws from the run's generator too
    full = train(tiny_cfg(epochs=2, **kw), tmp_path / "full")
    train(tiny_cfg(epochs=1, **kw), tmp_path / "half")
    resumed = train(tiny_cfg(epochs=2, **kw), tmp_path / "half", resume=tmp_path / "half" / "checkpoint.pt")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed.metrics) == strip(full.metrics)
    a = torch.load(full.checkpoint, weights_only=False)["source"]
    b = torch.load(resumed.checkpoint, weights_only=False)["source"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_untargeted_warm_up_then_targeted(tmp_path):
    """The targeted recipe: resume an untargeted feature run in targeted mode (anchors derived anew);
    switching to another objective is refused with a one-line reason."""
    from _train_support import write_tiny_embedder

    emb = str(write_tiny_embedder(tmp_path / "emb.onnx"))
    kw = dict(objective="feature", embedder=emb, image_size=32)
    train(tiny_cfg(epochs=1, feature_mode="untargeted", **kw), tmp_path / "warm")
    ck = tmp_path / "warm" / "checkpoint.pt"
    res = train(tiny_cfg(epochs=2, feature_mode="targeted", **kw), tmp_path / "tgt", resume=ck)
    assert [r["epoch"] for r in res.metrics] == [1, 2]
    assert "anchor_cos_protected" in res.metrics[-1]["holdout"] and "anchor_cos_protected" not in res.metrics[0]["holdout"]
    state = torch.load(res.checkpoint, weights_only=False)
    assert state["objective"]["anchor_proj"].shape[1] == state["config"]["z_dim"]
    with pytest.raises(ValueError, match="cannot resume a feature run with the adversarial objective"):
        train(tiny_cfg(epochs=2), tmp_path / "clf", resume=ck)


def test_resume_ignores_feature_mode_for_the_classifier_objective(tmp_path):
    """feature_mode means nothing to the classifier objective (its default changed): resuming must not trip on it."""
    train(tiny_cfg(epochs=1, feature_mode="targeted"), tmp_path / "a")
    res = train(tiny_cfg(epochs=2, feature_mode="untargeted"), tmp_path / "a", resume=tmp_path / "a" / "checkpoint.pt")
    assert [r["epoch"] for r in res.metrics] == [1, 2]
