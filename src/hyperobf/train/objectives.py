"""Effectiveness objectives J1 (the HyperNet minimises J1; hinged at α in Eq. 4.4).

* ``thesis`` (Eq. 4.1 and 4.4 as written): a surrogate recogniser trained jointly on *perturbed*
  faces only, as an attacker's would be, and J1 = its cross-entropy on the perturbed faces against
  their *true* identities, minimised — error-minimising noise ("unlearnable examples"): each
  user's perturbation becomes an easy, consistent shortcut for the user's class, which a
  recogniser trained on the uploads may learn instead of the face. Needs identity-grouped batches
  (:mod:`.sampler`: each net plays one pseudo-user per step).
* ``adversarial`` (old name ``classifier``, still accepted): the opposite — a surrogate trained on
  clean and perturbed faces, J1 = −log(1 − p(true identity | x ⊕ δ)): faces pushed to be
  unrecognised by it.
* ``feature`` (Fawkes-style, Eq. 2.2): a frozen pretrained embedder Φ; see :mod:`.feature`.
Adding an objective is one entry in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .flipshift import flip_shift


if TYPE_CHECKING:  # annotations only: config imports the registries to validate names
    from .config import TrainConfig


class SurrogateClassifier(nn.Module):
    """Small CNN + classification layer: (B, 3, H, W) in [0, 1] -> (B, n_classes) logits."""

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        c = width
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.BatchNorm2d(4 * c), nn.ReLU(),
            nn.Conv2d(4 * c, 4 * c, 3, 2, 1), nn.BatchNorm2d(4 * c), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(4 * c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x - 0.5))


class ClassifierObjective(nn.Module):
    """Adversarial J1 against a jointly trained classifier (its own optimiser, its own loss)."""

    name = "adversarial"

    def __init__(self, n_classes: int, lr: float, width: int = 32, steps: int = 1) -> None:
        super().__init__()
        self.clf = SurrogateClassifier(n_classes, width)
        self.opt = torch.optim.Adam(self.clf.parameters(), lr=lr)
        self.steps = steps  # surrogate steps per batch (each with fresh augmentation draws where it augments)

    def j1(self, x_clean: torch.Tensor, x_prot: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p_true = F.softmax(self.clf(x_prot), dim=1).gather(1, y[:, None]).squeeze(1)
        return -torch.log1p(-p_true.clamp(max=1 - 1e-6)).mean()

    def surrogate_batch(self, x_clean: torch.Tensor, x_prot: torch.Tensor,
                        y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the surrogate trains on: clean and (detached) perturbed faces."""
        return torch.cat([x_clean, x_prot.detach()]), torch.cat([y, y])

    def update(self, x_clean: torch.Tensor, x_prot: torch.Tensor, y: torch.Tensor,
               sync: Callable[[nn.Module], None] | None = None) -> float:
        """``steps`` steps of the surrogate on :meth:`surrogate_batch`; returns the first step's loss.

        ``sync`` (multi-GPU) averages the classifier's gradients across processes before each step.
        """
        first = None
        for _ in range(self.steps):
            x, labels = self.surrogate_batch(x_clean, x_prot, y)
            loss = F.cross_entropy(self.clf(x), labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if sync is not None:
                sync(self.clf)
            self.opt.step()
            first = float(loss.detach()) if first is None else first
        return first

    def extra_state(self) -> dict:
        return {"opt": self.opt.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])


class ThesisObjective(ClassifierObjective):
    """The thesis's J1: cross-entropy of a recogniser trained on perturbed faces only, minimised.

    ``shift`` > 0: the surrogate sees the perturbed faces as the from-scratch attacker trains on them
    (:mod:`.flipshift`: random flips, translations up to ``shift`` px), both when it trains and when J1
    scores the nets, so the noise must be a shortcut that survives the attacker's augmentation. Its
    draws come from its own seeded generator (saved with the objective: resumable).
    """

    name = "thesis"
    needs_users = True  # identity-grouped batches (one pseudo-user per net)

    def __init__(self, n_classes: int, lr: float, width: int = 32, shift: int = 0, seed: int = 0,
                 steps: int = 1) -> None:
        super().__init__(n_classes, lr, width, steps)
        self.shift = shift
        self.gen = torch.Generator().manual_seed(seed + 7919)

    def _seen(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the same, flipped and shifted per image when ``shift`` > 0."""
        if self.shift <= 0:
            return x
        return flip_shift(x, self.shift, self.gen)

    def j1(self, x_clean: torch.Tensor, x_prot: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.clf(self._seen(x_prot)), y)  # (n·b,) faces against their true identities

    def surrogate_batch(self, x_clean: torch.Tensor, x_prot: torch.Tensor,
                        y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The perturbed faces only: what an attacker's recogniser trains on."""
        return self._seen(x_prot.detach()), y

    def extra_state(self) -> dict:
        return {**super().extra_state(), "gen": self.gen.get_state()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        if "gen" in state:  # checkpoints from before ``shift`` existed have none (and drew nothing from it)
            self.gen.set_state(state["gen"])


def _feature(cfg: TrainConfig, n_classes: int, anchors: torch.Tensor | None) -> nn.Module:
    from .feature import FeatureObjective  # needs an ONNX embedder

    return FeatureObjective(cfg, anchors)


# name -> builder(cfg, n_classes, anchors): adding an objective is one entry
OBJECTIVES: dict[str, Callable[[TrainConfig, int, torch.Tensor | None], nn.Module]] = {
    "adversarial": lambda cfg, n, a: ClassifierObjective(n, cfg.surrogate_lr or cfg.lr, steps=cfg.surrogate_steps),
    "thesis": lambda cfg, n, a: ThesisObjective(n, cfg.surrogate_lr or cfg.lr, cfg.surrogate_width, cfg.surrogate_shift,
                                                cfg.seed, cfg.surrogate_steps),
    "feature": _feature,
}


def build_objective(cfg: TrainConfig, n_classes: int, anchors: torch.Tensor | None = None) -> nn.Module:
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {cfg.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[cfg.objective](cfg, n_classes, anchors)
