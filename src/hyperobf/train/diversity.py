"""Diversity of generated MaskNets: parameter variance (J2's Var, Eq. 4.2) and the KL-divergence
measure between nets (thesis §4.1.4, Fig. 5.7).

The thesis reports "the KL divergence of 16 MaskNets generated in one batch" without fixing the
estimator, so two are offered, both per layer and summed over layers:
* ``gaussian``: fit N(μ, σ²) to each net's weights of a layer; closed-form KL between nets;
* ``histogram``: histogram each net's weights of a layer on shared bins (smoothed); discrete KL.
Both compare the *distribution of weight values* of two nets, so they are blind to permutations
of the same values; :func:`param_variance` (across nets, per parameter) is not.

Weights that differ need not give perturbations that differ: a net whose last layer saturates the
clip (δ = ρ_pixel·tanh(·) at ±ρ_pixel) outputs the same sign pattern whatever its weights. The measured
case: the shift recipe's best HyperNet (param_var 0.039) issues nets whose δ on the same faces are
identical to the last bit. :func:`output_similarity` measures what an attacker collecting nets sees.
"""

from __future__ import annotations

import itertools

import torch

from ..models.hypernet import param_variance

__all__ = ["delta_cos", "kl_diversity", "kl_matrix", "largest_group", "output_similarity", "param_variance"]


def _layers(params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [v.detach().flatten(1).double() for k, v in params.items() if k.endswith(".weight")]  # each (n, P_l)


def kl_matrix(params: dict[str, torch.Tensor], mode: str = "gaussian", bins: int = 64, eps: float = 1e-6) -> torch.Tensor:
    """(n, n) matrix of KL(net_i || net_j), summed over conv layers; zero diagonal."""
    total = None
    for w in _layers(params):
        if mode == "gaussian":
            mu = w.mean(1)
            var = w.var(1, unbiased=False).clamp_min(1e-12)
            # KL(N_i || N_j) = ½ [log(σ_j²/σ_i²) + (σ_i² + (μ_i − μ_j)²)/σ_j² − 1]
            kl = 0.5 * (torch.log(var[None, :] / var[:, None])
                        + (var[:, None] + (mu[:, None] - mu[None, :]) ** 2) / var[None, :] - 1.0)
        elif mode == "histogram":
            lo, hi = float(w.min()), float(w.max())
            if hi <= lo:
                hi = lo + 1e-6
            h = torch.stack([torch.histc(row, bins, lo, hi) for row in w])  # (n, bins)
            p = (h + eps) / (h + eps).sum(1, keepdim=True)
            kl = (p[:, None, :] * (p[:, None, :].log() - p[None, :, :].log())).sum(-1)
        else:
            raise ValueError(f"unknown KL mode {mode!r} (gaussian | histogram)")
        total = kl if total is None else total + kl
    assert total is not None, "no conv weights in params"
    return total.fill_diagonal_(0.0)


def kl_diversity(params: dict[str, torch.Tensor], mode: str = "gaussian", bins: int = 64) -> dict:
    """Pairwise KL between the n nets of a batch: {'mean', 'min', 'max', 'n'} over ordered pairs i≠j.

    params: batched MaskNet weights {name: (n, *shape)} as from ``source.sample``/``source.issue``.
    """
    n = next(iter(params.values())).shape[0]
    if n < 2:
        return {"mean": 0.0, "min": 0.0, "max": 0.0, "n": n}
    m = kl_matrix(params, mode, bins)
    off = torch.tensor([float(m[i, j]) for i, j in itertools.permutations(range(n), 2)])
    return {"mean": float(off.mean()), "min": float(off.min()), "max": float(off.max()), "n": n}


def delta_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, h): cos(δ_i(x), δ_j(x)) averaged over the images x, for a (n, b, ...) and b (h, b, ...), the δ of n
    and h nets on the same b images."""
    def unit(d: torch.Tensor) -> torch.Tensor:  # (k, b, D), each image's δ scaled to norm 1
        d = d.detach().flatten(2).double()
        return d / d.norm(dim=2, keepdim=True).clamp_min(1e-12)

    return torch.einsum("ibd,jbd->ijb", unit(a), unit(b)).mean(2)


def output_similarity(deltas: torch.Tensor) -> dict:
    """How alike n nets' perturbations of the same images are. deltas: (n, b, 3, H, W), net i's δ on image j.

    delta_cos: cos(δ_u(x), δ_v(x)) averaged over images and net pairs u < v (1: one perturbation for all;
    ~0: unrelated); identical_pairs: share of pairs whose δ differ by less than half an 8-bit level at
    every pixel of every image (what the 8-bit output cannot tell apart); largest_group: share of the nets that
    output one δ (:func:`largest_group`)."""
    n = deltas.shape[0]
    if n < 2:
        raise ValueError("output_similarity needs at least two nets")
    cos = delta_cos(deltas, deltas)  # (n, n)
    pairs = list(itertools.combinations(range(n), 2))
    same = [bool(((deltas[u] - deltas[v]).abs().max() < 0.5 / 255)) for u, v in pairs]
    return {"delta_cos": float(torch.stack([cos[u, v] for u, v in pairs]).mean()),
            "identical_pairs": sum(same) / len(pairs), "largest_group": largest_group(cos), "nets": n}


SAME_DELTA = 0.99  # δ cos at or above which two nets perturb alike (an InvNet of one undoes the other, measured)


def largest_group(cos: torch.Tensor, at: float = SAME_DELTA) -> float:
    """Share of the n nets that output (nearly) one δ: the largest set of nets within δ cos ``at`` of one of them.

    cos: (n, n) δ cosines (:func:`delta_cos`). A HyperNet can issue a few distinct perturbations, one of them to
    most users (measured: 50–56 of 60 users of the chosen thesis net got one δ, where 10 users showed a mean δ cos
    of only 0.27) — what an attacker with a few accounts holds."""
    return float((cos >= at).sum(1).max()) / cos.shape[0]
