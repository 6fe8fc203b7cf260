"""Per-user latents z from the OS CSPRNG (never from a user id or a counter)."""

from __future__ import annotations

import os

import numpy as np


def secure_normal(n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 standard normals from os.urandom via Box–Muller."""
    m = n * dim
    half = (m + 1) // 2
    raw = np.frombuffer(os.urandom(16 * half), dtype=np.uint64).reshape(half, 2)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # (0, 1), 53-bit
    r = np.sqrt(-2.0 * np.log(u[:, 0]))
    z = np.concatenate([r * np.cos(2 * np.pi * u[:, 1]), r * np.sin(2 * np.pi * u[:, 1])])[:m]
    return z.reshape(n, dim).astype(np.float32)


def new_model_id() -> str:
    return os.urandom(12).hex()
