"""Device runtime, scale: SCRFD decoding and NMS, alignment geometry, whole-photo tiling and
upsampling, and (with the detector from ../shared) face-region mode on real and 12 MP photos —
checking that an attacker's aligned 112² crop sees the perturbation at the scale it was made."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from hyperobf.device_runtime import ProtectOptions, WriteOptions, load_detector, load_model, protect, protect_files
from hyperobf.device_runtime.align import face_to_template, feather_mask, similarity, template, warp
from hyperobf.device_runtime.detect import anchor_centers, decode, nms
from hyperobf.device_runtime.face import aligned_crops
from hyperobf.device_runtime.whole import add_upsampled, delta_dynamic, delta_tiled, upsample_delta, _add_float
from runtime_support import SCRFD, astronaut, noise_image


# --- detector decoding (synthetic outputs, no model needed) -----------------------------------

def _fake_outputs(h: int, w: int, hits: dict[tuple[int, int], tuple[float, list[float], list[float]]]):
    """Per-stride score/box/kps arrays for an h×w input; hits: (stride, anchor index) -> (score, ltrb, kps)."""
    outs = {1: [], 4: [], 10: []}
    for s in (8, 16, 32):
        n = (h // s) * (w // s) * 2
        sc, bb, kp = np.zeros((n, 1), np.float32), np.ones((n, 4), np.float32), np.zeros((n, 10), np.float32)
        for (stride, idx), (score, ltrb, kps) in hits.items():
            if stride == s:
                sc[idx], bb[idx], kp[idx] = score, ltrb, kps
        outs[1].append(sc), outs[4].append(bb), outs[10].append(kp)
    return outs[4][::-1] + outs[1] + outs[10]  # shuffled order: decode matches by shape, not position


def test_decode_boxes_keypoints_and_nms():
    h, w = 64, 96
    centers = anchor_centers(h, w, 16)
    assert centers.shape == ((64 // 16) * (96 // 16) * 2, 2) and (centers[0] == centers[1]).all()
    idx = 2 * (1 * (96 // 16) + 3)  # location (row 1, col 3) at stride 16 -> centre (48, 16)
    kps = [0.5, -0.5, 1, 0, 0, 0.5, -1, 1, 1, 1]
    outs = _fake_outputs(h, w, {(16, idx): (0.9, [1, 0.5, 2, 1.5], kps), (16, idx + 1): (0.8, [1, 0.5, 2, 1.5], kps),
                                (8, 0): (0.4, [1, 1, 1, 1], [0] * 10), (32, 1): (0.7, [0.5, 0.5, 0.5, 0.5], [0] * 10)})
    faces = decode(outs, h, w, score_threshold=0.5, iou_threshold=0.4)
    assert [round(f.score, 2) for f in faces] == [0.9, 0.7]  # the 0.8 duplicate is suppressed, 0.4 below threshold
    f = faces[0]
    assert np.allclose(f.box, (48 - 16, 16 - 8, 48 + 32, 16 + 24))
    assert np.allclose(f.keypoints[0], (48 + 8, 16 - 8)) and np.allclose(f.keypoints[4], (48 + 16, 16 + 16))
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5) == [1, 2]


# --- alignment geometry -------------------------------------------------------------------------

def test_similarity_recovers_transform_and_template_maps_to_itself():
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 100
    th, s, t = 0.3, 2.5, np.array([7.0, -3.0])
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    m = similarity(src, (s * rot @ src.T).T + t)
    assert np.allclose(m[:2, :2], s * rot) and np.allclose(m[:2, 2], t)
    assert np.allclose(face_to_template(template(112)), np.eye(3), atol=1e-9)
    mask = feather_mask(112, 8)
    assert mask[56, 56] == 1 and mask[0, 56] < 0.1 and mask.shape == (112, 112)


def test_warp_round_trip_large_face():
    """Photo -> aligned 112² crop -> back: smooth content survives, in both directions (with antialiasing)."""
    yy, xx = np.mgrid[:600, :800]
    photo = np.stack([(xx / 800 * 255), (yy / 600 * 255), ((xx + yy) / 1400 * 255)], -1).astype(np.uint8)
    kps = template(112) * 4 + np.array([250.0, 80.0])  # a 4× larger face, no rotation
    crop, [m] = aligned_crops(Image.fromarray(photo), [type("F", (), {"keypoints": kps})()], 112)
    want = np.asarray(Image.fromarray(photo).crop((250, 80, 250 + 448, 80 + 448)).resize((112, 112), Image.BOX))
    assert np.abs(crop[0].astype(int) - want.astype(int))[4:-4, 4:-4].max() <= 3
    back = np.asarray(warp(Image.fromarray(crop[0]), np.linalg.inv(m), (448, 448), (250, 80))).astype(int)
    assert np.abs(back - photo[80:528, 250:698].astype(int))[16:-16, 16:-16].max() <= 4


# --- whole-photo mode -------------------------------------------------------------------------

def test_tiles_match_one_pass(models):
    fixed, dyn = load_model(models["fixed"]), load_model(models["dynamic"])
    rgb = noise_image(150, 260, seed=5)
    a, b = delta_tiled(rgb, fixed), delta_dynamic(rgb, dyn)
    assert a.shape == b.shape == (150, 260, 3)
    # Same weights: identical away from the image border (tiles are edge-padded, one pass zero-pads).
    assert np.abs(a - b)[3:-3, 3:-3].max() < 1e-5
    small = noise_image(40, 30, seed=6)  # smaller than one tile
    assert np.abs(delta_tiled(small, fixed) - delta_dynamic(small, dyn))[3:-3, 3:-3].max() < 1e-5


def test_quantised_upsampling_matches_float_path():
    rng = np.random.default_rng(0)
    img = Image.fromarray(noise_image(300, 400, seed=7))
    d = ((rng.random((37, 50, 3)) - 0.5) * 0.06).astype(np.float32)
    fast = np.asarray(add_upsampled(img, d)).astype(int)
    ref = _add_float(np.asarray(img), upsample_delta(d, 300, 400)).astype(int)
    assert np.abs(fast - ref).max() <= 1 and (fast != ref).mean() < 0.05
    big = d * 20  # |δ| up to 0.6: the float path is used
    assert np.array_equal(np.asarray(add_upsampled(img, big)), _add_float(np.asarray(img), upsample_delta(big, 300, 400)))


def test_whole_mode_working_scale(models):
    m = load_model(models["dynamic"])
    img = Image.fromarray(noise_image(600, 900, seed=8))
    r = protect(img, m, options=ProtectOptions(mode="whole", work_size=150))
    assert r.mode == "whole" and r.work_shape == (150, 225) and r.image.size == (900, 600)
    r = protect(Image.fromarray(noise_image(60, 90)), m)  # smaller than the working size: never upsampled
    assert r.work_shape == (60, 90)


# --- with the real detector ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    return load_detector(shared_path(*SCRFD), threads=1)


def test_detector_finds_the_astronaut(detector):
    [face] = detector.detect(astronaut())
    x1, y1, x2, y2 = face.box
    assert 160 < x1 < 200 and 40 < y1 < 80 and 250 < x2 < 290 and 160 < y2 < 200 and face.score > 0.6
    le, re = face.keypoints[0], face.keypoints[1]
    assert le[0] < re[0] and abs(le[1] - re[1]) < 10 and 30 < re[0] - le[0] < 60
    two = Image.new("RGB", (1024, 512))
    two.paste(astronaut(), (0, 0)), two.paste(astronaut(), (512, 0))
    assert len(detector.detect(two)) == 2
    assert detector.detect(Image.fromarray(noise_image(300, 300))) == []


def _aligned(img: Image.Image, faces) -> np.ndarray:
    """What an attacker trains on: the face aligned to 112², in [0, 1] (its alignment = ours)."""
    crops, _ = aligned_crops(img, faces[:1], 112)
    return crops[0].astype(np.float32) / 255


@pytest.mark.parametrize("shape", ["dynamic", "fixed"])
def test_face_mode_perturbs_the_aligned_crop_at_working_scale(detector, models, shape):
    m = load_model(models[shape])
    for scale in (1, 4):  # a 512² photo and a 2048² one (face ~90 and ~360 px wide)
        img = astronaut().resize((512 * scale,) * 2, Image.BICUBIC)
        r = protect(img, m, detector, ProtectOptions(mode="face"))
        assert r.mode == "face" and r.faces == 1 and r.image.size == img.size
        diff = np.abs(np.asarray(r.image).astype(int) - np.asarray(img).astype(int)).max(-1)
        ys, xs = np.nonzero(diff)
        faces = detector.detect(img)
        x1, y1, x2, y2 = faces[0].box
        # δ only around the face: inside the aligned crop's footprint (~1.7× the box), nothing elsewhere.
        assert xs.min() > x1 - 0.6 * (x2 - x1) and xs.max() < x2 + 0.6 * (x2 - x1) and ys.max() < y2 + 0.6 * (y2 - y1)
        clean = _aligned(img, faces)
        seen = (_aligned(r.image, faces) - clean)[12:-12, 12:-12].ravel()  # inside the feather
        made = m.delta(clean.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)[12:-12, 12:-12].ravel()
        assert np.corrcoef(seen, made)[0, 1] > 0.9


@pytest.mark.slow  # > 5 s on 2 shared cores (pytest --durations)
def test_working_scale_beats_native_resolution(detector, tmp_path):
    """A scale-bound (high-pass) δ computed on the 2048² photo natively barely reaches the attacker's
    112² crop; computed at working scale (either mode) it arrives intact."""
    from runtime_support import highpass_model
    m = load_model(highpass_model(tmp_path / "hp.onnx"))
    img = astronaut().resize((2048, 2048), Image.BICUBIC)
    faces = detector.detect(img)
    clean = _aligned(img, faces)
    made = m.delta(clean.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)[12:-12, 12:-12]
    seen = {}
    # budget=None: this is about where δ lands, not about how much of it a DSSIM budget lets through
    for name, opt in [("face", ProtectOptions(mode="face", budget=None)),
                      ("whole", ProtectOptions(mode="whole", budget=None)),
                      ("native", ProtectOptions(mode="whole", work_size=2048, max_work_pixels=2048**2, budget=None))]:
        r = protect(img, m, detector if name != "native" else None, opt)
        seen[name] = (_aligned(r.image, faces) - clean)[12:-12, 12:-12]
    for name in ("face", "whole"):
        assert np.corrcoef(seen[name].ravel(), made.ravel())[0, 1] > 0.8, name
        assert np.abs(seen[name]).mean() > 0.4 * np.abs(made).mean()
    assert np.abs(seen["native"]).mean() < 0.3 * np.abs(seen["face"]).mean()


def test_no_face_policy(detector, models, tmp_path):
    from typer.testing import CliRunner

    from hyperobf.cli import app

    Image.fromarray(noise_image(200, 300)).save(tmp_path / "noface.png")
    args = ["protect", str(tmp_path / "noface.png"), "-m", str(models["dynamic"]), "-d", str(shared_path(*SCRFD))]
    r = CliRunner().invoke(app, args + ["--no-face", "skip"])
    assert r.exit_code == 0 and "skipped 1" in r.output and "no face found" in r.output
    assert not (tmp_path / "noface_protected.png").exists()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "protected 1" in r.output and "protected as a whole photo" in r.output


def test_twelve_megapixel_photo_both_modes(detector, models, tmp_path):
    src = tmp_path / "big.jpg"
    astronaut().resize((4000, 3000), Image.BILINEAR).save(src, quality=90)
    m = load_model(models["dynamic"])
    for mode in ("face", "whole"):
        out = tmp_path / mode
        [r] = protect_files([src], m, detector=detector, options=ProtectOptions(mode=mode),
                            write=WriteOptions(out_dir=out))
        assert r.status == "protected" and r.mode == mode and r.faces == 1, r.message
        assert Image.open(r.dst).size == (4000, 3000)
        assert {"decode", "detect", "perturb", "apply", "encode"} <= set(r.timings)


def test_single_face_fast_path_matches_float_path(models):
    from hyperobf.device_runtime.detect import Face
    from hyperobf.device_runtime.face import _apply_region, face_region_delta, protect_faces

    m = load_model(models["dynamic"])
    img = Image.fromarray(noise_image(500, 600, seed=11))
    rot = np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]])
    for scale, offset in ((3.0, (200.0, 100.0)), (0.5, (20.0, 30.0)), (2.0, (520.0, -60.0))):  # large, tiny, off the edge
        face = Face((0, 0, 1, 1), 0.9, (template(112) @ rot.T) * scale + np.array(offset))
        fast, _ = protect_faces(img, [face], m)
        delta, box, _ = face_region_delta(img, [face], m)
        ref = _apply_region(img, delta, box)
        a, b = np.asarray(fast).astype(int), np.asarray(ref).astype(int)
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01, scale
        assert (a != np.asarray(img)).any()
