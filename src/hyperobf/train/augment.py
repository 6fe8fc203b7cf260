"""Upload robustness: differentiable re-compression applied between the MaskNet and the loss.

Social networks re-encode uploads as JPEG and often downscale them; training through a
differentiable JPEG codec (kornia) and a down/up resize makes perturbations that survive both.
All randomness comes from the training generator, so runs stay seeded and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable

from .config import TrainConfig


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def differentiable_jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1], quality (B,) in [1, 100] -> JPEG-coded x, differentiable in x."""
    return jpeg_codec_differentiable(x, quality.to(x.device, torch.float32)).clamp(0.0, 1.0)


def resize_down_up(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Downscale by ``scale`` (antialiased bilinear) and back to the original size: (B,3,H,W) -> same."""
    h, w = x.shape[-2:]
    small = (max(8, round(h * scale)), max(8, round(w * scale)))
    y = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def upload_augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Randomly resize (one scale per call, on a random subset) then JPEG-code (per-image quality).

    x: (B, 3, H, W) protected faces in [0, 1]. Each image is resized with probability
    ``resize_prob`` (scale uniform in ``resize_range``) and JPEG-coded with probability
    ``jpeg_prob`` (quality uniform in ``jpeg_quality``); untouched images pass through as-is.
    """
    b = x.shape[0]
    dev = x.device
    if cfg.resize_prob > 0:
        pick = (torch.rand(b, generator=gen) < cfg.resize_prob).to(dev)
        scale = float(_uniform(*cfg.resize_range, 1, gen))
        if bool(pick.any()):
            x = torch.where(pick[:, None, None, None], resize_down_up(x, scale), x)
    if cfg.jpeg_prob > 0:
        pick = (torch.rand(b, generator=gen) < cfg.jpeg_prob).to(dev)
        quality = _uniform(float(cfg.jpeg_quality[0]), float(cfg.jpeg_quality[1]), b, gen)
        if bool(pick.any()):
            idx = pick.nonzero().squeeze(1)
            coded = differentiable_jpeg(x[idx], quality.to(dev)[idx])
            x = x.index_put((idx,), coded)  # out-of-place: gradients reach both branches
    return x
