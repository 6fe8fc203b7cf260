"""How alike a HyperNet's per-user nets are, in what they output (issue 13, E3/E4).

The thesis's diversity (J2 = exp(−Var), KL between nets) is measured on weights. An attacker who
collects nets sees their perturbations: if every user's net outputs the same δ, an inversion network
trained on one of them undoes everyone's, whatever the weights' variance (measured: the shift recipe's
best HyperNet, param_var 0.039, issues identical δ to every user). This module runs n issued nets on the
same faces and reports :func:`..train.diversity.output_similarity` beside the weights' variance.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.masknet import apply_shared_input
from ..train.diversity import delta_cos, output_similarity, param_variance
from ..train.losses import saturation


@torch.no_grad()
def issued_similarity(loaded, z: torch.Tensor, x: torch.Tensor) -> dict:
    """Nets issued from latents z (n, z_dim) by a loaded checkpoint, on the same faces x (b, 3, S, S) float [0, 1]:
    delta_cos, identical_pairs, nets (output_similarity), param_var (J2's Var) and saturation (mean (δ/ρ_pixel)² of
    the nets' own δ: 1 = sign patterns; measured, the nets that gave one δ to ≤ 12 % of users sat at 0.33–0.44, those
    that gave one δ to 33–83 % at 0.61–0.97)."""
    src = loaded.source.eval()
    params = src.issue(z)
    delta = apply_shared_input(loaded.spec, params, x) - x[None]  # (n, b, 3, S, S): each net's δ on the same faces
    return {**output_similarity(delta), "param_var": float(param_variance(params)),
            "saturation": float(saturation(delta, loaded.spec.rho_pixel))}


def checkpoint_similarity(checkpoint: str | Path, x: torch.Tensor, n_nets: int = 8, seed: int = 0) -> dict:
    """n_nets fresh users' nets (z from ``seed``) of one checkpoint on faces x (b, 3, S, S) float [0, 1]."""
    from ..train.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    z = torch.randn(n_nets, loaded.source.z_dim, generator=torch.Generator().manual_seed(seed))
    return issued_similarity(loaded, z, x)


@torch.no_grad()
def match_to_held(loaded, z_users: torch.Tensor, z_held: torch.Tensor, x: torch.Tensor) -> list[float]:
    """Per user: the highest δ cos between the user's net and any net the attacker holds, on faces x.

    1.0: the attacker holds the very perturbation that protects this user (its InvNet then learns to undo
    exactly it; measured: the users whose net matched the attacker's were restored, the others not)."""
    src = loaded.source.eval()
    n = len(z_users)
    y = apply_shared_input(loaded.spec, src.issue(torch.cat([z_users, z_held])), x)  # (n + h, b, 3, S, S)
    d = y - x[None]
    return [round(float(c), 4) for c in delta_cos(d[:n], d[n:]).max(1).values]  # (n, h) -> best held net per user
