"""Issue 12: the budget rule, the per-image limit, its stopping rule, the hybrid steps, the frontier command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperobf.eval.limit import LimitConfig, fit_budget, far_targets, limit_until_stable, per_image
from hyperobf.train.losses import dssim


class ToyEmbedder(nn.Module):
    """A fixed random conv embedder: (N, 3, H, W) -> unit (N, 16)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 5, 2)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.tanh(self.conv(x)).mean((2, 3)), dim=1)


def _faces(n: int = 6, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    base = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear")  # smooth, face-like
    return base.clamp(0, 1)


@pytest.mark.parametrize("rho", [0.002, 0.01])
def test_budget_rule_holds_after_rounding_and_keeps_what_fits(rho):
    x = (_faces() * 255).round() / 255
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)) * 0.05
    y = fit_budget(x, delta, rho, 0.03)
    assert torch.equal(y, (y * 255).round() / 255)  # an 8-bit image
    assert float(dssim(y, x).max()) <= rho  # the budget, after rounding
    assert float((y - x).abs().max()) <= 0.03 + 0.5 / 255  # the clip (plus rounding)
    assert float(dssim(y, x).min()) > rho * 0.5  # scaled down to the budget, not to nothing


def test_budget_rule_leaves_small_perturbations_alone():
    x = (_faces() * 255).round() / 255
    delta = torch.full_like(x, 2 / 255)
    y = fit_budget(x, delta, 0.5, 0.03)
    assert torch.allclose(y, ((x + delta).clamp(0, 1) * 255).round() / 255)


def test_limit_moves_features_more_with_more_budget():
    phi = ToyEmbedder()
    x = (_faces() * 255).round() / 255
    cos = []
    for rho in (0.002, 0.02):
        y = per_image(phi, x, None, LimitConfig(rho=rho, rho_pixel=0.05, steps=30, lr=0.05, batch=4))
        assert float(dssim(y, x).max()) <= rho
        cos.append(float((phi(y) * phi(x)).sum(1).mean()))
    assert cos[1] < cos[0] < 1.0


def test_targeted_limit_pulls_toward_the_target():
    phi = ToyEmbedder()
    x = (_faces() * 255).round() / 255
    target = phi(x.flip(0))  # someone else's embedding
    y = per_image(phi, x, target, LimitConfig(rho=0.02, mode="targeted", steps=30, lr=0.05))
    assert float((phi(y) * target).sum(1).mean()) > float((phi(x) * target).sum(1).mean())


def test_stopping_rule_doubles_until_stable():
    phi = ToyEmbedder()
    x = (_faces(4) * 255).round() / 255
    seq = iter([0.9, 0.5, 0.49])
    calls = []

    def identified(prot):
        calls.append(len(prot))
        return next(seq)

    _, hist = limit_until_stable(phi, x, None, LimitConfig(rho=0.01, steps=2), identified, tol=0.02,
                                 max_steps=100, log=lambda m: None)
    assert [h["steps"] for h in hist] == [2, 4, 8] and hist[-1]["converged"]
    seq2 = iter([0.9, 0.5])
    _, hist2 = limit_until_stable(phi, x, None, LimitConfig(rho=0.01, steps=2), lambda p: next(seq2), tol=0.02,
                                  max_steps=4, log=lambda m: None)
    assert [h["steps"] for h in hist2] == [2, 4] and not hist2[-1]["converged"]  # the cap, said so


def test_far_targets_come_from_the_farther_half():
    cents = F.normalize(torch.eye(4)[:, :4] + 0.01, dim=1)
    own = cents[:2]
    pick = far_targets(cents, own, seed=0)
    sim = own @ cents.T
    for u, k in enumerate(pick.tolist()):
        assert sim[u, k] <= sim[u].median()


@pytest.mark.slow
def test_frontier_command_on_real_faces(tmp_path, tiny_checkpoint):
    from typer.testing import CliRunner

    from conftest import shared_path
    from hyperobf.cli import app

    faces, models = shared_path("data", "faces"), shared_path("models")
    ck = tmp_path / "ck.pt"
    ck.write_bytes(tiny_checkpoint.read_bytes())
    r = CliRunner().invoke(app, ["eval", "frontier", "--scale", "tiny", "--uploads", "2", "--limit-steps", "1",
                                 "--limit-max-steps", "2", "--limit", "untargeted,targeted,errmin", "--errmin-rounds", "1", "--fill-budget", "4", "--hybrid-k", "0,1", "--rho", "0.007", "--checkpoint", str(ck),
                                 "--counters", "jpeg75", "--resnet-scratch", "--inversion", "1",
                                 "--faces", str(faces), "--models", str(models), "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "f" / "frontier.json").read_text())
    kinds = {row["protector"].split(":")[0].split(" ")[0] for row in res["rows"]}
    assert {"clean", "net", "hybrid", "limit-untargeted", "limit-targeted", "limit-errmin"} <= kinds
    errmin = next(row for row in res["rows"] if row["protector"] == "limit-errmin")
    assert errmin["rounds"] == 1 and len(errmin["history"]) == 1 and "resnet18-scratch/gallery" in errmin["acc"]
    assert "limit-errmin ρ 0.007: 1 turns" in (tmp_path / "f" / "report.md").read_text()
    filled = next(row for row in res["rows"] if row["protector"].endswith(" filled ×4"))
    plain = next(row for row in res["rows"] if row["protector"] == filled["protector"][:-len(" filled ×4")])
    assert plain["dssim_mean"] < filled["dssim_mean"] <= 0.007 and filled["filled"] == 4
    payload = torch.load(ck, map_location="cpu", weights_only=False)
    entries = json.loads(json.dumps(payload.get("protection"), default=str))
    dssims = {round(e["dssim_mean"], 9) for e in entries["entries"]}
    # ρ 0.007 is the low preset's budget: the net's row is recorded, the filled row (not what ships) is not
    assert round(plain["dssim_mean"], 9) in dssims and round(filled["dssim_mean"], 9) not in dssims
    assert entries["alike"]["nets"] == res["targets"] and entries["alike"]["source"] == "eval frontier"
    assert len((tmp_path / "f" / "rows.jsonl").read_text().splitlines()) == len(res["rows"])  # the per-row log
    inverted = [row for row in res["rows"] if row["protector"].endswith("inverted (1 held)")
                and row["protector"].startswith("net:")]
    assert len(inverted) == 1 and inverted[0]["held_nets"] == 1 and "resnet18-scratch/gallery" in inverted[0]["acc"]
    # E3 for the hybrid: the attacker's held net runs with the same device steps
    hyb = [row for row in res["rows"] if row["protector"].startswith("hybrid:") and " inverted (1 held)" in row["protector"]]
    assert len(hyb) == 1 and hyb[0]["k"] == 1 and hyb[0]["refine_embedder"] == "dlib" and hyb[0]["held_nets"] == 1
    assert len(inverted[0]["held_cos"]) == res["targets"] and all(-1.0 <= c <= 1.0 for c in inverted[0]["held_cos"])
    assert "Users whose very perturbation the attacker holds" in (tmp_path / "f" / "report.md").read_text()
    # the budget binds what the protector writes; an InvNet's restored uploads are the attacker's, not bound by it
    assert all(row["dssim_max"] <= 0.007 for row in res["rows"] if row["rho"] and not row.get("held_nets"))
    assert {"mobilefacenet/query+jpeg75", "mobilefacenet/gallery+jpeg75", "resnet18-scratch/gallery"} <= set(res["attackers"])
    assert all("resnet18-scratch/gallery" in row["acc"] for row in res["rows"])  # every row without --resnet-rho
    assert "After counters" in (tmp_path / "f" / "report.md").read_text()
    assert "`inverted (n held)` rows" in (tmp_path / "f" / "report.md").read_text()
    assert "measurements in" in r.output and "recorded " in r.output  # "recorded N measurements in <ckpt>: ..."
    issued = next(row for row in res["rows"] if row["protector"].endswith(" as issued"))
    assert -1.0 <= issued["between_users"]["delta_cos"] <= 1.0 and issued["between_users"]["nets"] == res["targets"]
    assert "How alike the users' nets are" in (tmp_path / "f" / "report.md").read_text()


@pytest.mark.slow
def test_holdout_frontier_chooses_a_net_without_touching_the_test_users(tmp_path, tiny_checkpoint):
    from typer.testing import CliRunner

    from conftest import shared_path
    from hyperobf.cli import app

    faces, models = shared_path("data", "faces"), shared_path("models")
    cks = []
    for name in ("a", "b"):
        cks += ["--checkpoint", str(tmp_path / f"{name}.pt")]
        (tmp_path / f"{name}.pt").write_bytes(tiny_checkpoint.read_bytes())
    common = ["eval", "frontier", "--scale", "tiny", "--uploads", "2", "--limit", "none", "--hybrid-k", "0", "--rho", "0.007",
              "--faces", str(faces), "--models", str(models)]
    r = CliRunner().invoke(app, [*common, *cks, "--holdout-users", "--out", str(tmp_path / "val")])
    assert r.exit_code == 0, r.output
    assert "not recorded: measured on held-out validation users" in r.output
    assert "protection" not in torch.load(tmp_path / "a.pt", map_location="cpu", weights_only=False)
    val = json.loads((tmp_path / "val" / "frontier.json").read_text())
    r = CliRunner().invoke(app, [*common, "--no-record", "--out", str(tmp_path / "test")])
    assert r.exit_code == 0, r.output
    test = json.loads((tmp_path / "test" / "frontier.json").read_text())
    assert val["split"]["holdout"] and not set(val["split"]["targets"]) & set(test["split"]["targets"])
    assert "Held-out validation users" in (tmp_path / "val" / "report.md").read_text()
    r = CliRunner().invoke(app, ["eval", "frontier-select", str(tmp_path / "val" / "frontier.json"), "--rho", "0.007",
                                 "--attacker", "mobilefacenet/query"])
    assert r.exit_code == 0, r.output
    assert "chosen: " + str(tmp_path) in r.output


def _run(clean: dict, rows: list[dict], overrides: dict | None = None) -> dict:
    acc = lambda d: {k: {"mean": v, "sd": 0.0} for k, v in d.items()}  # noqa: E731
    all_rows = [{"protector": "clean", "rho": 0.0, "acc": acc(clean)}] + [{"dssim_mean": 0.0, **r, "acc": acc(r["acc"])}
                                                                           for r in rows]
    return {"rows": all_rows, "targets": 10, "uploads_per_target": 20, "distractors": 20,
            "attackers": sorted({k for r in all_rows for k in r["acc"]}), "scale_overrides": overrides or {},
            "split": {"seed": 0, "fr_source": "celeba299", "targets": ["a"], "distractors": ["b"]}}


def test_join_takes_rows_of_a_run_that_left_its_resnets_off_the_clean_row():
    from hyperobf.eval.frontier import row_kind
    from hyperobf.eval.frontier_join import merge_rows

    main = _run({"mfn/query": 1.0, "resnet/gallery": 0.5}, [{"protector": "net:t", "rho": 0.025, "acc": {"mfn/query": 1.0, "resnet/gallery": 0.1}}])
    inv = _run({"mfn/query": 1.0}, [{"protector": "net:t", "rho": 0.025, "acc": {"mfn/query": 1.0}},  # measured by both
                                    {"protector": "net:t inverted (1 held)", "rho": 0.025, "acc": {"mfn/query": 1.0, "resnet/gallery": 0.3}}])
    merge_rows(main, inv, "inv.json")
    assert [r["protector"] for r in main["rows"]] == ["clean", "net:t", "net:t inverted (1 held)"]
    assert main["rows"][-1]["included_from"] == "inv.json" and "included_from" not in main["rows"][1]
    assert [row_kind(r["protector"]) for r in main["rows"]] == ["clean", "net", "inverted"]
    assert row_kind("net:t filled ×4") == "filled"  # --resnet-on filled: only the filled rows
    with pytest.raises(ValueError, match="clean level"):  # another attacker state: not comparable
        merge_rows(main, _run({"mfn/query": 0.9}, []), "x.json")
    with pytest.raises(ValueError, match="not the same"):  # another attacker recipe (--scale-set)
        merge_rows(main, _run({"mfn/query": 1.0}, [], {"fr_epochs": 30}), "y.json")
    # another InvNet recipe: only its inversion rows differ, and they name it
    strong = "net:t inverted (1 held, identity-start InvNet, 8 epochs)"
    merge_rows(main, _run({"mfn/query": 1.0}, [{"protector": strong, "rho": 0.025, "acc": {"mfn/query": 1.0}}],
                          {"inv_identity_start": True, "inv_epochs": 8}), "z.json")
    assert main["rows"][-1]["protector"] == strong and row_kind(strong) == "inverted"
    # a run with an attacker the table lacks (a squeezing ResNet): its clean level joins the clean row
    squeeze = _run({"mfn/query": 1.0, "resnet/gallery+gray": 0.4},
                   [{"protector": "net:t", "rho": 0.03, "acc": {"mfn/query": 1.0, "resnet/gallery+gray": 0.35}},
                    {"protector": "net:t", "rho": 0.025, "acc": {"mfn/query": 0.5, "resnet/gallery+gray": 0.25}}])
    merge_rows(main, squeeze, "s.json")
    assert main["rows"][0]["acc"]["resnet/gallery+gray"]["mean"] == 0.4 and "resnet/gallery+gray" in main["attackers"]
    both = next(r for r in main["rows"] if (r["protector"], r["rho"]) == ("net:t", 0.025))  # measured by both runs:
    assert both["acc"]["mfn/query"]["mean"] == 1.0 and both["acc"]["resnet/gallery+gray"]["mean"] == 0.25  # own + new
    assert both["attackers_from"] == {"resnet/gallery+gray": "s.json"}
    # how alike the users' nets are, measured only by a later run of the same row, joins the row
    alike = {"delta_cos": 0.7, "identical_pairs": 0.6, "nets": 10}
    merge_rows(main, _run({"mfn/query": 1.0}, [{"protector": "net:t", "rho": 0.025, "acc": {"mfn/query": 1.0},
                                               "between_users": alike}]), "a.json")
    assert both["between_users"] == alike and both["acc"]["mfn/query"]["mean"] == 1.0
    with pytest.raises(ValueError, match="protected other uploads"):  # same name, other nets: not one row
        merge_rows(main, _run({"mfn/query": 1.0}, [{"protector": "net:t", "rho": 0.025, "dssim_mean": 0.01,
                                                   "acc": {"mfn/query": 1.0}}]), "o.json")
    with pytest.raises(ValueError, match="no clean level for resnet/gallery\\+blur"):
        merge_rows(main, _run({"mfn/query": 1.0}, [{"protector": "net:t", "rho": 0.04,
                                                   "acc": {"mfn/query": 1.0, "resnet/gallery+blur": 0.2}}]), "b.json")


def test_frontier_join_fails_in_one_line_on_a_bad_file(tmp_path):
    from typer.testing import CliRunner

    from hyperobf.cli import app

    bad = tmp_path / "f.json"
    bad.write_text("{not json")
    r = CliRunner().invoke(app, ["eval", "frontier-join", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_report_and_plot_take_a_clean_row_without_the_resnets(tmp_path):
    from hyperobf.eval.frontier_report import plot, report_md

    res = _run({"mfn/query": 1.0}, [{"protector": "net:t", "rho": 0.025, "acc": {"mfn/query": 1.0, "resnet/gallery": 0.2}}])
    for r in res["rows"]:
        r.update(dssim_mean=0.01 if r["rho"] else 0.0, dssim_max=0.02 if r["rho"] else 0.0, seconds=1.0)
    res.update(test_per_target=[5], seconds=1.0, config={"whitebox": "mobilefacenet", "hybrid_embedder": "dlib", "hybrid_step": 0.006},
               machine={"processor": "cpu", "torch_threads": 1, "loadavg": [0.0, 0.0, 0.0]})
    assert "net:t" in report_md(res)
    plot(res, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_frontier_join_records_preset_rows_with_their_own_command(tmp_path, tiny_checkpoint):
    """--record writes the joined rows at a preset's budget into the checkpoint: an inversion row as its own
    attack, the ResNet named with its recipe, each entry with the command of the run that measured it."""
    from typer.testing import CliRunner

    from hyperobf.cli import app
    from hyperobf.protection import status_line
    from hyperobf.train.checkpoint import load_checkpoint

    ck = tmp_path / "ck.pt"
    ck.write_bytes(tiny_checkpoint.read_bytes())
    net = {"checkpoint": str(ck), "dssim_mean": 0.02, "dssim_max": 0.025}
    runs = []
    squeezed = "resnet18-scratch/gallery+gray+jpeg10"
    for name, clean, rows in [
            ("a", {"mfn/query": 1.0, "resnet18-scratch/gallery": 0.6},
             [dict(net, protector="net:t", rho=0.025, acc={"mfn/query": 1.0, "resnet18-scratch/gallery": 0.2}),
              dict(net, protector="net:t", rho=0.03, acc={"mfn/query": 1.0, "resnet18-scratch/gallery": 0.1})]),
            ("b", {"mfn/query": 1.0, "resnet18-scratch/gallery": 0.6},
             [dict(net, protector="net:t inverted (1 held)", rho=0.025, held_nets=1,
                   acc={"mfn/query": 1.0, "resnet18-scratch/gallery": 0.3})]),
            ("c", {"mfn/query": 1.0, "mfn/query+jpeg75": 1.0, squeezed: 0.5},  # a squeezing ResNet on a's net row
             [dict(net, protector="net:t", rho=0.025, acc={"mfn/query": 1.0, "mfn/query+jpeg75": 0.9, squeezed: 0.4})])]:
        run = _run(clean, rows, {"fr_epochs": 30})
        for r in run["rows"]:
            r.setdefault("dssim_mean", 0.0), r.setdefault("dssim_max", 0.0), r.setdefault("seconds", 1.0)
        run.update(command=f"hyperobf eval frontier --out {name}", test_per_target=[5] * 10, seconds=1.0,
                   config={"whitebox": "mobilefacenet", "hybrid_embedder": "dlib", "hybrid_step": 0.004},
                   machine={"processor": "cpu", "torch_threads": 1, "loadavg": [0.0, 0.0, 0.0]},
                   split=dict(run["split"], faces_root="/data/faces"))
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
        runs.append(str(tmp_path / f"{name}.json"))
    r = CliRunner().invoke(app, ["eval", "frontier-join", *runs, "--out", str(tmp_path / "o"), "--record"])
    assert r.exit_code == 0, r.output
    entries = load_checkpoint(ck).payload["protection"]["entries"]
    got = {(e["attacker"], e["preset"], e["acc_protected"], e["command"]) for e in entries}
    assert got == {  # ρ 0.03 is no preset's budget: the table only
        ("mfn", "max", 1.0, "hyperobf eval frontier --out a"),
        ("resnet18-scratch (fr_epochs=30)", "max", 0.2, "hyperobf eval frontier --out a"),
        ("mfn after an InvNet of 1 held net(s)", "max", 1.0, "hyperobf eval frontier --out b"),
        ("resnet18-scratch (fr_epochs=30) after an InvNet of 1 held net(s)", "max", 0.3, "hyperobf eval frontier --out b"),
        ("resnet18-scratch (fr_epochs=30) with every image through gray+jpeg10", "max", 0.4,
         "hyperobf eval frontier --out c")}  # an embedder after a counter (mfn+jpeg75) stays in the table
    assert "under preset max" in status_line(load_checkpoint(ck).payload["protection"], preset="max")


@pytest.mark.parametrize("value,msg", [("bogus", "error: unknown counter 'bogus' (available: jpeg75, resize50, gray+jpeg10, blur)"),
                                       (" , ", "error: --resnet-counters: give none or counter names")])
def test_frontier_rejects_bad_resnet_counters_in_one_line(tmp_path, value, msg):
    from typer.testing import CliRunner

    from hyperobf.cli import app

    (tmp_path / "faces").mkdir()
    (tmp_path / "models").mkdir()
    r = CliRunner().invoke(app, ["eval", "frontier", "--resnet-counters", value, "--faces", str(tmp_path / "faces"),
                                 "--models", str(tmp_path / "models"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.output.strip() == msg, r.output
    assert not (tmp_path / "o").exists()


def test_report_pairs_the_trained_attackers_with_their_clean_level():
    from hyperobf.eval.frontier_report import _paired_table

    pu = lambda v: {"resnet18-scratch/gallery": v, "mfn/query": [1.0] * len(v)}  # noqa: E731
    result = {"attackers": ["mfn/query", "resnet18-scratch/gallery"], "rows": [
        {"protector": "clean", "rho": 0.0, "per_user": pu([0.6, 0.4, 0.2])},
        {"protector": "net:t", "rho": 0.025, "per_user": pu([0.2, 0.4, 0.4])},
        {"protector": "net:u", "rho": 0.025, "per_user": {"mfn/query": [1.0] * 3}}]}  # no ResNet: no row
    lines = _paired_table(result)
    assert lines[3] == "| protector | ρ | resnet18-scratch/gallery |"
    assert lines[5:] == ["| net:t | 0.025 | -0.07 ± 0.31 (1 / 1) |"]  # (−0.4, 0, +0.2): mean −0.067, sd 0.306


def _errmin_case(rho: float) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Uploads that are copies of half of distractor 0's faces: only the noise can make them a class of their own
    (without it the surrogate sees each of them as distractor 0 at least as often as the target)."""
    from hyperobf.eval.limit_errmin import ErrMinConfig, errmin_limit

    g = torch.Generator().manual_seed(3)
    d = (torch.rand(4, 1, 3, 32, 32, generator=g).expand(-1, 12, -1, -1, -1)
         + 0.1 * torch.rand(4, 12, 3, 32, 32, generator=g)).clamp(0, 1)  # 4 classes x 12 photos
    d_u8 = (d.flatten(0, 1) * 255).round().to(torch.uint8)
    labels = torch.arange(4).repeat_interleave(12)
    up = d_u8[:6].float() / 255.0  # the target's uploads: distractor 0's photos
    cfg = ErrMinConfig(rho=rho, rounds=6, train_steps=30, noise_steps=10, width=8, shift=0, batch=16, noise_batch=6)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # which way the no-budget surrogate breaks the copies' tie depends on the float sums
    try:
        prot, hist = errmin_limit(d_u8, labels, [up], cfg, seed=0, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    return hist, prot[0], up


def test_errmin_limit_makes_the_uploads_a_shortcut_within_the_budget():
    hist, prot, up = _errmin_case(0.05)
    assert torch.equal(prot, (prot * 255).round() / 255) and float(dssim(prot, up).max()) <= 0.05  # the budget rule
    assert float((prot - up).abs().max()) <= 0.05 + 0.5 / 255  # the clip
    hist0, prot0, up0 = _errmin_case(1e-9)  # no budget: the uploads stay distractor 0's faces (± 1 level)
    assert float((prot0 - up0).abs().max()) <= 1.5 / 255
    # the error-minimising noise is what lets the surrogate tell the uploads from distractor 0: with a budget
    # it stops early (Huang et al.'s rule), without one it runs every turn and never gets there (said so)
    assert hist[-1]["converged"] and hist[-1]["surrogate_acc"] >= 0.99 and len(hist) < 6
    assert len(hist0) == 6 and not hist0[-1]["converged"] and hist0[-1]["surrogate_acc"] < 0.5
    # the copies are the same images: the surrogate is right on them as uploads or as distractor 0, never both
    assert hist0[-1]["surrogate_acc"] * 6 + hist0[-1]["surrogate_acc_distractors"] * 48 <= 48 + 1e-6


def test_errmin_surrogate_rate_decays_only_when_asked():
    from hyperobf.eval.limit_errmin import ErrMinConfig, surrogate_lr

    flat, decayed = ErrMinConfig(rho=0.02, rounds=5), ErrMinConfig(rho=0.02, rounds=5, decay=True)
    assert [surrogate_lr(flat, t) for t in range(5)] == [2e-3] * 5  # the default keeps earlier runs as they were
    lrs = [surrogate_lr(decayed, t) for t in range(5)]
    assert lrs[0] == pytest.approx(2e-3) and lrs[-1] == pytest.approx(2e-4)  # from model_lr to a tenth of it
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[2] == pytest.approx(1.1e-3)  # cosine: mid-way at the mean


def test_budget_rule_scales_up_only_when_asked():
    x = (_faces() * 255).round() / 255
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)) * 0.004  # far under the budget
    same = fit_budget(x, delta, 0.02, 0.03)
    filled = fit_budget(x, delta, 0.02, 0.03, s_max=8.0)
    assert torch.equal(same, fit_budget(x, delta, 0.02, 0.03, s_max=1.0))  # the default rule is unchanged
    d_same, d_filled = dssim(same, x), dssim(filled, x)
    assert float(d_filled.max()) <= 0.02 and float((filled - x).abs().max()) <= 0.03 + 0.5 / 255
    assert bool((d_filled > 2 * d_same).all())  # each image uses more of its budget


def test_rows_on_holdout_users_are_never_recorded(tmp_path, tiny_checkpoint):
    """Validation users choose among nets; what a user is told comes from the test users only."""
    from hyperobf.eval.frontier_record import record_nets
    from hyperobf.train.checkpoint import load_checkpoint

    ck = tmp_path / "ck.pt"
    ck.write_bytes(tiny_checkpoint.read_bytes())
    run = _run({"mfn/query": 1.0}, [{"protector": "net:t", "rho": 0.025, "checkpoint": str(ck), "dssim_max": 0.02,
                                     "acc": {"mfn/query": 0.5}}])
    run.update(command="c", test_per_target=[5] * 10, split=dict(run["split"], faces_root="/f", holdout=True))
    assert record_nets(run, tmp_path, "c") == ["not recorded: measured on held-out validation users (--holdout-users)"]
    assert "protection" not in load_checkpoint(ck).payload
    run["split"].pop("holdout")
    assert record_nets(run, tmp_path, "c")[0].startswith("recorded 1 measurements")


def test_frontier_select_ranks_nets_on_holdout_users_only(tmp_path):
    from typer.testing import CliRunner

    from hyperobf.cli import app

    key = "resnet18-scratch/gallery"
    run = _run({key: 0.6}, [{"protector": "net:a", "rho": 0.025, "checkpoint": "a.pt", "dssim_mean": 0.02, "acc": {key: 0.3}},
                            {"protector": "net:b", "rho": 0.025, "checkpoint": "b.pt", "dssim_mean": 0.02, "acc": {key: 0.1}},
                            {"protector": "net:b filled ×4", "rho": 0.025, "checkpoint": "b.pt", "dssim_mean": 0.02, "acc": {key: 0.0}},
                            {"protector": "net:c", "rho": 0.007, "checkpoint": "c.pt", "dssim_mean": 0.005, "acc": {key: 0.0}}])
    path = tmp_path / "f.json"
    path.write_text(json.dumps(run))
    r = CliRunner().invoke(app, ["eval", "frontier-select", str(path)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "--holdout-users" in r.output  # the test users: refused
    run["split"]["holdout"] = True
    path.write_text(json.dumps(run))
    r = CliRunner().invoke(app, ["eval", "frontier-select", str(path)])
    assert r.exit_code == 0, r.output
    assert "1. net:b: 0.10" in r.output and "2. net:a: 0.30" in r.output and "filled" not in r.output
    assert r.output.strip().endswith("chosen: b.pt")
    r = CliRunner().invoke(app, ["eval", "frontier-select", str(path), "--attacker", "dlib/query"])
    assert r.exit_code == 1 and "no net row" in r.output


def test_record_skips_a_checkpoint_that_is_gone_and_keeps_the_others(tmp_path, tiny_checkpoint):
    """Joining an older run whose checkpoint no longer exists records the nets that are here, not a traceback."""
    from hyperobf.eval.frontier_record import record_nets

    ck = tmp_path / "ck.pt"
    ck.write_bytes(tiny_checkpoint.read_bytes())
    gone = tmp_path / "gone" / "checkpoint.pt"
    rows = [{"protector": f"net:{n}", "rho": 0.025, "checkpoint": str(p), "dssim_max": 0.02, "acc": {"mfn/query": 0.5}}
            for n, p in (("gone", gone), ("here", ck))]
    run = _run({"mfn/query": 1.0}, rows)
    run.update(command="c", test_per_target=[5] * 10, split=dict(run["split"], faces_root="/f"))
    lines = record_nets(run, tmp_path, "c")
    assert lines[0] == f"not recorded: {gone} is absent (1 measurements stay in the table only)"
    assert lines[1].startswith("recorded 1 measurements in " + str(ck))


def test_record_writes_how_alike_the_users_nets_are(tmp_path, tiny_checkpoint):
    """The as-issued row's between-users similarity goes into the record; alike nets get a warning line."""
    from hyperobf.eval.frontier_record import record_nets
    from hyperobf.train.checkpoint import load_checkpoint

    ck = tmp_path / "ck.pt"
    ck.write_bytes(tiny_checkpoint.read_bytes())
    row = {"protector": "net:t", "rho": None, "checkpoint": str(ck), "dssim_max": 0.02, "acc": {"mfn/query": 0.5},
           "between_users": {"delta_cos": 1.0, "identical_pairs": 0.8, "nets": 10, "param_var": 0.03}}
    run = _run({"mfn/query": 1.0}, [row])
    run.update(command="c", test_per_target=[5] * 10, split=dict(run["split"], faces_root="/f"))
    lines = record_nets(run, tmp_path, "c")
    assert lines[0].startswith("recorded 1 measurements") and lines[1].startswith("warning: this HyperNet's nets")
    alike = load_checkpoint(ck).payload["protection"]["alike"]
    assert alike["identical_pairs"] == 0.8 and alike["source"] == "eval frontier" and "each user's net" in alike["data"]


def test_the_attackers_accounts_can_be_drawn_again():
    """--scale-set inv_draw=k: other accounts (other held nets) for the inversion rows; draw 0 = earlier runs'."""
    from hyperobf.eval.frontier_inversion import _held_latents

    first = _held_latents(8, 3, 0)
    assert torch.equal(first, torch.randn(3, 8, generator=torch.Generator().manual_seed(977)))
    assert torch.equal(first, _held_latents(8, 3, 0, 0)) and not torch.allclose(first, _held_latents(8, 3, 0, 1))


def test_the_hybrids_attacker_refines_its_held_nets_output_as_the_device_does(tiny_checkpoint):
    """invnet._perturb runs ``refine`` (x, δ₀) -> δ after the held nets, before the budget rule."""
    from hyperobf.eval.invnet import _perturb
    from hyperobf.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    params = loaded.source.issue(torch.randn(2, loaded.source.z_dim, generator=torch.Generator().manual_seed(0)))
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, _ = _perturb(loaded.spec, params, x, torch.Generator().manual_seed(2))
        nothing, _ = _perturb(loaded.spec, params, x, torch.Generator().manual_seed(2), refine=lambda x, d: d * 0)
        doubled, _ = _perturb(loaded.spec, params, x, torch.Generator().manual_seed(2), refine=lambda x, d: 2 * d)
    assert not torch.equal(plain, x) and torch.equal(nothing, x)
    assert torch.allclose(doubled, (x + 2 * (plain - x)).clamp(0, 1), atol=1e-6)
