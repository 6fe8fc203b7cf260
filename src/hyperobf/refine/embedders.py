"""Φ for refinement: x (N, 3, 112, 112) in [0, 1] -> unit embeddings (N, D), built from plain ops
that trace to ONNX with their gradients (see :mod:`.rewrite`).

* ``dlib`` — dlib's face-recognition ResNet (MIT licence; torch port in :mod:`hyperobf.eval.dlib_resnet`),
  the embedder that ships to users. Its 150² input is made from our 112² faces by the same bilinear
  resize as :meth:`DlibResNet.embed`, written as two matrix products (``R @ x @ Rᵀ``): linear, so its
  gradient is two more matrix products, where ``upsample_bilinear2d_backward`` has no ONNX translation.
* an ONNX file — an ArcFace-style embedder (e.g. MobileFaceNet, research use only) read with
  :mod:`hyperobf.models.onnx_torch`; preprocessing (x·255 − 127.5) / 128, as ``train.feature.Embedder``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FACE_SIZE = 112  # the aligned crop the device perturbs (ArcFace template)


@dataclass(frozen=True)
class EmbedderInfo:
    name: str  # "dlib" or the ONNX file's stem
    licence: str  # what the refiner folder records; the device shows it
    input_size: int  # the face size the exported graphs take (112)
    net_size: int  # the embedder's own input size (dlib 150)
    dim: int  # embedding length

    def as_dict(self) -> dict:
        return asdict(self)


def resize_matrix(out_size: int, in_size: int, antialias: bool = False) -> torch.Tensor:
    """(out, in) matrix R with R @ v equal to F.interpolate's bilinear (align_corners=False) resize
    of a length-``in`` signal: read off by resizing the identity (the resize is linear)."""
    eye = torch.eye(in_size).view(1, 1, in_size, in_size)  # columns = unit impulses
    r = F.interpolate(eye, size=(out_size, in_size), mode="bilinear", align_corners=False, antialias=antialias)
    return r[0, 0].contiguous()  # (out, in)


class FaceEmbedder(nn.Module):
    """forward(x (N, 3, S, S) in [0, 1]) -> (N, D) unit: resize S -> net size, x·scale + shift, net."""

    def __init__(self, net: nn.Module, info: EmbedderInfo, scale: float | torch.Tensor,
                 shift: float | torch.Tensor, antialias: bool = False) -> None:
        super().__init__()
        self.net, self.info = net.eval(), info
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.resize = info.net_size != info.input_size
        r = resize_matrix(info.net_size, info.input_size, antialias) if self.resize else torch.zeros(0, 0)
        self.register_buffer("rows", r, persistent=False)  # (net, S)
        self.register_buffer("cols", r.T.contiguous(), persistent=False)  # (S, net)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "FaceEmbedder":  # frozen: always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize:
            x = self.rows @ x @ self.cols  # (N, 3, S, S) -> (N, 3, net, net)
        x = x * self.scale + self.shift
        return F.normalize(self.net(x).flatten(1), dim=1)  # (N, D)


def dlib_embedder(folder: str | Path) -> FaceEmbedder:
    """The dlib ResNet from face-api.js weight files (FileNotFoundError / ValueError when unusable)."""
    from ..eval.dlib_resnet import load_dlib_resnet

    folder = Path(folder)
    net = load_dlib_resnet(folder)  # takes RGB in 0..255 at 150², subtracts its mean itself
    info = EmbedderInfo("dlib", "MIT (dlib face recognition ResNet, face-api.js weights)", FACE_SIZE, 150,
                        int(net.fc.shape[1]))
    return FaceEmbedder(net, info, 255.0, 0.0)


def onnx_embedder(path: str | Path, licence: str = "unknown (research use only)", mean: float = 127.5,
                  std: float = 128.0) -> FaceEmbedder:
    """An ArcFace-style ONNX embedder; its declared input size (else 112) is its net size. The resize, if
    any, is the antialiased bilinear one ``train.feature.Embedder`` uses."""
    from ..models.onnx_torch import load_onnx_module

    path = Path(path)
    net = load_onnx_module(path)
    dims = net.input_shape
    size = int(dims[-1]) if len(dims) == 4 and dims[-1] else FACE_SIZE
    with torch.no_grad():
        dim = int(net(torch.zeros(1, 3, size, size)).flatten(1).shape[1])
    info = EmbedderInfo(path.stem, licence, FACE_SIZE, size, dim)
    return FaceEmbedder(net, info, 255.0 / std, -mean / std, antialias=True)


def load_refine_embedder(which: str | Path, models_root: str | Path | None = None) -> FaceEmbedder:
    """``dlib`` (folder ``<models_root>/dlib_resnet_faceapi``), a dlib weights folder, or an ONNX file."""
    p = Path(which)
    if str(which) == "dlib":
        if models_root is None:
            raise ValueError("--embedder dlib needs the folder of dlib_resnet_faceapi (--models)")
        return dlib_embedder(Path(models_root) / "dlib_resnet_faceapi")
    if p.is_dir():
        return dlib_embedder(p)
    if p.suffix.lower() == ".onnx":
        return onnx_embedder(p)
    raise ValueError(f"unknown embedder {str(which)!r}: give dlib, a dlib_resnet_faceapi folder or an .onnx file")
