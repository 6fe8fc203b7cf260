"""Feature-space objective (Fawkes-style, seed Eq. 2.2–2.5) under a frozen pretrained embedder Φ.

* untargeted: J1 = mean (1 − ‖Φ(x ⊕ δ) − Φ(x)‖ / 2) on unit embeddings — push each protected
  face away from itself (a monotone function of cos(Φ(x), Φ(x ⊕ δ)) with a usable gradient at δ = 0);
* centroid:   J1 = mean over nets of (1 − ‖c(Φ(x ⊕ δ)) − c(Φ(x))‖ / 2), c = the normalised mean of the
  net's b faces (identity-grouped batches: one user's photos) — the protected centroid must leave
  the user's clean cluster, not just each photo (the gallery protocol);
* targeted:   J1 = mean (1 − cos(Φ(x ⊕ δ), a_k)) — pull each protected face toward its *user's*
  anchor identity a_k, as Fawkes pulls a user's photos toward one dissimilar target class.
  The anchors are the training identities' centroids; each net's anchor k is a fixed function
  of the key that made it (the HyperNet's latent z: argmax of a seeded projection, so the
  HyperNet can learn which direction its net must push; an ensemble member's index). A face
  is only pulled toward anchors in the farther half of the pool as seen from its own identity
  (never its own, never a near one), the way Fawkes targets a class far from the user.
  Plus ``target_push`` × the untargeted term: the pure pull (``target_push = 0``, Fawkes's
  loss) gets about half the untargeted term's gradient into the HyperNet, and under the DSSIM
  penalty its perturbations shrank to nothing on glint24 (held-out DSSIM 0.0008, features
  unmoved); the push keeps δ alive while the pull steers it.
  (An earlier variant targeted the identity farthest from each face's own, so one small net
  had to push every identity somewhere else: the directions averaged out and δ collapsed.)
Lower J1 = better protection for both. Φ is any ONNX face embedder, converted by
:mod:`hyperobf.models.onnx_torch`; its weights never enter a state_dict or checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn


if TYPE_CHECKING:  # annotations only: config imports the registries to validate names
    from .config import TrainConfig


class Embedder(nn.Module):
    """x in [0, 1], (B, 3, H, W) -> L2-normalised embeddings (B, D).

    Preprocessing (mobilefacenet / ArcFace): resize to the net's input size if needed, then
    (x·255 − mean) / std, e.g. (x·255 − 127.5) / 128.
    """

    def __init__(self, net: nn.Module, size: int = 112, mean: float = 127.5, std: float = 128.0) -> None:
        super().__init__()
        self.net = net.eval()
        self.size, self.mean, self.std = size, mean, std
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.channels_last = True  # depthwise convs run ~2x faster channels-last on CPU and CUDA

    def train(self, mode: bool = True) -> "Embedder":  # Φ is frozen: always eval (BatchNorm stats fixed)
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = (x * 255.0 - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        e = self.net(x).flatten(1).float()
        return F.normalize(e, dim=1)


def load_embedder(path: str | Path, size: int = 0, mean: float = 127.5, std: float = 128.0) -> Embedder:
    """ONNX embedder file -> frozen :class:`Embedder`; size 0 = the model's declared input size."""
    from ..models.onnx_torch import load_onnx_module

    net = load_onnx_module(path)
    if not size:
        dims = net.input_shape
        size = int(dims[-1]) if len(dims) == 4 and dims[-1] else 112
    return Embedder(net.to(memory_format=torch.channels_last), size, mean, std)


@torch.no_grad()
def embed_all(embedder: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Embeddings of a whole set in chunks: x (N, 3, H, W) in [0, 1] -> (N, D)."""
    return torch.cat([embedder(x[i:i + batch]) for i in range(0, len(x), batch)])


def identity_centroids(emb: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Normalised mean embedding per identity: emb (N, D), labels (N,) -> (n_classes, D)."""
    c = torch.zeros(n_classes, emb.shape[1], device=emb.device).index_add_(0, labels, emb)
    return F.normalize(c, dim=1)


def far_half(sim: torch.Tensor) -> torch.Tensor:
    """(K, K) cosine matrix -> (K, K) bool: ok[y, k] iff k != y and k is at most as similar to y as the
    median other identity (the farther half of the pool; at least one anchor per identity)."""
    k = sim.shape[0]
    others = sim.masked_fill(torch.eye(k, dtype=torch.bool, device=sim.device), float("nan"))
    med = others.nanquantile(0.5, dim=1, keepdim=True, interpolation="lower") if k > 1 else sim.new_zeros(k, 1)
    return (others <= med) & ~torch.eye(k, dtype=torch.bool, device=sim.device)


def anchor_index(keys: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """Each net's anchor slot from its key: float (n, z_dim) latents -> argmax of the seeded projection
    proj (K, z_dim) (a fixed partition of z-space into K cones); int64 (n,) keys -> key mod K."""
    k = proj.shape[0]
    if keys.is_floating_point():
        return (keys.to(proj.device, proj.dtype) @ proj.T).argmax(1)
    return keys.to(proj.device) % k


class FeatureObjective(nn.Module):
    """J1 under a frozen embedder; ``prepare`` computes the identity centroids (targeted anchors)."""

    name = "feature"

    def __init__(self, cfg: TrainConfig, anchors: torch.Tensor | None = None, embedder: nn.Module | None = None) -> None:
        super().__init__()
        if cfg.feature_mode not in ("targeted", "untargeted", "centroid"):
            raise ValueError(f"unknown feature_mode {cfg.feature_mode!r} (targeted | untargeted | centroid)")
        self.mode = cfg.feature_mode
        self.needs_keys = self.mode in ("targeted", "centroid")  # centroid: keys give the number of nets
        self.z_dim, self.seed, self.push = cfg.z_dim, cfg.seed, cfg.target_push
        self.embedder = embedder if embedder is not None else load_embedder(
            cfg.embedder, cfg.embedder_size, cfg.embedder_mean, cfg.embedder_std)
        # Persistent, so a checkpoint records each user's target: anchors (K, D) unit centroids of the
        # training identities, anchor_ok (K, K) which anchors identity y may be pulled to, anchor_proj
        # (K, z_dim) the z -> slot map.
        self.register_buffer("anchors", anchors if anchors is not None else torch.zeros(0))
        self.register_buffer("anchor_ok", torch.zeros(0, dtype=torch.bool))
        self.register_buffer("anchor_proj", torch.zeros(0))

    @torch.no_grad()
    def prepare(self, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
        """Centroids of the clean training faces x (N, 3, H, W) with labels y -> the anchor pool."""
        if self.mode != "targeted" or self.anchor_proj.numel():
            return
        if not self.anchors.numel():
            self.anchors = identity_centroids(embed_all(self.embedder, x), y, n_classes)
        self.anchor_ok = far_half(self.anchors @ self.anchors.T)
        g = torch.Generator().manual_seed(self.seed + 7919)
        self.anchor_proj = torch.randn(len(self.anchors), self.z_dim, generator=g).to(self.anchors.device)

    def anchor_of(self, keys: torch.Tensor) -> torch.Tensor:
        """(n,) anchor slot (= training identity index) of each net, from its key (see module doc)."""
        if not self.anchor_proj.numel():
            raise RuntimeError("targeted feature objective needs prepare() (anchors) before training")
        return anchor_index(keys, self.anchor_proj)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedder(x)

    def j1(self, x_clean: torch.Tensor, x_prot: torch.Tensor, y: torch.Tensor,
           keys: torch.Tensor | None = None) -> torch.Tensor:
        """x (n·b, 3, H, W) grouped by net (b faces per net, in order), y (n·b,), keys (n, ...) per net."""
        e_prot = self.embedder(x_prot)  # (n·b, D)
        if self.mode == "centroid":  # each net's b faces are one user's: move the user's centroid
            if keys is None:
                raise RuntimeError("centroid feature objective needs each net's key (grouped batches)")
            n = len(keys)
            with torch.no_grad():
                c_clean = F.normalize(self.embedder(x_clean).view(n, -1, e_prot.shape[1]).mean(1), dim=1)
            c_prot = F.normalize(e_prot.view(n, -1, e_prot.shape[1]).mean(1), dim=1)  # (n, D)
            return (1.0 - (c_prot - c_clean).pow(2).sum(1).add(1e-12).sqrt() / 2.0).mean()
        push = None
        if self.mode == "untargeted" or self.push > 0:
            with torch.no_grad():
                e_clean = self.embedder(x_clean)
            # chord distance, not cosine: cos has zero gradient at δ = 0 (its maximum), so a cosine
            # loss starts flat and loses to the budget penalty; the distance's gradient has norm 1/2
            dist = (e_prot - e_clean).pow(2).sum(1).add(1e-12).sqrt()  # (B,) in [0, 2]
            push = (1.0 - dist / 2.0).mean()
            if self.mode == "untargeted":
                return push
        if keys is None:
            raise RuntimeError("targeted feature objective needs each net's key (source.sample_keyed)")
        slot = self.anchor_of(keys).repeat_interleave(len(y) // len(keys))  # (n·b,) anchor per face
        y = y.to(slot.device)
        valid = self.anchor_ok[y, slot]
        pull = 1.0 - (e_prot * self.anchors[slot]).sum(1)  # (n·b,) in [0, 2]
        w = valid.float()
        pull = (pull * w).sum() / w.sum().clamp_min(1.0)
        return pull if push is None else pull + self.push * push

    def update(self, x_clean: torch.Tensor, x_prot: torch.Tensor, y: torch.Tensor, sync=None) -> float:
        return 0.0  # Φ is frozen

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass
