"""Whole-photo mode: δ computed on a downscaled copy of the photo, upsampled and added.

Attackers crop faces and resize them to ~112² before training, which would average away a
perturbation computed at native resolution on a large photo. So the photo is resized by a
*working scale* chosen to put faces near the MaskNet's working size:

* with detected faces: the median scale that maps their keypoints onto the 112² ArcFace
  template (each face then sits in the working image exactly as in an aligned crop);
* without: the shorter side becomes ``work_size`` (default 192 — a portrait or selfie, whose
  aligned face crop spans ~60% of the shorter side).

The scale is never above 1 (no upsampling of small photos) and the working image is capped at
``max_work_pixels`` (the net's 256-channel intermediate is 1 GiB at 1024²: never run it on a
full-resolution photo).

Fixed-shape models (1×3×S×S) are run on S×S tiles of the working image that overlap by
2·``margin`` pixels; each tile contributes only its centre, so — for nets whose receptive
field fits in the margin (structures A–C: 5 px) — the result equals one pass over the image,
apart from how the outermost pixels are padded.

With a DSSIM budget, one scale of the working image's δ keeps every S×S window (a face at working
scale) within ρ: budget.py's ``fit_budget_windows``, the per-face rule without aligned faces.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from . import codes
from .budget import Reference, fit_budget_windows
from .model import MaskNetModel

DEFAULT_WORK_SIZE = 192
MAX_WORK_PIXELS = 1024 * 1024
TILE_MARGIN = 16


def working_shape(h: int, w: int, scale: float, max_pixels: int = MAX_WORK_PIXELS) -> tuple[int, int]:
    """(height, width) of the working image: scale capped at 1 and at ``max_pixels``."""
    s = min(scale, 1.0, (max_pixels / (h * w)) ** 0.5)
    return max(1, round(h * s)), max(1, round(w * s))


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, 3) -> (h, w, 3) by edge padding at the bottom/right."""
    return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)), mode="edge")


def _chw(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return (rgb.astype(np.float32) * (1.0 / 255.0)).transpose(2, 0, 1)[None]


def _tile_starts(length: int, tile: int, margin: int) -> list[int]:
    step = max(1, tile - 2 * margin)
    starts = list(range(0, max(length - tile, 0) + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def delta_dynamic(rgb: np.ndarray, model: MaskNetModel) -> np.ndarray:
    """δ of a working image (H, W, 3) uint8 with a dynamic-shape model: (H, W, 3) float32."""
    h, w = rgb.shape[:2]
    m = model.spec.stride_product
    ph, pw = -(-h // m) * m, -(-w // m) * m  # strided nets need multiples of the total stride
    d = model.delta(_chw(_pad_to(rgb, ph, pw)))[0]
    return d.transpose(1, 2, 0)[:h, :w]


def delta_tiled(rgb: np.ndarray, model: MaskNetModel, margin: int = TILE_MARGIN) -> np.ndarray:
    """δ of a working image (H, W, 3) uint8 with a fixed S×S model, stitched from tiles."""
    t = model.fixed_size or model.spec.input_size
    margin = min(margin, (t - 1) // 4)
    h, w = rgb.shape[:2]
    x = _pad_to(rgb, max(h, t), max(w, t))
    hh, ww = x.shape[:2]
    out = np.zeros((hh, ww, 3), np.float32)
    ys, xs = _tile_starts(hh, t, margin), _tile_starts(ww, t, margin)
    for y in ys:
        for xo in xs:
            d = model.delta(_chw(x[y:y + t, xo:xo + t]))[0].transpose(1, 2, 0)  # (t, t, 3)
            # Keep the tile's centre; at the image border keep up to the edge.
            a0, a1 = (margin if y > 0 else 0), (t - margin if y + t < hh else t)
            b0, b1 = (margin if xo > 0 else 0), (t - margin if xo + t < ww else t)
            out[y + a0:y + a1, xo + b0:xo + b1] = d[a0:a1, b0:b1]
    return out[:h, :w]


def upsample_delta(delta: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of δ (h', w', 3) float32 to (h, w, 3), in float ("F" mode keeps its sign)."""
    if delta.shape[:2] == (h, w):
        return delta
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(delta[..., c]), "F").resize((w, h), Image.BILINEAR))
             for c in range(3)]
    return np.stack(chans, -1)


def add_upsampled(img: Image.Image, delta: np.ndarray) -> Image.Image:
    """clip(img + upsample(δ)) for an RGB photo and a working-scale δ (h', w', 3) float32.

    Full-resolution work stays in Pillow's C code, no float copy of the photo (see codes.py);
    off by at most one grey level from the float path, where δ's quantisation crosses a rounding edge.
    """
    w, h = img.size
    k = codes.steps_for(delta)
    if k < codes.MIN_STEPS:  # δ too large for fine uint8 steps: use the float path
        return Image.fromarray(_add_float(np.asarray(img), upsample_delta(delta, h, w)), "RGB")
    big = codes.encode(delta, k)
    if big.size != (w, h):
        big = big.resize((w, h), Image.BILINEAR)
    return codes.add(img, big, k)


def _add_float(rgb: np.ndarray, delta: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float32)
    out += delta * 255.0
    np.clip(out, 0.0, 255.0, out=out)
    out += 0.5
    return out.astype(np.uint8)


def whole_photo(img: Image.Image, model: MaskNetModel, scale: float, max_pixels: int = MAX_WORK_PIXELS,
                budget: tuple[float, float] | None = None
                ) -> tuple[Image.Image, tuple[int, int], dict[str, float], tuple[float, float | None, float]]:
    """Protect a whole RGB photo with δ computed at working ``scale``: (protected RGB image, working (h, w),
    timings in seconds for resize / perturb / budget / upsample+add / measure,
    (scale the budget kept, worst-window DSSIM of the 8-bit working image (None without a budget), written)).

    ``budget`` (ρ, ρ_pixel): one scale for the working image's δ so that every S×S window of the 8-bit
    working image has DSSIM ≤ ρ (budget.fit_budget_windows). "written" is measured on the written
    pixels: the protected photo brought back to working scale, largest S×S window.
    """
    w, h = img.size
    wh, ww = working_shape(h, w, scale, max_pixels)
    t0 = time.perf_counter()
    small = img if (wh, ww) == (h, w) else img.resize((ww, wh), Image.BILINEAR, reducing_gap=3.0)
    rgb = np.asarray(small)
    t1 = time.perf_counter()
    d = delta_tiled(rgb, model) if model.fixed_size else delta_dynamic(rgb, model)
    t2 = time.perf_counter()
    window = model.fixed_size or model.spec.input_size
    s, at_work = 1.0, None
    if budget is not None:
        x = _chw(rgb)  # (1, 3, h, w) on the 8-bit grid
        fitted, sc, dw = fit_budget_windows(x, d.transpose(2, 0, 1)[None], budget[0], budget[1], window,
                                            s_max=float(getattr(model, "budget_fill", 1.0)))
        d, s, at_work = (fitted - x)[0].transpose(1, 2, 0), float(sc[0]), float(dw[0])  # d: (h, w, 3)
    t3 = time.perf_counter()
    out = add_upsampled(img, d)
    t4 = time.perf_counter()
    back = out if (wh, ww) == (h, w) else out.resize((ww, wh), Image.BILINEAR, reducing_gap=3.0)
    measured = float(Reference(_chw(rgb)).dssim_windows_max(_chw(np.asarray(back)), window)[0])
    t5 = time.perf_counter()
    tm = {"resize": t1 - t0, "perturb": t2 - t1, "budget": t3 - t2, "apply": t4 - t3, "measure": t5 - t4}
    if budget is None:
        del tm["budget"]
    return out, (wh, ww), tm, (s, at_work, measured)
