// Read what the page needs from an ONNX file's protobuf (onnxruntime-web exposes no custom metadata):
// ModelProto.metadata_props and the graph's real inputs/outputs (name, element type, shape).
// Only the needed fields are decoded; everything else (weights included) is skipped by its length.
//
// onnx.proto field numbers: ModelProto graph=7, metadata_props=14 (StringStringEntryProto key=1 value=2);
// GraphProto initializer=5 (TensorProto name=8), input=11, output=12; ValueInfoProto name=1 type=2;
// TypeProto tensor_type=1 (elem_type=1, shape=2); TensorShapeProto dim=1 (dim_value=1, dim_param=2).

export class OnnxError extends Error {}

export const ELEM_TYPES = { 1: 'float', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'double' };

class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.b = bytes; this.pos = start; this.end = end;
  }
  more() { return this.pos < this.end; }
  varint() {
    // Up to 64 bits: exact as a Number below 2^53; above (only int64 fields could be), a signed BigInt.
    let v = 0, scale = 1;
    for (let k = 0; k < 10; k++) {
      if (this.pos >= this.end) throw new OnnxError('truncated varint');
      const byte = this.b[this.pos++];
      v += (byte & 0x7f) * scale;
      scale *= 128;
      if (!(byte & 0x80)) {
        if (v <= Number.MAX_SAFE_INTEGER) return v;
        // Re-read exactly with BigInt.
        let big = 0n;
        for (let j = k; j >= 0; j--) big = (big << 7n) | BigInt(this.b[this.pos - k - 1 + j] & 0x7f);
        return BigInt.asIntN(64, big);
      }
    }
    throw new OnnxError('varint too long');
  }
  tag() {
    const t = this.varint();
    if (typeof t !== 'number') throw new OnnxError('bad field tag');
    return [Math.floor(t / 8), t & 7];
  }
  bytes() {
    const n = this.varint();
    if (typeof n !== 'number' || this.pos + n > this.end) throw new OnnxError('field runs past the end of the file');
    const start = this.pos;
    this.pos += n;
    return [start, this.pos];
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new OnnxError(`unsupported wire type ${wire}`);
    if (this.pos > this.end) throw new OnnxError('field runs past the end of the file');
  }
  // Iterate the fields of the message in [pos, end): calls fn(field, wire) which must consume the value
  // (return true) or leave it to be skipped (return false).
  fields(fn) {
    while (this.more()) {
      const [field, wire] = this.tag();
      if (field === 0) throw new OnnxError('field number 0');
      const at = this.pos;
      if (!fn(field, wire)) { this.pos = at; this.skip(wire); }
    }
    if (this.pos !== this.end) throw new OnnxError('message runs past its end');
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function text(bytes, [a, b]) {
  try {
    return utf8.decode(bytes.subarray(a, b));
  } catch {
    throw new OnnxError('a string field is not valid UTF-8');
  }
}

function sub(r, wire, fn) {
  if (wire !== 2) throw new OnnxError('expected a length-delimited field');
  const [a, b] = r.bytes();
  const inner = new Reader(r.b, a, b);
  fn(inner);
  return true;
}

function valueInfo(bytes, r) {
  const out = { name: '', elemType: null, shape: null };
  r.fields((f, w) => {
    if (f === 1 && w === 2) { out.name = text(bytes, r.bytes()); return true; }
    if (f === 2) return sub(r, w, (t) => t.fields((f2, w2) => {
      if (f2 !== 1) return false; // only tensor types are MaskNet inputs
      return sub(t, w2, (tt) => tt.fields((f3, w3) => {
        if (f3 === 1 && w3 === 0) { out.elemType = ELEM_TYPES[tt.varint()] ?? 'other'; return true; }
        if (f3 === 2) {
          out.shape = [];
          return sub(tt, w3, (sh) => sh.fields((f4, w4) => {
            if (f4 !== 1) return false;
            let dim = null;
            sub(sh, w4, (d) => d.fields((f5, w5) => {
              if (f5 === 1 && w5 === 0) { dim = d.varint(); return true; }
              if (f5 === 2 && w5 === 2) { dim = text(bytes, d.bytes()); return true; }
              return false;
            }));
            out.shape.push(dim);
            return true;
          }));
        }
        return false;
      }));
    }));
    return false;
  });
  return out;
}

/**
 * Parse an ONNX file: { metadata: Map(key -> value), inputs: [{name, elemType, shape}], outputs: [...] }.
 * Inputs that are initializers (older exporters list them) are left out, as onnxruntime does.
 */
export function readOnnx(bytes) {
  const r = new Reader(bytes);
  const metadata = new Map();
  let graph = null;
  r.fields((f, w) => {
    if (f === 14) return sub(r, w, (e) => {
      let k = '', v = '';
      e.fields((f2, w2) => {
        if (f2 === 1 && w2 === 2) { k = text(bytes, e.bytes()); return true; }
        if (f2 === 2 && w2 === 2) { v = text(bytes, e.bytes()); return true; }
        return false;
      });
      metadata.set(k, v); // a repeated key: the last one wins, as in onnxruntime's map
    });
    if (f === 7) return sub(r, w, (g) => {
      graph = { inputs: [], outputs: [], initializers: new Set() };
      g.fields((f2, w2) => {
        if (f2 === 11) return sub(g, w2, (v) => graph.inputs.push(valueInfo(bytes, v)));
        if (f2 === 12) return sub(g, w2, (v) => graph.outputs.push(valueInfo(bytes, v)));
        if (f2 === 5) return sub(g, w2, (t) => t.fields((f3, w3) => {
          if (f3 === 8 && w3 === 2) { graph.initializers.add(text(bytes, t.bytes())); return true; }
          return false;
        }));
        return false;
      });
    });
    return false;
  });
  if (!graph) throw new OnnxError('no graph');
  return {
    metadata,
    inputs: graph.inputs.filter((i) => !graph.initializers.has(i.name)),
    outputs: graph.outputs,
  };
}
