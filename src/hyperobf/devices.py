"""Torch device selection shared by training, evaluation and the PSP service."""

from __future__ import annotations

import torch


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; ValueError if CUDA is asked for but absent.

    ``local_rank``: the GPU of this process under torchrun (plain 'cuda' means cuda:local_rank).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)
