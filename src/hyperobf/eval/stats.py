"""Small statistics helpers: summaries with mean ± sd, diversity measures between MaskNets' δ
(their parameter variance is :func:`hyperobf.models.hypernet.param_variance`)."""

from __future__ import annotations

import itertools
import math

import torch


def summary(values) -> dict:
    """{mean, sd (sample), var (population, as the thesis's Table 5.2), min, max, n}; NaNs dropped."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"mean": None, "sd": None, "var": None, "min": None, "max": None, "n": 0}
    t = torch.tensor(v, dtype=torch.float64)
    return {"mean": float(t.mean()), "sd": float(t.std()) if len(v) > 1 else 0.0,
            "var": float(t.var(unbiased=False)), "min": float(t.min()), "max": float(t.max()), "n": len(v)}


def fmt(s: dict | float | None, digits: int = 3) -> str:
    if s is None:
        return "–"
    if isinstance(s, (int, float)):
        return f"{s:.{digits}f}"
    if s.get("mean") is None:
        return "–"
    if s.get("n", 1) > 1:
        return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f} (n={s['n']})"
    return f"{s['mean']:.{digits}f}"


@torch.no_grad()
def delta_histogram_kl(deltas: torch.Tensor, rho: float, bins: int = 64, eps: float = 1e-6) -> dict:
    """Diversity of n nets from their perturbations on the same probe images.

    deltas: (n, B, 3, H, W). Each net's δ values form a histogram over [-ρ, ρ] (``bins`` bins,
    ε-smoothed); returns the mean / min / max over pairs of the symmetric KL divergence
    KL(P_i‖P_j) + KL(P_j‖P_i). (The thesis reports KL values without defining the distributions;
    this is our definition, so its absolute values are not comparable to the thesis's.)
    """
    n = deltas.shape[0]
    hists = []
    for i in range(n):
        h = torch.histc(deltas[i].float().flatten().clamp(-rho, rho), bins=bins, min=-rho, max=rho) + eps
        hists.append(h / h.sum())
    vals = []
    for i, j in itertools.combinations(range(n), 2):
        p, q = hists[i], hists[j]
        vals.append(float((p * (p / q).log()).sum() + (q * (q / p).log()).sum()))
    return summary(vals)


@torch.no_grad()
def delta_pair_distance(deltas: torch.Tensor) -> dict:
    """Mean pairwise RMS distance between nets' δ on the same images, relative to the mean RMS δ:
    0 = identical perturbations, ~1.4 = unrelated ones of equal size."""
    n = deltas.shape[0]
    flat = deltas.flatten(1).float()
    rms = flat.pow(2).mean(1).sqrt().mean().clamp_min(1e-12)
    vals = [float((flat[i] - flat[j]).pow(2).mean().sqrt() / rms) for i, j in itertools.combinations(range(n), 2)]
    return summary(vals)

