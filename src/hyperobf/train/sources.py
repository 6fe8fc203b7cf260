"""Where MaskNets come from: the HyperNet or a baseline (thesis §5.2.4), behind one interface.

A source yields *batched* MaskNet weights ``{name: (n, *shape)}`` for training (``sample``)
and for issuing to users (``issue``), so training, export and evaluation share one path.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.hypernet import HyperNet, HyperNetConfig
from ..models.masknet import MaskNet, stack
from ..spec import MaskNetSpec
from .config import TrainConfig


class HyperNetSource(nn.Module):
    method = "hypernet"

    def __init__(self, spec: MaskNetSpec, cfg: TrainConfig) -> None:
        super().__init__()
        self.spec = spec
        self.hyper = HyperNet(spec, HyperNetConfig(cfg.z_dim, cfg.code_dim, cfg.mixer_hidden, cfg.gen_hidden))

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return self.sample_keyed(n, gen)[0]

    def sample_keyed(self, n: int, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Like :meth:`sample` (same random stream), plus each net's key: its latent z (n, z_dim)."""
        z = self.hyper.sample_z(n, gen)
        return self.hyper(z), z

    def key_of(self, z: torch.Tensor) -> torch.Tensor:
        """The key of the nets issued for latents z (what the targeted objective maps to an anchor)."""
        return z

    def issue(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weights for users whose secret latents are z: (n, z_dim)."""
        return self.hyper(z.to(next(self.parameters()).device))

    @property
    def z_dim(self) -> int:
        return self.hyper.cfg.z_dim


class StaticSource(nn.Module):
    """The static system: one MaskNet shared by every user."""

    method = "static"
    independent = True  # no diversity term (every "net" is the same one)

    def __init__(self, spec: MaskNetSpec, cfg: TrainConfig) -> None:
        super().__init__()
        self.spec = spec
        self.net = MaskNet(spec)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in self.net.named_parameters()}

    def issue(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.sample(z.shape[0], torch.Generator())

    def sample_keyed(self, n: int, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.sample(n, gen), torch.zeros(n, dtype=torch.int64)  # one net, one target for everyone

    def key_of(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], dtype=torch.int64)

    z_dim = 1


def build_source(spec: MaskNetSpec, cfg: TrainConfig) -> nn.Module:
    if cfg.method == "hypernet":
        return HyperNetSource(spec, cfg)
    if cfg.method == "static":
        return StaticSource(spec, cfg)
    from .baselines import build_baseline  # ensemble, mcdropout

    return build_baseline(spec, cfg)


__all__ = ["HyperNetSource", "StaticSource", "build_source", "stack"]
