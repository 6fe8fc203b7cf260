"""Loss terms: imperceptibility (DSSIM from kornia's SSIM, PSNR), diversity J2, total J (Eq. 4.4), and the
optional per-user signature term on the perturbations themselves."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.metrics import ssim as kornia_ssim


def dssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image DSSIM = (1 − SSIM) / 2 for images in [0, 1]; x, y: (B, 3, H, W) -> (B,)."""
    s = kornia_ssim(x, y, window_size=11, max_val=1.0)  # (B, 3, H, W) SSIM map
    return ((1.0 - s.flatten(1).mean(1)) / 2.0)


def scaled(x: torch.Tensor, delta: torch.Tensor, s: torch.Tensor, rho_pixel: float,
           snap=lambda y: y.clamp(0.0, 1.0)) -> torch.Tensor:
    """snap(x + clip(δ·s, ±ρ_pixel)): x, δ (N, 3, H, W), s (N,); the clip after the scale (a fill's s > 1)."""
    return snap(x + (delta * s.view(-1, 1, 1, 1)).clamp(-rho_pixel, rho_pixel))


@torch.no_grad()
def budget_scale(x: torch.Tensor, delta: torch.Tensor, rho: float, rho_pixel: float, s_max: float = 1.0,
                 iters: int = 12, snap=lambda y: y.clamp(0.0, 1.0)) -> torch.Tensor:
    """The budget rule's scale: x, δ (N, 3, H, W) -> s (N,), the largest s ∈ [0, s_max] (bisection, ``iters``
    halvings) with DSSIM(snap(x + clip(s·δ, ±ρ_pixel)), x) ≤ ρ; s = 0 (the original) always fits.

    One rule for both sides: the evaluation's :func:`hyperobf.eval.limit.fit_budget` (``snap`` = 8-bit rounding)
    and training with ``budget_fill`` (``snap`` = clamp to [0, 1]; s_max > 1 scales a small δ *up* to ρ).
    """
    delta = delta.clamp(-rho_pixel, rho_pixel)
    n = len(x)

    def fits(s: torch.Tensor) -> torch.Tensor:  # s (N,)
        return dssim(scaled(x, delta, s, rho_pixel, snap), x) <= rho

    lo = torch.zeros(n, device=x.device)
    hi = torch.full((n,), float(s_max), device=x.device)
    lo[fits(hi)] = s_max
    for _ in range(iters):
        todo = lo < hi - 1e-6
        if not bool(todo.any()):
            break
        mid = (lo + hi) / 2
        ok = fits(mid)
        lo = torch.where(ok & todo, mid, lo)
        hi = torch.where(~ok & todo, mid, hi)
    return lo


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]; (B,)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def budget_penalty(d: torch.Tensor, rho: float) -> torch.Tensor:
    """max(DSSIM − ρ, 0) averaged over images (Eq. 2.5's dissimilarity term)."""
    return torch.relu(d - rho).mean()


def saturation(delta: torch.Tensor, rho_pixel: float) -> torch.Tensor:
    """mean((δ/ρ_pixel)²) = mean tanh²(pre-activation) of δ = ρ_pixel·tanh(·): 1 when every pixel sits at ±ρ_pixel
    (a sign pattern), ~0 in the linear regime. delta: any shape, the net's own δ (before a fill)."""
    return (delta / rho_pixel).pow(2).mean()


def diversity_loss(param_var: torch.Tensor) -> torch.Tensor:
    """J2 = exp(−Var) of the batch's generated conv parameters (Eq. 4.2)."""
    return torch.exp(-param_var)


def total_loss(j1: torch.Tensor, j2: torch.Tensor, lambda_div: float, alpha: float) -> torch.Tensor:
    """J = λ_div · max(J1 − α, 0) + J2 (Eq. 4.4)."""
    return lambda_div * torch.relu(j1 - alpha) + j2


def signature_terms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How much each net's δ is its user's own signature. delta: (n, b, 3, H, W), net i's δ on b faces of
    its pseudo-user.

    Returns (within, between): within = mean cos(δ_i(x), δ_i(x')) over the two faces x ≠ x' of one user (1: the
    user's photos carry one consistent pattern, the class-wise noise of "unlearnable examples"); between = mean
    cos²(δ_i(x), δ_j(x')) over two users i ≠ j (0: unrelated patterns; what J2's weight variance does not see:
    nets with different weights can output the same δ, :mod:`.diversity`). Cheap: one (n·b)² Gram matrix of the
    δ already computed, no extra MaskNet pass.
    """
    n, b = delta.shape[:2]
    u = F.normalize(delta.flatten(2).float(), dim=2).flatten(0, 1)  # (n·b, D), unit norm
    g = u @ u.T  # (n·b, n·b) cosines
    user = torch.arange(n, device=delta.device).repeat_interleave(b)
    same = user[:, None] == user[None, :]
    eye = torch.eye(n * b, dtype=torch.bool, device=delta.device)
    within = g[same & ~eye].mean() if b > 1 else g.new_ones(())
    between = g[~same].pow(2).mean() if n > 1 else g.new_zeros(())
    return within, between


def signature_loss(within: torch.Tensor, between: torch.Tensor) -> torch.Tensor:
    """(1 − within) + between: a consistent pattern per user, unrelated across users (0 at best, 2 at worst)."""
    return (1.0 - within) + between
