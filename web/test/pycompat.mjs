// Node side of tests/test_web.py's "same as Python" checks of the page's pure modules.
// Usage: node pycompat.mjs JOBS.json -> prints a JSON list of results, one per job.
// A job is {op, ...}; binary images travel as files (raw interleaved uint8 / float32).
import { readFileSync, writeFileSync } from 'node:fs';
import { parse, dumps, floatRepr } from '../src/pyjson.js';
import { formatFixed, statusLine, warningLine } from '../src/protection.js';
import { specFromDict, specToJson, specDigest } from '../src/spec.js';
import { inspectModel } from '../src/meta.js';
import { sha256js } from '../src/sha256.js';
import { resizePillow, resampleF } from '../src/resample.js';
import * as whole from '../src/whole.js';
import * as metrics from '../src/metrics.js';
import { fitBudgetWindows, PRESETS } from '../src/budget.js';

const f64 = (hex) => new DataView(Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16)).buffer).getFloat64(0);

async function run(job) {
  switch (job.op) {
    case 'dumps': return job.texts.map((t) => { try { return dumps(parse(t)); } catch (e) { return 'error: ' + e.message; } });
    case 'float_repr': return job.hex.map((h) => floatRepr(f64(h)));
    case 'format_fixed': return job.items.map(([h, d]) => formatFixed(f64(h), d));
    case 'spec': return Promise.all(job.texts.map(async (t) => {
      try { const s = specFromDict(parse(t)); return { json: specToJson(s), digest: await specDigest(s) }; } catch (e) { return { error: e.message }; }
    }));
    case 'status': return job.texts.map((t) => {
      try { const r = parse(t); return { status: statusLine(r, job.preset ?? null), warning: warningLine(r, job.preset ?? null) }; } catch (e) { return { error: e.message }; }
    });
    case 'inspect': return Promise.all(job.paths.map(async (p) => {
      try {
        const m = await inspectModel(new Uint8Array(readFileSync(p)), p.split('/').pop());
        return { modelId: m.modelId, fixedSize: m.fixedSize, digest: m.digest, spec: specToJson(m.spec),
          status: statusLine(m.protection), warning: warningLine(m.protection) };
      } catch (e) { return { error: e.message }; }
    }));
    case 'sha256': return job.texts.map((t) => sha256js(new TextEncoder().encode(t)));
    case 'resize': {
      const src = new Uint8Array(readFileSync(job.src));
      const out = resizePillow(src, job.sw, job.sh, job.ch, 3, job.dw, job.dh, job.gap);
      writeFileSync(job.out, out);
      return out.length;
    }
    case 'resize_f': {
      const src = new Float32Array(new Uint8Array(readFileSync(job.src)).buffer);
      const out = resampleF(src, job.sw, job.sh, 3, job.dw, job.dh);
      writeFileSync(job.out, new Uint8Array(out.buffer));
      return out.length;
    }
    case 'working_shape': return job.items.map(([h, w, s, m]) => whole.workingShape(h, w, s, m));
    case 'add_upsampled': {
      const img = new Uint8Array(readFileSync(job.img));
      const d = new Float32Array(new Uint8Array(readFileSync(job.delta)).buffer);
      const out = whole.addUpsampled(img, job.w, job.h, 3, d, job.dw, job.dh);
      writeFileSync(job.out, out);
      return out.length;
    }
    case 'ssim': {
      const a = new Uint8Array(readFileSync(job.a)), b = new Uint8Array(readFileSync(job.b));
      return metrics.ssimStats(a, b, job.w, job.h, 3, job.window);
    }
    case 'budget': {
      const rgb = new Uint8Array(readFileSync(job.rgb));
      const d = new Float32Array(new Uint8Array(readFileSync(job.delta)).buffer);
      const r = fitBudgetWindows(rgb, d, job.w, job.h, job.rho, job.rho_pixel, job.window);
      writeFileSync(job.out, new Uint8Array(r.delta.buffer));
      return { scale: r.scale, dssim: r.dssim };
    }
    case 'presets': return PRESETS;
    default: throw new Error('unknown op ' + job.op);
  }
}

const jobs = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = [];
for (const j of jobs) out.push(await run(j));
process.stdout.write(JSON.stringify(out));
