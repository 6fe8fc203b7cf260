"""Functional fingerprints of MaskNets, for the near-duplicate check at issuance.

Two nets are "close" when they perturb the same images the same way, whatever their
weights (weights have symmetries; behaviour is what an inversion attacker exploits). The
distance is the RMS over a fixed probe batch of (δ_a − δ_b) / ρ_pixel, δ = MaskNet(x) − x
before clipping; 0 = identical behaviour, ~1 = unrelated perturbations of full size.

Storing the whole probe δ (4 × 3 × 16 × 16 = 3 072 values at the default probe size) per
net would cost 6 KB and a dense search over it; instead a fixed Gaussian projection (Johnson–Lindenstrauss) maps
it to ``dim`` values whose Euclidean distance estimates the RMS distance (relative error
≈ sqrt(2 / dim), ~6 % at 512). Fingerprints are stored as float16 (1 KB at dim 512).
The probe batch and projection are fixed by seeds; ``version`` names them, and only
fingerprints of one version are compared.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..models.masknet import grouped_pre_tanh
from ..spec import MaskNetSpec

PROBE_SEED = 0x5EED_0B5F
STORE_DTYPE = np.float16
CHUNK = 8  # nets per grouped-conv call (see Fingerprinter.__call__)


def probe_images(n: int, size: int, seed: int = PROBE_SEED) -> np.ndarray:
    """Fixed, face-agnostic probe images (n, 3, size, size) in [0, 1]: smooth colour fields
    (coarse 4x4 grids, bilinearly upsampled) plus fine texture, so both low- and
    high-frequency responses of a net show up. Pure numpy: identical on every machine."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 3, 4, 4))
    t = np.linspace(0, 3, size)
    i0 = np.minimum(t.astype(int), 2)
    w = (t - i0)[None, None, :]
    rows = coarse[:, :, i0, :] * (1 - w[..., None]) + coarse[:, :, i0 + 1, :] * w[..., None]  # (n,3,size,4)
    smooth = rows[..., i0] * (1 - w[:, :, None, :]) + rows[..., i0 + 1] * w[:, :, None, :]  # (n,3,size,size)
    texture = rng.random((n, 3, size, size))
    return np.clip(0.75 * smooth + 0.25 * texture, 0.0, 1.0).astype(np.float32)


class Fingerprinter:
    """Maps batched MaskNet weights to fingerprints (n, dim) on ``device``."""

    def __init__(self, n_images: int = 4, size: int = 16, dim: int = 512, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        probe = probe_images(n_images, size)
        self.probe = torch.from_numpy(probe).to(self.device)  # (b, 3, S, S)
        self.dim = dim
        d_in = probe.size
        proj = np.random.default_rng(PROBE_SEED + 1).standard_normal((d_in, dim), dtype=np.float32)
        self.proj = torch.from_numpy(proj / np.sqrt(dim * d_in, dtype=np.float32)).to(self.device)  # (D, dim)
        h = hashlib.sha256(probe.tobytes())
        h.update(f"|{dim}|{PROBE_SEED}".encode())
        self.version = h.hexdigest()[:16]

    @torch.no_grad()
    def probe_delta(self, spec: MaskNetSpec, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """δ / ρ_pixel of n nets on the probe batch, flattened: (n, D).

        models.masknet's grouped-conv evaluation (n nets as n conv groups), in channels-last
        layout, which runs this grouped conv ~25 % faster on CPU; it is the dominant cost of
        issuing a net there.
        """
        n = next(iter(params.values())).shape[0]
        b, c, hgt, wid = self.probe.shape
        h = self.probe.repeat(1, n, 1, 1).contiguous(memory_format=torch.channels_last)  # net i's copy in group i
        weights = {k: v.to(self.device, torch.float32) for k, v in params.items()}
        h = grouped_pre_tanh(spec, weights, h, n, channels_last=True)  # (b, n*3, S, S)
        delta = torch.tanh(h).reshape(b, n, c, hgt, wid).transpose(0, 1)  # (n, b, 3, S, S), δ / ρ_pixel
        return delta.reshape(n, -1)

    @torch.no_grad()
    def __call__(self, spec: MaskNetSpec, params: dict[str, torch.Tensor]) -> np.ndarray:
        """Fingerprints (n, dim) float32 (numpy, CPU), in chunks of CHUNK nets: past ~16 nets the
        grouped conv's activations leave the cache and each net costs more (structure A on one
        CPU core: 1.3 ms per net in chunks of 4–16, 2.6 ms in one batch of 32)."""
        n = next(iter(params.values())).shape[0]
        step = n if self.device.type == "cuda" else CHUNK  # (a GPU wants the whole batch at once)
        return np.concatenate([(self.probe_delta(spec, {k: v[i:i + step] for k, v in params.items()}) @ self.proj)
                               .float().cpu().numpy() for i in range(0, n, step)])


def to_bytes(fp: np.ndarray) -> bytes:
    return np.ascontiguousarray(fp, STORE_DTYPE).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, STORE_DTYPE).astype(np.float32)


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact RMS distance between flattened probe δ/ρ rows: (n, D), (m, D) -> (n, m)."""
    return torch.cdist(a.double(), b.double()) / np.sqrt(a.shape[1])


class NearestIndex:
    """All issued fingerprints of one probe version, in memory; nearest distance queries.

    (n_new, dim) x (N, dim) via one matmul: fine for 10^5–10^6 nets; beyond that an ANN
    index would replace it behind the same two methods.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._buf = np.zeros((1024, dim), np.float32)  # capacity doubles as nets are added
        self._sq = np.zeros((1024,), np.float32)  # squared norms of the rows
        self._n = 0
        self.last_id = 0  # highest database id already loaded (for incremental sync)

    def __len__(self) -> int:
        return self._n

    def add(self, fps: np.ndarray, last_id: int | None = None) -> None:
        fps = np.asarray(fps, np.float32).reshape(-1, self.dim)
        need = self._n + len(fps)
        if need > len(self._buf):
            cap = max(need, 2 * len(self._buf))
            self._buf = np.concatenate([self._buf[:self._n], np.zeros((cap - self._n, self.dim), np.float32)])
            self._sq = np.concatenate([self._sq[:self._n], np.zeros(cap - self._n, np.float32)])
        self._buf[self._n:need] = fps
        self._sq[self._n:need] = (fps * fps).sum(1)
        self._n = need
        if last_id is not None:
            self.last_id = max(self.last_id, last_id)

    def nearest(self, fps: np.ndarray) -> np.ndarray:
        """Distance from each row of fps (n, dim) to its nearest indexed fingerprint (inf if none)."""
        fps = np.asarray(fps, np.float32).reshape(-1, self.dim)
        if not self._n:
            return np.full(len(fps), np.inf, np.float32)
        rows, sq = self._buf[:self._n], self._sq[:self._n]
        d2 = (fps * fps).sum(1)[:, None] + sq[None, :] - 2.0 * fps @ rows.T  # (n, N)
        return np.sqrt(np.maximum(d2.min(1), 0.0))
