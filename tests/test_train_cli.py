"""`hyperobf train` (configs, --structures, --set) and `hyperobf protection-check` end to end on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _train_support import write_tiny_embedder
from PIL import Image

from hyperobf.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "hyperobf.cli"]
TINY = ["--set", "image_size=48", "--set", "steps_per_epoch=1", "--set", "eval_images=4", "--set", "eval_nets=2",
        "--set", "nets_per_step=2", "--set", "batch_images=2", "--set", "max_per_identity=8"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = TrainConfig.from_toml(path)
    assert cfg.epochs >= 1


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> Path:
    """5 identities x 8 images as PNGs (seeded synthetic faces)."""
    from hyperobf.train.data import synthetic_faces

    root = tmp_path_factory.mktemp("faces")
    faces = synthetic_faces(n_identities=5, per_identity=8, size=48, seed=1)
    for i, (img, lab) in enumerate(zip(faces.images, faces.labels)):
        d = root / f"person{int(lab)}"
        d.mkdir(exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:03d}.png")
    return root


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_train_several_structures_then_protection_check(tmp_path, face_folder):
    emb = write_tiny_embedder(tmp_path / "emb.onnx")
    out = tmp_path / "runs"
    r = _run("train", "-c", str(ROOT / "configs" / "tiny.toml"), "--structures", "tiny,B", "--epochs", "1",
             "--objective", "feature", "--feature-mode", "targeted", "--embedder", str(emb),
             "--data", str(face_folder), "--set", "max_identities=3", "--set", "holdout_fraction=0.4", *TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    for s in ("tiny", "B"):
        assert (out / s / "checkpoint.pt").is_file()
        cfg = json.loads((out / s / "config.json").read_text())
        assert cfg["structure"] == s and cfg["objective"] == "feature" and cfg["image_size"] == 48
        row = json.loads((out / s / "metrics.jsonl").read_text().splitlines()[-1])
        assert {"kl_gaussian", "kl_hist", "feat_cos_mean", "dssim_mean", "dssim_max", "psnr_mean"} <= set(row["holdout"])
    report_path = tmp_path / "report.json"
    r = _run("protection-check", "--checkpoint", str(out / "tiny" / "checkpoint.pt"), "--data", str(face_folder),
             "--embedder", str(emb), "--jpeg", "80", "--max-query", "3", "--out", str(report_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads(report_path.read_text())
    assert rep["identities"] == 5 and set(rep["groups"]) == {"all", "seen", "unseen"}
    seen, unseen = rep["groups"]["seen"], rep["groups"]["unseen"]
    assert seen["identities"] == 3 and unseen["identities"] == 2
    for g in (seen, unseen):
        assert 0 <= g["acc_protected"] <= 1 and 0 <= g["acc_clean"] <= 1 and "acc_protected_jpeg80" in g
        assert -1 <= g["cos_mean"] <= 1 and g["dssim_max"] >= g["dssim_mean"] >= 0


# Each case is a real `hyperobf train` process (~5 s on 2 shared cores, mostly importing torch): the default
# run keeps two (a config file key, a registry name), the rest run with -m slow.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("args,msg", [
    pytest.param(["--set", "nonsense"], "key=value", marks=_SLOW),
    (["--set", "no_such_key=1"], "unknown config keys"),
    (["--method", "bogus"], "unknown method"),
    pytest.param(["--structure", "A", "--structures", "B"], "not both", marks=_SLOW),
    pytest.param(["--objective", "feature"], "needs an ONNX face embedder", marks=_SLOW),
])
def test_train_bad_input_is_one_line_error(tmp_path, args, msg):
    r = _run("train", "--out", str(tmp_path / "o"), *args)
    assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
