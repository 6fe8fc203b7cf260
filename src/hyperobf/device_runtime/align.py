"""Face alignment geometry: 5-point similarity transforms to the ArcFace 112×112 template and
antialiased affine warps between a photo and the aligned crop (both directions), with Pillow.

Coordinates are continuous pixel coordinates (pixel centres at +0.5), which is what Pillow's
affine transform uses; keypoints from a detector and the template (pixel-centre integer
convention) are shifted by +0.5 before fitting. Matrices are 3×3 homogeneous.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# ArcFace / InsightFace 5-point template for 112×112 crops: left eye, right eye, nose tip,
# left mouth corner, right mouth corner (x, y).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def template(size: int = 112) -> np.ndarray:
    """The 5-point template for a ``size``-pixel square crop (the 112 template scaled)."""
    return ARCFACE_112 * (size / 112.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) with dst ≈ M·src.

    src, dst: (K, 2) points, K >= 2. Solved in closed form with complex numbers:
    dst = a·src + b, a = s·e^{iθ}. Returns the 3×3 matrix.
    """
    p = src[:, 0] + 1j * src[:, 1]
    q = dst[:, 0] + 1j * dst[:, 1]
    pc, qc = p - p.mean(), q - q.mean()
    denom = float(np.sum(np.abs(pc) ** 2))
    if denom < 1e-12:
        raise ValueError("degenerate keypoints (all at one point)")
    a = np.sum(np.conj(pc) * qc) / denom
    b = q.mean() - a * p.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0.0, 0.0, 1.0]])


def face_to_template(keypoints: np.ndarray, size: int = 112) -> np.ndarray:
    """3×3 matrix mapping photo coordinates to the aligned ``size``² crop, from 5 keypoints."""
    return similarity(np.asarray(keypoints, np.float64) + 0.5, template(size) + 0.5)


def scale_of(m: np.ndarray) -> float:
    """Destination pixels per source pixel of an affine matrix (sqrt of |det| of its linear part)."""
    return float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0, x], [0, 1.0, y], [0, 0, 1.0]])


def warp(src: Image.Image, m: np.ndarray, size: tuple[int, int], origin: tuple[int, int] = (0, 0),
         fill: float | tuple[int, ...] = 0) -> Image.Image:
    """Resample ``src`` through the affine ``m`` (src coords -> destination coords).

    Returns the destination window of ``size`` (w, h) whose top-left is ``origin`` in destination
    coordinates; pixels that fall outside ``src`` are ``fill``. When the warp shrinks by more than
    1.4× (e.g. a 600-pixel face to 112²), the source footprint is first resized with Pillow's
    antialiasing filter, so the warp itself is near scale 1 and bilinear sampling does not alias.
    """
    m = np.asarray(m, np.float64)
    s = scale_of(m)
    if s < 1 / 1.4:
        inv = np.linalg.inv(m)
        ox, oy = origin
        corners = np.array([[ox, oy, 1], [ox + size[0], oy, 1], [ox, oy + size[1], 1], [ox + size[0], oy + size[1], 1]])
        foot = (inv @ corners.T)[:2]  # (2, 4) footprint of the window in src coords
        margin = 2.0 / s
        x0 = int(max(0, np.floor(foot[0].min() - margin)))
        y0 = int(max(0, np.floor(foot[1].min() - margin)))
        x1 = int(min(src.width, np.ceil(foot[0].max() + margin)))
        y1 = int(min(src.height, np.ceil(foot[1].max() + margin)))
        if x1 <= x0 or y1 <= y0:  # window entirely outside the source
            return Image.new(src.mode, size, fill)
        nw, nh = max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s))
        src = src.crop((x0, y0, x1, y1)).resize((nw, nh), Image.BILINEAR)
        shrink = np.diag([nw / (x1 - x0), nh / (y1 - y0), 1.0]) @ _translate(-x0, -y0)
        m = m @ np.linalg.inv(shrink)
    data = (np.linalg.inv(m) @ _translate(*origin))[:2].ravel()
    return src.transform(size, Image.AFFINE, tuple(data), Image.BILINEAR, fillcolor=fill)


def footprint(m: np.ndarray, size: int, bounds: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) in photo coords covered by the aligned ``size``² square
    (m: photo -> aligned), clipped to the photo ``bounds`` (w, h); None if it lies outside."""
    inv = np.linalg.inv(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    pts = (inv @ corners.T)[:2]
    x0, y0 = max(0, int(np.floor(pts[0].min()))), max(0, int(np.floor(pts[1].min())))
    x1, y1 = min(bounds[0], int(np.ceil(pts[0].max()))), min(bounds[1], int(np.ceil(pts[1].max())))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def feather_mask(size: int, feather: float) -> np.ndarray:
    """(size, size) float32 weights: 1 inside, falling linearly to 0 over ``feather`` pixels at the edges."""
    c = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(c, size - c)  # distance of each pixel centre to the nearest edge
    ramp = np.clip(edge / max(feather, 1e-6), 0.0, 1.0)
    return np.minimum(ramp[:, None], ramp[None, :])
