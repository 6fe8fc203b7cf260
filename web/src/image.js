// Photos in and out of the page, with the Python runtime's rules (device_runtime/files.py):
// the size is read from the header and a photo above 89.5 MP is refused before anything is decoded,
// a truncated JPEG/PNG is refused (browsers would silently show the part they got), the EXIF orientation
// is applied, and what is written carries no metadata at all (the canvas encoders write none).

export const MAX_PIXELS = 89_478_485; // Pillow's decompression-bomb threshold, as hyperobf protect

export class PhotoError extends Error {}

function u16be(b, i) { return (b[i] << 8) | b[i + 1]; }
function u32be(b, i) { return ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3]; }
function u16le(b, i) { return b[i] | (b[i + 1] << 8); }
function u24le(b, i) { return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16); }

/** JPEG: walk the marker segments to the frame header; then check the scan data ends in an EOI marker. */
function jpegInfo(b) {
  let i = 2, w = 0, h = 0, sawScan = false;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) throw new PhotoError('damaged JPEG (bad marker)');
    const m = b[i + 1];
    if (m === 0xff) { i++; continue; } // fill byte
    if (m === 0xd8 || (m >= 0xd0 && m <= 0xd7) || m === 0x01) { i += 2; continue; }
    if (m === 0xd9) break;
    const len = u16be(b, i + 2);
    if (len < 2) throw new PhotoError('damaged JPEG (bad segment length)');
    if (i + 2 + len > b.length) throw new PhotoError('truncated JPEG (the file ends inside a header)');
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      h = u16be(b, i + 5); w = u16be(b, i + 7);
    }
    if (m === 0xda) { sawScan = true; i += 2 + len; break; }
    i += 2 + len;
  }
  if (!w || !h) throw new PhotoError('damaged JPEG (no frame header)');
  if (!sawScan) throw new PhotoError('truncated JPEG (no image data)');
  // The entropy-coded data may not contain FF D9 except as the end-of-image marker (FF is stuffed as FF 00).
  let end = false;
  for (let k = b.length - 2; k >= i; k--) {
    if (b[k] === 0xff && b[k + 1] === 0xd9) { end = true; break; }
  }
  if (!end) throw new PhotoError('truncated JPEG (the file ends before the end of the image)');
  return { type: 'image/jpeg', width: w, height: h };
}

function pngInfo(b) {
  if (b.length < 33 || u32be(b, 12) !== 0x49484452) throw new PhotoError('damaged PNG (no IHDR)');
  const w = u32be(b, 16), h = u32be(b, 20);
  // Walk the chunks: a PNG that stops before IEND is truncated.
  let i = 8, end = false;
  while (i + 12 <= b.length) {
    const len = u32be(b, i), type = u32be(b, i + 4);
    if (i + 12 + len > b.length) break;
    if (type === 0x49454e44) { end = true; break; }
    i += 12 + len;
  }
  if (!end) throw new PhotoError('truncated PNG (the file ends before the end of the image)');
  return { type: 'image/png', width: w, height: h };
}

function webpInfo(b) {
  const chunk = String.fromCharCode(b[12], b[13], b[14], b[15]);
  if (chunk === 'VP8X') return { type: 'image/webp', width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
  if (chunk === 'VP8L') {
    const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
    return { type: 'image/webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === 'VP8 ') return { type: 'image/webp', width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  throw new PhotoError('damaged WebP');
}

/**
 * { type, width, height } from the file's first bytes (and its end, for truncation); PhotoError when the
 * file is not an image this page reads, is damaged or truncated, or is too large.
 */
export function sniff(bytes, maxPixels = MAX_PIXELS) {
  const b = bytes;
  if (b.length === 0) throw new PhotoError('empty file');
  let info;
  if (b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) info = jpegInfo(b);
  else if (b.length > 8 && u32be(b, 0) === 0x89504e47 && u32be(b, 4) === 0x0d0a1a0a) info = pngInfo(b);
  else if (b.length > 30 && String.fromCharCode(...b.subarray(0, 4)) === 'RIFF' && String.fromCharCode(...b.subarray(8, 12)) === 'WEBP') info = webpInfo(b);
  else if (b.length > 10 && String.fromCharCode(...b.subarray(0, 4)) === 'GIF8') info = { type: 'image/gif', width: u16le(b, 6), height: u16le(b, 8) };
  else if (b.length > 26 && b[0] === 0x42 && b[1] === 0x4d) info = { type: 'image/bmp', width: Math.abs(b[18] | (b[19] << 8) | (b[20] << 16) | (b[21] << 24)), height: Math.abs(b[22] | (b[23] << 8) | (b[24] << 16) | (b[25] << 24)) };
  else if (b.length > 12 && String.fromCharCode(...b.subarray(4, 8)) === 'ftyp') {
    const brand = String.fromCharCode(...b.subarray(8, 12));
    if (brand.startsWith('avi')) info = { type: 'image/avif', width: 0, height: 0 }; // size known after decoding
    else throw new PhotoError(`${brand.trim() === 'heic' || brand.startsWith('hei') || brand.startsWith('mif') ? 'HEIC photos are not readable in this browser; export the photo as JPEG' : 'not an image this page can read'}`);
  } else {
    throw new PhotoError('not an image this page can read (JPEG, PNG, WebP, GIF, BMP or AVIF)');
  }
  checkSize(info.width, info.height, maxPixels);
  return info;
}

export function checkSize(w, h, maxPixels = MAX_PIXELS) {
  if (w * h > maxPixels) {
    throw new PhotoError(`image too large (${w}×${h} = ${Math.round(w * h / 1e6)} MP; the limit is ${(maxPixels / 1e6).toFixed(1)} MP)`);
  }
  if ((w < 1 || h < 1) && !(w === 0 && h === 0)) throw new PhotoError(`image has no pixels (${w}×${h})`);
}

/**
 * Decode a photo to upright RGBA pixels: { data (Uint8ClampedArray), width, height }.
 * EXIF orientation applied by the decoder (imageOrientation 'from-image'); no colour-space conversion, so the
 * pixels are the file's own values, as Pillow reads them.
 */
export async function decode(blob, maxPixels = MAX_PIXELS) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const info = sniff(bytes, maxPixels);
  let bmp;
  try {
    bmp = await createImageBitmap(new Blob([bytes], { type: info.type }), {
      imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none',
    });
  } catch {
    throw new PhotoError('unreadable or damaged image (the browser could not decode it)');
  }
  const { width, height } = bmp;
  checkSize(width, height, maxPixels);
  if (!width || !height) throw new PhotoError('image has no pixels');
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  bmp.close();
  const img = ctx.getImageData(0, 0, width, height);
  return { data: img.data, width, height, type: info.type };
}

/**
 * Encode RGBA pixels as JPEG or PNG, with no metadata (no EXIF, no GPS, no XMP). JPEG has no alpha:
 * transparent pixels are composited on white first, as hyperobf protect does.
 */
export async function encode(rgba, width, height, format = 'jpeg', quality = 0.9) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  let px = rgba;
  if (format === 'jpeg') {
    px = new Uint8ClampedArray(rgba);
    for (let i = 0; i < px.length; i += 4) {
      const a = px[i + 3];
      if (a !== 255) {
        for (let c = 0; c < 3; c++) px[i + c] = Math.round((px[i + c] * a + 255 * (255 - a)) / 255);
        px[i + 3] = 255;
      }
    }
  }
  ctx.putImageData(new ImageData(px, width, height), 0, 0);
  return canvas.convertToBlob({ type: format === 'png' ? 'image/png' : 'image/jpeg', quality });
}
