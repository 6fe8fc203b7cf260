"""Loss terms: imperceptibility (DSSIM from kornia's SSIM, PSNR), diversity J2, total J (Eq. 4.4)."""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim


def dssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image DSSIM = (1 − SSIM) / 2 for images in [0, 1]; x, y: (B, 3, H, W) -> (B,)."""
    s = kornia_ssim(x, y, window_size=11, max_val=1.0)  # (B, 3, H, W) SSIM map
    return ((1.0 - s.flatten(1).mean(1)) / 2.0)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]; (B,)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def budget_penalty(d: torch.Tensor, rho: float) -> torch.Tensor:
    """max(DSSIM − ρ, 0) averaged over images (Eq. 2.5's dissimilarity term)."""
    return torch.relu(d - rho).mean()


def diversity_loss(param_var: torch.Tensor) -> torch.Tensor:
    """J2 = exp(−Var) of the batch's generated conv parameters (Eq. 4.2)."""
    return torch.exp(-param_var)


def total_loss(j1: torch.Tensor, j2: torch.Tensor, lambda_div: float, alpha: float) -> torch.Tensor:
    """J = λ_div · max(J1 − α, 0) + J2 (Eq. 4.4)."""
    return lambda_div * torch.relu(j1 - alpha) + j2
