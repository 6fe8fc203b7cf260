// The DSSIM budget rule of `hyperobf protect` in whole mode (device_runtime/budget.py, fit_budget_windows):
// one scale s ∈ [0, 1] of the working image's δ — found by bisection, 12 halvings — so that every S×S window
// (a face at working scale) of the 8-bit working image x + s·δ has DSSIM ≤ ρ; δ is first clipped to ±ρ_pixel.
// Presets as src/hyperobf/presets.py. Images and δ are float32 as in numpy; SSIM in float64 (metrics.js).

import { dssimMapRef, windowMax } from './metrics.js';

export const PRESETS = { low: 0.007, mid: 0.012, high: 0.017, max: 0.025 };
export const DEFAULT_PRESET = 'mid';
export const ITERS = 12;

/** Python's round() on a float: half to even. */
function roundHalfEven(v) {
  const f = Math.floor(v), r = v - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
}

/** budget.quantise(x + δ·s): float32 x, δ (already clipped), s -> the 8-bit image (uint8, interleaved). */
function quantised(x, d, s) {
  const out = new Uint8Array(x.length);
  const sf = Math.fround(s), f255 = Math.fround(255);
  for (let i = 0; i < x.length; i++) {
    let v = Math.fround(x[i] + Math.fround(d[i] * sf));
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    out[i] = roundHalfEven(Math.fround(v * f255));
  }
  return out;
}

/**
 * fit_budget_windows for one working image: rgb (w × h × 3 uint8), δ (w × h × 3 float32), ρ, ρ_pixel, window
 * -> { delta: the budgeted δ' = quantise(x + s·clip(δ)) − x (float32), scale: s, dssim: its worst window }.
 */
export function fitBudgetWindows(rgb, delta, w, h, rho, rhoPixel, window, iters = ITERS) {
  const inv = Math.fround(1 / 255);
  const x = new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) x[i] = rgb[i] * inv;
  const rp = Math.fround(rhoPixel);
  const d = new Float32Array(delta.length);
  for (let i = 0; i < delta.length; i++) d[i] = Math.min(rp, Math.max(-rp, delta[i]));
  const ref = dssimMapRef(rgb, w, h); // the original's local moments, computed once
  const measure = (s) => windowMax(ref(quantised(x, d, s)), w, h, window);
  let lo = 0, hi = 1, dLo = 0;
  const full = measure(1);
  if (full <= rho) { lo = 1; dLo = full; }
  for (let k = 0; k < iters; k++) {
    if (!(lo < Math.fround(hi - Math.fround(1e-6)))) break;
    const mid = Math.fround(Math.fround(lo + hi) / 2);
    const dm = measure(mid);
    if (dm <= rho) { lo = mid; dLo = dm; } else hi = mid;
  }
  const q = quantised(x, d, lo);
  const out = new Float32Array(delta.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(Math.fround(q[i] / 255) - x[i]);
  return { delta: out, scale: lo, dssim: dLo };
}
