"""A generated stand-in for the real faces root (tests, CI without ../shared).

Writes ``<root>/<source>/<identity>/<n>.png`` for each source folder. An identity is a smooth
random colour field plus an ellipse of its own colour and position; each image of it is shifted,
rescaled in brightness and noised, so classes are learnable but not trivially identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_LAYOUT = {"glint24": (6, 10), "celeba299": (16, 10)}


def write_synthetic_faces(root: str | Path, layout: dict[str, tuple[int, int]] | None = None,
                          size: int = 112, seed: int = 0) -> Path:
    """layout: {source: (identities, images per identity)}; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for src, (n_ids, per_id) in (layout or DEFAULT_LAYOUT).items():
        for k in range(n_ids):
            low = rng.random((6, 6, 3))
            base = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32)
            cy, cx, ry, rx = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.3)
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            base[mask] = 0.4 * base[mask] + 0.6 * rng.uniform(40, 230, 3)
            d = root / src / f"{src[:2]}{k:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for j in range(per_id):
                img = np.roll(base, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), (0, 1))
                img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 6, img.shape)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{j:03d}.png")
    return root
