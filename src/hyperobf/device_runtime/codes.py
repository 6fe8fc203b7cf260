"""δ as uint8 codes, so full-resolution resampling and adding run in Pillow's C code.

A perturbation δ (in [0, 1] units, |δ| ≤ ρ_pixel) is stored as ``128 + round(δ·255·k)`` with
k steps per grey level (k chosen from max |δ|: 16 for ρ = 0.03). Bilinear resampling of codes is
resampling of δ; a lookup table then turns codes into ``128 + round(δ·255)``, and
``ImageChops.add(x, ·, offset=-128)`` computes clip(x + round(δ·255)) in one saturating pass.
Because the photo is integer, round(x + δ) = x + round(δ): this equals the float path except
where the 1/k quantisation moves δ across a rounding boundary (off by one grey level there).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops

ZERO = 128  # the code of δ = 0
MIN_STEPS = 4  # below 4 steps per grey level (ρ_pixel > 0.12) callers use float arithmetic


def steps_for(delta: np.ndarray) -> int:
    """Steps per grey level that keep every code within uint8 (at most 64)."""
    peak = float(np.abs(delta).max(initial=0.0)) * 255.0
    return 64 if peak < 1e-9 else min(64, int(127.0 / peak))


def encode(delta: np.ndarray, k: int) -> Image.Image:
    """δ (h, w, 3) float32 -> RGB image of codes."""
    q = np.clip(np.floor(delta * (255.0 * k) + 0.5) + ZERO, 0, 255).astype(np.uint8)
    return Image.fromarray(q, "RGB")


def add(img: Image.Image, codes: Image.Image, k: int) -> Image.Image:
    """clip(img + δ) for an RGB image and same-size codes of δ with k steps per grey level."""
    levels = np.floor((np.arange(256) - ZERO) / k + 0.5).astype(int)  # code -> δ in grey levels
    shifted = codes.point(list(np.clip(levels + ZERO, 0, 255)) * 3)  # 128 + round(δ·255)
    return ImageChops.add(img, shifted, scale=1.0, offset=-ZERO)
