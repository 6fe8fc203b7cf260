"""MaskNet: the per-user perturbation network, built from a :class:`MaskNetSpec`.

Ways to run it:
* :class:`MaskNet` — an ordinary ``nn.Module`` (export, baselines, reference);
* :func:`outputs_from_numpy` — k nets given as numpy weights, one after another on the same
  images (the exporter's fp32 reference and its fp16 emulation);
* :func:`apply_batched` — n nets with generated weights at once, each on its own images,
  via grouped convolution (no Python loop over nets); :func:`grouped_pre_tanh` is its layer
  loop, shared with the PSP's probe fingerprints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import numpy as np
from torch import nn

from ..spec import LayerSpec, MaskNetSpec


def _act(h: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
    return F.relu(h) if layer.act == "relu" else h


def _pre(h: torch.Tensor, layer: LayerSpec) -> torch.Tensor:
    return F.interpolate(h, scale_factor=layer.upsample, mode="nearest") if layer.upsample > 1 else h


def cat_groups(h: torch.Tensor, skip: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate per conv group: h (b, n*C1, H, W), skip (b, n*C2, H, W) -> (b, n*(C1+C2), H, W),
    group i = [h_i, skip_i], the channel order of one net's [input, skip] (its weights' in_ch)."""
    b, _, hgt, wid = h.shape
    both = torch.cat([h.reshape(b, n, -1, hgt, wid), skip.reshape(b, n, -1, hgt, wid)], dim=2)
    return both.reshape(b, -1, hgt, wid)


class MaskNet(nn.Module):
    """Reference MaskNet. forward(x: (B,3,H,W) in [0,1]) -> protected image, same shape."""

    def __init__(self, spec: MaskNetSpec, dropout: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.dropout = dropout  # MC-dropout baseline: channel dropout after hidden layers
        for layer in spec.layers:
            conv = nn.Conv2d(layer.in_ch, layer.out_ch, layer.kernel, layer.stride, layer.padding)
            self.add_module(layer.name, conv)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        kept: dict[str, torch.Tensor] = {}  # skip sources' outputs, (B, out_ch, h, w) each
        for layer in self.spec.layers:
            h = _pre(h, layer)
            if layer.concat:
                h = torch.cat([h, kept[layer.concat]], dim=1)  # (B, in_ch, h, w)
            h = _act(getattr(self, layer.name)(h), layer)
            if self.dropout > 0 and layer.act == "relu":
                h = F.dropout(h, self.dropout, self.training)
            if layer.name in self.spec.skip_sources:
                kept[layer.name] = h
        return self.spec.rho_pixel * torch.tanh(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.delta(x)).clamp(0.0, 1.0)

    def load_numpy(self, params: dict[str, np.ndarray]) -> "MaskNet":
        """Load one net's weights {name: array of the spec's shape} (copied as float32); returns self."""
        self.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in params.items()})
        return self

    @classmethod
    def from_numpy(cls, spec: MaskNetSpec, params: dict[str, np.ndarray]) -> "MaskNet":
        """An eval-mode net holding ``params`` (one net's numpy weights)."""
        return cls(spec).eval().load_numpy(params)


@torch.no_grad()
def outputs_from_numpy(spec: MaskNetSpec, params: dict[str, np.ndarray], x: np.ndarray,
                       dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """k nets' (protected, δ) on the same images, computed in ``dtype``, returned as float32 numpy.

    params: {name: (k, *shape)}; x: (B, 3, H, W) -> each output (k, B, 3, H, W). One plain net whose
    weights are reloaded per user: faster than one grouped-conv pass for a few users on a busy CPU.
    """
    net = MaskNet(spec).eval().to(dtype)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dtype)
    outs, deltas = [], []
    for i in range(len(next(iter(params.values())))):
        net.load_numpy({k: v[i] for k, v in params.items()})  # load_state_dict casts into the net's dtype
        d = net.delta(xt)
        outs.append((xt + d).clamp(0.0, 1.0).float().numpy())
        deltas.append(d.float().numpy())
    return np.stack(outs), np.stack(deltas)


def grouped_pre_tanh(spec: MaskNetSpec, params: dict[str, torch.Tensor], h: torch.Tensor, n: int,
                     channels_last: bool = False) -> torch.Tensor:
    """The last layer's output (before ρ·tanh) of n nets as n conv groups: h (b, n*3, H, W) holds
    net i's images in group i; returns (b, n*3, H, W).

    ``channels_last``: run in that memory layout (weights and concatenations too), which the PSP's
    probe fingerprints use without autograd: their grouped conv is ~25 % faster so on CPU, and
    their ReLUs then work in place (the activations are large and memory-bound).
    """
    layout = torch.channels_last if channels_last else None
    kept: dict[str, torch.Tensor] = {}  # skip sources' outputs, (b, n*out_ch, h, w) each
    for layer in spec.layers:
        w = params[f"{layer.name}.weight"].reshape(n * layer.out_ch, layer.in_ch, layer.kernel, layer.kernel)
        bias = params[f"{layer.name}.bias"].reshape(n * layer.out_ch)
        h = _pre(h, layer)
        if layer.concat:
            h = cat_groups(h, kept[layer.concat], n)  # (b, n*in_ch, h, w)
        if layout is not None:
            h, w = h.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
        h = F.conv2d(h, w, bias, layer.stride, layer.padding, groups=n)
        if layer.act == "relu":
            h = F.relu(h, inplace=layout is not None)
        if layer.name in spec.skip_sources:
            kept[layer.name] = h
    return h


def delta_batched(spec: MaskNetSpec, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Perturbation of n nets, each on its own images, in one grouped-conv pass.

    params[name]: (n, *spec shape); x: (n, b, 3, H, W) -> delta (n, b, 3, H, W).
    The n nets become n conv groups: images are laid out as (b, n*C, H, W).
    """
    n, b, c, hgt, wid = x.shape
    h = grouped_pre_tanh(spec, params, x.permute(1, 0, 2, 3, 4).reshape(b, n * c, hgt, wid), n)
    h = h.reshape(b, n, c, hgt, wid).permute(1, 0, 2, 3, 4)
    return spec.rho_pixel * torch.tanh(h)


def apply_batched(spec: MaskNetSpec, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Protected images of n nets: x (n, b, 3, H, W) -> (n, b, 3, H, W), clamped to [0, 1]."""
    return (x + delta_batched(spec, params, x)).clamp(0.0, 1.0)


def apply_shared_input(spec: MaskNetSpec, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Every one of the n nets on the same images: x (b, 3, H, W) -> (n, b, 3, H, W)."""
    n = next(iter(params.values())).shape[0]
    return apply_batched(spec, params, x.unsqueeze(0).expand(n, *x.shape))


def unbatch(params: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """The i-th net's weights as an ordinary state_dict."""
    return {k: v[i] for k, v in params.items()}


def stack(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`unbatch` over many nets: list of state_dicts -> batched params."""
    return {k: torch.stack([sd[k] for sd in state_dicts]) for k in state_dicts[0]}
