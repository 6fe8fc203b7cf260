"""Protect pixels: compute δ at the MaskNet's working scale and map it back to the photo.

Whole-photo mode: the photo is resized so its shorter side is ``work_size`` (for a face crop,
the face then sits at the 112² scale that attackers train on), δ is computed there,
upsampled bilinearly to the photo's size and added. A perturbation computed at native
resolution on a large photo would be averaged away by the attacker's downscaling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .model import MaskNetModel


def _to_chw(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


def _work_shape(h: int, w: int, model: MaskNetModel, work_size: int | None) -> tuple[int, int]:
    if model.fixed_size is not None:
        return model.fixed_size, model.fixed_size
    s = work_size or model.spec.input_size
    m = model.spec.stride_product
    scale = s / min(h, w)
    return max(m, round(h * scale / m) * m), max(m, round(w * scale / m) * m)


def compute_delta(rgb: np.ndarray, model: MaskNetModel, work_size: int | None = None) -> np.ndarray:
    """δ for an (H, W, 3) uint8 image at working scale, resized back: (H, W, 3) float32."""
    h, w = rgb.shape[:2]
    wh, ww = _work_shape(h, w, model, work_size)
    small = rgb if (h, w) == (wh, ww) else np.asarray(Image.fromarray(rgb).resize((ww, wh), Image.BILINEAR))
    _, delta = model.run(_to_chw(small))
    d = delta[0].transpose(1, 2, 0)  # (wh, ww, 3)
    if (h, w) == (wh, ww):
        return d
    # Bilinear upsampling per channel in float ("F" mode keeps the sign and precision of δ).
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(d[..., c])).resize((w, h), Image.BILINEAR)) for c in range(3)]
    return np.stack(chans, -1)


def protect_array(rgb: np.ndarray, model: MaskNetModel, work_size: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> protected (H, W, 3) uint8 RGB (whole-photo mode)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("expected an (H, W, 3) uint8 RGB array")
    delta = compute_delta(rgb, model, work_size)
    out = rgb.astype(np.float32) / 255.0 + delta
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def protect_image(img: Image.Image, model: MaskNetModel, work_size: int | None = None) -> Image.Image:
    """Protect a Pillow image; any mode in, same size out (alpha kept and re-attached)."""
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA", "PA") else None
    rgb = np.asarray(img.convert("RGB"))
    out = Image.fromarray(protect_array(rgb, model, work_size))
    if alpha is not None:
        out.putalpha(alpha)
    return out
