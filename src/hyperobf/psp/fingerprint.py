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
import torch.nn.functional as F

from ..models.masknet import grouped_pre_tanh
from ..spec import MaskNetSpec

PROBE_SEED = 0x5EED_0B5F
STORE_DTYPE = np.float16
CHUNK = 8  # nets per grouped-conv call on CPU (see Fingerprinter.__call__)


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
        self._first_cols: dict = {}  # the first layer's probe columns (see _probe_delta_gemm)

    @torch.inference_mode()
    def probe_delta(self, spec: MaskNetSpec, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """δ / ρ_pixel of n nets on the probe batch, flattened: (n, D).

        On CPU, a structure whose layers all run at full resolution (A, B, C: no stride, no
        upsampling) goes one net at a time as plain matrix products (:func:`_probe_delta_gemm`):
        1.2-1.5x less CPU per net than the grouped conv, which PyTorch runs group by group through
        its slow path. Strided / upsampling structures (D, U) have tiny low-resolution layers,
        where one grouped conv over all nets costs less than per-net products (~2x less at D).
        """
        if self.device.type == "cpu" and gemm_friendly(spec):
            return _probe_delta_gemm(spec, params, self.probe, self._first_cols)
        # models.masknet's grouped-conv evaluation (n nets as n conv groups), channels-last: ~25 %
        # faster on CPU, and its ReLUs then work in place
        n = next(iter(params.values())).shape[0]
        b, c, hgt, wid = self.probe.shape
        h = self.probe.repeat(1, n, 1, 1).contiguous(memory_format=torch.channels_last)  # net i's copy in group i
        weights = {k: v.to(self.device, torch.float32) for k, v in params.items()}
        h = grouped_pre_tanh(spec, weights, h, n, channels_last=True)  # (b, n*3, S, S)
        delta = torch.tanh(h).reshape(b, n, c, hgt, wid).transpose(0, 1)  # (n, b, 3, S, S), δ / ρ_pixel
        return delta.reshape(n, -1)

    @torch.inference_mode()
    def __call__(self, spec: MaskNetSpec, params: dict[str, torch.Tensor]) -> np.ndarray:
        """Fingerprints (n, dim) float32 (numpy, CPU): probe δ / ρ times the fixed projection, in
        one product for the batch (the 6 MB projection is read once). The grouped conv on CPU goes
        in chunks of CHUNK nets: past ~16 its activations leave the cache and each net costs more."""
        n = next(iter(params.values())).shape[0]
        step = CHUNK if self.device.type == "cpu" and not gemm_friendly(spec) else n
        delta = torch.cat([self.probe_delta(spec, {k: v[i:i + step] for k, v in params.items()})
                           for i in range(0, n, step)])
        return (delta @ self.proj).float().cpu().numpy()


def gemm_friendly(spec: MaskNetSpec) -> bool:
    """Every layer at the probe's full resolution (no stride, no upsampling): each per-net matrix
    product then spans all probe pixels, large enough to beat the grouped conv."""
    return all(layer.stride == 1 and layer.upsample == 1 for layer in spec.layers)


def _im2col(h: torch.Tensor, kernel: int, stride: int, padding: int) -> tuple[torch.Tensor, int, int]:
    """h (C, b, H, W) -> columns (C*k*k, b*Ho*Wo) in the weight's (C, kh, kw) order, Ho, Wo.
    (C, b, H, W) keeps the copy's inner loop on contiguous image rows: the (b, H, W, C) layout
    made this gather 20x slower.)"""
    c, _, hgt, wid = h.shape
    if kernel == 1 and stride == 1 and padding == 0:
        return h.reshape(c, -1), hgt, wid
    if padding:
        h = F.pad(h, (padding,) * 4)
    u = h.unfold(2, kernel, stride).unfold(3, kernel, stride)  # (C, b, Ho, Wo, kh, kw)
    return u.permute(0, 4, 5, 1, 2, 3).reshape(c * kernel * kernel, -1), u.shape[2], u.shape[3]


def _probe_delta_gemm(spec: MaskNetSpec, params: dict[str, torch.Tensor], probe: torch.Tensor,
                      first_cols: dict) -> torch.Tensor:
    """models.masknet's δ / ρ of n nets on ``probe`` (b, 3, S, S), each layer one matrix product
    per net: out (O, P) = W (O, C·k·k) @ columns (C·k·k, P) over the P = b·H·W probe pixels, in
    the (C, b, H, W) layout. Activations stay one net's (~1 MB at structure A), and the first
    layer's columns, the same probe for every net, are built once (``first_cols`` caches them)."""
    n = next(iter(params.values())).shape[0]
    b, c, hgt, wid = probe.shape
    x = probe.transpose(0, 1).contiguous()  # (3, b, S, S)
    first = spec.layers[0]
    key = (first.kernel, first.stride, first.padding, first.upsample)
    if key not in first_cols:
        first_cols[key] = _im2col(F.interpolate(x, scale_factor=first.upsample, mode="nearest")
                                  if first.upsample > 1 else x, first.kernel, first.stride, first.padding)
    weights = {k: v.to(torch.float32) for k, v in params.items()}
    out = torch.empty(n, b, c, hgt, wid)
    for i in range(n):
        h, kept = x, {}
        for j, layer in enumerate(spec.layers):
            if j == 0:
                cols, ho, wo = first_cols[key]
            else:
                if layer.upsample > 1:
                    h = F.interpolate(h, scale_factor=layer.upsample, mode="nearest")  # (C, b, ...) as (N, C, ...)
                if layer.concat:
                    h = torch.cat([h, kept[layer.concat]])  # one net's [input, skip] channel order
                cols, ho, wo = _im2col(h, layer.kernel, layer.stride, layer.padding)
            y = torch.mm(weights[f"{layer.name}.weight"][i].reshape(layer.out_ch, -1), cols)
            y += weights[f"{layer.name}.bias"][i][:, None]
            if layer.act == "relu":
                y.relu_()
            h = y.view(layer.out_ch, b, ho, wo)
            if layer.name in spec.skip_sources:
                kept[layer.name] = h
        out[i] = h.transpose(0, 1)
    return torch.tanh_(out).reshape(n, -1)


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

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._buf = np.zeros((capacity, dim), np.float32)  # capacity doubles as nets are added
        self._sq = np.zeros((capacity,), np.float32)  # squared norms of the rows
        self._n = 0
        self.last_id = 0  # highest database id already loaded (for incremental sync)

    def __len__(self) -> int:
        return self._n

    def add(self, fps: np.ndarray, last_id: int | None = None) -> None:
        fps = np.asarray(fps, np.float32).reshape(-1, self.dim)
        need = self._n + len(fps)
        if need > len(self._buf):
            cap = max(need, 2 * len(self._buf), 16)
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
