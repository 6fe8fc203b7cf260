"""Objectives and budget on the tiny spec: J1 falls on a fixed batch; |δ| ≤ ρ_pixel; the DSSIM penalty acts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _train_support import tiny_cfg, write_tiny_embedder

from hyperobf.models.masknet import apply_batched
from hyperobf.spec import builtin_spec
from hyperobf.train.data import synthetic_faces
from hyperobf.train.loop import step_loss
from hyperobf.train.objectives import build_objective
from hyperobf.train.sources import build_source


@pytest.fixture(scope="module")
def embedder_path(tmp_path_factory):
    return write_tiny_embedder(tmp_path_factory.mktemp("emb") / "tiny_embedder.onnx")


def _fit_fixed_batch(cfg, steps: int, update_objective: bool = False):
    """Train on one fixed batch with fixed users' z.

    Returns (J1 first step, J1 last step, objective, source, x, per-step mean DSSIM)."""
    torch.manual_seed(0)
    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    faces = synthetic_faces(n_identities=4, per_identity=2, size=48)  # small: the nets are fully convolutional
    x, y = faces.float(), faces.labels  # (8, 3, 48, 48)
    source = build_source(spec, cfg)
    objective = build_objective(cfg, len(faces.classes))
    if hasattr(objective, "prepare"):
        objective.prepare(x, y, len(faces.classes))
    z = torch.randn(cfg.nets_per_step, source.z_dim, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(source.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(2)
    j1s, dssims = [], []
    for _ in range(steps):
        keys = source.key_of(z) if getattr(objective, "needs_keys", False) else None
        loss, x_prot, parts = step_loss(spec, cfg, objective, source.issue(z), x, y, gen, keys=keys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if update_objective:
            objective.update(x, x_prot, y)
        j1s.append(float(parts["J1"].detach()))
        dssims.append(float(parts["dssim"].detach()))
    return j1s[0], j1s[-1], objective, source, x, dssims


@pytest.mark.parametrize("objective,mode", [("classifier", "targeted"), ("feature", "targeted"), ("feature", "untargeted")])
def test_objective_loss_falls_on_fixed_batch(objective, mode, embedder_path):
    cfg = tiny_cfg(objective=objective, feature_mode=mode, embedder=str(embedder_path) if objective == "feature" else "",
                   nets_per_step=2, lr=1e-3, lambda_div=100.0, dssim_budget=1.0, rho_pixel=0.1)
    first, last, *_ = _fit_fixed_batch(cfg, steps=10)
    if mode == "untargeted" and objective == "feature":  # J1 = cos(Φ(x), Φ(x⊕δ)) starts next to 1
        assert 1 - last > 2 * (1 - first), (first, last)
    else:
        assert last < first - 0.01 * abs(first), (first, last)


def test_targeted_anchor_is_a_fixed_function_of_the_users_key(embedder_path):
    """Each user's target identity comes from its z (so the HyperNet can learn it), spreads over the pool,
    and a face is never pulled toward its own identity."""
    from hyperobf.train.feature import anchor_index

    cfg = tiny_cfg(objective="feature", feature_mode="targeted", embedder=str(embedder_path))
    _, _, obj, source, x, _ = _fit_fixed_batch(cfg, steps=1)
    assert obj.anchors.shape == (4, 16) and obj.anchor_proj.shape == (4, cfg.z_dim)  # 4 identities, 16-d
    assert torch.allclose(obj.anchors.norm(dim=1), torch.ones(4), atol=1e-5)
    z = torch.randn(400, cfg.z_dim, generator=torch.Generator().manual_seed(3))
    slots = obj.anchor_of(source.key_of(z))
    assert torch.equal(slots, obj.anchor_of(source.key_of(z.clone())))  # deterministic per user
    assert torch.bincount(slots, minlength=4).min() > 40  # every identity is someone's target
    assert anchor_index(torch.tensor([5, 6]), obj.anchor_proj).tolist() == [1, 2]  # member index mod K
    # a face whose identity is the net's anchor is left out of J1: all faces of identity 0 under anchor 0
    e = obj.embed(x)
    z0 = z[slots == 0][:1]
    y0 = torch.zeros(2, dtype=torch.int64)
    obj.push = 0.0  # the pure pull first (Fawkes's loss); the push term is checked below
    assert float(obj.j1(x[:2], x[:2], y0, keys=z0)) == 0.0
    assert obj.anchor_ok.sum(1).min() >= 1 and not obj.anchor_ok.diagonal().any()  # every identity has a target
    y_far = int(obj.anchor_ok[:, 0].nonzero()[0])  # an identity for which anchor 0 is a valid target
    want = 1.0 - (e[:2] * obj.anchors[0]).sum(1)
    got = obj.j1(x[:2], x[:2], torch.full((2,), y_far, dtype=torch.int64), keys=z0)
    assert torch.allclose(got, want.mean(), atol=1e-5)
    obj.push = 0.5  # + 0.5 × (1 − ‖Φ(x ⊕ δ) − Φ(x)‖ / 2), here δ = 0
    assert torch.allclose(obj.j1(x[:2], x[:2], torch.full((2,), y_far, dtype=torch.int64), keys=z0),
                          want.mean() + 0.5, atol=1e-5)


def test_budget_pixel_clip_holds_under_aggressive_training(tmp_path):
    """Aggressive training pushes δ against the per-pixel clip; the clip must hold where users meet it:
    in the exported ONNX model run by onnxruntime, at the checkpoint's own ρ_pixel (0.02, not the
    default 0.03), with the protected image inside [0, 1]. (In torch, tanh bounds δ by construction.)"""
    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.export.verify import ort_outputs
    from hyperobf.model_meta import build_metadata

    rho = 0.02
    cfg = tiny_cfg(lr=0.05, lambda_div=100.0, rho_pixel=rho, lambda_dssim=0.0)
    _, _, _, source, x, _ = _fit_fixed_batch(cfg, steps=10)
    with torch.no_grad():
        params = source.sample(4, torch.Generator().manual_seed(5))
        xs = x.unsqueeze(0).expand(4, *x.shape)
        delta = apply_batched(source.spec, params, xs) - xs
    assert float(delta.abs().max()) <= rho + 1e-6
    spec = source.spec
    for i in range(2):
        one = {k: v[i].numpy() for k, v in params.items()}
        data = build_onnx(spec, one, "dynamic", build_metadata(spec, f"u{i}", "0" * 64, shape="dynamic"))
        out, d = ort_outputs(data.SerializeToString(), x.numpy())
        assert float(np.abs(d).max()) <= rho + 1e-6
        assert float(np.abs(d).max()) > 0.5 * rho  # the training did push δ up to the clip
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_allclose(out, np.clip(x.numpy() + d, 0.0, 1.0), atol=1e-6)


def test_dssim_penalty_pulls_perturbation_under_budget():
    """With J1 off (λ_div = 0), the penalty alone must cut a DSSIM far over the budget; without it, it stays."""
    on = tiny_cfg(rho_pixel=0.3, lambda_div=0.0, dssim_budget=0.0, lambda_dssim=1000.0, lr=3e-4)
    _, _, _, _, _, hist = _fit_fixed_batch(on, steps=12)
    assert hist[0] > 0.01 and hist[-1] < 0.5 * hist[0], hist
    off = tiny_cfg(rho_pixel=0.3, lambda_div=0.0, dssim_budget=0.0, lambda_dssim=0.0, lr=3e-4)
    _, _, _, _, _, hist_off = _fit_fixed_batch(off, steps=12)
    assert hist_off[-1] > 0.8 * hist_off[0], hist_off


def test_default_objective_is_the_measured_winner_when_an_embedder_is_given():
    from hyperobf.train.config import TrainConfig

    assert TrainConfig().objective == "adversarial"  # nothing to load: the surrogate-classifier objective
    cfg = TrainConfig.from_dict({"embedder": "mobilefacenet.onnx"})
    assert (cfg.objective, cfg.feature_mode) == ("feature", "untargeted")
    assert TrainConfig.from_dict({"embedder": "m.onnx", "objective": "classifier"}).objective == "adversarial"  # old name
    assert TrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # the saved config is resolved


def test_baselines_weigh_j1_like_the_hypernet():
    """An ensemble's loss is λ_div·max(J1 − α, 0) + DSSIM penalty: the HyperNet's J without J2, so the
    effectiveness term weighs the same against the budget penalty in every method (E3 compares them)."""
    from hyperobf.train.losses import budget_penalty, dssim

    cfg = tiny_cfg(method="ensemble", ensemble_size=2, objective="classifier", lambda_div=7.0, alpha=0.05,
                   dssim_budget=0.0, rho_pixel=0.1)
    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    faces = synthetic_faces(n_identities=2, per_identity=2, size=32)
    x, y = faces.float(), faces.labels  # (4, 3, 32, 32): 2 nets × 2 faces
    source = build_source(spec, cfg)
    objective = build_objective(cfg, len(faces.classes))
    params = source.sample(2, torch.Generator().manual_seed(0))
    loss, x_prot, parts = step_loss(spec, cfg, objective, params, x, y, torch.Generator().manual_seed(1),
                                    independent=True)
    want = 7.0 * torch.relu(parts["J1"] - 0.05) + cfg.lambda_dssim * budget_penalty(dssim(x_prot, x), 0.0)
    assert torch.allclose(loss, want, rtol=1e-5), (float(loss), float(want))
    assert float(parts["J2"].detach()) > 0  # measured, but not part of a baseline's loss
