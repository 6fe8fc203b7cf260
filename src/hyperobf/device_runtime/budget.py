"""The budget rule on the device: DSSIM ≤ ρ on the 8-bit face, |δ| ≤ ρ_pixel — numpy only (never torch).

The same rule as the evaluation's :func:`hyperobf.eval.limit.fit_budget`, which every protector is
measured under (issue 12): the protected face is the 8-bit image; its DSSIM to the original must be
≤ ρ and |δ| ≤ ρ_pixel; an image over budget keeps the largest scale s ∈ [0, 1] of its δ (bisection,
12 halvings, rounding to 8 bits inside the test) that fits. ``s = 0`` (the original) always fits.

SSIM is kornia's ``metrics.ssim`` (window 11, Gaussian σ 1.5, reflect padding, c1 = 0.01², c2 = 0.03²,
eps 1e-12, max_val 1) and DSSIM = (1 − mean SSIM over channels and pixels) / 2, as
``train.losses.dssim``, in float32 as kornia computes it. The Gaussian blur is separable and done
by shifted adds in numpy (no BLAS: OpenBLAS threads a 112² band-matrix product, and on a shared
core that was 3-5× slower than these adds). The original's local mean and mean square are computed
once and reused across the bisection: each test costs three blurred moments, not five.

Whole mode has no aligned face: :func:`fit_budget_windows` applies one scale to the whole working
image, chosen so that every face-sized (S×S) window of it stays within ρ — the largest window DSSIM
(mean of the SSIM map over the window) is the measure. At working scale a face fills about one S×S
window, so this bounds every face the photo may hold; the SSIM map inside a window sees its real
neighbours at the window's edges where a face crop would see reflect padding (a few edge pixels).
"""

from __future__ import annotations

import numbers
import time
from functools import lru_cache
from typing import Callable

import numpy as np

WINDOW, SIGMA = 11, 1.5  # kornia.metrics.ssim(window_size=11): Gaussian σ is fixed at 1.5
C1, C2, EPS = 0.01 ** 2, 0.03 ** 2, 1e-12  # max_val 1.0
ITERS = 12  # bisection halvings (as eval.limit.fit_budget)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """(size,) float64 Gaussian taps summing to 1 (kornia.filters.get_gaussian_kernel1d, odd size)."""
    n = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(n * n) / (2.0 * sigma * sigma))
    return g / g.sum()


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected into [0, n) without repeating the edge (torch/numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def _blur_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """1-D blur of float32 ``a`` along ``axis`` (−1: W, −2: H), reflect-padded: same shape, float32.

    The taps are symmetric (k[j] = k[10 − j]): out = k5·p[5] + Σ_{j<5} k_j·(p[j] + p[10 − j]), 16 passes
    over slices of one padded copy."""
    k = _taps()
    r, n = WINDOW // 2, a.shape[axis]
    p = np.take(a, _reflect(np.arange(-r, n + r), n), axis=axis)  # reflect-padded copy, n + 10 along axis

    def sl(j: int) -> tuple:
        return (Ellipsis, slice(j, j + n)) if axis == -1 else (Ellipsis, slice(j, j + n), slice(None))

    out = p[sl(r)] * k[r]
    tmp = np.empty_like(out)
    for j in range(r):
        np.add(p[sl(j)], p[sl(WINDOW - 1 - j)], out=tmp)
        tmp *= k[j]
        out += tmp
    return out


@lru_cache(maxsize=1)
def _taps() -> np.ndarray:
    return gaussian_window().astype(np.float32)


def blur(a: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of (..., H, W) float32 with reflect padding, W first as kornia: (..., H, W)."""
    return _blur_axis(_blur_axis(np.asarray(a, np.float32), -1), -2)


class Reference:
    """An original image batch x (N, C, H, W) in [0, 1] with its local moments kept for many SSIM tests."""

    def __init__(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W) images, got shape {x.shape}")
        self.x = np.ascontiguousarray(x, np.float32)
        self.mu = blur(self.x)  # (N, C, H, W) μ_x
        self.mu_sq = self.mu * self.mu  # μ_x²
        self.var = blur(self.x * self.x) - self.mu_sq  # σ_x² (as kornia: E[x²] − μ²)

    def ssim_map(self, y: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """SSIM map (M, C, H, W) of y (M, C, H, W) against the originals ``idx`` (default: all N)."""
        sel = slice(None) if idx is None else idx
        x, mu_x, mu_x2, var_x = self.x[sel], self.mu[sel], self.mu_sq[sel], self.var[sel]
        y = np.asarray(y, np.float32)
        m = np.empty((3,) + y.shape, np.float32)  # (3, M, C, H, W): y, y², xy -> μ_y, E[y²], E[xy]
        m[0] = y
        np.multiply(y, y, out=m[1])
        np.multiply(x, y, out=m[2])
        m = blur(m)
        mu_y = m[0]
        mu_xy = mu_x * mu_y
        mu_y2 = mu_y * mu_y
        num = (2.0 * mu_xy + C1) * (2.0 * (m[2] - mu_xy) + C2)
        den = (mu_x2 + mu_y2 + C1) * (var_x + (m[1] - mu_y2) + C2)
        return num / (den + EPS)

    def dssim(self, y: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """(M,) per-image DSSIM = (1 − mean SSIM) / 2 of y (M, C, H, W) against the originals ``idx``."""
        s = self.ssim_map(y, idx)
        return (1.0 - s.reshape(len(s), -1).mean(1, dtype=np.float64)) / 2.0

    def dssim_windows_max(self, y: np.ndarray, window: int, idx: np.ndarray | None = None) -> np.ndarray:
        """(M,) the largest DSSIM over every window×window box (all positions) of each image."""
        d = (1.0 - self.ssim_map(y, idx).mean(1, dtype=np.float64)) / 2.0  # (M, H, W) per-pixel DSSIM
        return window_max_mean(d, window)


def window_max_mean(d: np.ndarray, window: int) -> np.ndarray:
    """(M,) the largest mean of (M, H, W) ``d`` over any window×window box (clipped to the image)."""
    m, h, w = d.shape
    wh, ww = min(window, h), min(window, w)
    ii = np.zeros((m, h + 1, w + 1), np.float64)  # integral image
    ii[:, 1:, 1:] = d.cumsum(1).cumsum(2)
    box = ii[:, wh:, ww:] - ii[:, :-wh, ww:] - ii[:, wh:, :-ww] + ii[:, :-wh, :-ww]  # (M, h−wh+1, w−ww+1)
    return box.reshape(m, -1).max(1) / (wh * ww)


def ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) mean SSIM of (N, C, H, W) images in [0, 1] (kornia.metrics.ssim, window 11, mean over C, H, W)."""
    return 1.0 - 2.0 * Reference(x).dssim(y)


def dssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) DSSIM = (1 − SSIM) / 2 of (N, C, H, W) images in [0, 1] (train.losses.dssim)."""
    return Reference(x).dssim(y)


def quantise(x: np.ndarray) -> np.ndarray:
    """As a saved 8-bit image: float32 [0, 1] -> float32 on the 1/255 grid (round half to even, as torch)."""
    return np.round(np.clip(x, 0.0, 1.0) * np.float32(255.0)) / np.float32(255.0)


Measure = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (y (M, C, H, W), idx (M,)) -> (M,) DSSIM


def scaled(x: np.ndarray, delta: np.ndarray, s: np.ndarray | float, rho_pixel: float) -> np.ndarray:
    """quantise(x + clip(δ·s, ±ρ_pixel)), s (N,) or a scalar: the clip after the scale (a fill's s > 1)."""
    s = np.asarray(s, np.float32).reshape(-1, 1, 1, 1)
    return quantise(x + np.clip(delta * s, -rho_pixel, rho_pixel))


def fit_scale(x: np.ndarray, delta: np.ndarray, rho: float, rho_pixel: float, iters: int = ITERS,
              measure: Measure | None = None, s_max: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The bisection of eval.limit.fit_budget: x, δ (N, C, H, W) -> (scale s (N,) float32, DSSIM at s (N,)).

    ``measure`` defaults to the per-image DSSIM against x. Arithmetic on the images is float32 as in
    torch, so a scale gives bit-identical 8-bit images on both sides. ``s_max`` > 1: the net's fill (its
    model's ``budget_fill``): a δ that uses less than ρ is scaled *up*, by at most s_max.
    """
    x = np.ascontiguousarray(x, np.float32)
    delta = np.clip(np.asarray(delta, np.float32), -rho_pixel, rho_pixel)
    if x.shape != delta.shape or x.ndim != 4:
        raise ValueError(f"x and delta must be (N, C, H, W) of one shape, got {x.shape} and {delta.shape}")
    if measure is None:
        measure = Reference(x).dssim
    n = len(x)
    s_max = np.float32(s_max)
    lo, hi = np.zeros(n, np.float32), np.full(n, s_max, np.float32)
    every = np.arange(n)
    d_lo = np.zeros(n, np.float64)  # DSSIM at lo: 0 at s = 0 (the original)
    d_full = measure(scaled(x, delta, s_max, rho_pixel), every)
    ok = d_full <= rho
    lo[ok], d_lo[ok] = s_max, d_full[ok]
    for _ in range(iters):
        todo = np.flatnonzero(lo < hi - np.float32(1e-6))  # images still bisecting (torch computes all N)
        if not len(todo):
            break
        mid = (lo[todo] + hi[todo]) / np.float32(2.0)
        d = measure(scaled(x[todo], delta[todo], mid, rho_pixel), todo)
        fits = d <= rho
        lo[todo[fits]], d_lo[todo[fits]] = mid[fits], d[fits]
        hi[todo[~fits]] = mid[~fits]
    return lo, d_lo


def fit_budget(x: np.ndarray, delta: np.ndarray, rho: float, rho_pixel: float, iters: int = ITERS,
               s_max: float = 1.0) -> np.ndarray:
    """The budget rule: x, δ (N, C, H, W) float -> 8-bit protected images (N, C, H, W) float32 on the
    1/255 grid with DSSIM ≤ ρ and |δ| ≤ ρ_pixel (eval.limit.fit_budget, numpy)."""
    s, _ = fit_scale(x, delta, rho, rho_pixel, iters, s_max=s_max)
    return scaled(np.asarray(x, np.float32), np.clip(np.asarray(delta, np.float32), -rho_pixel, rho_pixel), s, rho_pixel)


def fit_budget_windows(x: np.ndarray, delta: np.ndarray, rho: float, rho_pixel: float, window: int,
                       iters: int = ITERS, s_max: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole mode: one scale per image so that every window×window box has DSSIM ≤ ρ.

    x, δ (N, C, H, W) -> (protected 8-bit images (N, C, H, W) float32, scale (N,), largest window DSSIM (N,)).
    """
    ref = Reference(x)
    s, d = fit_scale(x, delta, rho, rho_pixel, iters, lambda y, idx: ref.dssim_windows_max(y, window, idx), s_max)
    out = scaled(ref.x, np.clip(np.asarray(delta, np.float32), -rho_pixel, rho_pixel), s, rho_pixel)
    return out, s, d


# --- the device's hooks: which budget, and a MaskNet whose δ obeys it ---------------------------------------

DEFAULT_PRESET = "mid"  # what `hyperobf protect` and ProtectOptions apply unless told otherwise (README)


def resolve_budget(budget: str | float | None) -> tuple[float | None, str | None]:
    """A preset name, a DSSIM ρ or None (no budget) -> (ρ or None, the preset's name or None).

    ValueError (one line) for an unknown preset or a ρ outside (0, 1]. A ρ equal to a preset's is named by it.
    """
    from ..presets import get_preset, preset_for

    if budget is None:
        return None, None
    if isinstance(budget, str):
        return get_preset(budget).rho, budget
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):  # numpy scalars too
        raise ValueError(f"budget must be a preset name or a DSSIM value, got {budget!r}")
    rho = float(budget)
    if not 0.0 < rho <= 1.0:  # DSSIM lies in [0, 1]; 0 would forbid any perturbation
        raise ValueError(f"DSSIM budget must be in (0, 1], got {budget}")
    return rho, preset_for(rho)


class BudgetedModel:
    """A MaskNet (or a RefinedModel) whose ``delta`` obeys the budget rule on each aligned face crop:
    δ' = fit_budget(x, δ) − x, so x + δ' is the 8-bit face the rule passed. Face mode runs it.

    Everything else (``spec``, ``fixed_size`` …) is the wrapped model's. ``scales`` and ``dssim`` hold,
    per face of the last call, the scale the rule kept and the crop's DSSIM at it; ``seconds`` accumulates.
    """

    def __init__(self, model, rho: float, rho_pixel: float | None = None) -> None:  # noqa: ANN001
        self._model, self.rho = model, float(rho)
        # the user's net sets the per-pixel clip (the evaluation uses the net's own clip too)
        self.rho_pixel = float(model.spec.rho_pixel) if rho_pixel is None else float(rho_pixel)
        self.s_max = float(getattr(model, "budget_fill", 1.0))  # a net trained with a fill ships with it
        self.scales: list[float] = []
        self.dssim: list[float] = []
        self.seconds = 0.0
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (x, δ'): face.py may ask twice for one crop

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def delta(self, x: np.ndarray) -> np.ndarray:
        """x (N, 3, S, S) on the 8-bit grid in [0, 1] -> δ' (N, 3, S, S) float32 within the budget."""
        if self._last is not None and np.array_equal(self._last[0], x):
            return self._last[1].copy()
        d = self._model.delta(x)  # (N, 3, S, S): the net's (or the refined) δ
        t = time.perf_counter()
        x = np.asarray(x, np.float32)
        s, dd = fit_scale(x, d, self.rho, self.rho_pixel, s_max=self.s_max)
        out = scaled(x, np.clip(d, -self.rho_pixel, self.rho_pixel), s, self.rho_pixel) - x
        self.seconds += time.perf_counter() - t
        self.scales, self.dssim = [float(v) for v in s], [float(v) for v in dd]
        self._last = (np.array(x, copy=True), out.copy())
        return out
