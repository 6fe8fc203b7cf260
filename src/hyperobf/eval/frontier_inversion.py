"""Inversion attacks on the frontier (issue 13's E3/E4 for a trained checkpoint's nets).

The attacker opens accounts of its own, so it holds ``n`` nets of the same HyperNet (z's no target
user has), runs them under the device's budget rule on its public faces, trains an InvNet
(protected -> original, :mod:`.invnet`) and restores each target's protected uploads before its
recognisers see them. ``n`` = 1 is the thesis's mix-inversion cell (E3: an InvNet of another
user's net), ``n`` = 1, 2, 3 its held-nets attack (E4). For the hybrid (net, then K device steps
against the bundled embedder) the attacker's copy of the tool runs the same K steps after its held
nets. The restored uploads go through every attacker of the frontier, so each row sits beside the
net's own row at the same ρ.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import torch

from .alike import match_to_held
from .invnet import Refine, restore, train_invnet
from .limit import quantise


def _held_latents(z_dim: int, n: int, seed: int, draw: int = 0) -> torch.Tensor:
    """(n, z_dim): the attacker's own accounts' z in its ``draw``-th try (the targets' come from
    Frontier.user_latents); draw 0 is what every earlier run used."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed + 977 + 7919 * draw))


@torch.no_grad()
def _held_params(src, n: int, seed: int, draw: int = 0) -> dict[str, torch.Tensor]:
    """n nets' batched weights for the attacker's own accounts, issued by the HyperNet ``src``."""
    return {k: v.detach() for k, v in src.issue(_held_latents(src.z_dim, n, seed, draw)).items()}


def inversion_rows(fr, checkpoint: str, label: str, rho: float, protected: list[torch.Tensor],
                   counts: tuple[int, ...], refine: Refine | None = None
                   ) -> Iterator[tuple[str, list[torch.Tensor], float, dict]]:
    """(protector, restored uploads per user, seconds, extra) per held count.

    ``label``: the protector's row name ("net:<name>", "hybrid:<name> K=k"). ``protected[u]``: user u's
    uploads through its own net (then ``refine``d: the hybrid's device steps) under the budget rule,
    (n, 3, S, S) float on the 8-bit grid. The attacker runs its held nets the same way — with the same
    ``refine`` — on its public faces. The restored uploads are rounded to 8 bits again (the attacker
    stores them).
    """
    ctx = fr.ctx
    loaded = fr.checkpoint(checkpoint)  # the frontier's copy: loaded once per run
    spec, src = loaded.spec, loaded.source.eval()
    sc = ctx.scale
    how = (f", identity-start InvNet, {sc.inv_epochs} epochs" if sc.inv_identity_start else "") + (
        f", accounts' draw {sc.inv_draw}" if sc.inv_draw else "")
    for n in sorted(set(counts)):
        t = time.perf_counter()
        held = _held_params(src, n, fr.cfg.seed, sc.inv_draw)
        with torch.enable_grad():  # the attacker trains (the frontier measures under no_grad)
            inv = train_invnet(spec, held, ctx.data.public.images, ctx.scale, ctx.device, fr.cfg.seed + 300 + n,
                               budget=(rho, spec.rho_pixel, loaded.config.ship_fill), refine=refine)
        restored = [quantise(restore(inv, p)) for p in protected]
        # per user: does the attacker hold this user's very perturbation? (δ cos to its closest held net)
        match = match_to_held(loaded, fr.user_latents(src.z_dim), _held_latents(src.z_dim, n, fr.cfg.seed, sc.inv_draw),
                              fr.probe_faces()) if len(protected) > 0 else []
        yield (f"{label} inverted ({n} held{how})", restored, time.perf_counter() - t,
               {"checkpoint": str(Path(checkpoint)), "held_nets": n, "invnet_epochs": sc.inv_epochs,
                "invnet_identity_start": sc.inv_identity_start, "held_draw": sc.inv_draw, "held_cos": match})
