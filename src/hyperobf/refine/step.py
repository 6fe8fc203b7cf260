"""One signed-gradient refinement step and the batched torch reference (:func:`refine_torch`).

Math (identical in the exported ONNX step, which is traced from :func:`refine_step`):

    x' = clamp(x + δ, 0, 1)                       the protected face, (N, 3, H, W)
    e  = Φ(x') / ‖Φ(x')‖,  e0 = Φ(x) / ‖Φ(x)‖      unit embeddings, (N, D)
    g  = ∇_{x'} ‖e − e0‖²                           gradient at the protected image, (N, 3, H, W)
    δ ← clip(δ + η·sign(g), −ρ_pixel, ρ_pixel);  δ ← clamp(x + δ, 0, 1) − x

i.e. gradient descent on loss = −‖e − e0‖ (untargeted: push away from one's own embedding).
sign(∇‖e − e0‖) = sign(∇‖e − e0‖²) wherever e ≠ e0 (the two differ by the positive factor
1 / (2‖e − e0‖)), so the square is used: no square root, no ε. The gradient is taken at the
clamped image x' rather than through the clamp (as PGD does): a pixel sitting at 0 or 1 still sees
its gradient and can move back inside. At δ = 0 the gradient is exactly zero (e = e0 is the
distance's minimum): refinement needs a non-zero start (the MaskNet's δ₀).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def refine_step(embedder: nn.Module, x: torch.Tensor, delta: torch.Tensor, e0: torch.Tensor,
                step: torch.Tensor, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step. x, delta (N, 3, H, W); e0 (N, D) unit; step, rho 0-d tensors.

    Returns (next δ (N, 3, H, W), ‖e − e0‖ (N,) at the *incoming* δ, sign(g) (N, 3, H, W)). This very
    function is what :mod:`.export` traces into the device's step graph.
    """
    with torch.enable_grad():
        xp = (x + delta).clamp(0.0, 1.0).detach().requires_grad_(True)  # (N, 3, H, W)
        e = F.normalize(embedder(xp), dim=1)  # (N, D)
        sq = (e - e0).pow(2).sum(1)  # (N,) squared chord distance
        (g,) = torch.autograd.grad(sq.sum(), xp)  # per-sample gradients: samples are independent
    sign = g.sign()  # (N, 3, H, W) in {-1, 0, 1}
    nxt = torch.clamp(delta + step * sign, -rho, rho)
    nxt = (x + nxt).clamp(0.0, 1.0) - x  # keep x + δ a valid image
    return nxt.detach(), sq.detach().sqrt(), sign


def refine_torch(embedder: nn.Module, x: torch.Tensor, delta0: torch.Tensor, k: int, step: float,
                 rho_pixel: float) -> torch.Tensor:
    """K refinement steps from δ₀, batched: x, delta0 (N, 3, H, W) in the embedder's working size
    (112² faces) -> δ_K (N, 3, H, W).

    ``embedder`` maps x in [0, 1] to embeddings (N, D) (normalised here either way). Only the per-pixel
    clip ρ_pixel is enforced; the DSSIM budget is the caller's (scale δ_K down afterwards, as the
    evaluation does for every method). k = 0 returns δ₀ unchanged (a copy).
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    if x.shape != delta0.shape or x.dim() != 4:
        raise ValueError(f"x and delta0 must be (N, 3, H, W) of one shape, got {tuple(x.shape)} and {tuple(delta0.shape)}")
    delta = delta0.detach().clone()
    if k == 0:
        return delta
    was_training = embedder.training
    embedder.eval()
    try:
        with torch.no_grad():
            e0 = F.normalize(embedder(x), dim=1)  # (N, D)
        s = torch.tensor(float(step), dtype=x.dtype, device=x.device)
        r = torch.tensor(float(rho_pixel), dtype=x.dtype, device=x.device)
        for _ in range(k):
            delta = refine_step(embedder, x, delta, e0, s, r)[0]
    finally:
        embedder.train(was_training)
    return delta
