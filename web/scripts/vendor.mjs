// Copy the onnxruntime-web files the page loads from node_modules (npm ci) into web/vendor/.
// web/vendor/ and web/node_modules/ are git-ignored: `npm ci` in web/ runs this (postinstall).
import { copyFileSync, mkdirSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(web, 'node_modules', 'onnxruntime-web', 'dist');
const out = join(web, 'vendor');
// The WASM backend only: the API module, its emscripten loader and the SIMD(+threads) binary.
const FILES = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm'];

if (!existsSync(dist)) {
  console.error(`vendor: ${dist} is missing; run "npm ci" in web/ first`);
  process.exit(1);
}
mkdirSync(out, { recursive: true });
for (const f of FILES) copyFileSync(join(dist, f), join(out, f));
const version = JSON.parse(readFileSync(join(dist, '..', 'package.json'), 'utf8')).version;
writeFileSync(join(out, 'VERSION'), `onnxruntime-web ${version}\n`);
console.log(`vendor: onnxruntime-web ${version} -> web/vendor/ (${FILES.join(', ')})`);
