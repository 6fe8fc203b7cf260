// The protection record (src/hyperobf/protection.py): validate() and the lines `hyperobf protect` prints,
// word for word, including Python's number formatting (f"{x:.2f}" rounds the exact binary value half to
// even: 0.125 -> "0.12", where JS's toFixed gives "0.13").

import { num } from './pyjson.js';

export const RECORD_VERSION = 1;
export const FAILS_ABOVE = 0.5;
const KEY = ['attacker', 'protocol', 'data'];
const NUMBERS = ['acc_clean', 'acc_protected', 'dssim_mean', 'dssim_max'];

export class RecordError extends Error {}

/** f"{x:.{digits}f}" exactly as CPython formats a float. */
export function formatFixed(x, digits) {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const neg = x < 0 || Object.is(x, -0);
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, Math.abs(x));
  const hi = dv.getUint32(0), lo = dv.getUint32(4);
  const bexp = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e2;
  if (bexp === 0) e2 = -1074; else { mant |= 1n << 52n; e2 = bexp - 1075; } // |x| = mant · 2^e2
  let n = mant * 10n ** BigInt(digits);
  if (e2 >= 0) {
    n <<= BigInt(e2);
  } else {
    const den = 1n << BigInt(-e2);
    const q = n / den, r2 = 2n * (n % den);
    n = r2 > den || (r2 === den && q % 2n === 1n) ? q + 1n : q;
  }
  let s = n.toString().padStart(digits + 1, '0');
  if (digits > 0) s = `${s.slice(0, -digits)}.${s.slice(-digits)}`;
  return (neg ? '-' : '') + s;
}

const get = (e, k) => (e instanceof Map ? e.get(k) : e[k]);
const isNumber = (v) => !Number.isNaN(num(v)) || (typeof v === 'object' && v !== null && Number.isNaN(v.value));

/** The record (a parsed Map) if well formed, null for "not measured"; RecordError otherwise. */
export function validate(record) {
  if (record === null || record === undefined) return null;
  if (!(record instanceof Map) || num(record.get('version')) !== RECORD_VERSION || typeof record.get('version') === 'string') {
    throw new RecordError(`protection record is not version ${RECORD_VERSION}`);
  }
  const entries = record.get('entries');
  if (!Array.isArray(entries)) throw new RecordError('protection record has no entry list');
  for (const e of entries) {
    if (!(e instanceof Map) || KEY.some((k) => typeof e.get(k) !== 'string')) {
      throw new RecordError('protection record entry lacks attacker/protocol/data');
    }
    if (NUMBERS.some((k) => !isNumber(e.get(k)))) {
      throw new RecordError(`protection record entry for ${e.get('attacker')} lacks its numbers`);
    }
  }
  return record;
}

/** The entries that speak for a run under `preset`: [entries, true] when some were measured under it,
 * else [all entries, false]; preset null: [all entries, true]. */
export function select(record, preset = null) {
  const rec = validate(record);
  const entries = rec ? [...rec.get('entries')] : [];
  if (preset === null || preset === undefined) return [entries, true];
  const mine = entries.filter((e) => get(e, 'preset') === preset);
  return mine.length ? [mine, true] : [entries, false];
}

export function failing(record, preset = null) {
  return select(record, preset)[0].filter((e) => num(get(e, 'acc_protected')) > FAILS_ABOVE);
}

const budgetOf = (e) => (get(e, 'preset') ? `preset ${get(e, 'preset')}` : 'as issued, no budget');

/**
 * One line for the user: the measured numbers, or that nothing was measured. `preset`: the budget preset
 * the photos are protected under (null: none; every entry is then labelled with the budget it was
 * measured under).
 */
export function statusLine(record, preset = null) {
  const rec = validate(record);
  if (!rec || !rec.get('entries').length) {
    return 'protection not measured: nobody has attacked the HyperNet behind this model, '
      + 'so there is no evidence that it protects';
  }
  const [entries, matched] = select(rec, preset);
  const hasPreset = preset !== null && preset !== undefined;
  const labelled = !(hasPreset && matched);
  const f = (e, k, d) => formatFixed(num(get(e, k)), d);
  const parts = entries.map((e) => `${get(e, 'attacker')} identifies ${f(e, 'acc_clean', 2)} -> ${f(e, 'acc_protected', 2)} `
    + `(${get(e, 'data')}, ${get(e, 'protocol')}; ` + (labelled ? `${budgetOf(e)}; ` : '')
    + `DSSIM ${f(e, 'dssim_mean', 4)}, max ${f(e, 'dssim_max', 4)})`);
  const dates = entries.map((e) => String(get(e, 'date') ?? ''));
  const when = dates.reduce((a, b) => (comparePyStr(a, b) >= 0 ? a : b)).slice(0, 10);
  let head;
  if (hasPreset && matched) head = `protection measured ${when} under preset ${preset}`;
  else if (hasPreset) head = `protection measured ${when} (nothing measured under preset ${preset}: all measurements shown)`;
  else head = `protection measured ${when}` + (rec.get('preset') ? ` [preset ${rec.get('preset')}]` : '');
  return head + ': ' + parts.join('; ');
}

/** A warning when any measured attacker (of `preset`) identifies more than half of the protected photos. */
export function warningLine(record, preset = null) {
  const bad = failing(record, preset);
  if (!bad.length) return null;
  const names = bad.map((e) => `${get(e, 'attacker')} ${formatFixed(num(get(e, 'acc_protected')), 2)}`).join(', ');
  return `warning: these photos are NOT protected against every measured attacker: ${names} of the `
    + `protected photos are still identified (more than ${formatFixed(FAILS_ABOVE * 100, 0)}%)`;
}

function comparePyStr(a, b) {
  return a < b ? -1 : a > b ? 1 : 0; // dates are ASCII: UTF-16 order is code-point order
}
