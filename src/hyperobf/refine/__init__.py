"""Hybrid on-device refinement (issue 12, point 2), PSP/torch side.

The user's MaskNet gives δ₀ on a 112² aligned face; then K signed-gradient steps against a bundled
frozen embedder Φ push Φ(x ⊕ δ) away from Φ(x). This package holds

* :mod:`.embedders` — Φ as an ``nn.Module``: x (N, 3, 112, 112) in [0, 1] -> unit embeddings (N, D)
  (the dlib ResNet, MIT, the one that ships; any ONNX ArcFace-style embedder such as MobileFaceNet
  for research runs);
* :mod:`.step` — one refinement step and :func:`refine_torch`, the batched torch reference;
* :mod:`.rewrite` / :mod:`.export` — the step traced to plain ONNX (no torch on the device), plus Φ
  itself, written with a small JSON description (``hyperobf export-refiner``).

The device side is :mod:`hyperobf.device_runtime.refine` (onnxruntime + numpy only).
"""

from .step import refine_step, refine_torch

__all__ = ["refine_step", "refine_torch"]
