"""`hyperobf export` through typer's CliRunner: the happy path and every bad input the issue
lists — one-line error, non-zero exit, no traceback, nothing partial left behind."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hyperobf.cli import app
from runtime_support import seeded_users

runner = CliRunner()


def _export(*args: str):
    return runner.invoke(app, ["export", *args])


def _one_line_error(r) -> str:
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.output
    return errors[0]


def _listing(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_export_cli_writes_formats_and_table(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("hyperobf.export.issue.secure_normal", seeded_users(0))  # fixed users: int8 is exported
    out = tmp_path / "models"
    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "2", "--format", "onnx,ort",
                "--precision", "fp32,int8", "--out", str(out), "--seeds-file", str(tmp_path / "z.jsonl"))
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r_["file"] for r_ in rows) == sorted(
        f"user000{i}{p}.{f}" for i in range(2) for f in ("onnx", "ort") for p in ("", ".int8"))
    for label in ("onnx ", "onnx-int8 ", "ort ", "ort-int8 "):
        assert any(line.startswith(label) for line in r.output.splitlines()), r.output
    assert "files/s" in r.output and "mobile checker ok" in r.output
    # a second export into the same folder is refused (no overwrite) and changes nothing
    before = {p: (out / p).read_bytes() for p in _listing(out) if (out / p).is_file()}
    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "2", "--out", str(out))
    assert "already exists" in _one_line_error(r)
    assert {p: (out / p).read_bytes() for p in _listing(out) if (out / p).is_file()} == before


@pytest.mark.parametrize("args, message", [
    (["--users", "0"], "--users must be >= 1"),
    (["--users", "-3"], "--users must be >= 1"),
    (["--users", "2", "--format", "onnx,tflite"], "unknown format 'tflite'"),
    (["--users", "2", "--precision", "fp8"], "unknown precision 'fp8'"),
    (["--users", "2", "--shape", "square"], "--shape must be"),
    (["--users", "2", "--verify", "some"], "--verify must be"),
])
def test_bad_arguments(tiny_checkpoint, tmp_path, args, message):
    out = tmp_path / "o"
    r = _export("--checkpoint", str(tiny_checkpoint), "--out", str(out), *args)
    assert message in _one_line_error(r)
    assert not out.exists()


def test_missing_and_corrupt_checkpoint(tmp_path):
    r = _export("--checkpoint", str(tmp_path / "nope.pt"), "--users", "2", "--out", str(tmp_path / "o"))
    assert "checkpoint not found" in _one_line_error(r)
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"PK\x03\x04 definitely not a torch checkpoint")
    r = _export("--checkpoint", str(bogus), "--users", "2", "--out", str(tmp_path / "o"))
    assert "not a HyperObf checkpoint" in _one_line_error(r)
    assert not (tmp_path / "o").exists()


def test_unwritable_output(tiny_checkpoint, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "2", "--out", str(blocker / "sub"))
    assert "cannot write to" in _one_line_error(r)
    # a folder we may not write into (simulated: the tests may run as root, who can write anywhere)
    import hyperobf.export.writer as writer

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(writer.tempfile, "mkdtemp", denied)
    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "2", "--out", str(tmp_path / "ro" / "out"))
    assert "Permission denied" in _one_line_error(r)
    assert _listing(tmp_path) == ["file"]


@pytest.mark.parametrize("fail_after", [0, 3])
def test_disk_full_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch, fail_after):
    """os.write raising ENOSPC (at the first write, or after some files) -> nothing partial remains."""
    import hyperobf.export.writer as writer

    calls = {"n": 0}
    real_write = writer._os_write

    def full(fd, data):
        calls["n"] += 1
        if calls["n"] > fail_after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(writer, "_os_write", full)
    existing = tmp_path / "models"
    existing.mkdir()
    (existing / "keep.txt").write_text("an earlier file")  # non-empty folder: the file-by-file path
    seeds = tmp_path / "z.jsonl"
    for out in (existing, tmp_path / "fresh"):
        r = _export("--checkpoint", str(tiny_checkpoint), "--users", "4", "--format", "onnx,coreml",
                    "--out", str(out), "--seeds-file", str(seeds), "--verify", "none")
        assert "no space left on device" in _one_line_error(r)
    assert _listing(tmp_path) == ["models", "models/keep.txt"]
    assert (existing / "keep.txt").read_text() == "an earlier file"


def test_seeds_file_guarded(tiny_checkpoint, tmp_path):
    out = tmp_path / "models"
    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "1", "--out", str(out), "--seeds-file", str(out / "z.jsonl"))
    assert "outside the output folder" in _one_line_error(r)
    secret = tmp_path / "z.jsonl"
    secret.write_text("earlier secrets\n")
    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "1", "--out", str(out), "--seeds-file", str(secret))
    assert "never overwritten" in _one_line_error(r)
    assert secret.read_text() == "earlier secrets\n" and not out.exists()


def _untrained_checkpoint(path, structure: str):
    import torch

    from hyperobf.spec import builtin_spec
    from hyperobf.train.checkpoint import save_checkpoint
    from hyperobf.train.config import TrainConfig
    from hyperobf.train.sources import build_source

    torch.manual_seed(0)
    cfg = TrainConfig(structure=structure)
    save_checkpoint(path, builtin_spec(structure), cfg, build_source(builtin_spec(structure), cfg), epoch=0)
    return str(path)


def test_several_hypernets_assign_each_user_a_random_structure(tmp_path):
    """One checkpoint per structure: users spread over them at random (CSPRNG), one manifest for all."""
    cks = [_untrained_checkpoint(tmp_path / f"{s}.pt", s) for s in ("tiny", "B")]
    out = tmp_path / "models"
    r = _export("--checkpoint", cks[0], "--checkpoint", cks[1], "--users", "24", "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(row["user"] for row in rows) == [f"user{i:04d}" for i in range(24)]
    by = {s: [row for row in rows if row["structure"] == s] for s in ("tiny", "B")}
    assert by["tiny"] and by["B"]  # 24 fair draws: both structures used (fails with probability 2^-23)
    for s, group in by.items():
        for row in group:
            assert row["file"].startswith(f"{s}/") and (out / row["file"]).is_file()
    # a second multi-structure export into the now non-empty folder is refused and changes nothing
    before = _listing(out)
    r = _export("--checkpoint", cks[0], "--checkpoint", cks[1], "--users", "2", "--out", str(out))
    assert "new or empty folder" in _one_line_error(r) and _listing(out) == before
    # two checkpoints of one structure are refused before anything is written
    r = _export("--checkpoint", cks[0], "--checkpoint", cks[0], "--users", "2", "--out", str(tmp_path / "m2"))
    assert "one checkpoint per structure" in _one_line_error(r) and not (tmp_path / "m2").exists()


def test_export_warns_when_users_nets_perturb_alike(tiny_checkpoint, tmp_path):
    from _train_support import tiny_cfg

    from hyperobf.train.loop import train

    r = _export("--checkpoint", str(tiny_checkpoint), "--users", "3", "--out", str(tmp_path / "h"))
    assert r.exit_code == 0, r.output
    assert "users' nets: δ cos" in r.output and "of 3 pairs identical at 8 bits" in r.output
    # an "ensemble" of one member issues the same net to every user: the export says so
    one = train(tiny_cfg(method="ensemble", ensemble_size=1), tmp_path / "one").checkpoint
    r = _export("--checkpoint", str(one), "--users", "3", "--out", str(tmp_path / "e"))
    assert r.exit_code == 0, r.output
    assert "100% of 3 pairs identical at 8 bits" in r.output
    assert "warning: this HyperNet's nets perturb faces alike for different users (δ cos 1.00; 100% of 3" in r.output
    # ... into every model's protection record, and `protect` tells the user
    from hyperobf.device_runtime import load_model

    model = sorted((tmp_path / "e").rglob("*.onnx"))[0]
    alike = load_model(model).protection["alike"]
    assert alike["identical_pairs"] == 1.0 and alike["nets"] == 3 and alike["source"] == "hyperobf export"
    photo = tmp_path / "me.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(photo)
    r = CliRunner().invoke(app, ["protect", str(photo), "--model", str(model), "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "warning: this HyperNet's nets perturb faces alike for different users (δ cos 1.00; 100% of 3" in r.output
    r = _export("--checkpoint", str(one), "--users", "3", "--verify", "none", "--out", str(tmp_path / "n"))
    assert r.exit_code == 0 and "users' nets" not in r.output  # nothing run, nothing claimed
