// The page: wires the controls to the engine (worker.js) and shows what it did.
// State the tests read is kept on window.hyperobf (the last model's info and the last protection's arrays).

const $ = (id) => document.getElementById(id);
const state = { modelBytes: null, modelName: null, model: null, last: null, photoName: null, busy: false, events: [] };
window.hyperobf = state;

// ---------------------------------------------------------------- the engine worker
let worker = null, nextId = 1;
const pending = new Map();

function startWorker() {
  worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  worker.onmessage = (ev) => {
    const p = pending.get(ev.data.id);
    if (!p) return;
    pending.delete(ev.data.id);
    if (ev.data.ok) p.resolve(ev.data); else p.reject(new Error(ev.data.error));
  };
  worker.onerror = (ev) => {
    ev.preventDefault();
    for (const p of pending.values()) p.reject(new Error(`the engine failed to start (${ev.message || 'worker error'})`));
    pending.clear();
  };
}

function call(type, payload = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, type, ...payload }, transfer);
  });
}

async function stop() {
  // A runaway step (a huge or hostile file): end the worker, start a fresh one, reload the model.
  worker.terminate();
  for (const p of pending.values()) p.reject(new Error('stopped'));
  pending.clear();
  startWorker();
  if (state.modelBytes) await loadModel(state.modelBytes.slice(0), state.modelName, true);
}

// ---------------------------------------------------------------- UI helpers
function message(text, kind = 'error') {
  const m = $('message');
  m.textContent = text || '';
  m.className = 'message' + (kind === 'busy' ? ' busy' : '');
  if (text) state.events.push({ kind, text });
}

function busy(on, text = '') {
  state.busy = on;
  $('stop').hidden = !on;
  $('protect').disabled = on || !state.model || !currentPhoto;
  $('model-fetch').disabled = on;
  if (on) message(text, 'busy');
}

function modelStatus(lines) {
  const box = $('model-status');
  box.replaceChildren(...lines.map(([text, cls]) => {
    const div = document.createElement('div');
    div.textContent = text;
    if (cls) div.className = cls;
    return div;
  }));
}

// ---------------------------------------------------------------- model
function showModel() {
  const info = state.model;
  if (!info) return;
  const shape = info.fixedSize ? `fixed ${info.fixedSize}×${info.fixedSize} (run tile by tile)` : 'any size';
  const { status, warning } = info.lines[$('budget').value]; // what was measured under the budget in use
  const lines = [
    [`MaskNet ${info.modelId || '(no id)'} · structure ${info.structure} · input ${shape} · ρ_pixel ${info.rhoPixel}`],
    [`spec digest verified: ${info.digest.slice(0, 16)}…`, 'ok'],
    [status],
  ];
  if (warning) lines.push([warning, 'warn']);
  modelStatus(lines);
}

async function loadModel(bytes, name, quiet = false) {
  state.model = null;
  state.modelBytes = bytes.slice(0);
  state.modelName = name;
  if (!quiet) busy(true, `checking ${name}…`);
  try {
    const threads = Number(new URLSearchParams(location.search).get('threads')) || 0; // ?threads=N (benchmarks)
    const info = await call('model', { bytes, name, threads }, [bytes]);
    state.model = info;
    showModel();
    if (!quiet) message('');
  } catch (e) {
    state.modelBytes = null;
    modelStatus([[`model refused: ${e.message}`, 'warn']]);
    if (!quiet) message(e.message);
  } finally {
    if (!quiet) busy(false);
  }
}

$('model-file').addEventListener('change', async (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  await loadModel(await f.arrayBuffer(), f.name);
  if (state.model && currentPhoto) protect();
});

$('model-fetch').addEventListener('click', async () => {
  const url = $('model-url').value.trim();
  const token = $('model-token').value.trim();
  let u;
  try {
    u = new URL(url);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error();
  } catch {
    message('enter the download URL your PSP gave you (https://…/v1/masknets/ID/file)');
    return;
  }
  busy(true, `downloading your MaskNet from ${u.host}…`);
  let resp;
  try {
    resp = await fetch(u, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer', redirect: 'error',
    });
  } catch {
    busy(false);
    message(`could not reach ${u.host} (offline, or the PSP does not allow this page's origin: CORS)`);
    return;
  }
  if (!resp.ok) {
    busy(false);
    const why = { 401: 'the PSP refused the token', 403: 'the PSP refused the token', 404: 'no such MaskNet on the PSP', 410: 'this MaskNet was retired' }[resp.status] || 'the PSP answered with an error';
    message(`${why} (HTTP ${resp.status})`);
    return;
  }
  const bytes = await resp.arrayBuffer();
  const expected = resp.headers.get('X-Content-SHA256');
  if (expected) {
    const { sha256hex } = await import('./sha256.js');
    if ((await sha256hex(new Uint8Array(bytes))) !== expected.toLowerCase()) {
      busy(false);
      message('the download is damaged: its sha256 does not match the PSP\'s X-Content-SHA256');
      return;
    }
  }
  const name = (resp.headers.get('Content-Disposition') || '').match(/filename="([^"]+)"/)?.[1] || u.pathname.split('/').slice(-2, -1)[0] + '.onnx';
  busy(false);
  await loadModel(bytes, name);
  if (state.model && currentPhoto) protect();
});

// ---------------------------------------------------------------- photo
let currentPhoto = null;

for (const id of ['photo-file', 'photo-camera']) {
  $(id).addEventListener('change', (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    currentPhoto = f;
    state.photoName = f.name || 'photo.jpg';
    $('protect').disabled = !state.model;
    if (state.model) protect(); else message('load your MaskNet (step 1) to protect this photo');
  });
}
$('protect').addEventListener('click', () => protect());
$('budget').addEventListener('change', () => { showModel(); if (state.model && currentPhoto) protect(); });
$('stop').addEventListener('click', async () => { await stop(); busy(false); message('stopped'); });

let again = false; // a new photo or setting arrived while busy: protect once more when done

async function protect() {
  if (!currentPhoto || !state.model) return;
  if (state.busy) { again = true; return; }
  const workSize = Number($('work-size').value);
  if (!Number.isInteger(workSize) || workSize < 8) { message('work size must be a whole number of pixels, at least 8'); return; }
  busy(true, `protecting ${state.photoName}…`);
  state.last = null;
  try {
    const r = await call('protect', { blob: currentPhoto, workSize, preset: $('budget').value });
    state.last = r;
    await show(r);
    message('');
  } catch (e) {
    $('result-section').hidden = true;
    if (e.message !== 'stopped') message(e.message);
  } finally {
    busy(false);
  }
  if (again) { again = false; protect(); }
}

// ---------------------------------------------------------------- result
const DISPLAY = 1280; // longest side drawn on screen (the download is full size)

async function draw(canvas, rgba, w, h) {
  const s = Math.min(1, DISPLAY / Math.max(w, h));
  const dw = Math.max(1, Math.round(w * s)), dh = Math.max(1, Math.round(h * s));
  const bmp = await createImageBitmap(new ImageData(rgba, w, h), { resizeWidth: dw, resizeHeight: dh, resizeQuality: 'high' });
  canvas.width = dw; canvas.height = dh;
  canvas.getContext('2d').drawImage(bmp, 0, 0);
  bmp.close();
}

function deltaImage(delta, n, peak) {
  const out = new Uint8ClampedArray(n * 4);
  const gain = peak > 0 ? 127 / peak : 0;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) out[i * 4 + c] = 128 + delta[i * 3 + c] * gain;
    out[i * 4 + 3] = 255;
  }
  return out;
}

async function show(r) {
  $('result-section').hidden = false;
  await draw($('before'), r.original, r.width, r.height);
  await draw($('after'), r.protectedPx, r.width, r.height);
  const [wh, ww] = r.work;
  await draw($('delta-view'), deltaImage(r.delta, wh * ww, r.maxDelta), ww, wh);
  const st = r.stats, t = r.timings;
  const f = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : '∞');
  $('readout').textContent =
    `${r.width}×${r.height} photo, perturbation computed at ${ww}×${wh} · ` +
    (r.rho === null ? 'no DSSIM budget · ' : `budget ${r.preset} (DSSIM ≤ ${r.rho})` + (r.scale < 1 ? `: δ scaled to ${f(r.scale, 2)} · ` : ' · ')) +
    `PSNR ${f(st.psnr, 2)} dB · DSSIM written${r.dssimWork === null ? '' : '/working'} ${f(st.dssimWindow, 4)}` +
    (r.dssimWork === null ? '' : `/${f(r.dssimWork, 4)}`) + ` in the worst ${st.window}² window (${f(st.dssim, 4)} over the working image) · ` +
    `max |δ| ${f(r.maxDelta * 255, 1)}/255 · ${f(t.total / 1000, 2)} s (decode ${f(t.decode, 0)} ms, resize ${f(t.resize, 0)}, ` +
    `MaskNet ${f(t.perturb, 0)}, ` + (t.budget !== undefined ? `budget ${f(t.budget, 0)}, ` : '') + `apply ${f(t.apply, 0)}, measure ${f(t.measure, 0)})`;
}

$('download').addEventListener('click', async () => {
  const format = $('format').value;
  const quality = Math.min(100, Math.max(1, Number($('quality').value) || 90)) / 100;
  try {
    const { blob } = await call('encode', { format, quality });
    const stem = (state.photoName || 'photo').replace(/\.[^.]*$/, '');
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${stem}_protected.${format === 'png' ? 'png' : 'jpg'}`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (e) {
    message(e.message);
  }
});

startWorker();
state.ready = true;
