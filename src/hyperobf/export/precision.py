"""Per-precision encoding of generated MaskNet weights into the tensors a model file stores.

A *slot* is one stored tensor whose bytes change per user. Encoding is vectorised over users:
``encode(spec, precision, {name: (n, *shape) float32})`` -> ``{slot: (n, *slot_shape) slot dtype}``.

* fp32: the weights as they are.
* fp16: weights and biases rounded to float16 (clamped to the finite fp16 range).
* int8: weight-only quantisation — each conv weight as int8 with one float32 scale per output
  channel (symmetric, zero point 0); biases and all activations stay float32. Quantising the
  activations to 8 bit destroys a ±0.03 perturbation (TOOLCHAIN_NOTES), this does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import MaskNetSpec

FP16_MAX = 65504.0


@dataclass(frozen=True)
class Slot:
    name: str  # initializer / const name in the model file
    shape: tuple[int, ...]
    dtype: np.dtype


def slots(spec: MaskNetSpec, precision: str) -> list[Slot]:
    """The per-user tensors of a (spec, precision) model, in spec order."""
    out: list[Slot] = []
    for name, shape in spec.param_shapes().items():
        if precision == "fp32":
            out.append(Slot(name, shape, np.dtype(np.float32)))
        elif precision == "fp16":
            out.append(Slot(name, shape, np.dtype(np.float16)))
        elif precision == "int8":
            if name.endswith(".weight"):
                out.append(Slot(name + "_q", shape, np.dtype(np.int8)))
                out.append(Slot(name + "_scale", shape[:1], np.dtype(np.float32)))
            else:
                out.append(Slot(name, shape, np.dtype(np.float32)))
        else:
            raise ValueError(f"unknown precision {precision!r}")
    return out


def encode(spec: MaskNetSpec, precision: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{param: (n, *shape) float32} -> {slot: (n, *slot shape)} in the slot dtypes."""
    out: dict[str, np.ndarray] = {}
    for name in spec.param_shapes():
        w = np.asarray(params[name], np.float32)
        if precision == "fp32":
            out[name] = w  # as generated (possibly a strided view; the splicer copies it once)
        elif precision == "fp16":
            out[name] = np.clip(w, -FP16_MAX, FP16_MAX).astype(np.float16)
        elif precision == "int8" and name.endswith(".weight"):
            q, scale = quantize_per_channel(w)
            out[name + "_q"], out[name + "_scale"] = q, scale
        elif precision == "int8":
            out[name] = w
        else:
            raise ValueError(f"unknown precision {precision!r}")
    return out


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w: (n, out, in, k, k) float32 -> int8 q of the same shape, scale (n, out) float32.

    Symmetric: w ≈ q * scale, |q| <= 127. An all-zero channel gets scale 1 (q = 0).
    """
    n, c = w.shape[:2]
    amax = np.abs(w.reshape(n, c, -1)).max(axis=2)  # (n, out)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.rint(w / scale.reshape(n, c, *([1] * (w.ndim - 2))))
    return np.clip(q, -127, 127).astype(np.int8), scale


def decode(spec: MaskNetSpec, precision: str, stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode`: the float32 weights a model file effectively holds."""
    out: dict[str, np.ndarray] = {}
    for name in spec.param_shapes():
        if precision == "int8" and name.endswith(".weight"):
            q, scale = stored[name + "_q"], stored[name + "_scale"]
            out[name] = q.astype(np.float32) * scale.reshape(*scale.shape, *([1] * (q.ndim - scale.ndim)))
        else:
            out[name] = np.asarray(stored[name], np.float32)
    return out
