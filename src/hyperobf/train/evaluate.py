"""Per-epoch evaluation on held-out faces: image quality, diversity, and (feature objective)
how far the embedder's features moved.

The eval nets come from their own fixed generator, so the same users are followed from epoch
to epoch and evaluation never perturbs the training random stream.
"""

from __future__ import annotations

import torch

from ..models.masknet import apply_batched
from .data import FaceSet
from .diversity import kl_diversity, output_similarity, param_variance
from .losses import dssim, psnr


@torch.no_grad()
def evaluate_quality(source, spec, faces: FaceSet, device, gen: torch.Generator, n_nets: int = 4) -> dict:
    """Held-out image quality of freshly sampled nets: mean/max DSSIM, mean PSNR, max |δ|."""
    x = faces.float().to(device)
    params = source.sample(n_nets, gen)
    xs = x.unsqueeze(0).expand(n_nets, *x.shape)
    y = apply_batched(spec, params, xs)
    d = dssim(y.flatten(0, 1), xs.flatten(0, 1))
    return {
        "dssim_mean": float(d.mean()),
        "dssim_max": float(d.max()),
        "psnr_mean": float(psnr(y.flatten(0, 1), xs.flatten(0, 1)).mean()),
        "delta_max": float((y - xs).abs().max()),
        # the nets' perturbations of the same faces (1.0: every user gets one perturbation; see diversity.py)
        **({"delta_cos": output_similarity(y - xs)["delta_cos"]} if n_nets > 1 else {}),
    }


@torch.no_grad()
def evaluate_epoch(source, spec, faces: FaceSet, device, seed: int, n_nets: int, objective=None,
                   clean_emb: torch.Tensor | None = None) -> dict:
    """Quality + diversity (+ feature movement) of ``n_nets`` nets on held-out ``faces``.

    clean_emb: (N, D) embeddings of the clean held-out faces (computed once by the caller).
    """
    gen = torch.Generator().manual_seed(seed)
    state = gen.get_state()
    row = evaluate_quality(source, spec, faces, device, gen, n_nets)
    gen.set_state(state)  # the same nets again for the diversity / feature numbers
    params, keys = source.sample_keyed(n_nets, gen)
    targeted = objective is not None and getattr(objective, "mode", None) == "targeted"
    if targeted:
        slots = objective.anchor_of(keys)  # (n_nets,) each net's target identity
    row["param_var"] = float(param_variance(params))
    row["kl_gaussian"] = kl_diversity(params, "gaussian")["mean"]
    row["kl_hist"] = kl_diversity(params, "histogram")["mean"]
    if objective is not None and hasattr(objective, "embed") and clean_emb is not None:
        x = faces.float().to(device)
        cos, to_clean, to_prot = [], [], []
        labels = faces.labels.to(device)
        for i in range(n_nets):
            one = {k: v[i:i + 1] for k, v in params.items()}
            xp = apply_batched(spec, one, x.unsqueeze(0))[0]  # (N, 3, H, W)
            e = torch.cat([objective.embed(xp[j:j + 64]) for j in range(0, len(xp), 64)])
            cos.append((e * clean_emb).sum(1))
            if targeted:  # cosine to this user's anchor, before and after, on faces it may target
                a = objective.anchors[slots[i]]
                ok = objective.anchor_ok[labels, slots[i]]
                to_clean.append((clean_emb @ a)[ok])
                to_prot.append((e @ a)[ok])
        c = torch.cat(cos)
        row["feat_cos_mean"] = float(c.mean())
        row["feat_cos_min"] = float(c.min())
        if targeted and sum(t.numel() for t in to_prot):
            row["anchor_cos_clean"] = float(torch.cat(to_clean).mean())
            row["anchor_cos_protected"] = float(torch.cat(to_prot).mean())
    return row
