"""End to end through the CLI: train -> export -> protect (typer CliRunner), plus the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hyperobf.cli import app

runner = CliRunner()


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_train_export_protect(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--out", str(run), "--structure", "tiny", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {"J1", "J2", "dssim", "param_var"} <= set(json.loads(lines[-1]))
    assert json.loads((run / "config.json").read_text())["structure"] == "tiny"

    models = tmp_path / "models"
    r = runner.invoke(app, ["export", "--checkpoint", str(run / "checkpoint.pt"), "--users", "4", "--out", str(models)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in (models / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len({r["sha256"] for r in rows}) == 4

    photo = tmp_path / "face.png"
    rgb = (np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(photo)
    before = photo.read_bytes()
    model = models / rows[1]["file"]
    r = runner.invoke(app, ["protect", str(photo), "--model", str(model), "--manifest", str(models / "manifest.jsonl")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "face_protected.png"
    assert photo.read_bytes() == before
    prot = np.asarray(Image.open(out))
    assert prot.shape == rgb.shape
    diff = np.abs(prot.astype(int) - rgb.astype(int))
    assert 0 < diff.max() <= round(0.03 * 255) + 1
    # running again skips the existing output instead of overwriting it
    mtime = out.stat().st_mtime_ns
    r = runner.invoke(app, ["protect", str(photo), "--model", str(model)])
    assert r.exit_code == 0 and "skipped 1" in r.output and out.stat().st_mtime_ns == mtime


def test_bad_inputs_give_one_line_errors(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    r = runner.invoke(app, ["export", "--checkpoint", str(bogus), "--users", "2", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert not (tmp_path / "o" / "manifest.jsonl").exists()
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--structure", "Z"])
    assert r.exit_code != 0 and "unknown MaskNet structure" in r.output


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_demo_cli_subprocess(tmp_path):
    """The installed console script runs the demo end to end on the embedded sample data."""
    r = subprocess.run([sys.executable, "-m", "hyperobf.cli", "demo", "--out", str(tmp_path), "--epochs", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DSSIM" in r.stdout and "PSNR" in r.stdout
    assert "status    protection not measured" in r.stdout  # a demo net was never attacked: it says so
    assert (tmp_path / "astronaut_protected.png").exists()
