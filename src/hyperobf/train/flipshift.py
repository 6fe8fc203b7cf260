"""The from-scratch attacker's augmentation: random horizontal flips and reflect-padded translations.

One source for both sides: the ResNet attacker (:mod:`..eval.fr`) trains with it, and the thesis
objective's surrogate (:mod:`.objectives`, ``surrogate_shift``) can train and be scored with it, so that
the error-minimising noise is made for a recogniser that augments as the attacker's does.
Both are differentiable in x (flips and crops are indexing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips, one coin per image; x: (..., B, 3, H, W)."""
    coin = torch.rand(x.shape[-4], generator=gen).to(x.device) < 0.5
    return torch.where(coin.view(-1, 1, 1, 1), x.flip(-1), x)


def random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``pad`` pixels (reflect-padded crop), one offset per image;
    x: (m, B, 3, H, W). The models of a bank share each image's offset (they share its order too)."""
    if pad <= 0:
        return x
    m, b, c, h, w = x.shape
    xp = F.pad(x.reshape(m * b, c, h, w), (pad,) * 4, mode="reflect").view(m, b, c, h + 2 * pad, w + 2 * pad)
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen).tolist()
    return torch.stack([xp[:, i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(off)], 1)


def flip_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """One batch (B, 3, H, W) as the from-scratch attacker trains on it: flipped, then shifted by up to ``pad``."""
    return random_shift(random_flip(x, gen)[None], pad, gen)[0]
