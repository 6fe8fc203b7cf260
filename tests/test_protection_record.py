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


@pytest.mark.parametrize("bad", [{"version": 99, "entries": []}, {"version": 1}, {"version": 1, "entries": [{}]},
                                 {"version": 1, "entries": [{"attacker": "a", "protocol": "p", "data": "d"}]}])
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
