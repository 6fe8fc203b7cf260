// The page's engine, in a module worker so the tab never freezes (a 12 MP photo or a hostile file keeps
// only this thread busy, and the page can stop it). Messages in: {id, type: 'model' | 'protect' | 'encode'};
// out: {id, ok, ...} or {id, ok: false, error: one-line message}.
//
// Nothing here uses the network: the model arrives as bytes from the page, photos as Blobs; onnxruntime's
// own files (vendor/) are the only thing it fetches, from the page's origin.

import * as ort from '../vendor/ort.wasm.min.mjs';
import { loadMaskNet } from './masknet.js';
import { ModelError } from './meta.js';
import { statusLine, warningLine } from './protection.js';
import { plain } from './pyjson.js';
import { specToJson } from './spec.js';
import { decode, encode, PhotoError } from './image.js';
import { wholePhoto, workingImage } from './whole.js';
import { psnr, ssimStats } from './metrics.js';
import { PRESETS } from './budget.js';

ort.env.wasm.wasmPaths = new URL('../vendor/', import.meta.url).href;
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.proxy = false;
ort.env.logLevel = 'error';

let model = null;
let last = null; // the last protected photo, for encode

let sessions = 0;

async function onModel({ bytes, name, threads }) {
  if (model) { await model.release(); model = null; }
  // WASM threads need cross-origin isolation (serve.py's headers); read by onnxruntime when it first starts.
  if (threads && !sessions) ort.env.wasm.numThreads = self.crossOriginIsolated ? threads : 1;
  sessions++;
  model = await loadMaskNet(ort, new Uint8Array(bytes), name);
  const { info } = model;
  const meta = info.meta;
  return {
    modelId: info.modelId,
    structure: info.spec.name,
    digest: info.digest,
    spec: specToJson(info.spec),
    fixedSize: info.fixedSize,
    inputType: info.inputType,
    rhoPixel: plain(info.spec.rho_pixel),
    workSizeNet: info.spec.input_size,
    method: plain(meta.get('method') ?? null),
    created: plain(meta.get('created') ?? null),
    status: statusLine(info.protection),
    warning: warningLine(info.protection),
    // The lines `hyperobf protect` prints under each budget: entries measured under that preset.
    lines: Object.fromEntries(['none', ...Object.keys(PRESETS)].map((p) => {
      const preset = p === 'none' ? null : p;
      return [p, { status: statusLine(info.protection, preset), warning: warningLine(info.protection, preset) }];
    })),
    threads: ort.env.wasm.numThreads,
  };
}

async function onProtect({ blob, workSize, maxWorkPixels, preset = 'mid' }) {
  if (!model) throw new ModelError('load your MaskNet first');
  if (preset !== 'none' && !(preset in PRESETS)) throw new PhotoError(`unknown budget preset ${preset}`);
  const budget = preset === 'none' ? null : { rho: PRESETS[preset], rhoPixel: model.rhoPixel };
  const t0 = performance.now();
  const photo = await decode(blob);
  const t1 = performance.now();
  const { width: w, height: h, data } = photo;
  const res = await wholePhoto(data, w, h, 4, model, { workSize, maxWorkPixels, budget });
  const [wh, ww] = res.work;
  const t2 = performance.now();
  // Readout: PSNR over the photo; DSSIM at working scale (the protected photo brought back to it the same way).
  const back = workingImage(res.out, w, h, 4, ww, wh);
  const win = model.fixedSize || model.info.spec.input_size;
  const ss = ssimStats(res.workRGB, back, ww, wh, 3, win);
  const stats = { psnr: psnr(data, res.out, w, h, 4), dssim: ss.dssim, dssimWindow: ss.dssimWindow, window: win };
  const t3 = performance.now();
  let maxDelta = 0;
  for (const v of res.delta) maxDelta = Math.max(maxDelta, Math.abs(v));
  last = { out: res.out, w, h };
  const original = new Uint8ClampedArray(data.buffer);
  const protectedPx = new Uint8ClampedArray(res.out.slice().buffer); // a copy for the page; `last` keeps ours
  return {
    transfer: [original.buffer, protectedPx.buffer, res.delta.buffer, res.workRGB.buffer],
    width: w, height: h, work: res.work, original, protectedPx,
    delta: res.delta, workRGB: res.workRGB, maxDelta, stats,
    preset, rho: budget ? budget.rho : null, scale: res.scale, dssimWork: res.dssimWork,
    timings: { decode: t1 - t0, ...res.timings, measure: t3 - t2, total: t3 - t0 },
  };
}

async function onEncode({ format, quality }) {
  if (!last) throw new PhotoError('protect a photo first');
  const blob = await encode(new Uint8ClampedArray(last.out.buffer, 0, last.out.length), last.w, last.h, format, quality);
  return { blob };
}

const HANDLERS = { model: onModel, protect: onProtect, encode: onEncode };

self.onmessage = async (ev) => {
  const { id, type } = ev.data;
  try {
    const { transfer = [], ...out } = await HANDLERS[type](ev.data);
    self.postMessage({ id, ok: true, ...out }, transfer);
  } catch (e) {
    const known = e instanceof ModelError || e instanceof PhotoError;
    const msg = known ? e.message : `unexpected error: ${String(e && e.message || e).split('\n')[0]}`;
    self.postMessage({ id, ok: false, error: msg });
  }
};
