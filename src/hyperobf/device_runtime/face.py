"""Face-region mode: each detected face is aligned to the ArcFace 112² template (similarity
transform from its 5 keypoints), perturbed there by the MaskNet, and δ is mapped back into the
photo with the inverse transform and a feathered mask — the crop an attacker would take sees
the perturbation at the scale it was computed at.

Overlapping faces blend by their mask weights. Only the union of the faces' footprints is
touched; the rest of the photo is left bit-identical. One face (the common case) takes a fast
path: mask·δ is warped back as one RGB image of uint8 codes and added in Pillow (codes.py).
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from . import codes
from .align import face_to_template, feather_mask, footprint, warp
from .budget import Reference
from .detect import Face
from .model import MaskNetModel

FEATHER = 8.0  # pixels (at 112²) over which δ fades out at the crop's edges


def aligned_crops(img: Image.Image, faces: list[Face], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(N, size, size, 3) uint8 aligned crops and the photo->crop matrices (3×3) of the faces."""
    mats = [face_to_template(f.keypoints, size) for f in faces]
    crops = np.stack([np.asarray(warp(img, m, (size, size))) for m in mats])
    return crops, mats


def face_region_delta(img: Image.Image, faces: list[Face], model: MaskNetModel, feather: float = FEATHER
                      ) -> tuple[np.ndarray, tuple[int, int, int, int], dict[str, float]]:
    """δ over the union box of the faces' footprints.

    Returns (δ (bh, bw, 3) float32, box (x0, y0, x1, y1) in photo pixels, timings in seconds).
    """
    size = model.fixed_size or model.spec.input_size
    t0 = time.perf_counter()
    crops, mats = aligned_crops(img, faces, size)
    t1 = time.perf_counter()
    x = (crops.astype(np.float32) * (1.0 / 255.0)).transpose(0, 3, 1, 2)  # (N, 3, S, S)
    deltas = model.delta(x).transpose(0, 2, 3, 1)  # (N, S, S, 3)
    t2 = time.perf_counter()
    boxes = [footprint(m, size, img.size) for m in mats]
    live = [i for i, b in enumerate(boxes) if b is not None]
    if not live:
        return np.zeros((0, 0, 3), np.float32), (0, 0, 0, 0), {"align": t1 - t0, "perturb": t2 - t1, "map_back": 0.0}
    ux0 = min(boxes[i][0] for i in live)  # type: ignore[index]
    uy0 = min(boxes[i][1] for i in live)  # type: ignore[index]
    ux1 = max(boxes[i][2] for i in live)  # type: ignore[index]
    uy1 = max(boxes[i][3] for i in live)  # type: ignore[index]
    acc = np.zeros((uy1 - uy0, ux1 - ux0, 3), np.float32)  # Σ mask·δ over faces
    wsum = np.zeros((uy1 - uy0, ux1 - ux0), np.float32)  # Σ mask
    mask = feather_mask(size, feather)
    for i in live:
        x0, y0, x1, y1 = boxes[i]  # type: ignore[misc]
        inv = np.linalg.inv(mats[i])  # crop -> photo
        win = (x1 - x0, y1 - y0)
        m_img = np.asarray(warp(Image.fromarray(mask, "F"), inv, win, (x0, y0)))
        sl = (slice(y0 - uy0, y1 - uy0), slice(x0 - ux0, x1 - ux0))
        wsum[sl] += m_img
        for c in range(3):
            dm = np.ascontiguousarray(deltas[i, :, :, c] * mask)
            acc[sl + (c,)] += np.asarray(warp(Image.fromarray(dm, "F"), inv, win, (x0, y0)))
    # Where faces overlap the weights can sum above 1: normalise there (a weighted mean of δs).
    acc /= np.maximum(wsum, 1.0)[..., None]
    t3 = time.perf_counter()
    return acc, (ux0, uy0, ux1, uy1), {"align": t1 - t0, "perturb": t2 - t1, "map_back": t3 - t2}


def _apply_region(img: Image.Image, delta: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    """clip(img + δ) over ``box``; δ (y1-y0, x1-x0, 3) float32. Pixels outside the box are unchanged."""
    out = img.copy()
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return out
    region = np.asarray(img.crop(box), np.float32)
    region += delta * 255.0
    np.clip(region, 0.0, 255.0, out=region)
    region += 0.5  # round to nearest (values are non-negative now)
    out.paste(Image.fromarray(region.astype(np.uint8), "RGB"), (x0, y0))
    return out


def protect_faces(img: Image.Image, faces: list[Face], model: MaskNetModel, feather: float = FEATHER
                  ) -> tuple[Image.Image, dict[str, float]]:
    """The RGB photo with every face perturbed at working scale; timings in seconds."""
    size = model.fixed_size or model.spec.input_size
    if len(faces) > 1:
        delta, box, tm = face_region_delta(img, faces, model, feather)
        t = time.perf_counter()
        out = _apply_region(img, delta, box)
        tm["apply"] = time.perf_counter() - t
        return out, tm
    t0 = time.perf_counter()
    crops, [m] = aligned_crops(img, faces, size)
    t1 = time.perf_counter()
    d = model.delta((crops.astype(np.float32) * (1.0 / 255.0)).transpose(0, 3, 1, 2))[0].transpose(1, 2, 0)
    t2 = time.perf_counter()
    tm = {"align": t1 - t0, "perturb": t2 - t1}
    box = footprint(m, size, img.size)
    if box is None:
        return img.copy(), {**tm, "map_back": 0.0, "apply": 0.0}
    dm = d * feather_mask(size, feather)[..., None]  # (S, S, 3)
    k = codes.steps_for(dm)
    if k < codes.MIN_STEPS:  # large ρ: float path
        delta, box, tm2 = face_region_delta(img, faces, model, feather)
        t = time.perf_counter()
        out = _apply_region(img, delta, box)
        return out, {**tm2, "apply": time.perf_counter() - t}
    x0, y0, x1, y1 = box
    back = warp(codes.encode(dm, k), np.linalg.inv(m), (x1 - x0, y1 - y0), (x0, y0), fill=(codes.ZERO,) * 3)
    t3 = time.perf_counter()
    out = img.copy()
    out.paste(codes.add(img.crop(box), back, k), (x0, y0))
    t4 = time.perf_counter()
    return out, {**tm, "map_back": t3 - t2, "apply": t4 - t3}


def face_dssim(before: Image.Image, after: Image.Image, faces: list[Face], size: int) -> list[float]:
    """DSSIM of each face as written: the aligned size² crop of ``after`` against that of ``before``
    (what an attacker's aligner takes from the photo; budget.py's SSIM). One value per face."""
    if not faces:
        return []
    x, mats = aligned_crops(before, faces, size)  # (N, S, S, 3) uint8
    y = np.stack([np.asarray(warp(after, m, (size, size))) for m in mats])
    chw = lambda a: a.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(1.0 / 255.0)  # noqa: E731
    return [float(v) for v in Reference(chw(x)).dssim(chw(y))]
