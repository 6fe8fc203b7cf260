"""Dynamic baselines of thesis §5.2.4 behind the source interface (sample / issue / z_dim).

* ensemble: K MaskNets from different initialisations, trained independently. They are held
  as batched tensors (K, *shape) and trained in one grouped-conv pass; Adam is element-wise,
  so this is the same as K separate runs (no diversity term couples them).
* mcdropout: one MaskNet trained with channel dropout after every hidden ReLU layer. A dropout
  mask is baked into weights: the next layer's input weights of kept channels are scaled by
  1/(1 − p), those of dropped channels zeroed — exactly equivalent to dropout2d at that point —
  so each sampled mask is an ordinary MaskNet, exported like a HyperNet-generated one.
``issue(z)`` maps a user's secret z deterministically to a member / a mask (SHA-256 of z's bytes).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..models.masknet import MaskNet
from ..spec import MaskNetSpec

if TYPE_CHECKING:  # annotations only: config imports the registries to validate names
    from .config import TrainConfig


def z_digest(z_row: torch.Tensor) -> int:
    """A 64-bit integer from the float32 bytes of one latent (user-stable, platform-independent)."""
    data = np.ascontiguousarray(z_row.detach().cpu().numpy().astype("<f4")).tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


class EnsembleSource(nn.Module):
    """K independently initialised and trained MaskNets; a user gets member hash(z) mod K."""

    method = "ensemble"
    independent = True  # the loop trains every member each step and adds no diversity term

    def __init__(self, spec: MaskNetSpec, cfg: TrainConfig) -> None:
        super().__init__()
        if cfg.ensemble_size < 1:
            raise ValueError("ensemble_size must be >= 1")
        self.spec = spec
        self.k = cfg.ensemble_size
        self._z_dim = cfg.z_dim
        g = torch.random.fork_rng(devices=[])  # member inits from their own seeds, without touching global RNG
        with g:
            members = []
            for i in range(self.k):
                torch.manual_seed(cfg.seed * 1000 + i)
                members.append(dict(MaskNet(spec).named_parameters()))
        self.members = nn.ParameterDict({
            k.replace(".", "__"): nn.Parameter(torch.stack([m[k].detach() for m in members]))
            for k in spec.param_shapes()
        })

    def _params(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: self.members[k.replace(".", "__")][idx] for k in self.spec.param_shapes()}

    @property
    def train_nets(self) -> int:
        return self.k

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """n == K: all members in order (training); otherwise n members drawn at random."""
        return self.sample_keyed(n, gen)[0]

    def sample_keyed(self, n: int, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Like :meth:`sample`, plus each net's key: its member index (n,) (its target anchor slot)."""
        idx = torch.arange(self.k) if n == self.k else torch.randint(0, self.k, (n,), generator=gen)
        return self._params(idx.to(self.members[next(iter(self.members))].device)), idx

    def key_of(self, z: torch.Tensor) -> torch.Tensor:
        return self.member_of(z)

    def member_of(self, z: torch.Tensor) -> torch.Tensor:
        """(n, z_dim) -> (n,) member index per user."""
        return torch.tensor([z_digest(row) % self.k for row in z], dtype=torch.int64)

    def issue(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        dev = self.members[next(iter(self.members))].device
        return self._params(self.member_of(z).to(dev))

    @property
    def z_dim(self) -> int:
        return self._z_dim


class MCDropoutSource(nn.Module):
    """One MaskNet; each channel-dropout mask (from the training generator or the user's z) is a net."""

    method = "mcdropout"
    independent = True

    def __init__(self, spec: MaskNetSpec, cfg: TrainConfig) -> None:
        super().__init__()
        if not 0.0 < cfg.dropout < 1.0:
            raise ValueError("mcdropout needs 0 < dropout < 1")
        self.spec = spec
        self.p = cfg.dropout
        self._z_dim = cfg.z_dim
        self.net = MaskNet(spec)

    def masks(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Keep-masks (n, out_ch) for every hidden (ReLU) layer, in spec order."""
        return [(torch.rand(n, layer.out_ch, generator=gen) >= self.p).float()
                for layer in self.spec.layers if layer.act == "relu"]

    def bake(self, masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batched weights with each ReLU layer's keep-mask folded into the input channels of the layers
        that read its output: the next layer and, with skip connections, the layer that concatenates it
        (input order: the previous output, then the skip source)."""
        base = dict(self.net.named_parameters())
        n = masks[0].shape[0] if masks else 1
        out: dict[str, torch.Tensor] = {}
        it = iter(masks)
        scale: dict[str, torch.Tensor | None] = {}  # layer -> (n, out_ch) mask / (1 − p), None: not dropped
        prev = None
        for layer in self.spec.layers:
            w = base[f"{layer.name}.weight"].unsqueeze(0).expand(n, *layer.weight_shape)
            sources = ([prev] if prev is not None else []) + ([self.spec_layer(layer.concat)] if layer.concat else [])
            parts = [scale[src.name] for src in sources]
            if any(p is not None for p in parts):
                keep = torch.cat([p if p is not None else torch.ones(n, src.out_ch)
                                  for p, src in zip(parts, sources)], 1)  # (n, in_ch)
                w = w * keep.to(w.device)[:, None, :, None, None]  # (n, out, in, k, k)
            out[f"{layer.name}.weight"] = w
            out[f"{layer.name}.bias"] = base[f"{layer.name}.bias"].unsqueeze(0).expand(n, layer.out_ch)
            scale[layer.name] = next(it) / (1.0 - self.p) if layer.act == "relu" else None
            prev = layer
        return out

    def spec_layer(self, name: str):  # noqa: ANN201 - a LayerSpec
        return next(layer for layer in self.spec.layers if layer.name == name)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return self.bake(self.masks(n, gen))

    def sample_keyed(self, n: int, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        # a dropout mask carries no learnable identity: every mask shares one target (slot 0)
        return self.sample(n, gen), torch.zeros(n, dtype=torch.int64)

    def key_of(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], dtype=torch.int64)

    def issue(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        per_user = [self.masks(1, torch.Generator().manual_seed(z_digest(row) & ((1 << 63) - 1))) for row in z]
        return self.bake([torch.cat(ms) for ms in zip(*per_user)])

    @property
    def z_dim(self) -> int:
        return self._z_dim

