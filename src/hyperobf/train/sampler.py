"""Identity-grouped training batches: each generated net plays one pseudo-user.

A deployed net only ever sees its own user's photos, so objectives that care about a user's
photos *together* (the thesis's error-minimising J1, the feature objective's centroid push) need
batches in which net i perturbs ``b`` faces of one identity. The :class:`UserPool` keeps
``size`` pseudo-users — (latent z, identity) pairs — stable for ``refresh_every`` steps, so a
surrogate recogniser sees stable classes, and then redraws a ``refresh_fraction`` of them (fresh
z, fresh identity), so the HyperNet keeps meeting users it never saw.
All randomness comes from the training generator; the pool's state is saved in checkpoints.
"""

from __future__ import annotations

import math

import torch


class UserPool:
    def __init__(self, size: int, z_dim: int, labels: torch.Tensor, gen: torch.Generator,
                 refresh_every: int = 50, refresh_fraction: float = 0.25) -> None:
        if size < 1:
            raise ValueError("the user pool needs at least one user")
        if not 0 < refresh_fraction <= 1:
            raise ValueError("refresh_fraction must be in (0, 1]")
        self.labels = labels.cpu()
        self.n_classes = int(self.labels.max()) + 1
        # per identity: the indices of its faces (identities without faces are never drawn)
        self.by_id = [(self.labels == c).nonzero().squeeze(1) for c in range(self.n_classes)]
        self.present = torch.tensor([c for c in range(self.n_classes) if len(self.by_id[c])])
        self.size, self.z_dim = size, z_dim
        self.refresh_every, self.refresh_fraction = refresh_every, refresh_fraction
        self.z = torch.randn(size, z_dim, generator=gen)  # (size, z_dim)
        self.identity = self._draw_ids(size, gen)  # (size,)
        self.steps = 0

    def _draw_ids(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.present[torch.randint(len(self.present), (n,), generator=gen)]

    def batch(self, n: int, b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n distinct pseudo-users (n ≤ size) and b faces of each one's identity.

        Returns (z (n, z_dim), face indices (n·b,) grouped by user, user slots (n,)).
        """
        if self.steps and self.refresh_every and self.steps % self.refresh_every == 0:
            k = max(1, math.ceil(self.size * self.refresh_fraction))
            slots = torch.randperm(self.size, generator=gen)[:k]
            self.z[slots] = torch.randn(k, self.z_dim, generator=gen)
            self.identity[slots] = self._draw_ids(k, gen)
        self.steps += 1
        users = torch.randperm(self.size, generator=gen)[:n]
        if len(users) < n:  # a pool smaller than the step: users repeat (still grouped)
            users = users[torch.randint(len(users), (n,), generator=gen)]
        idx = []
        for c in self.identity[users].tolist():
            faces = self.by_id[c]
            idx.append(faces[torch.randint(len(faces), (b,), generator=gen)])
        return self.z[users].clone(), torch.cat(idx), users

    def state_dict(self) -> dict:
        return {"z": self.z.clone(), "identity": self.identity.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.z, self.identity, self.steps = state["z"].clone(), state["identity"].clone(), int(state["steps"])
