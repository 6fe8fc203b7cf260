// The user's MaskNet in an onnxruntime-web session (WASM backend), checked first (meta.js).
// run(x, h, w): x (3·h·w float32, one NCHW image in [0, 1]) -> δ (3·h·w float32).

import { inspectModel, ModelError, INPUT_NAME, OUTPUT_NAMES } from './meta.js';
import { strideProduct } from './spec.js';

// float32 <-> IEEE half, round to nearest even (as numpy's astype(float16)).
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
export function toHalf(v) {
  f32[0] = v;
  const x = u32[0], sign = (x >>> 16) & 0x8000, exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e, half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rest = mant & 0x1fff;
  let h = sign | (e << 10) | r;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) h++;
  return h;
}
export function fromHalf(h) {
  const sign = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Check and load a model: { info (inspectModel's), fixedSize, stride, run, release }.
 * `ort` is the onnxruntime-web module (passed in, so the pure modules never import it).
 */
export async function loadMaskNet(ort, bytes, name) {
  const info = await inspectModel(bytes, name);
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  } catch (e) {
    throw new ModelError(`not a loadable ONNX model: ${name} (${String(e.message || e).split('\n')[0].slice(0, 200)})`);
  }
  if (session.inputNames.join() !== INPUT_NAME || session.outputNames.join() !== OUTPUT_NAMES.join()) {
    throw new ModelError(`${name}: input/output signature does not match a MaskNet`);
  }
  const half = info.inputType === 'float16';
  async function run(x, h, w) {
    const data = half ? Uint16Array.from(x, toHalf) : x;
    const feeds = { [INPUT_NAME]: new ort.Tensor(half ? 'float16' : 'float32', data, [1, 3, h, w]) };
    const out = await session.run(feeds, [OUTPUT_NAMES[1]]);
    const d = out[OUTPUT_NAMES[1]];
    const v = d.data;
    const res = half ? Float32Array.from(v instanceof Uint16Array ? v : new Uint16Array(v.buffer), fromHalf) : Float32Array.from(v);
    d.dispose?.();
    return res;
  }
  return {
    info, run,
    fixedSize: info.fixedSize,
    stride: strideProduct(info.spec),
    window: info.fixedSize || info.spec.input_size,
    rhoPixel: Number(info.spec.rho_pixel),
    release: () => session.release(),
  };
}
