"""Issue 13: the thesis's J1 (error-minimising, per user), the identity-grouped sampler, and the
`classifier` -> `adversarial` rename that must keep old configs and checkpoints working."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hyperobf.train.config import TrainConfig
from hyperobf.train.loop import train
from hyperobf.train.sampler import UserPool

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_user_pool_groups_faces_by_identity_and_refreshes():
    labels = torch.tensor([0] * 5 + [1] * 7 + [2] * 3 + [3] * 9)
    gen = torch.Generator().manual_seed(0)
    pool = UserPool(6, 4, labels, gen, refresh_every=3, refresh_fraction=0.5)
    z0, ids0 = pool.z.clone(), pool.identity.clone()
    for step in range(3):
        z, idx, users = pool.batch(4, 5, gen)
        assert z.shape == (4, 4) and idx.shape == (20,)
        groups = labels[idx].view(4, 5)
        assert bool((groups == groups[:, :1]).all())  # every net's faces: one identity
        assert torch.equal(groups[:, 0], pool.identity[users])  # ... its pseudo-user's
        assert torch.equal(z, pool.z[users])
    assert torch.equal(pool.z, z0) and torch.equal(pool.identity, ids0)  # stable for refresh_every steps
    pool.batch(4, 5, gen)
    changed = (pool.z != z0).any(1)
    assert int(changed.sum()) == 3  # half the pool redrawn


def test_classifier_is_an_alias_of_adversarial():
    assert TrainConfig(objective="classifier").objective == "adversarial"
    assert TrainConfig().objective == "adversarial"  # auto without an embedder
    for path in CONFIGS.glob("*.toml"):  # every committed config still loads
        TrainConfig.from_toml(path, embedder="x.onnx")
    with pytest.raises(ValueError, match="unknown objective"):
        TrainConfig(objective="nope").validate()


def test_old_classifier_checkpoint_resumes_and_loads(tiny_checkpoint, tmp_path):
    """A checkpoint written when the objective was called "classifier" still loads and resumes."""
    from hyperobf.train.checkpoint import load_checkpoint

    old = tmp_path / "old.pt"
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    payload["config"]["objective"] = "classifier"
    torch.save(payload, old)
    assert load_checkpoint(old).config.objective == "adversarial"
    cfg = TrainConfig(structure="tiny", epochs=2, steps_per_epoch=1, batch_images=4, nets_per_step=2,
                      objective="classifier")
    res = train(cfg, tmp_path / "resumed", resume=old)
    assert [m["epoch"] for m in res.metrics] == [1, 2]


def test_thesis_objective_trains_surrogate_on_perturbed_faces_and_resumes(tmp_path):
    cfg = TrainConfig(structure="tiny", objective="thesis", epochs=1, steps_per_epoch=3, batch_images=4,
                      nets_per_step=2, pool_refresh=2, image_size=32)
    assert cfg.pool_users == 16  # grouped by default
    res = train(cfg, tmp_path / "a")
    m = res.metrics[-1]
    assert m["J1"] > 0 and m["clf_loss"] > 0  # cross-entropies
    state = torch.load(res.checkpoint, map_location="cpu", weights_only=False)
    assert state["pool"]["steps"] == 3 and state["pool"]["z"].shape == (16, cfg.z_dim)
    cfg2 = TrainConfig(**{**cfg.to_dict(), "epochs": 2})
    res2 = train(cfg2, tmp_path / "b", resume=res.checkpoint)
    assert torch.load(res2.checkpoint, map_location="cpu", weights_only=False)["pool"]["steps"] == 6


def test_thesis_j1_is_minimised_cross_entropy_of_perturbed_only_surrogate():
    from hyperobf.train.objectives import ThesisObjective

    torch.manual_seed(0)
    obj = ThesisObjective(3, lr=1e-2, width=4)
    x_clean = torch.rand(6, 3, 16, 16)
    x_prot = torch.rand(6, 3, 16, 16)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    j_before = float(obj.j1(x_clean, x_prot, y).detach())
    for _ in range(30):  # the surrogate learns the perturbed faces (only those)
        obj.update(torch.zeros_like(x_clean), x_prot, y)
    obj.clf.eval()
    assert float(obj.j1(x_clean, x_prot, y).detach()) < j_before  # lower J1: perturbed faces easier to classify


def test_thesis_surrogate_sees_faces_as_the_attacker_augments_them():
    """surrogate_shift: each face the surrogate trains on (and J1 scores) is a flip + reflect-padded crop of
    the perturbed face, gradients reach the nets through it, and its generator resumes."""
    import torch.nn.functional as F

    from hyperobf.train.objectives import ThesisObjective

    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    plain = ThesisObjective(3, lr=1e-2, width=4)
    assert torch.equal(plain.surrogate_batch(x, x, y)[0], x)  # shift 0: faces as they are
    obj = ThesisObjective(3, lr=1e-2, width=4, shift=2, seed=0)
    seen, _ = obj.surrogate_batch(x, x, y)
    assert seen.shape == x.shape and not torch.equal(seen, x)
    for img, out in zip(x, seen):
        views = [F.pad(f[None], (2,) * 4, mode="reflect")[0, :, dy:dy + 16, dx:dx + 16]
                 for f in (img, img.flip(-1)) for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out, v) for v in views)
    xp = x.clone().requires_grad_(True)
    obj.j1(x, xp, y).backward()
    assert float(xp.grad.abs().sum()) > 0
    other = ThesisObjective(3, lr=1e-2, width=4, shift=2, seed=5)
    other.load_extra_state(obj.extra_state())
    assert torch.equal(other.surrogate_batch(x, x, y)[0], obj.surrogate_batch(x, x, y)[0])
    for bad in (-1, 56):
        with pytest.raises(ValueError, match="surrogate_shift"):
            TrainConfig(objective="thesis", surrogate_shift=bad).validate()


def test_centroid_mode_needs_grouped_batches():
    with pytest.raises(ValueError, match="pool_users"):
        TrainConfig.from_dict(dict(objective="feature", embedder="x.onnx", feature_mode="centroid"))
    TrainConfig.from_dict(dict(objective="feature", embedder="x.onnx", feature_mode="centroid", pool_users=8))


def test_old_configs_are_copied_unchanged(tmp_path):
    # the README's recipe still names the old objective in places: both names load the same objective
    src = CONFIGS / "cpu_glint24.toml"
    dst = tmp_path / "c.toml"
    shutil.copy(src, dst)
    a = TrainConfig.from_toml(dst, objective="classifier")
    b = TrainConfig.from_toml(dst, objective="adversarial")
    assert a.to_dict() == b.to_dict()


def test_surrogate_can_learn_the_pool_users_instead_of_identities(tmp_path):
    """surrogate_labels = "user": one class per pseudo-user (as an attacker's classes are its users)."""
    cfg = TrainConfig(structure="tiny", objective="thesis", epochs=1, steps_per_epoch=2, batch_images=3,
                      nets_per_step=2, pool_users=5, image_size=16, surrogate_labels="user")
    res = train(cfg, tmp_path / "u")
    state = torch.load(res.checkpoint, map_location="cpu", weights_only=False)
    assert state["objective"]["clf.fc.weight"].shape[0] == 5  # pool slots, not the synthetic set's identities
    assert res.metrics[-1]["J1"] > 0
    ident = train(TrainConfig(**{**cfg.to_dict(), "surrogate_labels": "identity"}), tmp_path / "i")
    assert torch.load(ident.checkpoint, map_location="cpu", weights_only=False)["objective"]["clf.fc.weight"].shape[0] != 5
    for bad in ({"surrogate_labels": "face"}, {"objective": "adversarial"}):
        with pytest.raises(ValueError, match="surrogate_labels"):
            TrainConfig(**{**cfg.to_dict(), **bad}).validate()


def test_budget_fill_trains_every_face_at_the_budget():
    """budget_fill: each face's δ is scaled up or down to use the DSSIM budget, the gradient still reaching the net."""
    from hyperobf.spec import builtin_spec
    from hyperobf.train.losses import dssim
    from hyperobf.train.loop import step_loss
    from hyperobf.train.objectives import build_objective
    from hyperobf.train.sources import build_source

    torch.manual_seed(0)
    cfg = TrainConfig(structure="tiny", objective="thesis", nets_per_step=2, batch_images=3, image_size=32,
                      rho_pixel=0.05)
    spec = builtin_spec(cfg.structure, cfg.rho_pixel)
    source = build_source(spec, cfg)
    objective = build_objective(cfg, 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=gen) * 0.6 + 0.2
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    params, _ = source.sample_keyed(2, gen)
    d_off = dssim(step_loss(spec, cfg, objective, params, x, y, gen)[1], x).detach()  # no fill: what the net gives
    rho = 2.0 * float(d_off.min())  # the faces under it must be scaled *up*, any over it down
    filled = TrainConfig(**{**cfg.to_dict(), "dssim_budget": rho, "budget_fill": 4.0})
    loss, x_prot, _ = step_loss(spec, filled, objective, params, x, y, gen)
    d = dssim(x_prot, x).detach()
    assert bool((d_off < rho).any())
    assert float(d.max()) <= rho + 1e-6 and float(d.min()) > 0.9 * rho  # every face uses the budget
    assert float((x_prot - x).detach().abs().max()) <= 0.05 + 1e-6  # the per-pixel clip after scaling
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in source.parameters())
    tight = step_loss(spec, TrainConfig(**{**filled.to_dict(), "dssim_budget": float(d_off.min()) / 2}), objective,
                      params, x, y, gen)[1]
    assert float(dssim(tight, x).detach().max()) <= float(d_off.min()) / 2 + 1e-6  # and *down* when over the budget
    for bad in (-1.0, 0.5, 100.0):
        with pytest.raises(ValueError, match="budget_fill"):
            TrainConfig(**{**cfg.to_dict(), "budget_fill": bad}).validate()


def test_surrogate_has_its_own_lr_and_steps_per_batch():
    """surrogate_lr / surrogate_steps reach the surrogate's optimiser: k Adam steps per update, at its own lr."""
    from hyperobf.train.objectives import build_objective

    cfg = TrainConfig(objective="thesis", lr=1e-4, surrogate_lr=3e-3, surrogate_steps=3, surrogate_width=4)
    obj = build_objective(cfg, 3)
    assert obj.opt.param_groups[0]["lr"] == 3e-3
    x = torch.rand(6, 3, 16, 16)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    obj.update(x, x, y)
    assert int(next(iter(obj.opt.state.values()))["step"]) == 3
    default = build_objective(TrainConfig(objective="thesis", lr=1e-4, surrogate_width=4), 3)
    assert default.opt.param_groups[0]["lr"] == 1e-4 and default.steps == 1  # 0 / unset: as before
    for bad in (dict(surrogate_lr=-1.0), dict(surrogate_steps=0)):
        with pytest.raises(ValueError, match="surrogate_"):
            TrainConfig(objective="thesis", **bad).validate()
