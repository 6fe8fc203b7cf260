// Pillow's resampling, re-implemented so the page's working image equals the Python runtime's:
// Image.resize(size, BILINEAR, reducing_gap=3.0) on 8-bit RGB (box-average reduce by an integer factor,
// then a separable triangle filter whose support grows with the scale — antialiased — in 22-bit fixed
// point with an 8-bit horizontal intermediate), and the same filter on float ("F") images for δ.
//
// A browser's canvas drawImage is not used for this: its downscale filter differs from Pillow's (measured
// in tests/test_web.py), and that would change the pixels the MaskNet sees.
//
// Images are interleaved arrays: `ch` values per pixel in the source (3 or 4), the first `nch` resampled.

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 1 << (PRECISION_BITS - 1);

function triangle(x) {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

/** Filter taps for one axis: bounds (xmin, count) per output pixel and normalised weights, `ksize` per pixel. */
export function precomputeCoeffs(inSize, in0f, in1f, outSize) {
  // Pillow passes the box to C as float32 (float box[4]): a fractional box is rounded to float first.
  const in0 = Math.fround(in0f), in1 = Math.fround(in1f);
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = 1 * filterscale; // bilinear support 1.0
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const k = xx * ksize;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = triangle((x + xmin - center + 0.5) * ss);
      kk[k + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0) kk[k + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, kk, bounds };
}

function fixedPoint(kk) {
  const out = new Int32Array(kk.length);
  for (let i = 0; i < kk.length; i++) {
    const v = kk[i] * (1 << PRECISION_BITS);
    out[i] = Math.trunc(kk[i] < 0 ? v - 0.5 : v + 0.5);
  }
  return out;
}

const clip8 = (ss) => { const v = ss >> PRECISION_BITS; return v < 0 ? 0 : v > 255 ? 255 : v; };

/**
 * Which pass Pillow runs first when both are needed: since Pillow 13 the vertical one when the height
 * shrinks by more than twice as many pixels as the width (python-pillow/Pillow#9549; found by matching
 * its output, tests/test_web.py checks it). Older Pillow always runs the horizontal pass first.
 */
export function verticalFirst(sw, sh, dw, dh) {
  return sh > dh && sh - dh > 2 * (sw - dw);
}

/** One horizontal pass: src (sw × rows × ch, first nch) -> (dw × rows × nch), 8-bit fixed point. */
function pass8H(src, sw, rows, ch, nch, dw, hz, rowOffset = 0) {
  const k = fixedPoint(hz.kk);
  const out = new Uint8Array(dw * rows * nch);
  for (let yy = 0; yy < rows; yy++) {
    const inRow = (yy + rowOffset) * sw * ch;
    const outRow = yy * dw * nch;
    for (let xx = 0; xx < dw; xx++) {
      const xmin = hz.bounds[xx * 2], xmax = hz.bounds[xx * 2 + 1], kb = xx * hz.ksize;
      for (let c = 0; c < nch; c++) {
        let ss = HALF;
        for (let x = 0; x < xmax; x++) ss += src[inRow + (x + xmin) * ch + c] * k[kb + x];
        out[outRow + xx * nch + c] = clip8(ss);
      }
    }
  }
  return out;
}

/** One vertical pass: src (w × … × ch, first nch) -> (w × dh × nch); bounds shifted up by rowOffset. */
function pass8V(src, w, ch, nch, dh, vt, rowOffset = 0) {
  const k = fixedPoint(vt.kk);
  const out = new Uint8Array(w * dh * nch);
  const stride = w * ch;
  for (let yy = 0; yy < dh; yy++) {
    const ymin = vt.bounds[yy * 2] - rowOffset, ymax = vt.bounds[yy * 2 + 1], kb = yy * vt.ksize;
    const outRow = yy * w * nch;
    for (let xx = 0; xx < w; xx++) {
      for (let c = 0; c < nch; c++) {
        let ss = HALF;
        let p = ymin * stride + xx * ch + c;
        for (let y = 0; y < ymax; y++, p += stride) ss += src[p] * k[kb + y];
        out[outRow + xx * nch + c] = clip8(ss);
      }
    }
  }
  return out;
}

/**
 * Pillow's ImagingResample for 8-bit images with a box (x0, y0, x1, y1) of the source (floats allowed):
 * src (sw × sh × ch, first nch channels used) -> Uint8Array (dw × dh × nch).
 */
export function resample8(src, sw, sh, ch, nch, dw, dh, box = [0, 0, sw, sh]) {
  const needH = dw !== sw || box[0] !== 0 || box[2] !== dw;
  const needV = dh !== sh || box[1] !== 0 || box[3] !== dh;
  const hz = precomputeCoeffs(sw, box[0], box[2], dw);
  const vt = precomputeCoeffs(sh, box[1], box[3], dh);
  if (needH && needV && verticalFirst(sw, sh, dw, dh)) {
    return pass8H(pass8V(src, sw, ch, nch, dh, vt), sw, dh, nch, nch, dw, hz);
  }
  if (needH) {
    // Horizontal pass over only the source rows the vertical pass will read.
    const yFirst = vt.bounds[0];
    const yLast = vt.bounds[dh * 2 - 2] + vt.bounds[dh * 2 - 1];
    const tmp = pass8H(src, sw, yLast - yFirst, ch, nch, dw, hz, yFirst);
    return needV ? pass8V(tmp, dw, nch, nch, dh, vt, yFirst) : tmp;
  }
  if (needV) return pass8V(src, sw, ch, nch, dh, vt);
  const out = new Uint8Array(dw * dh * nch);
  for (let i = 0; i < dw * dh; i++) for (let c = 0; c < nch; c++) out[i * nch + c] = src[i * ch + c];
  return out;
}

function passFH(src, sw, rows, nch, dw, hz, rowOffset = 0) {
  const out = new Float32Array(dw * rows * nch);
  for (let yy = 0; yy < rows; yy++) {
    const inRow = (yy + rowOffset) * sw * nch, outRow = yy * dw * nch;
    for (let xx = 0; xx < dw; xx++) {
      const xmin = hz.bounds[xx * 2], xmax = hz.bounds[xx * 2 + 1], kb = xx * hz.ksize;
      for (let c = 0; c < nch; c++) {
        let ss = 0;
        for (let x = 0; x < xmax; x++) ss += src[inRow + (x + xmin) * nch + c] * hz.kk[kb + x];
        out[outRow + xx * nch + c] = ss;
      }
    }
  }
  return out;
}

function passFV(src, w, nch, dh, vt, rowOffset = 0) {
  const out = new Float32Array(w * dh * nch);
  for (let yy = 0; yy < dh; yy++) {
    const ymin = vt.bounds[yy * 2] - rowOffset, ymax = vt.bounds[yy * 2 + 1], kb = yy * vt.ksize;
    for (let xx = 0; xx < w; xx++) {
      for (let c = 0; c < nch; c++) {
        let ss = 0;
        for (let y = 0; y < ymax; y++) ss += src[((ymin + y) * w + xx) * nch + c] * vt.kk[kb + y];
        out[(yy * w + xx) * nch + c] = ss;
      }
    }
  }
  return out;
}

/** The same two passes on float32 images (Pillow's "F" mode: double weights and sums, float32 storage). */
export function resampleF(src, sw, sh, nch, dw, dh) {
  const needH = dw !== sw, needV = dh !== sh;
  const hz = precomputeCoeffs(sw, 0, sw, dw);
  const vt = precomputeCoeffs(sh, 0, sh, dh);
  if (needH && needV && verticalFirst(sw, sh, dw, dh)) return passFH(passFV(src, sw, nch, dh, vt), sw, dh, nch, dw, hz);
  if (needH) {
    const yFirst = vt.bounds[0];
    const yLast = vt.bounds[dh * 2 - 2] + vt.bounds[dh * 2 - 1];
    const tmp = passFH(src, sw, yLast - yFirst, nch, dw, hz, yFirst);
    return needV ? passFV(tmp, dw, nch, dh, vt, yFirst) : tmp;
  }
  if (needV) return passFV(src, sw, nch, dh, vt);
  return Float32Array.from(src);
}

/** UINT32 division_UINT32(divider, 8) of Pillow's Reduce.c, evaluated in float32 as there. */
function multiplier(n) {
  return Math.trunc(Math.fround(4294967296 / Math.fround(256 * n)));
}

/**
 * Pillow's Image.reduce((fx, fy)) on the whole image: each output pixel is the rounded mean of an fx × fy
 * block (the last row/column of blocks may be partial). src (sw × sh × ch, ch ≥ 3) -> Uint8Array
 * (ceil(sw/fx) × ceil(sh/fy) × 3). Streams over the source rows once.
 */
export function reduce8(src, sw, sh, ch, nch, fx, fy) {
  if (nch !== 3) throw new Error('reduce8: 3 channels');
  const ow = Math.ceil(sw / fx), oh = Math.ceil(sh / fy);
  const out = new Uint8Array(ow * oh * 3);
  const acc = new Float64Array(ow * 3);
  const fullCols = Math.floor(sw / fx);
  for (let oy = 0; oy < oh; oy++) {
    const y0 = oy * fy, y1 = Math.min(y0 + fy, sh);
    acc.fill(0);
    for (let y = y0; y < y1; y++) {
      let p = y * sw * ch;
      for (let ox = 0, q = 0; ox < ow; ox++, q += 3) {
        const n = ox < fullCols ? fx : sw - ox * fx;
        let s0 = 0, s1 = 0, s2 = 0;
        for (let x = 0; x < n; x++, p += ch) { s0 += src[p]; s1 += src[p + 1]; s2 += src[p + 2]; }
        acc[q] += s0; acc[q + 1] += s1; acc[q + 2] += s2;
      }
    }
    const rows = y1 - y0;
    for (let ox = 0, q = 0; ox < ow; ox++, q += 3) {
      const n = (ox < fullCols ? fx : sw - ox * fx) * rows;
      const amend = Math.floor(n / 2), mul = multiplier(n);
      // (ss * multiplier) >> 24 in UINT32 arithmetic: the product stays below 2^32 for 8-bit means.
      const o = (oy * ow + ox) * 3;
      out[o] = Math.floor(((acc[q] + amend) * mul) / 16777216);
      out[o + 1] = Math.floor(((acc[q + 1] + amend) * mul) / 16777216);
      out[o + 2] = Math.floor(((acc[q + 2] + amend) * mul) / 16777216);
    }
  }
  return out;
}

/**
 * clip(px + table[upsample(codes)]) in one pass: Pillow's bilinear upsampling of 8-bit codes (dw × dh × 3)
 * to the photo's size (w × h), fused with the lookup and the saturating add (codes.add). px: w × h × ch;
 * returns a Uint8ClampedArray like px (alpha copied). `table[v]` is the grey-level offset of code v.
 */
export function upsampleAdd(codes, dw, dh, px, w, h, ch, table) {
  const hz = precomputeCoeffs(dw, 0, dw, w);
  const vt = precomputeCoeffs(dh, 0, dh, h);
  const out = new Uint8ClampedArray(px);
  if (w < dw || h < dh || verticalFirst(dw, dh, w, h)) { // not an upsampling: the general passes
    const big = resample8(codes, dw, dh, 3, 3, w, h);
    for (let i = 0, p = 0; i < w * h; i++, p += ch) for (let c = 0; c < 3; c++) out[p + c] = px[p + c] + table[big[i * 3 + c]];
    return out;
  }
  const yFirst = vt.bounds[0], yLast = vt.bounds[h * 2 - 2] + vt.bounds[h * 2 - 1];
  const tmp = w === dw ? codes.subarray(yFirst * dw * 3) : pass8H(codes, dw, yLast - yFirst, 3, 3, w, hz, yFirst);
  const k = fixedPoint(vt.kk);
  const row = w * 3;
  for (let yy = 0; yy < h; yy++) {
    const n = vt.bounds[yy * 2 + 1], kb = yy * vt.ksize;
    const r0 = (vt.bounds[yy * 2] - yFirst) * row;
    const k0 = k[kb], k1 = n > 1 ? k[kb + 1] : 0, k2 = n > 2 ? k[kb + 2] : 0;
    const r1 = n > 1 ? r0 + row : r0, r2 = n > 2 ? r0 + 2 * row : r0;
    if (n > 3) throw new Error('upsampleAdd: more than 3 taps');
    let p = yy * w * ch;
    for (let i = 0; i < row; i += 3, p += ch) {
      out[p] = px[p] + table[(HALF + tmp[r0 + i] * k0 + tmp[r1 + i] * k1 + tmp[r2 + i] * k2) >> PRECISION_BITS];
      out[p + 1] = px[p + 1] + table[(HALF + tmp[r0 + i + 1] * k0 + tmp[r1 + i + 1] * k1 + tmp[r2 + i + 1] * k2) >> PRECISION_BITS];
      out[p + 2] = px[p + 2] + table[(HALF + tmp[r0 + i + 2] * k0 + tmp[r1 + i + 2] * k1 + tmp[r2 + i + 2] * k2) >> PRECISION_BITS];
    }
  }
  return out;
}

/**
 * Image.resize((dw, dh), BILINEAR, reducing_gap) for an 8-bit image, box = the whole image:
 * src (sw × sh × ch) -> Uint8Array (dw × dh × nch). reducingGap null: no reduce step.
 */
export function resizePillow(src, sw, sh, ch, nch, dw, dh, reducingGap = null) {
  let box = [0, 0, sw, sh];
  if (sw === dw && sh === dh) return resample8(src, sw, sh, ch, nch, dw, dh, box); // a copy
  let img = src, iw = sw, ih = sh, ich = ch;
  if (reducingGap !== null) {
    const fx = Math.trunc(sw / dw / reducingGap) || 1;
    const fy = Math.trunc(sh / dh / reducingGap) || 1;
    if (fx > 1 || fy > 1) {
      // _get_safe_box of the whole image is the whole image: reduce all of it.
      img = reduce8(src, sw, sh, ch, nch, fx, fy);
      iw = Math.ceil(sw / fx); ih = Math.ceil(sh / fy); ich = nch;
      box = [0, 0, sw / fx, sh / fy];
    }
  }
  return resample8(img, iw, ih, ich, nch, dw, dh, box);
}
