// Python's json module, the parts the model metadata needs, byte for byte.
//
// The spec digest is sha256 over json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":")),
// so the page must write JSON exactly as CPython does: keys sorted by code point, ensure_ascii escapes,
// and floats as float.__repr__ ("0.03", "1e-05", "1.0", "1e+16"). JSON.parse cannot do this: it loses
// the difference between 1 and 1.0, which Python keeps (json.loads("1.0") is a float and dumps back as
// "1.0"). So parse() returns ints as JS numbers (BigInt beyond 2^53) and floats as PyFloat.

export class PyFloat {
  constructor(value) { this.value = Number(value); }
  valueOf() { return this.value; }
}

export class JSONError extends Error {}

// ---------------------------------------------------------------- parse (json.loads, strict=True)

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/y;
const WS = /[ \t\n\r]*/y;

export function parse(text) {
  let i = 0;
  const ws = () => { WS.lastIndex = i; WS.exec(text); i = WS.lastIndex; };
  const fail = (what) => { throw new JSONError(`${what} at char ${i}`); };

  function value() {
    ws();
    const c = text[i];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') return string();
    if (text.startsWith('null', i)) { i += 4; return null; }
    if (text.startsWith('true', i)) { i += 4; return true; }
    if (text.startsWith('false', i)) { i += 5; return false; }
    if (text.startsWith('NaN', i)) { i += 3; return new PyFloat(NaN); }
    if (text.startsWith('Infinity', i)) { i += 8; return new PyFloat(Infinity); }
    if (text.startsWith('-Infinity', i)) { i += 9; return new PyFloat(-Infinity); }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m) {
      i = NUMBER.lastIndex;
      if (m[1] !== undefined || m[2] !== undefined) return new PyFloat(Number(m[0]));
      const big = BigInt(m[0]);
      return (big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)) ? Number(big) : big;
    }
    return fail('Expecting value');
  }

  function object() {
    i++;
    const out = new Map();
    ws();
    if (text[i] === '}') { i++; return out; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail('Expecting property name enclosed in double quotes');
      const k = string();
      ws();
      if (text[i] !== ':') fail("Expecting ':' delimiter");
      i++;
      out.set(k, value());
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === '}') { i++; return out; }
      fail("Expecting ',' delimiter");
    }
  }

  function array() {
    i++;
    const out = [];
    ws();
    if (text[i] === ']') { i++; return out; }
    for (;;) {
      out.push(value());
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === ']') { i++; return out; }
      fail("Expecting ',' delimiter");
    }
  }

  const ESC = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
  function string() {
    i++;
    let out = '';
    for (;;) {
      if (i >= text.length) fail('Unterminated string');
      const c = text[i];
      const code = c.charCodeAt(0);
      if (c === '"') { i++; return out; }
      if (code < 0x20) fail('Invalid control character');
      if (c !== '\\') { out += c; i++; continue; }
      const e = text[i + 1];
      if (e === 'u') {
        const hex = text.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('Invalid \\uXXXX escape');
        out += String.fromCharCode(parseInt(hex, 16)); // lone surrogates kept, as Python does
        i += 6;
      } else if (e in ESC) {
        out += ESC[e];
        i += 2;
      } else {
        fail('Invalid \\escape');
      }
    }
  }

  const v = value();
  ws();
  if (i !== text.length) fail('Extra data');
  return v;
}

// ---------------------------------------------------------------- dumps (sort_keys, compact, ensure_ascii)

/** float.__repr__: the shortest round-tripping digits, exponent form below 1e-4 and from 1e16 on. */
export function floatRepr(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() without an argument gives the shortest digits that round-trip (as repr does).
  const [mant, exp] = Math.abs(x).toExponential().split('e');
  const digits = mant.replace('.', '');
  const e = Number(exp); // value = 0.d1d2... × 10^(e+1)
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const ae = Math.abs(e);
    return `${sign}${m}e${e < 0 ? '-' : '+'}${ae < 10 ? '0' : ''}${ae}`;
  }
  if (e < 0) return `${sign}0.${'0'.repeat(-e - 1)}${digits}`;
  const int = digits.slice(0, e + 1).padEnd(e + 1, '0');
  const frac = digits.slice(e + 1) || '0';
  return `${sign}${int}.${frac}`;
}

/** Python's str ordering: by code point (JS's default sort compares UTF-16 units). */
export function comparePy(a, b) {
  const ca = Array.from(a, (c) => c.codePointAt(0));
  const cb = Array.from(b, (c) => c.codePointAt(0));
  for (let k = 0; k < Math.min(ca.length, cb.length); k++) if (ca[k] !== cb[k]) return ca[k] - cb[k];
  return ca.length - cb.length;
}

function quote(s) {
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[k];
  }
  return out + '"';
}

/** json.dumps(v, sort_keys=True, separators=(",", ":")). Objects: Map or plain object. */
export function dumps(v) {
  if (v === null || v === undefined) return 'null';
  if (v === true) return 'true';
  if (v === false) return 'false';
  if (v instanceof PyFloat) return floatRepr(v.value);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`a JS number ${v} is ambiguous: wrap floats in PyFloat`);
    return Object.is(v, -0) ? '0' : String(v);
  }
  if (typeof v === 'string') return quote(v);
  if (Array.isArray(v)) return '[' + v.map(dumps).join(',') + ']';
  const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
  entries.sort((a, b) => comparePy(a[0], b[0]));
  return '{' + entries.map(([k, x]) => quote(k) + ':' + dumps(x)).join(',') + '}';
}

/** A parsed value's plain number (int, BigInt-int or PyFloat), or NaN for anything else. */
export function num(v) {
  if (v instanceof PyFloat) return v.value;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'boolean') return v ? 1 : 0; // Python's bool is an int
  return NaN;
}

/** The value as a plain JS structure (Maps -> objects, PyFloat -> number), for display. */
export function plain(v) {
  if (v instanceof PyFloat) return v.value;
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Map) return Object.fromEntries([...v.entries()].map(([k, x]) => [k, plain(x)]));
  return v;
}
