"""The protection record: checkpoint -> export metadata -> `hyperobf protect` prints what was measured."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hyperobf import protection
from hyperobf.cli import app

runner = CliRunner()


def _entry(attacker: str, acc: float, protocol: str = "p", data: str = "d") -> dict:
    return protection.entry(attacker, protocol, data, 1.0, acc, 0.007, 0.012, 100, 10, "hyperobf test")


def test_merge_replaces_same_attack_and_keeps_others():
    rec = protection.merge(None, [_entry("a", 0.9), _entry("b", 0.4)])
    rec = protection.merge(rec, [_entry("a", 0.2)], preset="high")
    accs = {e["attacker"]: e["acc_protected"] for e in rec["entries"]}
    assert accs == {"a": 0.2, "b": 0.4}
    assert rec["preset"] == "high"
    assert protection.merge(rec, [_entry("a", 0.1, data="other")])["preset"] == "high"
    assert len(protection.merge(rec, [_entry("a", 0.1, data="other")])["entries"]) == 3


def test_status_and_warning_lines():
    assert protection.status_line(None).startswith("protection not measured")
    assert protection.warning_line(None) is None
    weak = protection.merge(None, [_entry("mobilefacenet", 0.91), _entry("dlib", 0.3)])
    line = protection.status_line(weak)
    assert "mobilefacenet identifies 1.00 -> 0.91" in line and "dlib identifies 1.00 -> 0.30" in line
    warn = protection.warning_line(weak)
    assert warn and "mobilefacenet 0.91" in warn and "dlib" not in warn
    strong = protection.merge(None, [_entry("mobilefacenet", 0.5)])  # exactly half: not "more than half"
    assert protection.warning_line(strong) is None


def test_alike_measurement_is_kept_replaced_and_warned_about():
    assert protection.alike_line(None) is None
    rec = protection.with_alike(None, {"delta_cos": 0.27, "identical_pairs": 0.0, "nets": 10}, "faces", "test")
    assert rec["entries"] == [] and protection.alike_line(rec) is None  # different nets: nothing to warn of
    assert protection.status_line(rec).startswith("protection not measured")  # no attack measured yet
    rec = protection.merge(rec, [_entry("a", 0.2)])
    assert rec["alike"]["delta_cos"] == 0.27  # a new attack keeps the alike measurement
    same = protection.with_alike(rec, {"delta_cos": 1.0, "identical_pairs": 0.8, "nets": 10}, "celeba", "test")
    assert len(same["entries"]) == 1 and same["alike"]["identical_pairs"] == 0.8
    line = protection.alike_line(same)
    assert line.startswith("warning: this HyperNet's nets perturb faces alike") and "80% of 45 user pairs" in line
    close = protection.with_alike(None, {"delta_cos": 0.95, "identical_pairs": 0.0, "nets": 4}, "f", "t")
    assert protection.alike_line(close)  # no identical pair, but one perturbation to an attacker
    most = protection.with_alike(None, {"delta_cos": 0.3, "identical_pairs": 0.0, "largest_group": 0.9, "nets": 60},
                                 "f", "t")
    assert "one δ for 90% of them" in protection.alike_line(most)  # a mean cosine of 0.3 hid it


@pytest.mark.parametrize("bad", [{"version": 99, "entries": []}, {"version": 1}, {"version": 1, "entries": [{}]},
                                 {"version": 1, "entries": [{"attacker": "a", "protocol": "p", "data": "d"}]},
                                 {"version": 1, "entries": [], "alike": {"delta_cos": 1.0}}])
def test_malformed_record_is_refused(bad):
    with pytest.raises(protection.RecordError):
        protection.validate(bad)


def _photo(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "me.png"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(p)
    return p


def _export_and_protect(ckpt, tmp_path):
    models = tmp_path / "models"
    r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--users", "1", "--out", str(models)])
    assert r.exit_code == 0, r.output
    model = next(models.rglob("*.onnx"))
    r = runner.invoke(app, ["protect", str(_photo(tmp_path)), "--model", str(model), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    return model, r.output


def test_unmeasured_model_says_so(tiny_checkpoint, tmp_path):
    _, out = _export_and_protect(tiny_checkpoint, tmp_path)
    assert "protection not measured" in out
    assert "warning" not in out


def test_record_travels_from_checkpoint_to_model_and_protect(tiny_checkpoint, tmp_path):
    from hyperobf.device_runtime import load_model
    from hyperobf.train.checkpoint import load_checkpoint, record_protection

    ckpt = tmp_path / "ckpt.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    rec = record_protection(ckpt, [_entry("mobilefacenet nearest-centroid", 0.91, "queries vs gallery", "glint24")])
    assert load_checkpoint(ckpt).payload["protection"] == rec  # still a loadable checkpoint
    model, out = _export_and_protect(ckpt, tmp_path)
    assert load_model(model).protection == rec
    assert "mobilefacenet nearest-centroid identifies 1.00 -> 0.91" in out
    assert "warning: these photos are NOT protected" in out


def _preset_record() -> dict:
    """As the frontier writes it: the net as issued (no preset) and under two presets' budgets."""
    return protection.merge(None, [_entry("mobilefacenet", 0.91), _entry("dlib", 0.62),
                                   {**_entry("mobilefacenet", 0.40), "preset": "mid", "rho": 0.012},
                                   {**_entry("dlib", 0.35), "preset": "mid", "rho": 0.012},
                                   {**_entry("mobilefacenet", 0.70), "preset": "low", "rho": 0.007}])


def test_status_line_shows_the_entries_of_the_preset_in_use():
    rec = _preset_record()
    mid = protection.status_line(rec, "mid")
    assert mid.startswith("protection measured ") and " under preset mid: " in mid
    assert "mobilefacenet identifies 1.00 -> 0.40" in mid and "dlib identifies 1.00 -> 0.35" in mid
    assert "0.91" not in mid and "0.70" not in mid and "0.62" not in mid  # other budgets' numbers stay out
    low = protection.status_line(rec, "low")
    assert " under preset low: " in low and "mobilefacenet identifies 1.00 -> 0.70" in low and "dlib" not in low


def test_status_line_falls_back_to_all_entries_and_says_so():
    rec = _preset_record()
    high = protection.status_line(rec, "high")
    assert "(nothing measured under preset high: all measurements shown)" in high
    for acc in ("0.91", "0.62", "0.40", "0.35", "0.70"):
        assert f"-> {acc}" in high
    # each entry names the budget it was measured under, since they differ
    assert "mobilefacenet identifies 1.00 -> 0.91 (d, p; as issued, no budget; DSSIM" in high
    assert "mobilefacenet identifies 1.00 -> 0.40 (d, p; preset mid; DSSIM" in high
    everything = protection.status_line(rec)  # no preset asked: all, labelled, no fallback remark
    assert "nothing measured" not in everything and "-> 0.91 (d, p; as issued, no budget;" in everything
    plain = protection.merge(None, [_entry("a", 0.2)])  # a record without presets reads as before, with its label
    assert protection.status_line(plain, "mid").startswith("protection measured ")
    assert "(nothing measured under preset mid: all measurements shown)" in protection.status_line(plain, "mid")
    custom = protection.status_line(rec, rho=0.007)  # a ρ given as a number: entries that ran under it
    assert " under DSSIM <= 0.007: mobilefacenet identifies 1.00 -> 0.70" in custom and "0.91" not in custom


def test_warning_follows_the_preset_in_use():
    rec = _preset_record()
    assert protection.warning_line(rec, "mid") is None  # under mid every measured attacker is ≤ half
    low = protection.warning_line(rec, "low")
    assert low and "mobilefacenet 0.70" in low and "dlib" not in low
    fallback = protection.warning_line(rec, "high")  # nothing under high: all entries speak
    assert fallback and "mobilefacenet 0.91" in fallback and "dlib 0.62" in fallback
    assert [e["acc_protected"] for e in protection.failing(rec, "mid")] == []


def test_protect_prints_the_line_of_its_preset(tiny_checkpoint, tmp_path):
    from hyperobf.train.checkpoint import record_protection

    ckpt = tmp_path / "ckpt.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    record_protection(ckpt, _preset_record()["entries"])
    models = tmp_path / "models"
    r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--users", "1", "--out", str(models)])
    assert r.exit_code == 0, r.output
    model = next(models.rglob("*.onnx"))
    photo = _photo(tmp_path)
    for args, want, warned in [([], "under preset mid: mobilefacenet identifies 1.00 -> 0.40", False),
                               (["--preset", "low"], "under preset low: mobilefacenet identifies 1.00 -> 0.70", True),
                               (["--budget", "0.01"], "(nothing measured under DSSIM <= 0.01: all measurements shown)",
                                True),  # all entries speak, the as-issued 0.91 among them
                               (["--budget", "0.012"], "under preset mid: mobilefacenet identifies 1.00 -> 0.40", False)]:
        out = tmp_path / f"out{len(args)}{args[-1] if args else ''}"
        r = runner.invoke(app, ["protect", str(photo), "--model", str(model), "--out", str(out), *args])
        assert r.exit_code == 0, r.output
        assert want in r.stdout, r.stdout
        if warned is not None:
            assert ("warning: these photos are NOT protected" in r.stdout) == warned
