// The page's readout: PSNR of the protected photo against the original (full resolution) and DSSIM at
// working scale, as the project measures it (train.losses.dssim: kornia's SSIM, 11-tap Gaussian window
// σ 1.5, reflect padding, C1 = 0.01², C2 = 0.03², DSSIM = (1 − mean SSIM) / 2), plus the largest DSSIM
// over every S×S window (a face at working scale; the whole-mode measure `hyperobf protect` prints).
// Computed in float64; Python computes in float32 (differences ~1e-6).

const WINDOW = 11, SIGMA = 1.5, C1 = 0.01 ** 2, C2 = 0.03 ** 2, EPS = 1e-12;

function gaussian() {
  const g = new Float64Array(WINDOW);
  let s = 0;
  for (let i = 0; i < WINDOW; i++) { const n = i - (WINDOW >> 1); g[i] = Math.exp(-(n * n) / (2 * SIGMA * SIGMA)); s += g[i]; }
  for (let i = 0; i < WINDOW; i++) g[i] /= s;
  return g;
}
const G = gaussian();

function reflect(i, n) {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  i = ((i % period) + period) % period;
  return i >= n ? period - i : i;
}

/** Separable Gaussian blur of one (h × w) float64 plane with reflect padding, into `out` (tmp: scratch). */
function blur(src, w, h, out = new Float64Array(w * h), tmp = new Float64Array(w * h)) {
  const r = WINDOW >> 1;
  const g0 = G[0], g1 = G[1], g2 = G[2], g3 = G[3], g4 = G[4], g5 = G[5];
  for (let y = 0; y < h; y++) { // along W first, as kornia
    const row = y * w;
    for (let x = 0; x < w; x++) {
      let s;
      if (x >= r && x < w - r) {
        const p = row + x;
        s = g5 * src[p] + g4 * (src[p - 1] + src[p + 1]) + g3 * (src[p - 2] + src[p + 2]) + g2 * (src[p - 3] + src[p + 3])
          + g1 * (src[p - 4] + src[p + 4]) + g0 * (src[p - 5] + src[p + 5]);
      } else {
        s = 0;
        for (let j = 0; j < WINDOW; j++) s += G[j] * src[row + reflect(x + j - r, w)];
      }
      tmp[row + x] = s;
    }
  }
  for (let y = 0; y < h; y++) {
    if (y >= r && y < h - r) {
      const p0 = y * w;
      for (let x = 0; x < w; x++) {
        const p = p0 + x;
        out[p] = g5 * tmp[p] + g4 * (tmp[p - w] + tmp[p + w]) + g3 * (tmp[p - 2 * w] + tmp[p + 2 * w])
          + g2 * (tmp[p - 3 * w] + tmp[p + 3 * w]) + g1 * (tmp[p - 4 * w] + tmp[p + 4 * w]) + g0 * (tmp[p - 5 * w] + tmp[p + 5 * w]);
      }
    } else {
      for (let x = 0; x < w; x++) {
        let s = 0;
        for (let j = 0; j < WINDOW; j++) s += G[j] * tmp[reflect(y + j - r, h) * w + x];
        out[y * w + x] = s;
      }
    }
  }
  return out;
}

/**
 * The original's local moments, once: returns b -> per-pixel DSSIM map (h × w, mean over the 3 channels) of a
 * w × h × ch uint8 image b against a (budget.py's Reference).
 */
export function dssimMapRef(a, w, h, ch = 3) {
  const n = w * h;
  const mus = [], vars = [];
  for (let c = 0; c < 3; c++) {
    const x = new Float64Array(n), xx = new Float64Array(n);
    for (let i = 0; i < n; i++) { const u = a[i * ch + c] / 255; x[i] = u; xx[i] = u * u; }
    const mx = blur(x, w, h), mxx = blur(xx, w, h);
    for (let i = 0; i < n; i++) mxx[i] -= mx[i] * mx[i];
    mus.push(mx); vars.push(mxx);
  }
  const y = new Float64Array(n), yy = new Float64Array(n), xy = new Float64Array(n), tmp = new Float64Array(n);
  const my = new Float64Array(n), myy = new Float64Array(n), mxy = new Float64Array(n);
  return (b, chb = ch) => {
    const d = new Float64Array(n);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < n; i++) {
        const u = a[i * ch + c] / 255, v = b[i * chb + c] / 255;
        y[i] = v; yy[i] = v * v; xy[i] = u * v;
      }
      blur(y, w, h, my, tmp); blur(yy, w, h, myy, tmp); blur(xy, w, h, mxy, tmp);
      const mx = mus[c], vx = vars[c];
      for (let i = 0; i < n; i++) {
        const m12 = mx[i] * my[i], m2 = my[i] * my[i];
        const num = (2 * m12 + C1) * (2 * (mxy[i] - m12) + C2);
        const den = (mx[i] * mx[i] + m2 + C1) * (vx[i] + (myy[i] - m2) + C2);
        d[i] += (1 - num / (den + EPS)) / 2 / 3;
      }
    }
    return d;
  };
}

/** Per-pixel DSSIM map (h × w, mean over the 3 channels) of two w × h × ch uint8 images. */
export function dssimMap(a, b, w, h, ch = 3) {
  return dssimMapRef(a, w, h, ch)(b, ch);
}

/** The largest mean of a (h × w) map over any win × win box (clipped to the image). */
export function windowMax(d, w, h, win) {
  const wh = Math.min(win, h), ww = Math.min(win, w);
  const ii = new Float64Array((h + 1) * (w + 1));
  for (let y = 0; y < h; y++) {
    let row = 0;
    for (let x = 0; x < w; x++) {
      row += d[y * w + x];
      ii[(y + 1) * (w + 1) + x + 1] = ii[y * (w + 1) + x + 1] + row;
    }
  }
  let best = -Infinity;
  for (let y = 0; y + wh <= h; y++) {
    for (let x = 0; x + ww <= w; x++) {
      const s = ii[(y + wh) * (w + 1) + x + ww] - ii[y * (w + 1) + x + ww] - ii[(y + wh) * (w + 1) + x] + ii[y * (w + 1) + x];
      if (s > best) best = s;
    }
  }
  return best / (wh * ww);
}

/** { dssim: mean DSSIM, dssimWindow: worst win × win window } of two w × h × ch uint8 images. */
export function ssimStats(a, b, w, h, ch, win) {
  const d = dssimMap(a, b, w, h, ch);
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i];
  return { dssim: s / d.length, dssimWindow: windowMax(d, w, h, win) };
}

/** PSNR in dB over the RGB channels of two w × h × ch uint8 images (Infinity when identical). */
export function psnr(a, b, w, h, ch) {
  let se = 0;
  for (let i = 0, p = 0; i < w * h; i++, p += ch) {
    for (let c = 0; c < 3; c++) { const e = a[p + c] - b[p + c]; se += e * e; }
  }
  const mse = se / (w * h * 3) / (255 * 255);
  return mse === 0 ? Infinity : -10 * Math.log10(mse);
}
