// The bytes of a chat image: what the page keeps of an attached picture and feeds the model. An attachment is
// downscaled once to the model's preprocessor longest edge (never up), encoded as WebP (JPEG where the browser has
// no WebP encoder), and named by the SHA-256 of those encoded bytes. The model is always fed the decoded pixels of
// that stored blob, on the turn it was attached and after a reload alike, so a reopened chat sees exactly what it
// saw the first time. No DOM beyond a canvas; no storage (conversations.js keeps the blobs).

export const IMAGE_QUALITY = 0.92; // high: the model reads detail a thumbnail hides
/** Caps for a kept image, checked on import (attachments are smaller: they are downscaled to the model's size). */
export const MAX_IMAGE_BYTES = 8 * 1024 * 1024;
export const MAX_IMAGE_EDGE = 4096;
/** Types a stored or imported image may have (what browsers decode everywhere). */
export const IMAGE_TYPES = new Set(["image/webp", "image/jpeg", "image/png"]);

/**
 * @typedef {{id: string, type: string, width: number, height: number, bytes: number, blob?: Blob}} StoredImage
 *   a kept image: `id` is "sha256-<hex>" of the encoded bytes; `blob` is present while the page holds them
 */

/** Target size for an image of width × height: the longest edge at most `limit`, aspect kept, never larger. Pure. */
export function fitWithin(width, height, limit) {
  const scale = Math.min(1, limit / Math.max(width, height));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

function canvas(width, height) {
  if (typeof OffscreenCanvas !== "undefined") return new OffscreenCanvas(width, height);
  const c = document.createElement("canvas");
  c.width = width;
  c.height = height;
  return c;
}

async function encode(c, type) {
  if (typeof c.convertToBlob === "function") return c.convertToBlob({ type, quality: IMAGE_QUALITY });
  return new Promise((resolve, reject) =>
    c.toBlob(
      (b) => (b ? resolve(b) : reject(new Error("the browser could not encode the image"))),
      type,
      IMAGE_QUALITY,
    ),
  );
}

/** "sha256-<hex>" of bytes: the id of a kept image (the same picture is stored once). */
export async function hashBytes(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `sha256-${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * The kept form of an attached file: downscaled to `limit` on its longest edge and encoded compactly.
 * Throws if the browser cannot decode the file.
 * @param {Blob} file
 * @param {number} limit
 * @returns {Promise<StoredImage & {blob: Blob, original: {width: number, height: number}}>}
 */
export async function keepImage(file, limit) {
  const bitmap = await createImageBitmap(file);
  const original = { width: bitmap.width, height: bitmap.height };
  const size = fitWithin(original.width, original.height, limit);
  let blob;
  try {
    const c = canvas(size.width, size.height);
    const ctx = c.getContext("2d");
    if (!ctx) throw new Error("this browser gives no 2D canvas to scale the image with");
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, 0, 0, size.width, size.height);
    blob = await encode(c, "image/webp");
    // A browser without a WebP encoder answers with PNG: JPEG is far smaller for photos.
    if (blob.type !== "image/webp") blob = await encode(c, "image/jpeg");
  } finally {
    bitmap.close();
  }
  const id = await hashBytes(await blob.arrayBuffer());
  return { id, type: blob.type, width: size.width, height: size.height, bytes: blob.size, blob, original };
}

/**
 * The RGBA pixels of a kept image at its own size (no resampling), as the worker takes them.
 * @param {Blob} blob
 * @returns {Promise<{width: number, height: number, data: Uint8ClampedArray}>}
 */
export async function pixelsOf(blob) {
  const bitmap = await createImageBitmap(blob);
  try {
    const { width, height } = bitmap;
    const c = canvas(width, height);
    const ctx = c.getContext("2d", { willReadFrequently: true });
    if (!ctx) throw new Error("this browser gives no 2D canvas to read the image with");
    ctx.drawImage(bitmap, 0, 0);
    return { width, height, data: ctx.getImageData(0, 0, width, height).data };
  } finally {
    bitmap.close();
  }
}

/** Base64 of bytes (export files are JSON). */
export function toBase64(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Bytes of base64 text; null when it is not base64. */
export function fromBase64(text) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** Decoded size of base64 text without decoding it (for the cap, before any work). */
export const base64Bytes = (text) =>
  Math.floor((text.length * 3) / 4) - (text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0);

const mb = (n) => `${(n / (1024 * 1024)).toFixed(1)} MB`;
export const IMAGE_CAPS_TEXT = `each image at most ${mb(MAX_IMAGE_BYTES)} and ${MAX_IMAGE_EDGE} px on its longest edge, as WebP, JPEG or PNG`;

/**
 * An exported image ({id, type, width, height, data: base64}) checked and turned back into a kept image.
 * Throws an Error whose message says what is wrong (for the import's report). The id is recomputed from the
 * bytes: a file cannot name its image after another one.
 * @returns {Promise<StoredImage & {blob: Blob}>}
 */
export async function restoreImage(entry) {
  if (!entry || typeof entry !== "object") throw new Error("it is not an image entry");
  const { type, width, height, data } = entry;
  if (!IMAGE_TYPES.has(type)) throw new Error(`its type ${JSON.stringify(type)} is not WebP, JPEG or PNG`);
  if (typeof data !== "string" || !data) throw new Error("it has no data");
  const size = base64Bytes(data);
  if (size > MAX_IMAGE_BYTES) throw new Error(`it is ${mb(size)}, over the cap of ${mb(MAX_IMAGE_BYTES)} per image`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error("its width and height are not positive whole numbers");
  }
  if (Math.max(width, height) > MAX_IMAGE_EDGE) {
    throw new Error(`it is ${width} × ${height} px, over the cap of ${MAX_IMAGE_EDGE} px on the longest edge`);
  }
  const bytes = fromBase64(data);
  if (!bytes) throw new Error("its data is not base64");
  const id = await hashBytes(bytes);
  if (typeof entry.id === "string" && entry.id !== id) throw new Error("its bytes do not match its checksum (damaged)");
  const blob = new Blob([bytes], { type });
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch {
    throw new Error("it does not decode as an image (damaged)");
  }
  const actual = [bitmap.width, bitmap.height];
  bitmap.close();
  if (actual[0] !== width || actual[1] !== height) {
    throw new Error(
      `it decodes to ${actual[0]} × ${actual[1]} px, not the ${width} × ${height} px it claims (damaged)`,
    );
  }
  return { id, type, width, height, bytes: blob.size, blob };
}
