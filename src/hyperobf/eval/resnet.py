"""ResNet-18 face classifier for the attacker (thesis §5.2.2), written here (no torchvision).

:class:`ResNetBank` holds ``m`` independent ResNet-18s that train in one pass: every conv is a
grouped conv with one group per model, BatchNorm is per channel (so per model), and the
classification layer is a per-model einsum. Model k sees its own images: input (m, B, 3, H, W)
-> logits (m, B, n_classes). ``m = 1`` is an ordinary ResNet-18. Training m attackers at once
amortises kernel launches (GPU) and Python overhead (CPU); the models never share a gradient.

Layout (He et al. 2016, ImageNet stem) at 112x112 input: 7x7/2 conv -> 3x3/2 max-pool (28²) ->
4 stages of 2 BasicBlocks with widths w, 2w, 4w, 8w (28², 14², 7², 4²) -> global average -> fc.
``width`` = 64 is the standard ResNet-18 (11.2 M parameters at 1000 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GConv(nn.Module):
    """m independent convs as one grouped conv: (B, m*cin, H, W) -> (B, m*cout, H', W')."""

    def __init__(self, m: int, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.m, self.stride, self.pad = m, stride, k // 2
        w = torch.empty(m * cout, cin, k, k)
        for i in range(m):  # Kaiming init per model (fan_out, as torchvision does for ResNets)
            nn.init.kaiming_normal_(w[i * cout:(i + 1) * cout], mode="fan_out", nonlinearity="relu")
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.pad, groups=self.m)


class Block(nn.Module):
    """BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1/stride conv + BN when shapes change)."""

    def __init__(self, m: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = GConv(m, cin, cout, 3, stride), nn.BatchNorm2d(m * cout)
        self.conv2, self.bn2 = GConv(m, cout, cout, 3), nn.BatchNorm2d(m * cout)
        nn.init.zeros_(self.bn2.weight)  # zero-init last BN: each block starts as identity
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(GConv(m, cin, cout, 1, stride), nn.BatchNorm2d(m * cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.short is None else self.short(x)))


class ResNetBank(nn.Module):
    """m ResNet-18 classifiers. forward(x: (m, B, 3, H, W) in [0, 1]) -> (m, B, n_classes)."""

    def __init__(self, m: int, n_classes: int, width: int = 64) -> None:
        super().__init__()
        self.m, self.width, self.n_classes = m, width, n_classes
        w = width
        self.stem = GConv(m, 3, w, 7, 2)
        self.stem_bn = nn.BatchNorm2d(m * w)
        stages, cin = [], w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            stages += [Block(m, cin, cout, stride), Block(m, cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*stages)
        self.feat_dim = cin
        self.fc_w = nn.Parameter(torch.randn(m, n_classes, cin) * (1.0 / cin) ** 0.5)
        self.fc_b = nn.Parameter(torch.zeros(m, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (m, B, 3, H, W) -> pooled features (m, B, 8w)."""
        m, b = x.shape[:2]
        # Normalise around mid-grey (faces are roughly zero-mean after this).
        h = (x - 0.5).permute(1, 0, 2, 3, 4).reshape(b, m * 3, *x.shape[-2:])  # (B, m*3, H, W)
        h = F.relu(self.stem_bn(self.stem(h)))
        h = F.max_pool2d(h, 3, 2, 1)
        h = self.blocks(h)  # (B, m*8w, h', w')
        h = h.mean((2, 3)).view(b, m, self.feat_dim)
        return h.transpose(0, 1)  # (m, B, 8w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.einsum("mbf,mcf->mbc", f, self.fc_w) + self.fc_b[:, None]

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """Everything but the classification layer (what fine-tuning starts from)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("fc_")}

    def load_trunk_replicated(self, trunk: dict[str, torch.Tensor]) -> None:
        """Load a single-model (m = 1) trunk into each of this bank's m models."""
        own = self.state_dict()
        out = {}
        for k, v in trunk.items():
            tgt = own[k]
            if v.dim() == 0:  # BatchNorm's num_batches_tracked
                out[k] = v.clone()
            else:
                reps = [self.m] + [1] * (v.dim() - 1)
                out[k] = v.repeat(*reps).reshape(tgt.shape)
        self.load_state_dict(out, strict=False)

    def reset_head(self, n_classes: int, generator: torch.Generator | None = None) -> None:
        """A fresh classification layer for n_classes (a new task on a pretrained trunk)."""
        dev = self.fc_w.device
        self.n_classes = n_classes
        w = torch.randn(self.m, n_classes, self.feat_dim, generator=generator) * (1.0 / self.feat_dim) ** 0.5
        self.fc_w = nn.Parameter(w.to(dev))
        self.fc_b = nn.Parameter(torch.zeros(self.m, n_classes, device=dev))
