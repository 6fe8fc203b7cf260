"""dlib's face-recognition ResNet (29 conv layers, 128-d embedding) in torch, read from the
face-api.js weight files (``face_recognition_model-weights_manifest.json`` + ``.bin``).

Weights live outside the repo (research-use terms); :func:`load_dlib_resnet` takes the folder.
The .bin holds the tensors back to back in manifest order; quantised ones are uint8/uint16 with
value = q * scale + min. Filters are stored HWIO (TensorFlow.js) and become OIHW here.

Input: 150x150 RGB chips, x = (rgb - mean) / 255 with rgb in 0..255. :meth:`DlibResNet.embed`
takes our 112x112 [0, 1] faces, resizes them to 150x150 and returns L2-normalised embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MANIFEST = "face_recognition_model-weights_manifest.json"
MEAN_RGB = (122.782, 117.001, 104.298)
_STAGES = (  # (name, kind) in forward order; "down" blocks halve the resolution
    ("conv32_1", "res"), ("conv32_2", "res"), ("conv32_3", "res"),
    ("conv64_down", "down"), ("conv64_1", "res"), ("conv64_2", "res"), ("conv64_3", "res"),
    ("conv128_down", "down"), ("conv128_1", "res"), ("conv128_2", "res"),
    ("conv256_down", "down"), ("conv256_1", "res"), ("conv256_2", "res"),
    ("conv256_down_out", "down"),
)


def read_faceapi_weights(folder: str | Path) -> dict[str, np.ndarray]:
    """Dequantised tensors {name: float32 array (manifest shape)}; ValueError if the files disagree."""
    folder = Path(folder)
    man_path = folder / MANIFEST
    if not man_path.is_file():
        raise FileNotFoundError(f"dlib face-api weights manifest not found: {man_path}")
    manifest = json.loads(man_path.read_text())[0]
    buf = (folder / manifest["paths"][0]).read_bytes()
    off, out = 0, {}
    for w in manifest["weights"]:
        n = int(np.prod(w["shape"]))
        q = w.get("quantization")
        if q:
            dt = {"uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
            a = np.frombuffer(buf, dt, n, off).astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            off += n * np.dtype(dt).itemsize
        else:
            a = np.frombuffer(buf, np.float32, n, off).copy()
            off += 4 * n
        out[w["name"]] = a.reshape(w["shape"])
    if off != len(buf):
        raise ValueError(f"weights file size {len(buf)} does not match the manifest ({off} bytes)")
    return out


class _ConvScale(nn.Module):
    """conv (+bias) followed by dlib's affine 'scale' layer (folded BatchNorm)."""

    def __init__(self, w: dict[str, np.ndarray], name: str, stride: int, pad: int) -> None:
        super().__init__()
        self.stride, self.pad = stride, pad
        filt = torch.from_numpy(w[f"{name}/conv/filters"]).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        self.register_buffer("weight", filt)
        self.register_buffer("bias", torch.from_numpy(w[f"{name}/conv/bias"]))
        self.register_buffer("scale", torch.from_numpy(w[f"{name}/scale/weights"]).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.from_numpy(w[f"{name}/scale/biases"]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.pad) * self.scale + self.shift


class _Residual(nn.Module):
    def __init__(self, w: dict[str, np.ndarray], name: str, down: bool) -> None:
        super().__init__()
        self.down = down
        # dlib's down blocks use an unpadded 3x3/2 conv; the shortcut is a 2x2 average pool
        # whose channels are zero-padded to the doubled width.
        self.conv1 = _ConvScale(w, f"{name}/conv1", 2 if down else 1, 0 if down else 1)
        self.conv2 = _ConvScale(w, f"{name}/conv2", 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(o + x)
        h2, w2 = x.shape[2] // 2, x.shape[3] // 2
        pooled = F.avg_pool2d(x[:, :, :h2 * 2, :w2 * 2], 2)
        if o.shape[2:] != pooled.shape[2:]:  # unpadded conv came out smaller: zero-pad right/bottom
            o = F.pad(o, (0, pooled.shape[3] - o.shape[3], 0, pooled.shape[2] - o.shape[2]))
        if pooled.shape[1] != o.shape[1]:
            pooled = torch.cat([pooled, torch.zeros_like(pooled)], 1)
        return F.relu(pooled + o)


class DlibResNet(nn.Module):
    """forward(x: (B, 3, 150, 150) RGB in 0..255) -> (B, 128) raw embedding (as dlib's)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.stem = _ConvScale(weights, "conv32_down", 2, 0)
        self.blocks = nn.Sequential(*[_Residual(weights, n, kind == "down") for n, kind in _STAGES])
        self.register_buffer("fc", torch.from_numpy(weights["fc"]))  # (256, 128)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x255: torch.Tensor) -> torch.Tensor:
        x = (x255 - self.mean) / 255.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return x.mean((2, 3)) @ self.fc

    def embed_differentiable(self, x01: torch.Tensor) -> torch.Tensor:
        """x01: (B, 3, H, W) in [0, 1] (our 112x112 faces) -> (B, 128) unit vectors, with gradients to x01."""
        x = F.interpolate(x01 * 255.0, size=(150, 150), mode="bilinear", align_corners=False)
        return F.normalize(self(x), dim=1)

    @torch.no_grad()
    def embed(self, x01: torch.Tensor) -> torch.Tensor:
        """:meth:`embed_differentiable` without gradients (the attacker's use)."""
        return self.embed_differentiable(x01)


def load_dlib_resnet(folder: str | Path) -> DlibResNet:
    return DlibResNet(read_faceapi_weights(folder)).eval()
