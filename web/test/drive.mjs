// Drive the page in headless Chromium (the system's, through playwright-core: no browser download) for
// tests/test_web.py. Usage: node drive.mjs PLAN.json. The plan: {url, chromium, out, steps: [...]};
// writes out/result.json: {steps: [...results], requests: [every request the page and its workers made],
// console: [...], errors: [...]}.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(plan.out, { recursive: true });
const FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-default-apps',
  '--disable-domain-reliability', '--disable-client-side-phishing-detection', '--metrics-recording-only',
  '--no-pings', '--disable-features=OptimizationHints,Translate,MediaRouter,AutofillServerCommunication',
  // Everything not bound for 127.0.0.1 (Chromium bypasses proxies for loopback) goes to the test's recording proxy.
  ...(plan.proxy ? [`--proxy-server=http://${plan.proxy}`] : [])];

const browser = await chromium.launch({ executablePath: plan.chromium, args: FLAGS, headless: true });
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
const requests = [], consoleLines = [], errors = [];
const record = (r) => requests.push({ url: r.url(), method: r.method(), type: r.resourceType() });
context.on('request', record); // pages, and their dedicated workers (Chromium reports those to the context too)
context.on('serviceworker', () => errors.push('a service worker started'));
const page = await context.newPage();
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => errors.push(String(e)));
page.on('worker', (w) => consoleLines.push(`worker: ${w.url()}`));

const results = [];
const timeout = plan.timeout_ms || 120000;

async function settled() {
  // Wait until the page is idle (not busy) — every action ends with busy(false).
  await page.waitForFunction(() => window.hyperobf && window.hyperobf.ready && !window.hyperobf.busy, null, { timeout, polling: 50 });
}

async function snapshot() {
  return page.evaluate(() => ({
    message: document.getElementById('message').textContent,
    modelStatus: document.getElementById('model-status').innerText,
    readout: document.getElementById('readout').textContent,
    resultShown: !document.getElementById('result-section').hidden,
    model: window.hyperobf.model && { ...window.hyperobf.model, id: undefined, ok: undefined },
    timings: window.hyperobf.last && window.hyperobf.last.timings,
  }));
}

function b64(buf) { return Buffer.from(buf).toString('base64'); }

for (const step of plan.steps) {
  const t0 = Date.now();
  let res = { do: step.do };
  try {
  if (step.do === 'open') {
    await page.goto(step.url || plan.url, { waitUntil: 'load' });
    await settled();
  } else if (step.do === 'model') {
    await page.setInputFiles('#model-file', step.file);
    await page.waitForFunction(() => window.hyperobf.busy, null, { timeout: 2000, polling: 10 }).catch(() => {});
    await settled();
    res = { ...res, ...(await snapshot()) };
  } else if (step.do === 'model_url') {
    await page.evaluate(() => { document.getElementById('model-psp').open = true; });
    await page.fill('#model-url', step.url);
    await page.fill('#model-token', step.token || '');
    await page.click('#model-fetch');
    await page.waitForFunction(() => window.hyperobf.busy, null, { timeout: 2000, polling: 10 }).catch(() => {});
    await settled();
    res = { ...res, ...(await snapshot()) };
  } else if (step.do === 'photo') {
    if (step.work_size) await page.fill('#work-size', String(step.work_size));
    if (step.budget && (await page.inputValue('#budget')) !== step.budget) {
      await page.selectOption('#budget', step.budget);
      await settled();
    }
    const input = step.camera ? '#photo-camera' : '#photo-file';
    await page.setInputFiles(input, []); // the same file twice in a row: a change event each time
    await page.evaluate(() => { window.hyperobf.last = null; });
    await page.setInputFiles(input, step.file);
    await page.waitForFunction(() => window.hyperobf.busy, null, { timeout: 2000, polling: 10 }).catch(() => {});
    await settled();
    res = { ...res, ...(await snapshot()) };
    if (step.dump) {
      const d = await page.evaluate(() => {
        const l = window.hyperobf.last;
        if (!l) return null;
        const enc = (a) => { let s = ''; const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength); for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000)); return btoa(s); };
        return { delta: enc(l.delta), workRGB: enc(l.workRGB), work: l.work, width: l.width, height: l.height,
          stats: l.stats, timings: l.timings, maxDelta: l.maxDelta,
          preset: l.preset, rho: l.rho, scale: l.scale, dssimWork: l.dssimWork };
      });
      if (d) {
        writeFileSync(join(plan.out, `${step.dump}_delta.f32`), Buffer.from(d.delta, 'base64'));
        writeFileSync(join(plan.out, `${step.dump}_work.u8`), Buffer.from(d.workRGB, 'base64'));
        delete d.delta; delete d.workRGB;
      }
      res.last = d;
    }
  } else if (step.do === 'download') {
    await page.selectOption('#format', step.format);
    if (step.quality) await page.fill('#quality', String(step.quality));
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout }), page.click('#download')]);
    const path = join(plan.out, step.name);
    await dl.saveAs(path);
    res.file = path;
    res.suggested = dl.suggestedFilename();
  } else if (step.do === 'screenshot') {
    await page.screenshot({ path: join(plan.out, step.name), fullPage: true });
  } else if (step.do === 'canary') {
    // Proves the recorder sees what the page would send: a fetch the test itself makes from the page.
    res.canary = await page.evaluate(async (u) => { try { await fetch(u, { mode: 'no-cors' }); return 'sent'; } catch (e) { return 'failed: ' + e; } }, step.url);
  } else if (step.do === 'mark') {
    res.requests_so_far = requests.length;
  } else if (step.do === 'eval') {
    res.value = await page.evaluate(step.js);
  }
  } catch (e) {
    res.error = String(e.message || e).split('\n')[0];
    if (step.do === 'open') { results.push(res); break; }
  }
  res.ms = Date.now() - t0;
  results.push(res);
}

await browser.close();
writeFileSync(join(plan.out, 'result.json'), JSON.stringify({ steps: results, requests, console: consoleLines, errors }, null, 1));
