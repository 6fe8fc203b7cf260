"""Shared helpers for the device-runtime and export tests (no tests, no fixtures: those are in conftest.py).

Models are built directly with build_onnx from HyperNet-generated tiny weights (fast), with
the real metadata; photos are generated (skimage's astronaut has a real face).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SCRFD = ("models", "scrfd_2.5g_bnkps.onnx")


def seeded_users(seed: int = 0):
    """A stand-in for ``hyperobf.export.issue.secure_normal``: users' z from a seeded RNG, for exports that
    include int8. Weight-only int8 moves the tiny net's δ by a few % depending on the user's z, and the
    exporter rightly refuses a user above 5 % (seen with CSPRNG users: 8.1 % and 5.2 %, one CI run in many)."""
    rng = np.random.default_rng(seed)
    return lambda n, dim: rng.standard_normal((n, dim)).astype(np.float32)


def tiny_params(seed: int = 0, structure: str = "tiny") -> tuple[object, dict[str, np.ndarray]]:
    import torch

    from hyperobf.models.hypernet import HyperNet
    from hyperobf.spec import builtin_spec

    spec = builtin_spec(structure)
    torch.manual_seed(seed)
    with torch.no_grad():
        params = HyperNet(spec).generate(1)
    return spec, {k: v[0].numpy().copy() for k, v in params.items()}


def build_model(path: Path, shape: str = "dynamic", seed: int = 0, structure: str = "tiny",
                meta_overrides: dict[str, str] | None = None) -> Path:
    """Write a MaskNet ONNX file with real metadata (optionally tampered) and return its path."""
    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.model_meta import build_metadata

    spec, params = tiny_params(seed, structure)
    meta = build_metadata(spec, f"user{seed:04d}", "0" * 64, shape=shape)
    meta.update(meta_overrides or {})
    path.write_bytes(build_onnx(spec, params, shape, meta).SerializeToString())
    return path


def highpass_model(path: Path, gain: float = 30.0, rho_pixel: float = 0.03, shape: str = "dynamic") -> Path:
    """A tiny-spec MaskNet whose δ is ρ·tanh(gain·Laplacian(x)) per channel (R, G, and R again for B):
    a perturbation tied to the image's scale, like a trained net's high-frequency pattern."""
    from hyperobf.export.onnx_graph import build_onnx
    from hyperobf.model_meta import build_metadata
    from hyperobf.spec import builtin_spec

    spec = builtin_spec("tiny", rho_pixel)
    p = {k: np.zeros(v, np.float32) for k, v in spec.param_shapes().items()}
    lap = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    for i, (ch, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
        p["conv1.weight"][i, ch] = sign * lap  # ReLU keeps each sign in its own channel
        p["conv2.weight"][i, i, 1, 1] = 1.0
        p["fc.weight"][i, i, 0, 0] = 1.0
    for out, (a, b) in enumerate([(0, 1), (2, 3), (0, 1)]):
        p["proj.weight"][out, a, 0, 0], p["proj.weight"][out, b, 0, 0] = gain, -gain
    meta = build_metadata(spec, "highpass", "0" * 64, shape=shape)
    path.write_bytes(build_onnx(spec, p, shape, meta).SerializeToString())
    return path


def write_manifest(path: Path, model: Path, sha: str | None = None) -> Path:
    sha = sha or hashlib.sha256(model.read_bytes()).hexdigest()
    path.write_text(json.dumps({"file": model.name, "sha256": sha}) + "\n")
    return path


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """{relative path: (bytes, mtime_ns)} of every file under folder (hidden temp files included)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, idat: bytes) -> bytes:
    """A greyscale 8-bit PNG with the given IHDR size and raw IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bomb_png(side: int = 9500) -> bytes:
    """A *valid* PNG of side² black pixels (90 MP for 9500, above Pillow's 89.5 MP limit) in ~90 KB."""
    c = zlib.compressobj(1)
    row = bytes(side + 1)  # filter byte + pixels
    chunks, left = [], side
    while left:
        n = min(left, 512)
        chunks.append(c.compress(row * n))
        left -= n
    chunks.append(c.flush())
    return png_bytes(side, side, b"".join(chunks))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims width×height but holds almost no data (decoding it would fail)."""
    return png_bytes(width, height, zlib.compress(bytes(64)))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt, **kw)
    return b.getvalue()


def no_temp_files(folder: Path) -> bool:
    return not any(p.name.endswith(".tmp") for p in folder.rglob("*"))


def env_without_torch(tmp: Path) -> dict[str, str]:
    """Environment whose PYTHONPATH puts a poisoned `torch` first: importing it raises."""
    poison = tmp / "poison" / "torch"
    poison.mkdir(parents=True, exist_ok=True)
    (poison / "__init__.py").write_text("raise ImportError('torch was imported by the device runtime')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tmp / "poison") + os.pathsep + env.get("PYTHONPATH", "")
    return env
