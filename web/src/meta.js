// A user's model file checked as the Python runtime checks it (model_meta.parse_metadata and
// device_runtime/model.py): HyperObf metadata of a known format version, a valid spec whose sha256
// digest equals the one baked in, a well-formed protection record, and an input/output signature that
// matches the spec. Every failure is a one-line ModelError.

import { readOnnx, OnnxError } from './onnx.js';
import { parse, num, JSONError } from './pyjson.js';
import { specFromDict, specDigest, SpecError } from './spec.js';
import { validate as validateProtection, RecordError } from './protection.js';

export const METADATA_FORMAT = 1;
export const PREFIX = 'hyperobf.';
export const INPUT_NAME = 'image';
export const OUTPUT_NAMES = ['protected', 'delta'];

export class ModelError extends Error {}

/** model_meta.parse_metadata: props Map(str -> str) -> Map(field -> parsed value), spec checked. */
export async function parseMetadata(props) {
  if (!props.has(PREFIX + 'format_version')) throw new ModelError('not a HyperObf model (no hyperobf metadata)');
  const out = new Map();
  for (const [key, raw] of props) {
    if (!key.startsWith(PREFIX)) continue;
    try {
      out.set(key.slice(PREFIX.length), parse(raw));
    } catch (e) {
      if (e instanceof JSONError) throw new ModelError(`model metadata '${key}' is not valid JSON`);
      throw e;
    }
  }
  const fv = out.get('format_version');
  if (num(fv) !== METADATA_FORMAT) {
    throw new ModelError(`unknown model format version ${JSON.stringify(fv ?? null)} (this runtime reads ${METADATA_FORMAT})`);
  }
  let spec;
  try {
    spec = specFromDict(out.get('spec'));
  } catch (e) {
    if (e instanceof SpecError) throw new ModelError(`model metadata holds an invalid MaskNet spec: ${e.message}`);
    throw e;
  }
  const digest = await specDigest(spec);
  if (digest !== out.get('spec_digest')) throw new ModelError('model metadata spec digest does not match its spec');
  out.set('spec', spec);
  try {
    out.set('protection', validateProtection(out.has('protection') ? out.get('protection') : null));
  } catch (e) {
    if (e instanceof RecordError) throw new ModelError(`model metadata: ${e.message}`);
    throw e;
  }
  return out;
}

/**
 * Everything the page needs to know about a model file before running it:
 * { meta, spec, fixedSize (S or null), fixedBatch, inputType, modelId, digest }.
 */
export async function inspectModel(bytes, name = 'model') {
  let onnx;
  try {
    onnx = readOnnx(bytes);
  } catch (e) {
    if (e instanceof OnnxError) throw new ModelError(`not a loadable ONNX model: ${name} (${e.message})`);
    throw e;
  }
  let meta;
  try {
    meta = await parseMetadata(onnx.metadata);
  } catch (e) {
    if (e instanceof ModelError) throw new ModelError(`${name}: ${e.message}`);
    throw e;
  }
  const spec = meta.get('spec');
  const ins = onnx.inputs, outs = onnx.outputs;
  const bad = `${name}: input/output signature does not match a MaskNet`;
  if (ins.length !== 1 || ins[0].name !== INPUT_NAME || outs.map((o) => o.name).join('\n') !== OUTPUT_NAMES.join('\n')) {
    throw new ModelError(bad);
  }
  const shape = ins[0].shape || [];
  if (shape.length !== 4 || shape[1] !== spec.in_channels) {
    throw new ModelError(`${name}: input shape [${shape.join(', ')}] does not match the spec`);
  }
  const same = (a, b) => a && b && a.length === b.length && a.every((d, i) => d === b[i]);
  if (outs.some((o) => !same(o.shape, shape) || o.elemType !== ins[0].elemType)) {
    throw new ModelError(bad + " (outputs must have the input's shape and type)");
  }
  if (ins[0].elemType !== 'float' && ins[0].elemType !== 'float16') {
    throw new ModelError(`${name}: input type ${ins[0].elemType} is not float`);
  }
  const [, , h, w] = shape;
  let fixedSize = null;
  if (typeof h === 'number' || typeof w === 'number') {
    if (h !== w || h !== spec.input_size) {
      throw new ModelError(`${name}: fixed input [${shape.join(', ')}] != spec working size ${spec.input_size}`);
    }
    fixedSize = h;
  }
  return {
    meta, spec, fixedSize,
    fixedBatch: typeof shape[0] === 'number',
    inputType: ins[0].elemType,
    modelId: String(meta.get('model_id') ?? ''),
    digest: meta.get('spec_digest'),
    protection: meta.get('protection'),
  };
}
