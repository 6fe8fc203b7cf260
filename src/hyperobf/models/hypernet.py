"""HyperNet (thesis §4.1): z ~ N(0, I) -> mixer -> one code per MaskNet layer -> one
generator MLP per layer emitting that layer's weight and bias.

``generate(n)`` produces the weights of n MaskNets in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..spec import MaskNetSpec


@dataclass(frozen=True)
class HyperNetConfig:
    z_dim: int = 64
    code_dim: int = 64  # per-layer code emitted by the mixer
    mixer_hidden: int = 256
    gen_hidden: int = 128


class HyperNet(nn.Module):
    def __init__(self, spec: MaskNetSpec, cfg: HyperNetConfig = HyperNetConfig()) -> None:
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        n_layers = len(spec.layers)
        self.mixer = nn.Sequential(
            nn.Linear(cfg.z_dim, cfg.mixer_hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(cfg.mixer_hidden, n_layers * cfg.code_dim),
        )
        self.generators = nn.ModuleDict()
        for layer in spec.layers:
            n_out = math.prod(layer.weight_shape) + layer.out_ch
            gen = nn.Sequential(
                nn.Linear(cfg.code_dim, cfg.gen_hidden),
                nn.LeakyReLU(0.2),
                nn.Linear(cfg.gen_hidden, n_out),
            )
            self.generators[layer.name] = gen
        self._calibrate()

    @torch.no_grad()
    def _calibrate(self, n: int = 256) -> None:
        """Rescale each generator's output layer so generated weights start at Kaiming scale
        (std sqrt(2 / fan_in)) and biases near zero: a usable MaskNet from step one."""
        params = self(torch.randn(n, self.cfg.z_dim))
        for layer in self.spec.layers:
            fan_in = layer.in_ch * layer.kernel * layer.kernel
            std = params[f"{layer.name}.weight"].std().clamp_min(1e-8)
            last = self.generators[layer.name][-1]
            last.weight.mul_(math.sqrt(2.0 / fan_in) / std)
            last.bias.zero_()

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # z is drawn where the generator lives (a seeded CPU generator keeps training reproducible across
        # devices); without one it is drawn on the HyperNet's own device: on a GPU, host-side randn + copy
        # cost more than generating 10^4 nets (benchmarks/bench_generate.py).
        dev = next(self.parameters()).device
        src = generator.device if generator is not None else dev
        return torch.randn(n, self.cfg.z_dim, generator=generator, device=src).to(dev)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z: (n, z_dim) -> {param name: (n, *shape)} in spec order."""
        n = z.shape[0]
        codes = self.mixer(z).view(n, len(self.spec.layers), self.cfg.code_dim)  # (n, L, code)
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.spec.layers):
            flat = self.generators[layer.name](codes[:, i])  # (n, numel(w) + out_ch)
            nw = math.prod(layer.weight_shape)
            out[f"{layer.name}.weight"] = flat[:, :nw].reshape(n, *layer.weight_shape)
            out[f"{layer.name}.bias"] = flat[:, nw:]
        return out

    def generate(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self(self.sample_z(n, generator))

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def param_variance(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over conv weights of their variance across the n nets (thesis Eq. 4.2's Var, the diversity
    loss J2 = exp(−Var)): params {name: (n, ...)} -> scalar tensor (differentiable)."""
    flat = torch.cat([v.flatten(1) for k, v in params.items() if k.endswith(".weight")], dim=1)  # (n, P)
    return flat.var(dim=0, unbiased=False).mean()
