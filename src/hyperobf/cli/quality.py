"""Image-quality numbers for reports (PSP side: uses the training losses' SSIM)."""

from __future__ import annotations

import numpy as np
import torch

from ..train.losses import dssim, psnr


def image_quality(orig: np.ndarray, prot: np.ndarray) -> dict[str, float]:
    """orig, prot: (H, W, 3) uint8 -> DSSIM, SSIM, PSNR and max |δ| in [0, 1] units."""
    a = torch.from_numpy(np.array(orig)).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(np.array(prot)).permute(2, 0, 1)[None].float() / 255
    d = float(dssim(b, a)[0])
    return {"dssim": d, "ssim": 1 - 2 * d, "psnr": float(psnr(b, a)[0]), "max_abs_delta": float((b - a).abs().max())}
