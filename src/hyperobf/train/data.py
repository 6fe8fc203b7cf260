"""Face data: an ImageFolder-style directory loaded into memory, or an embedded synthetic set.

Faces are small (112x112), so whole sets live in one uint8 tensor (N, 3, 112, 112).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class FaceSet:
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def float(self, idx: torch.Tensor | slice | None = None) -> torch.Tensor:
        imgs = self.images if idx is None else self.images[idx]
        return imgs.float() / 255.0

    def subset(self, idx: torch.Tensor) -> "FaceSet":
        return FaceSet(self.images[idx], self.labels[idx], self.classes)


def load_files(paths: list[Path], size: int = 112) -> torch.Tensor:
    """The one image loader: files -> (N, 3, size, size) uint8 (RGB; resized bilinearly when not size²)."""
    arrs = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arrs.append(np.asarray(im))
    if not arrs:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def load_image_folder(
    root: str | Path, size: int = 112, max_identities: int = 0, max_per_identity: int = 0,
    identities: list[str] | None = None,
) -> FaceSet:
    """Read ``root/<identity>/<image>``; identities sorted by name; images resized to size²."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"face directory not found: {root}")
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if identities is not None:
        wanted = set(identities)
        dirs = [d for d in dirs if d.name in wanted]
    if max_identities:
        dirs = dirs[:max_identities]
    paths, labels, classes = [], [], []
    for d in dirs:
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_identity:
            files = files[:max_per_identity]
        if not files:
            continue
        paths += files
        labels += [len(classes)] * len(files)
        classes.append(d.name)
    if not paths:
        raise ValueError(f"no images found under {root} (expected <root>/<identity>/<image>)")
    return FaceSet(load_files(paths, size), torch.tensor(labels, dtype=torch.int64), classes)


def synthetic_faces(n_identities: int = 6, per_identity: int = 12, size: int = 112, seed: int = 0) -> FaceSet:
    """An embedded stand-in for real faces (no download, no ../shared).

    Each identity is a crop of one of scikit-image's sample photos (the astronaut's face
    first), jittered by small shifts, scale and brightness changes per image.
    """
    from skimage import data as skdata

    sources = [
        skdata.astronaut()[20:220, 140:340],  # Eileen Collins' face
        skdata.chelsea(),
        skdata.coffee(),
        skdata.rocket(),
        np.stack([skdata.camera()] * 3, -1),
        skdata.immunohistochemistry(),
        skdata.hubble_deep_field(),
        np.stack([skdata.moon()] * 3, -1),
    ]
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for ident in range(n_identities):
        src = Image.fromarray(np.ascontiguousarray(sources[ident % len(sources)][..., :3]))
        for _ in range(per_identity):
            w, h = src.size
            s = rng.uniform(0.75, 0.95)
            cw, ch = int(w * s), int(h * s)
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
            a = np.asarray(im).astype(np.float32) * rng.uniform(0.85, 1.15)
            imgs.append(np.clip(a, 0, 255).astype(np.uint8))
            labels.append(ident)
    arr = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return FaceSet(arr, torch.tensor(labels), [f"synthetic{i}" for i in range(n_identities)])


def split_holdout(faces: FaceSet, fraction: float, seed: int) -> tuple[FaceSet, FaceSet]:
    """Per-image split (same identities) for held-out image-quality metrics."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(faces), generator=g)
    n_hold = max(1, int(round(len(faces) * fraction))) if fraction > 0 else 0
    return faces.subset(perm[n_hold:]), faces.subset(perm[:n_hold])
