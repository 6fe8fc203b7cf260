"""KL-divergence diversity between generated nets, and the upload-robustness augmentation."""

from __future__ import annotations

import math

import pytest
import torch
from _train_support import tiny_cfg

from hyperobf.train.augment import upload_augment
from hyperobf.train.diversity import kl_diversity, kl_matrix, output_similarity, param_variance


def _nets(*weights):
    return {"conv.weight": torch.stack([torch.as_tensor(w, dtype=torch.float32) for w in weights]),
            "conv.bias": torch.zeros(len(weights), 1)}


def test_kl_zero_for_identical_nets_positive_for_different():
    w = torch.randn(64)
    same = _nets(w, w, w)
    assert kl_diversity(same)["mean"] == 0.0 and kl_diversity(same, "histogram")["mean"] < 1e-9
    diff = _nets(w, 3 * w + 1)
    assert kl_diversity(diff)["min"] > 0.1 and kl_diversity(diff, "histogram")["min"] > 0.1
    assert float(param_variance(same)) == 0.0 and float(param_variance(diff)) > 0


def test_output_similarity_sees_nets_that_differ_in_weights_but_not_in_output():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(1, 3, 3, 8, 8, generator=g)  # one last-layer output (1, b=3, 3, 8, 8), |pre| >= 1
    pre = (r.sign() * (1 + r.abs())).expand(4, -1, -1, -1, -1) * torch.tensor([20.0, 40.0, 80.0, 160.0]).view(4, 1, 1, 1, 1)
    saturated = 0.05 * torch.tanh(pre)  # different weights (scales), one sign pattern at the clip
    same = output_similarity(saturated)
    assert same["delta_cos"] > 0.99 and same["identical_pairs"] == 1.0 and same["nets"] == 4
    flipped = output_similarity(torch.stack([saturated[0], -saturated[0]]))
    assert abs(flipped["delta_cos"] + 1.0) < 1e-9 and flipped["identical_pairs"] == 0.0
    unrelated = output_similarity(0.05 * torch.tanh(torch.randn(6, 3, 3, 16, 16, generator=g)))
    assert abs(unrelated["delta_cos"]) < 0.1 and unrelated["identical_pairs"] == 0.0
    with pytest.raises(ValueError):
        output_similarity(saturated[:1])


def test_gaussian_kl_matches_closed_form():
    a = torch.tensor([0.0, 2.0])  # mean 1, var 1
    b = torch.tensor([0.0, 4.0])  # mean 2, var 4
    m = kl_matrix(_nets(a, b))
    expected = 0.5 * (math.log(4 / 1) + (1 + (1 - 2) ** 2) / 4 - 1)
    assert abs(float(m[0, 1]) - expected) < 1e-9 and float(m[0, 0]) == 0.0


def test_upload_augment_is_seeded_differentiable_and_changes_images():
    cfg = tiny_cfg(jpeg_prob=1.0, jpeg_quality=(50, 70), resize_prob=1.0, resize_range=(0.5, 0.6))
    x = torch.rand(4, 3, 112, 112, requires_grad=True)
    y1 = upload_augment(x, cfg, torch.Generator().manual_seed(0))
    y2 = upload_augment(x, cfg, torch.Generator().manual_seed(0))
    assert y1.shape == x.shape and torch.equal(y1, y2)
    d = y1.detach()
    assert float((d - x.detach()).abs().mean()) > 0.01 and 0 <= float(d.min()) and float(d.max()) <= 1
    y1.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_upload_augment_probability_zero_is_identity():
    cfg = tiny_cfg(jpeg_prob=0.0, resize_prob=0.0)
    x = torch.rand(2, 3, 112, 112)
    assert torch.equal(upload_augment(x, cfg, torch.Generator().manual_seed(0)), x)


def test_match_to_held_finds_the_users_whose_net_the_attacker_holds(tiny_checkpoint):
    from hyperobf.eval.alike import match_to_held
    from hyperobf.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    z_users = torch.randn(3, loaded.source.z_dim, generator=g)
    x = torch.rand(2, 3, 32, 32, generator=g)  # fully convolutional: any size
    # the attacker's second account happens to hold user 1's latent: that user matches exactly
    z_held = torch.cat([torch.randn(1, loaded.source.z_dim, generator=g), z_users[1:2]])
    match = match_to_held(loaded, z_users, z_held, x)
    assert len(match) == 3 and match[1] == pytest.approx(1.0, abs=1e-6)
    assert max(match[0], match[2]) < 1.0 - 1e-4


def test_largest_group_counts_the_nets_that_output_one_delta():
    from hyperobf.train.diversity import largest_group, output_similarity

    g = torch.Generator().manual_seed(0)
    common, other = torch.randn(1, 2, 3, 8, 8, generator=g), torch.randn(3, 2, 3, 8, 8, generator=g)
    deltas = torch.cat([common.expand(5, -1, -1, -1, -1), other])  # 5 of 8 nets: one δ
    assert output_similarity(deltas)["largest_group"] == 5 / 8
    assert largest_group(torch.eye(4)) == 0.25  # every net its own δ


def test_signature_terms_see_per_user_patterns():
    """within → 1 / between → 0 for one fixed pattern per user; one pattern for all users: between 1; i.i.d. noise:
    within ≈ 0. The loss is minimal only for the first."""
    from hyperobf.train.losses import signature_loss, signature_terms

    g = torch.Generator().manual_seed(0)
    n, b, shape = 4, 3, (3, 8, 8)
    own = torch.randn(n, 1, *shape, generator=g).expand(n, b, *shape)  # each user: one pattern on every face
    within, between = signature_terms(own)
    assert within == pytest.approx(1.0, abs=1e-5) and float(between) < 0.1
    shared = torch.randn(1, 1, *shape, generator=g).expand(n, b, *shape)  # every user the same pattern
    w2, b2 = signature_terms(shared)
    assert w2 == pytest.approx(1.0, abs=1e-5) and b2 == pytest.approx(1.0, abs=1e-5)
    noise = torch.randn(n, b, *shape, generator=g)  # a new pattern on every face
    w3, b3 = signature_terms(noise)
    assert abs(float(w3)) < 0.15
    losses = [float(signature_loss(*t)) for t in ((within, between), (w2, b2), (w3, b3))]
    assert losses[0] < 0.1 < 0.8 < min(losses[1:])


def _same_step(*cfgs):
    """step_loss of each config on the same three tiny nets and nine faces (objective built from the first):
    [(loss, parts), ...]."""
    from hyperobf.spec import builtin_spec
    from hyperobf.train.loop import step_loss
    from hyperobf.train.objectives import build_objective
    from hyperobf.train.sources import build_source

    spec = builtin_spec("tiny", cfgs[0].rho_pixel)
    gen = torch.Generator().manual_seed(0)
    source, objective = build_source(spec, cfgs[0]), build_objective(cfgs[0], 4)
    params, _ = source.sample_keyed(3, gen)
    x, y = torch.rand(9, 3, 16, 16, generator=gen), torch.arange(3).repeat_interleave(3)
    out = []
    for c in cfgs:
        loss, _, parts = step_loss(spec, c, objective, params, x, y, torch.Generator().manual_seed(1))
        out.append((float(loss.detach()), {k: float(v.detach()) for k, v in parts.items()}))
    return out


TINY_THESIS = dict(structure="tiny", epochs=1, steps_per_epoch=2, batch_images=3, nets_per_step=3, objective="thesis",
                   pool_users=6, image_size=16)


def test_signature_weight_adds_exactly_its_term_and_training_logs_both(tmp_path):
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.loop import train
    from hyperobf.train.losses import signature_loss

    off = TrainConfig(**TINY_THESIS)
    (l0, p0), (l1, _) = _same_step(off, TrainConfig(**TINY_THESIS, lambda_signature=5.0))
    expected = 5.0 * float(signature_loss(torch.tensor(p0["sig_within"]), torch.tensor(p0["sig_between"])))
    assert l1 - l0 == pytest.approx(expected, rel=1e-4) and expected > 0
    m = train(off, tmp_path / "off").metrics[-1]
    assert 0 < m["sig_between"] <= 1 and -1 <= m["sig_within"] <= 1
    with pytest.raises(ValueError, match="lambda_signature"):
        TrainConfig(lambda_signature=-1).validate()


def test_saturation_term_is_its_hinge_on_the_nets_own_delta_and_is_logged(tmp_path):
    """λ_sat·max(mean((δ/ρ_pixel)²) − cap, 0) on the δ before the fill: added exactly, zero under the cap, logged."""
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.loop import train
    from hyperobf.train.losses import saturation

    assert float(saturation(torch.full((2, 3), -0.03), 0.03)) == pytest.approx(1.0)  # a sign pattern: 1
    kw = dict(TINY_THESIS, budget_fill=4.0, dssim_budget=0.02)
    on = TrainConfig(**kw, lambda_saturation=7.0, saturation_cap=1e-6)  # always over the cap
    (l0, p0), (l1, _), (l2, _) = _same_step(TrainConfig(**kw), on,
                                            TrainConfig(**kw, lambda_saturation=7.0, saturation_cap=1.0))  # never over
    sat = p0["saturation"]
    assert 0 < sat < 1
    assert l1 - l0 == pytest.approx(7.0 * (sat - 1e-6), rel=1e-4)
    assert l2 - l0 == pytest.approx(0.0, abs=1e-6)
    assert 0 < train(on, tmp_path / "on").metrics[-1]["saturation"] <= 1
    for bad in (dict(lambda_saturation=-1.0), dict(saturation_cap=0.0), dict(saturation_cap=1.5)):
        with pytest.raises(ValueError, match="saturation"):
            TrainConfig(**bad).validate()
