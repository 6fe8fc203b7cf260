"""What the budget itself allows: per-image optimisation of δ, and the one budget rule for everyone.

Evaluation only (issue 12): the per-image limit needs the photo on the PSP's side and hundreds of
gradient steps through an embedder, so it never runs in the PSP's or the user's path. It is the
yardstick the per-user nets are measured against, under exactly the same budget:

**The budget rule** (:func:`fit_budget`, applied to every protector — nets, limit, hybrid): the
protected face is the 8-bit 112² image; its DSSIM to the original must be ≤ ρ, and |δ| ≤ ρ_pixel.
A protected image over budget has its δ scaled down (bisection on the scale, rounding to 8 bits
inside the test) until it fits, so a protector is never credited with a perturbation it could not
ship.

**The limit** (:func:`per_image`): Fawkes's method — Adam on δ = ρ_pixel·tanh(w) per photo against a
frozen embedder Φ with J = J1 + λ·max(DSSIM − ρ, 0), then the budget rule. J1 is
* ``untargeted``: 1 − ‖Φ(x ⊕ δ) − Φ(x)‖/2 (push each photo away from itself), or
* ``targeted``: 1 − cos(Φ(x ⊕ δ), a_u) toward the user's target centroid a_u (a far identity).
**The stopping rule** (:func:`limit_until_stable`): double the steps, with a fresh random restart,
keep per photo the better of the runs, until identification moves by less than ``tol``.

The hybrid (a net's δ₀, then K on-device signed-gradient steps) uses the device's own step,
:func:`hyperobf.refine.step.refine_torch`, under the same budget rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..train.losses import budget_scale, dssim, scaled


def quantise(x: torch.Tensor) -> torch.Tensor:
    """As a saved 8-bit image: float [0, 1] -> float on the 1/255 grid."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


@torch.no_grad()
def fit_budget(x: torch.Tensor, delta: torch.Tensor, rho: float, rho_pixel: float, iters: int = 12,
               s_max: float = 1.0) -> torch.Tensor:
    """The budget rule: x, δ (N, 3, H, W) -> 8-bit protected images with DSSIM ≤ ρ and |δ| ≤ ρ_pixel.

    Each image keeps the largest scale s ∈ [0, s_max] of its δ (bisection, ``iters`` halvings) whose
    rounded result is within budget; s = 0 (the original) always is. ``s_max`` > 1 also scales a δ that
    uses less than ρ *up*, the clip applied after scaling: a net trained with a fill (its ``ship_fill``, as the
    device applies it) or the evaluation-only "filled" rows.
    """
    s = budget_scale(x, delta, rho, rho_pixel, s_max, iters, snap=quantise)
    return scaled(x, delta.clamp(-rho_pixel, rho_pixel), s, rho_pixel, quantise)


@dataclass(frozen=True)
class LimitConfig:
    rho: float  # DSSIM budget
    rho_pixel: float = 0.05  # per-pixel clip (the nets' clip)
    mode: str = "untargeted"  # untargeted | targeted
    steps: int = 100
    lr: float = 0.05  # Adam on w, δ = ρ_pixel·tanh(w): ~10 steps to reach a 0.007 budget
    lambda_dssim: float = 300.0  # penalty weight on max(DSSIM − ρ, 0) (the nets' phase-1 weight)
    batch: int = 64  # photos optimised at once (independent: the batch only sets speed)


def _j1(phi: Callable, x_prot: torch.Tensor, e_ref: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-image J1 (N,): lower = better protection (see module doc)."""
    e = phi(x_prot)
    if mode == "untargeted":  # chord distance: a usable gradient at δ = 0 (cos has none)
        return 1.0 - (e - e_ref).pow(2).sum(1).add(1e-12).sqrt() / 2.0
    return 1.0 - (e * e_ref).sum(1)


def per_image(phi: Callable, x: torch.Tensor, target: torch.Tensor | None, cfg: LimitConfig,
              seed: int = 0, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Optimise δ for each photo: x (N, 3, H, W) in [0, 1]; ``target`` (N, D) unit target embeddings for
    the targeted mode. Returns the 8-bit protected images (N, 3, H, W) within the budget rule."""
    if cfg.mode not in ("untargeted", "targeted"):
        raise ValueError(f"unknown limit mode {cfg.mode!r} (untargeted | targeted)")
    if cfg.mode == "targeted" and target is None:
        raise ValueError("the targeted limit needs a target embedding per photo")
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(x)
    for s in range(0, len(x), cfg.batch):
        xb = x[s:s + cfg.batch]
        with torch.no_grad():
            ref = phi(xb) if cfg.mode == "untargeted" else target[s:s + cfg.batch]
        # a small random start (a restart differs from the last run), far inside the budget
        w = (torch.randn(xb.shape, generator=g) * 1e-3).to(xb.device).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.lr)
        for step in range(cfg.steps):
            delta = cfg.rho_pixel * torch.tanh(w)
            xp = (xb + delta).clamp(0, 1)
            loss = (_j1(phi, xp, ref, cfg.mode) + cfg.lambda_dssim * torch.relu(dssim(xp, xb) - cfg.rho)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress:
                progress(len(xb))
        with torch.no_grad():
            out[s:s + cfg.batch] = fit_budget(xb, cfg.rho_pixel * torch.tanh(w), cfg.rho, cfg.rho_pixel)
    return out


@torch.no_grad()
def score(phi: Callable, x: torch.Tensor, x_prot: torch.Tensor, target: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Per-image J1 of finished protected images (lower = better): picks the better of two runs."""
    ref = phi(x) if mode == "untargeted" else target
    return _j1(phi, x_prot, ref, mode)


def limit_until_stable(phi: Callable, x: torch.Tensor, target: torch.Tensor | None, cfg: LimitConfig,
                       identified: Callable[[torch.Tensor], float], tol: float = 0.02, max_steps: int = 800,
                       seed: int = 0, log: Callable[[str], None] = print) -> tuple[torch.Tensor, list[dict]]:
    """The stopping rule: run ``cfg.steps``, then twice as many from a fresh restart (keeping per photo
    the better run), … until ``identified(protected)`` moves by less than ``tol`` or ``max_steps`` is
    reached. Returns (protected images, history [{steps, identified, converged}])."""
    best = per_image(phi, x, target, cfg, seed)
    best_score = score(phi, x, best, target, cfg.mode)
    history = [{"steps": cfg.steps, "identified": identified(best)}]
    log(f"      limit {cfg.mode} rho {cfg.rho}: {cfg.steps} steps -> identified {history[-1]['identified']:.3f}")
    steps, k = cfg.steps, 1
    while steps * 2 <= max_steps:
        steps *= 2
        run = per_image(phi, x, target, LimitConfig(**{**cfg.__dict__, "steps": steps}), seed + 1000 * k)
        s = score(phi, x, run, target, cfg.mode)
        better = s < best_score
        best = torch.where(better.view(-1, 1, 1, 1), run, best)
        best_score = torch.minimum(s, best_score)
        history.append({"steps": steps, "identified": identified(best), "restart": k})
        log(f"      limit {cfg.mode} rho {cfg.rho}: + restart with {steps} steps -> identified "
            f"{history[-1]['identified']:.3f}")
        k += 1
        if abs(history[-1]["identified"] - history[-2]["identified"]) < tol:
            break
    history[-1]["converged"] = len(history) > 1 and abs(history[-1]["identified"] - history[-2]["identified"]) < tol
    return best, history


def far_targets(centroids: torch.Tensor, own: torch.Tensor, seed: int) -> torch.Tensor:
    """Each user's target identity, as Fawkes chooses it: a random one from the farther half of the
    candidate centroids (K, D) as seen from the user's own centroid own (U, D) -> indices (U,)."""
    sim = own @ centroids.T  # (U, K)
    g = torch.Generator().manual_seed(seed)
    out = []
    for u in range(len(own)):
        order = sim[u].argsort()  # least similar first
        far = order[: max(1, math.ceil(len(order) / 2))]
        out.append(int(far[torch.randint(len(far), (1,), generator=g)]))
    return torch.tensor(out, dtype=torch.int64)
