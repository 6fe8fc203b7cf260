"""Where MaskNets come from: the HyperNet or a baseline (thesis §5.2.4), behind one interface.

A source yields *batched* MaskNet weights ``{name: (n, *shape)}`` for training (``sample``)
and for issuing to users (``issue``), so training, export and evaluation share one path;
:func:`generate_users` is that path for a loaded checkpoint (the exporter and the PSP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

from ..models.hypernet import HyperNet, HyperNetConfig
from ..models.masknet import MaskNet, stack
from ..spec import MaskNetSpec
from .baselines import EnsembleSource, MCDropoutSource

if TYPE_CHECKING:  # annotations only: config imports SOURCES to validate the method
    from .checkpoint import Loaded
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


# method -> source class (thesis §5.2.4's baselines beside the HyperNet). Adding a method is one entry.
SOURCES: dict[str, Callable[[MaskNetSpec, "TrainConfig"], nn.Module]] = {
    "hypernet": HyperNetSource,
    "static": StaticSource,
    "ensemble": EnsembleSource,
    "mcdropout": MCDropoutSource,
}


def build_source(spec: MaskNetSpec, cfg: "TrainConfig") -> nn.Module:
    if cfg.method not in SOURCES:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[cfg.method](spec, cfg)


@torch.no_grad()
def generate_users(loaded: "Loaded", z: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Batched weights for users with latents z (n, z_dim): {name: (n, *shape)} float32 numpy."""
    src = loaded.source
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(z), chunk):
        params = src.issue(torch.from_numpy(np.ascontiguousarray(z[i:i + chunk])))
        for k, v in params.items():
            out.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in out.items()}


__all__ = ["SOURCES", "HyperNetSource", "StaticSource", "build_source", "generate_users", "stack"]
