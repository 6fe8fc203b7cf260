"""Hybrid refinement (issue 12.2): the torch step, its plain-ONNX export, the torch-free device runtime,
`hyperobf export-refiner` and `hyperobf protect --refiner`.

Always run on a tiny synthetic embedder (every backward op the rewrite handles: strided, padded and
depthwise convolutions, average and max pooling, the resize matrices); the real embedders (dlib,
MobileFaceNet from ../shared/models) are exported in the slow tests and skipped when absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from hyperobf.cli import app
from hyperobf.device_runtime.refine import RefinerError, load_refiner, refine_delta
from hyperobf.refine import refine_step, refine_torch
from hyperobf.refine.bundle import RefinerExportError, export_refiner, start_deltas
from hyperobf.refine.embedders import EmbedderInfo, FaceEmbedder, resize_matrix
from runtime_support import build_model, env_without_torch


SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "glint24"


class _TinyNet(nn.Module):
    """(N, 3, 96, 96) -> (N, 16): conv s2 p1, depthwise conv, avg pool, conv, max pool 3/2, mean, linear."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w1", torch.randn(8, 3, 3, 3, generator=g) * 0.3)
        self.register_buffer("w2", torch.randn(8, 1, 3, 3, generator=g) * 0.3)
        self.register_buffer("w3", torch.randn(16, 8, 3, 3, generator=g) * 0.2)
        self.register_buffer("fc", torch.randn(16, 16, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv2d(x, self.w1, stride=2, padding=1))  # (N, 8, 48, 48)
        h = F.relu(F.conv2d(h, self.w2, padding=1, groups=8))  # depthwise
        h = F.avg_pool2d(h, 2)  # (N, 8, 24, 24)
        h = F.relu(F.conv2d(h, self.w3, stride=1, padding=0))  # (N, 16, 22, 22)
        h = F.max_pool2d(h, 3, 2)  # (N, 16, 10, 10)
        return h.mean((2, 3)) @ self.fc


def tiny_embedder() -> FaceEmbedder:
    return FaceEmbedder(_TinyNet(), EmbedderInfo("tiny", "test-only", 112, 96, 16), 2.0, -1.0)


def _faces(n: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth seeded images (N, 3, 112, 112) in [0, 1]: low-frequency noise, upsampled."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 14, 14, generator=g), size=(112, 112), mode="bilinear", align_corners=False)
    return x.numpy().astype(np.float32)


@pytest.fixture(scope="module")
def tiny_refiner(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("refiner") / "tiny"
    meta = export_refiner(tiny_embedder(), out, step_size=1 / 255, rho_pixel=0.03, default_steps=4)
    return out, meta


def test_resize_matrix_is_torch_bilinear():
    x = torch.rand(2, 3, 112, 112)
    r = resize_matrix(150, 112)  # (150, 112)
    ref = F.interpolate(x, size=(150, 150), mode="bilinear", align_corners=False)
    assert torch.allclose(r @ x @ r.T, ref, atol=1e-5)
    r = resize_matrix(96, 112, antialias=True)
    ref = F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(r @ x @ r.T, ref, atol=1e-5)


def test_refine_torch_moves_away_within_the_clip():
    emb = tiny_embedder()
    x = torch.from_numpy(_faces(3))
    d0 = torch.from_numpy(start_deltas(x.numpy(), 0.03))
    assert torch.equal(refine_torch(emb, x, d0, 0, 0.004, 0.03), d0)
    d = refine_torch(emb, x, d0, 6, 0.004, 0.03)
    assert d.abs().max() <= 0.03 + 1e-6 and (x + d).min() >= 0 and (x + d).max() <= 1
    assert (d - d0).abs().max() > 0.003  # it moved
    with torch.no_grad():
        e0 = F.normalize(emb(x), dim=1)
        dist = lambda dd: (F.normalize(emb((x + dd).clamp(0, 1)), dim=1) - e0).norm(dim=1)  # noqa: E731
        assert (dist(d) > dist(d0)).all(), (dist(d0), dist(d))
    # batched = one face at a time (faces are independent). One step: float noise may flip the sign of a
    # ~1e-11 gradient; over several steps such flips compound (sign dynamics diverge), so compare one step.
    b1 = refine_torch(emb, x, d0, 1, 0.004, 0.03)
    one = torch.cat([refine_torch(emb, x[i:i + 1], d0[i:i + 1], 1, 0.004, 0.03) for i in range(3)])
    assert ((one - b1).abs() <= 1e-5).float().mean() >= 0.999
    with pytest.raises(ValueError):
        refine_torch(emb, x, d0[:1], 1, 0.004, 0.03)


def test_zero_start_does_not_move():
    """At δ = 0 the distance is at its minimum: the gradient is zero, so is every step (documented)."""
    emb = tiny_embedder()
    x = torch.from_numpy(_faces(1))
    with torch.no_grad():
        e0 = F.normalize(emb(x), dim=1)
    nxt, dist, sign = refine_step(emb, x, torch.zeros_like(x), e0, torch.tensor(0.01), torch.tensor(0.03))
    assert dist.item() < 1e-3 and sign.abs().sum() == 0 and nxt.abs().max() == 0


def test_export_uses_standard_ops_and_matches_torch(tiny_refiner):
    out, meta = tiny_refiner
    import onnx

    assert set(meta["rewritten_backward_ops"]) == {"aten.convolution_backward.default", "aten.avg_pool2d_backward.default",
                                                   "aten.max_pool2d_with_indices_backward.default"}
    step = onnx.load(str(out / "step.onnx"))
    assert {n.domain for n in step.graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in step.graph.node}
    assert {"ConvTranspose", "Sign", "ScatterElements"} <= ops
    p = meta["parity"]
    assert p["sign_agreement"] >= 0.999 and p["delta_within_1e5"] >= 0.999 and p["embed_max_abs_diff"] < 1e-5
    assert json.loads((out / "refiner.json").read_text())["files"]["step"]["sha256"] == meta["files"]["step"]["sha256"]


def test_device_refine_matches_refine_torch(tiny_refiner):
    out, _ = tiny_refiner
    emb = tiny_embedder()
    x = _faces(2, seed=3)
    d0 = start_deltas(x, 0.03, seed=1)
    ref = load_refiner(out, threads=1)
    e0 = ref.embed(x)
    with torch.no_grad():
        assert np.abs(e0 - F.normalize(emb(torch.from_numpy(x)), dim=1).numpy()).max() < 1e-5
    xt, d0t = torch.from_numpy(x), torch.from_numpy(d0)
    d1 = refine_torch(emb, xt, d0t, 1, 0.004, 0.03).numpy()  # one step: the same δ
    assert (np.abs(ref.refine(x, d0, k=1, step=0.004, rho=0.03) - d1) <= 1e-5).mean() >= 0.999
    # five chained steps: a flipped near-zero sign makes the two chains drift apart a little, but they
    # must reach the same distance from e0 and share most of δ
    d_dev = ref.refine(x, d0, k=5, step=0.004, rho=0.03)
    d_t = refine_torch(emb, xt, d0t, 5, 0.004, 0.03).numpy()
    assert (np.abs(d_dev - d_t) <= 1e-5).mean() >= 0.9
    with torch.no_grad():
        e_0 = F.normalize(emb(xt), dim=1)
        dist = [(F.normalize(emb(xt + torch.from_numpy(d)), dim=1) - e_0).norm(dim=1) for d in (d0, d_dev, d_t)]
    assert (dist[1] > dist[0]).all() and torch.allclose(dist[1], dist[2], rtol=0.02), dist
    assert np.array_equal(refine_delta(x, d0, ref.step_session, ref.embed_session, 0, 0.004, 0.03), d0)
    with pytest.raises(RefinerError, match="112"):
        ref.refine(x[:, :, :64, :64], d0[:, :, :64, :64], k=1)


def test_device_refiner_imports_no_torch(tiny_refiner, tmp_path):
    out, _ = tiny_refiner
    np.save(tmp_path / "x.npy", _faces(1))
    code = ("import sys, numpy as np; from hyperobf.device_runtime.refine import load_refiner; "
            f"x = np.load({str(tmp_path / 'x.npy')!r}); r = load_refiner({str(out)!r}, threads=1); "
            "d = r.refine(x, np.full_like(x, 0.01), k=2); "
            "assert 'torch' not in sys.modules; print(float(np.abs(d).max()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env_without_torch(tmp_path))
    assert r.returncode == 0, r.stderr
    assert 0 < float(r.stdout) <= 0.03 + 1e-6


def _corrupt(src: Path, dst: Path, how: str) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    meta = json.loads((dst / "refiner.json").read_text())
    if how == "tampered":
        (dst / "step.onnx").write_bytes((dst / "step.onnx").read_bytes()[:-1] + b"\0")
    elif how == "version":
        meta["format_version"] = 7
    elif how == "json":
        (dst / "refiner.json").write_text("{not json")
        return dst
    elif how == "missing":
        (dst / "embed.onnx").unlink()
    elif how == "swapped":  # the embed graph where the step graph belongs (sha256 made to match)
        (dst / "step.onnx").write_bytes((dst / "embed.onnx").read_bytes())
        meta["files"]["step"]["sha256"] = meta["files"]["embed"]["sha256"]
    (dst / "refiner.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("how, message", [
    ("tampered", "step.onnx: sha256 does not match refiner.json"),
    ("version", "unknown refiner format version 7"),
    ("json", "cannot read"),
    ("missing", "cannot read"),
    ("swapped", "step.onnx: inputs"),
])
def test_protect_refuses_a_bad_refiner_folder_in_one_line(tiny_refiner, tmp_path, how, message):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    model = build_model(tmp_path / "m.onnx", "fixed")
    bad = _corrupt(tiny_refiner[0], tmp_path / "bad", how)
    r = CliRunner().invoke(app, ["protect", str(tmp_path / "a.png"), "-m", str(model), "--refiner", str(bad)])
    assert r.exit_code == 1, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "a_protected.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--refiner", "{good}"], "give --detector"),  # whole mode has no aligned face to refine
    (["--refine-steps", "3"], "--refine-steps needs --refiner"),
    (["--refiner", "{missing}"], "refiner folder not found"),
    (["--refiner", "{tmp}"], "no refiner.json"),
    (["--refiner", "{good}", "--refine-steps", "-1"], ""),
])
def test_protect_refiner_flags_fail_in_one_line(tiny_refiner, tmp_path, args, message):
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    model = build_model(tmp_path / "m.onnx", "fixed")
    args = [a.format(good=tiny_refiner[0], missing=tmp_path / "nope", tmp=tmp_path) for a in args]
    r = CliRunner().invoke(app, ["protect", str(tmp_path / "a.png"), "-m", str(model), *args])
    assert r.exit_code != 0 and message in r.stderr, r.stderr
    if message:
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a_protected.png").exists()


def test_export_refiner_cli_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for args, message in ((["--out", str(tmp_path / "full"), "--embedder", str(tmp_path / "e.onnx")], "not empty"),
                          (["--out", str(tmp_path / "o"), "--embedder", "foo"], "unknown embedder 'foo'"),
                          (["--out", str(tmp_path / "o"), "--models", str(tmp_path)], "dlib face-api weights manifest not found"),
                          (["--out", str(tmp_path / "o"), "--step-size", "0"], "must be in (0, 1]")):
        r = CliRunner().invoke(app, ["export-refiner", *args])
        assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "o").exists()


def test_export_refused_when_out_is_not_empty(tiny_refiner):
    with pytest.raises(RefinerExportError, match="not empty"):
        export_refiner(tiny_embedder(), tiny_refiner[0])


class _FixedDetector:
    """Stands in for SCRFD: one face whose keypoints are the ArcFace template, scaled by 1.5 and shifted."""

    def detect(self, img):  # noqa: ANN001
        from hyperobf.device_runtime.align import ARCFACE_112
        from hyperobf.device_runtime.detect import Face

        kps = ARCFACE_112 * 1.5 + 30.0
        return [Face((30.0, 30.0, 198.0, 198.0), 0.99, kps.astype(np.float32))]


def test_face_mode_refines_the_crop_and_only_the_crop(tiny_refiner, tmp_path):
    from PIL import Image

    from hyperobf.device_runtime import ProtectOptions, load_model, protect

    rng = np.random.default_rng(0)
    img = Image.fromarray((F.interpolate(torch.rand(1, 3, 16, 24), size=(240, 320), mode="bilinear")[0]
                           .permute(1, 2, 0).numpy() * 200 + 20 + rng.integers(0, 8, (240, 320, 3))).astype(np.uint8))
    model = load_model(build_model(tmp_path / "m.onnx", "fixed"), threads=1)
    ref = load_refiner(tiny_refiner[0], threads=1)
    plain = protect(img, model, _FixedDetector(), ProtectOptions(mode="face"))
    refined = protect(img, model, _FixedDetector(), ProtectOptions(mode="face", refiner=ref, refine_steps=3))
    assert refined.mode == "face" and refined.faces == 1 and refined.timings["refine"] > 0
    a, p, r = (np.asarray(i.image if hasattr(i, "image") else i, np.int16) for i in (img, plain, refined))
    changed = np.any(r != p, axis=2)
    assert changed.sum() > 1000  # the refinement changed the face region …
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 20 and xs.min() >= 20 and ys.max() < 210 and xs.max() < 210  # … and nothing outside it
    assert np.abs(r - a).max() <= round(model.spec.rho_pixel * 255) + 1  # still within the per-pixel budget
    with pytest.raises(ValueError, match="need a refiner"):
        ProtectOptions(refine_steps=2)


def test_protect_cli_with_refiner_runs_without_torch(tiny_refiner, tmp_path):
    """The real command (SCRFD from ../shared, the tiny refiner) with a poisoned torch on the path."""
    scrfd = SHARED_MODELS / "scrfd_2.5g_bnkps.onnx"
    if not scrfd.is_file():
        pytest.skip(f"face detector absent: {scrfd}")
    from PIL import Image
    from skimage import data as skdata

    Image.fromarray(skdata.astronaut()).save(tmp_path / "a.png")
    model = build_model(tmp_path / "m.onnx", "fixed")
    r = subprocess.run([sys.executable, "-m", "hyperobf.cli", "protect", str(tmp_path / "a.png"), "-m", str(model),
                        "-d", str(scrfd), "--refiner", str(tiny_refiner[0]), "--refine-steps", "2", "-v"],
                       capture_output=True, text=True, timeout=120, env=env_without_torch(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "refining each face with 2 step(s) against tiny" in r.stdout and "(face, 1 face(s); DSSIM written/crop 0." in r.stdout
    assert " refine " in r.stdout and (tmp_path / "a_protected.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["dlib", "mobilefacenet.onnx"])
def test_real_embedder_export_parity(which, tmp_path):
    """dlib (the shipped one) and MobileFaceNet: exported step vs torch on real faces when present."""
    from hyperobf.refine.embedders import load_refine_embedder

    src = SHARED_MODELS / ("dlib_resnet_faceapi" if which == "dlib" else which)
    if not src.exists():
        pytest.skip(f"embedder absent: {src}")
    emb = load_refine_embedder(which if which == "dlib" else src, SHARED_MODELS)
    if which == "dlib":  # the matrix resize reproduces the port's own embedding
        from hyperobf.eval.dlib_resnet import load_dlib_resnet

        x = torch.from_numpy(_faces(2))
        with torch.no_grad():
            assert (emb(x) - load_dlib_resnet(src).embed(x)).abs().max() < 1e-4
    faces = SHARED_FACES if SHARED_FACES.is_dir() else None
    meta = export_refiner(emb, tmp_path / "r", faces_dir=faces, n_faces=6)
    p = meta["parity"]
    assert p["sign_agreement"] >= 0.999 and p["delta_within_1e5"] >= 0.999, p
    assert meta["embedder"]["dim"] == 128 and meta["embedder"]["input_size"] == 112
