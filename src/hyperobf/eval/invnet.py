"""InvNet (thesis §5.1.2, §5.2.2): the attacker's inversion autoencoder.

It mirrors the MaskNet: the encoder repeats the MaskNet's hidden convolutions (same channels and
kernels; the first two 3x3-or-larger ones with stride 2, so the code is H/4 x W/4), the decoder
runs them backwards with transposed convolutions (ReLU between), and a Tanh output.

Following the thesis ("the pixel-level changes introduced by the protecting process can be
precisely calculated and applied to the perturbed images"), the Tanh output is a correction
added to the protected image: restored = clamp(x_p + a * tanh(h), 0, 1), where a is twice the
largest |δ| the attacker measures on the MaskNets it holds (it can run them). With
``identity_start`` the decoder's last layer starts at zero, so the untrained InvNet returns its input
and training only has to learn the correction (a randomly initialised one starts by adding noise of
amplitude a, which a few epochs do not undo: the stronger attacker).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.masknet import apply_batched
from ..spec import MaskNetSpec
from .limit import fit_budget

Refine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, δ₀) (B, 3, H, W) each -> δ after refinement


class InvNet(nn.Module):
    def __init__(self, spec: MaskNetSpec, amplitude: float = 0.1, identity_start: bool = False) -> None:
        super().__init__()
        hidden = spec.layers[:-1]  # the layers before the RGB projection
        enc, strided, ch = [], 0, spec.in_channels
        for layer in hidden:  # a plain chain: a skip input of the MaskNet is not mirrored
            stride = 2 if layer.kernel >= 3 and strided < 2 else 1
            strided += stride == 2
            enc.append((ch, layer.out_ch, layer.kernel, stride))
            ch = layer.out_ch
        self.encoder = nn.ModuleList(nn.Conv2d(i, o, k, s, k // 2) for i, o, k, s in enc)
        dec = []
        for i, o, k, s in reversed(enc):
            if s == 2:  # mirror of a strided conv: x2 upsampling transposed conv
                dec.append(nn.ConvTranspose2d(o, i, 4, 2, 1))
            else:
                dec.append(nn.ConvTranspose2d(o, i, k, 1, k // 2))
        self.decoder = nn.ModuleList(dec)
        if identity_start:  # tanh(0) = 0: restored = x_p until training moves the last layer
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)
        self.register_buffer("amplitude", torch.tensor(float(amplitude)))
        self.down = 2 ** strided

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) protected in [0, 1] (H, W divisible by 4) -> restored (B, 3, H, W)."""
        h = x - 0.5
        for conv in self.encoder:
            h = F.relu(conv(h))
        for k, conv in enumerate(self.decoder):
            h = conv(h)
            if k < len(self.decoder) - 1:
                h = F.relu(h)
        return (x + self.amplitude * torch.tanh(h)).clamp(0.0, 1.0)


def _perturb(spec: MaskNetSpec, params: dict[str, torch.Tensor], x: torch.Tensor, gen: torch.Generator,
             budget: tuple[float, ...] | None = None, refine: Refine | None = None) -> torch.Tensor:
    """Each image of x (B, 3, H, W) through one of the n held nets (balanced, shuffled); ``refine`` (x, δ₀) -> δ:
    the device's refinement steps after the net (the hybrid), as the attacker's copy of the tool runs them; with
    ``budget`` = (ρ, ρ_pixel[, the net's fill]) under the device's budget rule, as the attacker's copy of the tool
    does."""
    n = next(iter(params.values())).shape[0]
    b = x.shape[0] - x.shape[0] % n
    x = x[:b]
    perm = torch.randperm(b, generator=gen).to(x.device)
    y = apply_batched(spec, params, x[perm].view(n, b // n, *x.shape[1:])).flatten(0, 1)
    out = torch.empty_like(y)
    out[perm] = y
    if refine is not None:
        out = (x + refine(x, out - x)).clamp(0.0, 1.0)
    if budget is not None:
        rho, rho_pixel, *fill = budget
        out = fit_budget(x, out - x, rho, rho_pixel, s_max=fill[0] if fill else 1.0)
    return out, x


def train_invnet(spec: MaskNetSpec, held: dict[str, torch.Tensor], public: torch.Tensor, scale,
                 device: torch.device, seed: int, budget: tuple[float, ...] | None = None,
                 refine: Refine | None = None) -> InvNet:
    """Train an InvNet on public faces (N, 3, S, S) uint8 perturbed by the held nets {name: (n, ...)}
    (then refined by ``refine`` when given: the hybrid; under the budget rule (ρ, ρ_pixel) when ``budget``
    is given)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    held = {k: v.detach().to(device) for k, v in held.items()}
    n = next(iter(held.values())).shape[0]
    with torch.no_grad():  # the attacker measures its nets' perturbation size by running them
        probe = public[:64].to(device).float() / 255.0
        probe = probe.repeat(math.ceil(n / len(probe)), 1, 1, 1)
        y, x = _perturb(spec, held, probe, gen, budget, refine)
        amp = max(2.0 * float((y - x).abs().max()), 1e-3)
    net = InvNet(spec, amp, scale.inv_identity_start).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=scale.inv_lr)
    b = max(n, scale.inv_batch - scale.inv_batch % n)
    steps = max(1, math.ceil(len(public) / b))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps * scale.inv_epochs)
    pub = public.to(device)
    net.train()
    for _ in range(scale.inv_epochs):
        perm = torch.randperm(len(public), generator=gen).to(device)
        for s in range(steps):
            idx = perm[s * b:(s + 1) * b]
            if len(idx) < n:
                continue
            with torch.no_grad():
                xp, x = _perturb(spec, held, pub[idx].float() / 255.0, gen, budget, refine)
            loss = F.l1_loss(net(xp), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def restore(net: InvNet, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    dev = net.amplitude.device
    return torch.cat([net(x[i:i + batch].to(dev)).cpu() for i in range(0, len(x), batch)])
