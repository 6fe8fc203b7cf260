// MaskNetSpec as src/hyperobf/spec.py reads it: from_dict, the same checks, to_dict, the canonical JSON
// and its sha256 digest (which every exported model carries in its metadata).
//
// Values keep their parsed Python types (pyjson.js: int vs PyFloat), because the digest is taken over
// the JSON Python writes back from the dataclass, e.g. a missing "stride" comes back as "stride":1.
// One deliberate difference: integer fields (in_ch, out_ch, kernel, stride, upsample, input_size,
// in_channels, spec_format) must be JSON integers here; Python would also take 3.0. No exporter writes that.

import { PyFloat, dumps, num } from './pyjson.js';
import { sha256hex } from './sha256.js';

export const SPEC_FORMAT = 2;
const LAYER_FIELDS = ['name', 'in_ch', 'out_ch', 'kernel', 'stride', 'upsample', 'act', 'concat'];
const LAYER_DEFAULTS = { kernel: 3, stride: 1, upsample: 1, act: 'relu', concat: null };
const SPEC_FIELDS = ['name', 'layers', 'rho_pixel', 'input_size', 'in_channels'];

export class SpecError extends Error {}

function toMap(v, what) {
  if (v instanceof Map) return new Map(v);
  if (v && typeof v === 'object' && !Array.isArray(v)) return new Map(Object.entries(v));
  throw new SpecError(`${what} is not a JSON object`);
}

function int(v, what) {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  throw new SpecError(`${what} must be an integer`);
}

function fields(d, allowed, defaults, required, what) {
  const out = { ...defaults };
  for (const [k, v] of d) {
    if (!allowed.includes(k)) throw new SpecError(`${what}: unexpected field '${k}'`);
    out[k] = v;
  }
  for (const k of required) if (!(k in out)) throw new SpecError(`${what}: missing field '${k}'`);
  return out;
}

function gcd(a, b) { while (b) [a, b] = [b, a % b]; return a; }

/** A checked spec: { name, layers: [{name, in_ch, ...}], rho_pixel, input_size, in_channels }. */
export function specFromDict(raw) {
  const d = toMap(raw, 'spec');
  const fmt = d.has('spec_format') ? d.get('spec_format') : 1;
  d.delete('spec_format');
  if (!(typeof fmt === 'number' && Number.isInteger(fmt) && fmt >= 1 && fmt <= SPEC_FORMAT)) {
    throw new SpecError(`unsupported spec_format ${dumps(fmt instanceof PyFloat || typeof fmt === 'number' || typeof fmt === 'bigint' ? fmt : null)} (this build reads 1 to ${SPEC_FORMAT})`);
  }
  if (!d.has('layers') || !Array.isArray(d.get('layers'))) throw new SpecError("spec: 'layers' is not a list");
  const layers = d.get('layers').map((l, i) => {
    const f = fields(toMap(l, `layer ${i}`), LAYER_FIELDS, LAYER_DEFAULTS, ['name', 'in_ch', 'out_ch'], `layer ${i}`);
    if (typeof f.name !== 'string') throw new SpecError(`layer ${i}: name must be a string`);
    for (const k of ['in_ch', 'out_ch', 'kernel', 'stride', 'upsample']) int(f[k], `layer ${f.name}: ${k}`);
    if (f.concat !== null && typeof f.concat !== 'string') throw new SpecError(`layer ${f.name}: concat must be a layer name`);
    return f;
  });
  d.delete('layers');
  const s = fields(d, SPEC_FIELDS, { rho_pixel: new PyFloat(0.03), input_size: 112, in_channels: 3 }, ['name'], 'spec');
  s.layers = layers;
  if (typeof s.name !== 'string') throw new SpecError('spec: name must be a string');
  int(s.input_size, 'input_size');
  int(s.in_channels, 'in_channels');
  validate(s);
  if (specFormat(s) !== fmt) throw new SpecError(`spec_format ${fmt} does not match its layers (needs ${specFormat(s)})`);
  return s;
}

function validate(s) {
  // MaskNetSpec.__post_init__, message for message.
  if (!s.layers.length) throw new SpecError('MaskNetSpec needs at least one layer');
  const rho = num(s.rho_pixel);
  if (Number.isNaN(rho) || typeof s.rho_pixel === 'boolean') throw new SpecError('rho_pixel must be a number');
  if (!(rho > 0 && rho <= 1)) throw new SpecError('rho_pixel must be in (0, 1]');
  let ch = s.in_channels;
  let sn = 1, sd = 1; // output size / input size as the fraction sn/sd
  const seen = new Map();
  s.layers.forEach((layer, i) => {
    if (seen.has(layer.name)) throw new SpecError(`duplicate layer name '${layer.name}'`);
    if (layer.act !== 'relu' && layer.act !== 'none') throw new SpecError(`layer ${layer.name}: unknown activation ${dumps(layer.act)}`);
    if (layer.kernel < 1 || layer.stride < 1 || layer.upsample < 1 || layer.out_ch < 1) {
      throw new SpecError(`layer ${layer.name}: kernel, stride, upsample and out_ch must be >= 1`);
    }
    sn *= layer.upsample;
    let want = ch;
    if (layer.concat !== null) {
      const src = seen.get(layer.concat);
      if (src === undefined) throw new SpecError(`layer ${layer.name}: concat '${layer.concat}' is not an earlier layer`);
      if (layer.concat === s.layers[i - 1].name) throw new SpecError(`layer ${layer.name}: concat '${layer.concat}' is already its input`);
      if (src.sn * sd !== sn * src.sd) throw new SpecError(`layer ${layer.name}: concat '${layer.concat}' is at a different resolution (skip resolution mismatch)`);
      want += src.ch;
    }
    if (layer.in_ch !== want) {
      const extra = layer.concat ? ` + concat ${layer.concat}'s out_ch` : '';
      throw new SpecError(`layer ${layer.name}: in_ch ${layer.in_ch} != previous out_ch ${ch}${extra} (= ${want})`);
    }
    sd *= layer.stride;
    const g = gcd(sn, sd);
    sn /= g; sd /= g;
    ch = layer.out_ch;
    seen.set(layer.name, { ch, sn, sd });
  });
  if (ch !== s.in_channels) throw new SpecError(`last layer must output ${s.in_channels} channels, got ${ch}`);
  if (s.layers[s.layers.length - 1].act !== 'none') throw new SpecError("last layer must have act='none' (tanh is applied by the MaskNet)");
  if (sn !== sd) throw new SpecError('strides and upsampling must cancel (output size == input size)');
}

export function specFormat(s) {
  return s.layers.some((l) => l.concat) ? 2 : 1;
}

export function strideProduct(s) {
  return s.layers.reduce((p, l) => p * l.stride, 1);
}

/** MaskNetSpec.to_dict(): concat left out when None, spec_format added. */
export function specToDict(s) {
  const layers = s.layers.map((l) => {
    const o = {};
    for (const k of LAYER_FIELDS) if (!(k === 'concat' && l.concat === null)) o[k] = l[k];
    return o;
  });
  return { name: s.name, layers, rho_pixel: s.rho_pixel, input_size: s.input_size, in_channels: s.in_channels, spec_format: specFormat(s) };
}

/** MaskNetSpec.to_json(): the canonical JSON the digest is taken over. */
export function specToJson(s) {
  return dumps(specToDict(s));
}

export async function specDigest(s) {
  return sha256hex(specToJson(s));
}
