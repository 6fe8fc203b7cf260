"""The evaluation harness end to end at the tiny scale: every experiment E1–E8 through the CLI.

Default run: generated faces (no ../shared needed; mobilefacenet is used when ../shared has it).
``-m slow``: the same on the real faces in ../shared.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import SHARED, shared_path
from hyperobf.cli import app

EXPS = ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"]
runner = CliRunner()
_THREADS = torch.get_num_threads()


@pytest.fixture
def one_thread():
    """One torch thread for this test (OpenMP spin-waiting makes 2 threads far slower on a loaded CPU)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(_THREADS)


def _models_arg(tmp_path) -> str:
    """A models root holding only mobilefacenet (when ../shared has it): keeps the tiny run light."""
    src = SHARED / "models" / "mobilefacenet.onnx"
    d = tmp_path / "models"
    d.mkdir()
    if src.is_file():
        (d / "mobilefacenet.onnx").symlink_to(src)
    return str(d)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hyperobf.eval.synthetic import write_synthetic_faces

    tmp = tmp_path_factory.mktemp("eval_tiny")
    faces = write_synthetic_faces(tmp / "faces")
    out = tmp / "results"
    r = runner.invoke(app, ["eval", "all", "--scale", "tiny", "--faces", str(faces), "--models", _models_arg(tmp),
                            "--out", str(out), "--device", "cpu", "--quiet", "--threads", "1"])
    torch.set_num_threads(_THREADS)  # the CLI set 1 for its run (fastest on a busy 2-core machine)
    return r, out


def _check_results(out, exps):
    for e in exps:
        res = json.loads((out / e / "results.json").read_text())
        assert res["config"]["scale"]["name"] == "tiny" and res["comparison"], e
        for row in res["comparison"]:
            ours = row["ours"]
            if isinstance(ours, dict) and ours.get("mean") is not None:
                assert 0.0 <= ours["mean"] <= 1.0 or "KL" in row["quantity"], (e, row)
        assert res.get("quality"), e  # every experiment reports DSSIM / SSIM / PSNR
        for k, q in res["quality"].items():
            assert {"dssim", "ssim", "psnr"} <= set(q) and abs(q["ssim"] - (1 - 2 * q["dssim"])) < 1e-6, (e, k)
            if not any(w in k for w in ("restored", "jpeg", "resize")):  # MaskNet output: within the pixel budget
                assert q["psnr"] >= 30.0 and q["max_abs_delta"] <= 0.03 + 1e-6, (e, k, q)
        split = json.loads((out / e / "split.json").read_text())
        t, d = set(split["targets"]), set(split["distractors"])
        pub = {f.split("/")[0] for f in split["public"]["files"]}
        assert not (t & d) and not (pub & (t | d))
        report = (out / e / "report.md").read_text()
        assert "thesis" in report and "## Our numbers" in report
        for p in res["plots"]:
            with Image.open(out / e / p) as im:
                assert im.format == "PNG" and im.size[0] > 100
    assert (out / "report.md").is_file()


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_tiny_all_experiments(tiny_run):
    r, out = tiny_run
    assert r.exit_code == 0, r.output
    _check_results(out, EXPS)
    e3 = json.loads((out / "e3" / "results.json").read_text())
    methods = {row["quantity"].split(":")[0] for row in e3["comparison"]}
    assert "hypernet" in methods
    e1 = json.loads((out / "e1" / "results.json").read_text())
    # Protected uploads differ from the originals, within the per-pixel budget.
    assert 0 < e1["quality"]["protected"]["max_abs_delta"] <= 0.03 + 1e-6
    e6 = json.loads((out / "e6" / "results.json").read_text())
    assert len(e6["raw"]["grid"]) == 2 and [r["epochs"] for r in e6["raw"]["sweep"]] == [1, 2]
    assert all(math.isfinite(r["kl_delta_hist"]["mean"]) for r in e6["raw"]["grid"])


def test_eval_cli_bad_input_is_one_line(tmp_path):
    r = runner.invoke(app, ["eval", "e1", "--faces", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    r = runner.invoke(app, ["eval", "e1", "--scale", "huge", "--faces", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "unknown scale" in r.output and "Traceback" not in r.output
    (tmp_path / "faces" / "glint24" / "a").mkdir(parents=True)
    r = runner.invoke(app, ["eval", "e1", "--faces", str(tmp_path / "faces"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and r.output.count("\n") <= 2 and "Traceback" not in r.output


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_resnet_attacker_learns_and_is_not_fooled_by_labels(tmp_path, one_thread):
    """The FR attacker recognises a target trained on its own clean faces, and does not when the
    'target' training images are someone else's (so a low accuracy can mean protection)."""
    from hyperobf.eval.fr import Job, ResNetAttacker, pretrain_trunk
    from hyperobf.eval.scales import get_scale
    from hyperobf.eval.splits import load_split, make_split
    from hyperobf.eval.synthetic import write_synthetic_faces

    root = write_synthetic_faces(tmp_path / "f", {"glint24": (3, 4), "celeba299": (14, 14)}, seed=1)
    sc = get_scale("tiny", n_targets=2, n_distractors=4, train_per_class=8, test_per_target=6, fr_epochs=8, fr_batch=8,
                   fr_patience=8, fr_pretrain_epochs=2, public_images=48)
    data = load_split(make_split(root, sc, 0))
    dev = torch.device("cpu")
    trunk = pretrain_trunk(data.public.images, data.public.labels, sc, dev, 0)
    att = ResNetAttacker(trunk, data.distractor_train, data.distractor_val, data.targets, sc, dev, 0)
    t = data.targets
    res = att.run([Job(0, t[0].train), Job(0, t[1].train)])
    assert res[0]["acc"] >= 0.5  # own faces: recognised
    assert res[1]["acc"] <= 0.17  # someone else's faces labelled as the target: not


@pytest.mark.slow
def test_tiny_all_experiments_real_faces(tmp_path):
    faces = shared_path("data", "faces")
    models = shared_path("models")
    out = tmp_path / "results"
    r = runner.invoke(app, ["eval", "all", "--scale", "tiny", "--faces", str(faces), "--models", str(models),
                            "--out", str(out), "--device", "cpu", "--quiet", "--threads", "1"])
    torch.set_num_threads(_THREADS)
    assert r.exit_code == 0, r.output
    _check_results(out, EXPS)


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_psp_set_trains_the_evaluated_nets_with_another_objective(tmp_path, one_thread):
    """--psp-set reaches every PSP training (here: the feature objective under a tiny ONNX embedder) and is
    recorded in the results; a misspelt key is refused in one line before anything runs."""
    from _train_support import write_tiny_embedder

    from hyperobf.eval.synthetic import write_synthetic_faces

    faces = write_synthetic_faces(tmp_path / "faces")
    emb = write_tiny_embedder(tmp_path / "emb.onnx")
    out = tmp_path / "results"
    r = runner.invoke(app, ["eval", "e1", "--scale", "tiny", "--faces", str(faces), "--models", _models_arg(tmp_path),
                            "--out", str(out), "--device", "cpu", "--quiet", "--threads", "1",
                            "--psp-set", "objective=feature", "--psp-set", "feature_mode=untargeted",
                            "--psp-set", f"embedder={emb}"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "e1" / "results.json").read_text())
    assert res["config"]["psp_overrides"]["objective"] == "feature"
    cfg = json.loads(next((out / "psp").glob("static-*/config.json")).read_text())
    assert cfg["objective"] == "feature" and cfg["feature_mode"] == "untargeted" and cfg["embedder"] == str(emb)
    r = runner.invoke(app, ["eval", "e1", "--scale", "tiny", "--faces", str(faces), "--out", str(tmp_path / "o"),
                            "--psp-set", "objectiv=feature"])
    assert r.exit_code != 0 and "unknown config keys: objectiv" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()
