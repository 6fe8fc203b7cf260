// Whole-photo mode, step for step as src/hyperobf/device_runtime/whole.py (and codes.py):
// shrink the photo so its shorter side is the work size (scale never above 1, working image at most
// 1024² pixels), compute δ there (a dynamic model in one pass on an image edge-padded to a multiple of
// the net's stride; a fixed S×S model tile by tile, each tile keeping its centre), then upsample δ as
// uint8 codes with k steps per grey level, bilinearly, and add with a saturating 8-bit add.
//
// Pure functions on typed arrays (no DOM, no onnxruntime): the model is a `run(x, h, w) -> δ` callback.

import { resizePillow, resampleF, upsampleAdd } from './resample.js';
import { fitBudgetWindows } from './budget.js';

export const DEFAULT_WORK_SIZE = 192;
export const MAX_WORK_PIXELS = 1024 * 1024;
export const TILE_MARGIN = 16;
export const ZERO = 128;
export const MIN_STEPS = 4;
export const REDUCING_GAP = 3.0;

/** Python's round(): half to even. */
export function pyRound(x) {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** (height, width) of the working image: scale capped at 1 and at maxPixels. */
export function workingShape(h, w, scale, maxPixels = MAX_WORK_PIXELS) {
  const s = Math.min(scale, 1.0, Math.sqrt(maxPixels / (h * w)));
  return [Math.max(1, pyRound(h * s)), Math.max(1, pyRound(w * s))];
}

/** The working image (wh × ww × 3 uint8) of an RGB(A) photo: Image.resize(BILINEAR, reducing_gap=3). */
export function workingImage(px, w, h, ch, ww, wh) {
  return resizePillow(px, w, h, ch, 3, ww, wh, (ww === w && wh === h) ? null : REDUCING_GAP);
}

/** (h × w × 3) uint8 -> (1, 3, ph, pw) float32 in [0, 1], edge-padded at the bottom/right to ph × pw. */
export function toCHW(rgb, w, h, pw = w, ph = h, x0 = 0, y0 = 0, tw = pw, th = ph) {
  // The (tw × th) window at (x0, y0) of the edge-padded image; float32(v) · float32(1/255) as numpy does.
  const inv = Math.fround(1 / 255);
  const out = new Float32Array(3 * tw * th);
  const plane = tw * th;
  for (let y = 0; y < th; y++) {
    const sy = Math.min(y0 + y, h - 1);
    for (let x = 0; x < tw; x++) {
      const sx = Math.min(x0 + x, w - 1);
      const p = (sy * w + sx) * 3, q = y * tw + x;
      out[q] = rgb[p] * inv;
      out[plane + q] = rgb[p + 1] * inv;
      out[2 * plane + q] = rgb[p + 2] * inv;
    }
  }
  return out;
}

/** δ of a working image with a dynamic-shape model: (h × w × 3) float32, interleaved. */
export async function deltaDynamic(rgb, w, h, run, stride) {
  const ph = Math.ceil(h / stride) * stride, pw = Math.ceil(w / stride) * stride;
  const d = await run(toCHW(rgb, w, h, pw, ph), ph, pw); // (3, ph, pw)
  const out = new Float32Array(h * w * 3);
  const plane = ph * pw;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const q = y * pw + x, p = (y * w + x) * 3;
      out[p] = d[q]; out[p + 1] = d[plane + q]; out[p + 2] = d[2 * plane + q];
    }
  }
  return out;
}

export function tileStarts(length, tile, margin) {
  const step = Math.max(1, tile - 2 * margin);
  const starts = [];
  for (let s = 0; s <= Math.max(length - tile, 0); s += step) starts.push(s);
  if (starts[starts.length - 1] + tile < length) starts.push(length - tile);
  return starts;
}

/** δ of a working image with a fixed t × t model, stitched from tiles that overlap by 2·margin. */
export async function deltaTiled(rgb, w, h, run, t, marginIn = TILE_MARGIN) {
  const margin = Math.min(marginIn, Math.floor((t - 1) / 4));
  const hh = Math.max(h, t), ww = Math.max(w, t); // edge-padded to at least one tile
  const out = new Float32Array(h * w * 3);
  const ys = tileStarts(hh, t, margin), xs = tileStarts(ww, t, margin);
  const plane = t * t;
  for (const y of ys) {
    for (const xo of xs) {
      const d = await run(toCHW(rgb, w, h, ww, hh, xo, y, t, t), t, t);
      const a0 = y > 0 ? margin : 0, a1 = y + t < hh ? t - margin : t;
      const b0 = xo > 0 ? margin : 0, b1 = xo + t < ww ? t - margin : t;
      for (let a = a0; a < a1; a++) {
        const oy = y + a;
        if (oy >= h) break;
        for (let b = b0; b < b1; b++) {
          const ox = xo + b;
          if (ox >= w) break;
          const q = a * t + b, p = (oy * w + ox) * 3;
          out[p] = d[q]; out[p + 1] = d[plane + q]; out[p + 2] = d[2 * plane + q];
        }
      }
    }
  }
  return out;
}

/** codes.steps_for: steps per grey level that keep every code within uint8 (at most 64). */
export function stepsFor(delta) {
  let peak = 0;
  for (let i = 0; i < delta.length; i++) { const a = Math.abs(delta[i]); if (a > peak) peak = a; }
  peak *= 255.0;
  return peak < 1e-9 ? 64 : Math.min(64, Math.trunc(127.0 / peak));
}

/** codes.encode: δ (float32) -> uint8 codes 128 + round(δ·255·k), in float32 arithmetic as numpy. */
export function encodeCodes(delta, k) {
  const scale = Math.fround(255.0 * k);
  const out = new Uint8Array(delta.length);
  for (let i = 0; i < delta.length; i++) {
    const q = Math.floor(Math.fround(Math.fround(delta[i] * scale) + 0.5)) + ZERO;
    out[i] = q < 0 ? 0 : q > 255 ? 255 : q;
  }
  return out;
}

/** code -> 128 + round(δ·255) in grey levels (codes.add's lookup table). */
export function codeTable(k) {
  const t = new Int16Array(256);
  for (let c = 0; c < 256; c++) {
    const v = Math.floor((c - ZERO) / k + 0.5) + ZERO;
    t[c] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  return t;
}

/**
 * whole.add_upsampled: clip(photo + upsample(δ)) for a photo (w × h × ch uint8, RGB or RGBA; alpha kept)
 * and a working-scale δ (dw × dh × 3 float32). Returns a new Uint8ClampedArray like the photo.
 */
export function addUpsampled(px, w, h, ch, delta, dw, dh) {
  const k = stepsFor(delta);
  if (k < MIN_STEPS) { // δ too large for fine uint8 steps: the float path
    const out = new Uint8ClampedArray(px);
    const big = (dw === w && dh === h) ? delta : resampleF(delta, dw, dh, 3, w, h);
    const f255 = Math.fround(255.0);
    for (let i = 0, p = 0; i < w * h; i++, p += ch) {
      for (let c = 0; c < 3; c++) {
        let o = Math.fround(px[p + c] + Math.fround(big[i * 3 + c] * f255));
        o = o < 0 ? 0 : o > 255 ? 255 : o;
        out[p + c] = Math.trunc(Math.fround(o + 0.5));
      }
    }
    return out;
  }
  // 128 + round(δ·255) - 128 per code, in grey levels (codes.add's table less its offset).
  const lut = codeTable(k);
  const table = new Int16Array(256);
  for (let c = 0; c < 256; c++) table[c] = lut[c] - ZERO;
  return upsampleAdd(encodeCodes(delta, k), dw, dh, px, w, h, ch, table);
}

/**
 * Protect a photo in whole mode (whole.whole_photo). px: w × h × ch uint8 (RGBA from a canvas, or RGB).
 * model: { run(x, h, w) -> Promise<δ (3·h·w float32)>, fixedSize, stride, window }.
 * budget: { rho, rhoPixel } (the DSSIM budget rule on every window × window box of the working image) or null.
 * Returns { out (Uint8ClampedArray like px), delta (the working δ added, interleaved), rawDelta (the net's),
 * work: [wh, ww], workRGB, scale (the share of δ the budget kept), dssimWork (its worst window, or null), timings }.
 */
export async function wholePhoto(px, w, h, ch, model, { workSize = DEFAULT_WORK_SIZE, maxWorkPixels = MAX_WORK_PIXELS, budget = null } = {}) {
  const now = () => (globalThis.performance ? performance.now() : Date.now());
  const scale = workSize / Math.min(h, w);
  const [wh, ww] = workingShape(h, w, scale, maxWorkPixels);
  const t0 = now();
  const rgb = workingImage(px, w, h, ch, ww, wh);
  const t1 = now();
  const raw = model.fixedSize
    ? await deltaTiled(rgb, ww, wh, model.run, model.fixedSize)
    : await deltaDynamic(rgb, ww, wh, model.run, model.stride);
  const t2 = now();
  let delta = raw, kept = 1, dssimWork = null;
  if (budget) {
    const fit = fitBudgetWindows(rgb, raw, ww, wh, budget.rho, budget.rhoPixel, model.window);
    delta = fit.delta; kept = fit.scale; dssimWork = fit.dssim;
  }
  const t3 = now();
  const out = addUpsampled(px, w, h, ch, delta, ww, wh);
  const t4 = now();
  const timings = { resize: t1 - t0, perturb: t2 - t1, budget: t3 - t2, apply: t4 - t3 };
  if (!budget) delete timings.budget;
  return { out, delta, rawDelta: raw, work: [wh, ww], workRGB: rgb, scale: kept, dssimWork, timings };
}
