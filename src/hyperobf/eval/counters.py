"""Counters: what an attacker can do to protected photos before recognising them (one table).

Each entry maps (B, 3, H, W) float [0, 1] -> the same shape, 8-bit grid where the transform itself
quantises (JPEG). Used by E7 (uploads through JPEG/resizing) and by the frontier's ``--counters``
(the protected uploads pass through the counter before the attacker embeds them).
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip (B, 3, H, W) [0, 1] through JPEG at the given quality (Pillow, 4:2:0 as uploads are)."""
    out = []
    for img in x:
        arr = (img.permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255.0


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Downscale by factor (area) and back up (bilinear), as a platform's thumbnailing does."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(round(h * factor), round(w * factor)), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def gray(x: torch.Tensor) -> torch.Tensor:
    """Feature squeezing by colour depth: ITU-R 601 luma replicated to 3 channels (embedders take RGB)."""
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # (B, 1, H, W)
    return y.expand(-1, 3, -1, -1).contiguous()


def blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur (kernel 2·ceil(2σ)+1, reflect padding): removes high-frequency δ."""
    r = int(np.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# name -> transform; adding a counter is one entry. The names are the frontier's attacker suffixes
# (``mobilefacenet/query+jpeg75``).
COUNTERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "jpeg75": lambda x: jpeg(x, 75),
    "resize50": lambda x: resize(x, 0.5),
    "gray+jpeg10": lambda x: jpeg(gray(x), 10),  # feature squeezing: colour depth, then heavy JPEG
    "blur": blur,
}


def get_counter(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in COUNTERS:
        raise ValueError(f"unknown counter {name!r} (available: {', '.join(COUNTERS)})")
    return COUNTERS[name]
