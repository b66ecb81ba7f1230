// @ts-check
// The model cache: one Cache Storage cache per model revision ("edge-chat-model-<id>-<revision>"), filled
// and verified by the model worker before Transformers.js reads from it, and listed / deleted by the page's
// storage panel. Every file is checked against the manifest's byte count and sha256 (streamed through
// hash-wasm, so a 650 MB file never sits in memory whole) when it is stored, and a verified stamp is kept
// beside it; later loads re-hash only entries whose stamp no longer matches (see docs/architecture.md,
// "Warm start"), or every entry on demand (verify: "full"). A damaged or truncated entry is evicted and
// fetched again. Runs in the page and in the worker (no DOM).
//
// The bytes may come from elsewhere (the catalog's `artifacts_url`: MODELS_BASE_URL, a CDN or object store), but
// every entry is keyed by this app's revisioned URL (`base_url`), which is what Transformers.js asks its custom
// cache for: wherever a file was downloaded from, it is read from here, and only after its sha256 matched.

import { createSHA256 } from "/static/vendor/hash-wasm.esm.js";
import { modelCacheName, parseModelCacheName, revisionOf } from "./contracts.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
// Where Transformers.js 4.x keeps files by default; Edge Chat turns that off, and deletes what an older
// version of the page left there so nothing is stored twice.
const LEGACY_CACHES = ["transformers-cache"];
// Stored beside the artifacts once every file of a load verified: the manifest, for offline loads and the panel.
const MANIFEST_KEY = "manifest.json";
// Stored beside the artifacts: {path: {sha256, bytes, identity}} of every entry that hashed right.
const STAMPS_KEY = ".edge-chat-verified.json";
// Written on every entry this code puts: a random value, so a replaced entry (by any other put) has another.
const PUT_HEADER = "x-edge-chat-put";
const isBookkeeping = (url) => url.endsWith(`/${MANIFEST_KEY}`) || url.endsWith(`/${STAMPS_KEY}`);

export const modelBaseUrl = (id, revision) =>
  new URL(`/models/${encodeURIComponent(id)}/${revision}/`, self.location.origin).href;

const fileUrl = (base, path) => new URL(path.split("/").map(encodeURIComponent).join("/"), base).href;
const artifactUrl = (id, revision, path) => fileUrl(modelBaseUrl(id, revision), path);

/** Where the files are downloaded from: the manifest's `artifacts_url` (absolute or same-origin), else this app. */
function sourceBase(id, revision, manifest) {
  const remote = manifest?.artifacts_url;
  return remote ? new URL(remote, self.location.origin).href : modelBaseUrl(id, revision);
}

/**
 * A small JSON file of a model (generation_config.json, verification.json) for the page, before or without a load:
 * the revision's verified cache first (offline), else the network from where its artifacts live (`artifacts_url`
 * of the catalog entry, else this app). Null when it is neither cached nor reachable.
 */
export async function readModelJson(model, path) {
  try {
    // caches.open would create the cache it opens: a model only shown in the picker must leave none behind.
    const name = modelCacheName(model.id, model.revision);
    if (typeof caches !== "undefined" && (await caches.has(name))) {
      const hit = await (await caches.open(name)).match(artifactUrl(model.id, model.revision, path));
      if (hit) return await hit.json();
    }
    const response = await fetch(fileUrl(sourceBase(model.id, model.revision, model), path));
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** A manifest is trusted for a revision's cache only if its files hash to that revision (contracts.js). */
async function checkManifest(id, revision, manifest) {
  const computed = Array.isArray(manifest.files) ? await revisionOf(manifest.files) : null;
  if (manifest.revision !== revision || computed !== revision) {
    throw new EdgeChatError(
      ErrorCode.MODEL_MISSING,
      `The manifest of ${id} does not match revision ${revision} (its files give ${computed}). Reload the page.`,
      `manifest.revision ${manifest.revision}`,
    );
  }
}

const fmtMB = (n) => `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} MB`;

/**
 * A pass-through stream that hashes what flows through it; `result()` gives {sha256, bytes} once the stream
 * has closed. One reader end to end, so the consumer's pace holds the producer back (a tee() buffers whatever
 * its slower branch has not taken yet: up to the whole file in memory).
 */
async function hashingStream(onBytes) {
  const hasher = await createSHA256();
  hasher.init();
  let bytes = 0;
  /** @type {{sha256: string, bytes: number} | null} */
  let result = null;
  const stream = new TransformStream({
    transform(chunk, controller) {
      hasher.update(chunk);
      bytes += chunk.byteLength;
      onBytes?.(bytes);
      controller.enqueue(chunk);
    },
    flush() {
      result = { sha256: hasher.digest("hex"), bytes };
    },
  });
  const done = () => {
    if (!result) throw new Error("hashingStream: read before the stream closed");
    return result;
  };
  return { stream, result: done };
}

/** Streams a body through sha256; returns {sha256, bytes}. */
async function hashStream(stream, onBytes) {
  const hashing = await hashingStream(onBytes);
  await stream.pipeThrough(hashing.stream).pipeTo(new WritableStream());
  return hashing.result();
}

async function storageNumbers() {
  try {
    const { usage = 0, quota = 0 } = (await navigator.storage?.estimate?.()) ?? {};
    return { usage, quota, available: Math.max(0, quota - usage) };
  } catch {
    return null;
  }
}

async function quotaError(model, needed, err) {
  const s = await storageNumbers();
  const numbers = s
    ? `needs ${fmtMB(needed)}, ${fmtMB(s.available)} available (${fmtMB(s.usage)} used of ${fmtMB(s.quota)})`
    : `needs ${fmtMB(needed)}`;
  return new EdgeChatError(
    ErrorCode.QUOTA_EXCEEDED,
    `Not enough browser storage for ${model}: it ${numbers}. Delete a cached model in the storage panel or free disk space, then load again.`,
    String(err?.message ?? err ?? ""),
  );
}

/** The browser would not store a file (not a quota problem): private windows keep Cache Storage in memory
 * and refuse large entries. The caller may load without the cache. */
export class CacheUnavailable extends Error {
  constructor(detail) {
    super(`The browser refused to store the model (${detail}); loading it without the offline cache.`);
    this.name = "CacheUnavailable";
  }
}

const isQuotaError = (err) => err?.name === "QuotaExceededError" || /quota/i.test(String(err?.message ?? ""));

/**
 * What identifies one stored entry: the value this code wrote in PUT_HEADER when it stored it (entries of older
 * pages: their server headers). Any put replaces it, so a changed identity means "hash this entry again".
 */
function entryIdentity(response) {
  const h = response.headers;
  return h.get(PUT_HEADER) ?? `${h.get("etag") ?? ""}|${h.get("date") ?? ""}|${h.get("content-length") ?? ""}`;
}

async function readStamps(cache, id, revision) {
  try {
    const response = await cache.match(new URL(STAMPS_KEY, modelBaseUrl(id, revision)).href);
    const stamps = response ? await response.json() : {};
    return stamps && typeof stamps === "object" ? stamps : {};
  } catch {
    return {}; // an unreadable stamp file only costs a re-hash
  }
}

async function writeStamps(cache, id, revision, stamps) {
  await cache.put(new URL(STAMPS_KEY, modelBaseUrl(id, revision)).href, Response.json(stamps));
}

/**
 * True when `cached` is the entry that hashed to `file.sha256` before: same identity, and its body still has
 * the manifest's size (Blob.size of a Cache Storage body comes from the entry's metadata, no read).
 */
async function stampHolds(stamp, cached, file) {
  if (!stamp || stamp.sha256 !== file.sha256 || stamp.bytes !== file.bytes) return false;
  if (stamp.identity !== entryIdentity(cached)) return false;
  return (await cached.clone().blob()).size === file.bytes;
}

/**
 * Makes sure every file in `files` ([{path, bytes, sha256}] from the manifest) is in the revision's cache
 * and intact. Missing files are downloaded (not through the HTTP cache: the Cache API copy is the only one),
 * hashed while they stream into the cache, and dropped again if they do not match. An entry whose verified
 * stamp still holds is trusted without reading it; any other entry is hashed (verify: "full" hashes all).
 * On success the other revisions of this model are deleted. A quota error deletes this revision's cache:
 * no half-cached model.
 *
 * onProgress({file, loaded, total, phase: "verify"|"download"}). Returns {downloaded, repaired, verified,
 * trusted, bytes, hashed_bytes}: `trusted` (a subset of `verified`) passed on their stamp; `hashed_bytes` is what
 * this call read through sha256.
 */
export async function ensureModelCached({ id, revision, files, manifest, onProgress, verify = "stamp" }) {
  if (manifest) await checkManifest(id, revision, manifest);
  const source = sourceBase(id, revision, manifest);
  const name = modelCacheName(id, revision);
  const cache = await caches.open(name);
  /** @type {{downloaded: string[], repaired: string[], verified: string[], trusted: string[], bytes: number, hashed_bytes: number}} */
  const report = { downloaded: [], repaired: [], verified: [], trusted: [], bytes: 0, hashed_bytes: 0 };
  const stamps = await readStamps(cache, id, revision);
  const stampsBefore = JSON.stringify(stamps);
  const missing = [];
  for (const file of files) {
    const url = artifactUrl(id, revision, file.path);
    const cached = await cache.match(url);
    if (cached) {
      if (verify !== "full" && (await stampHolds(stamps[file.path], cached, file))) {
        cached.body?.cancel().catch(() => {});
        report.verified.push(file.path);
        report.trusted.push(file.path);
        report.bytes += file.bytes;
        continue;
      }
      const got = await hashStream(cached.clone().body, (loaded) =>
        onProgress?.({ file: file.path, loaded, total: file.bytes, phase: "verify" }),
      );
      report.hashed_bytes += got.bytes;
      if (got.bytes === file.bytes && got.sha256 === file.sha256) {
        stamps[file.path] = { sha256: got.sha256, bytes: got.bytes, identity: entryIdentity(cached) };
        report.verified.push(file.path);
        report.bytes += file.bytes;
        continue;
      }
      console.warn(`[cache] ${file.path}: cached copy is damaged (${got.bytes} bytes, sha256 ${got.sha256}); fetching it again`);
      await cache.delete(url);
      delete stamps[file.path];
      report.repaired.push(file.path);
    } else {
      delete stamps[file.path];
    }
    missing.push(file);
  }

  const needed = missing.reduce((sum, f) => sum + f.bytes, 0);
  if (needed > 0) {
    const s = await storageNumbers();
    if (s && s.quota > 0 && needed > s.available) {
      const err = await quotaError(id, needed, "estimate");
      if (report.verified.length === 0) await caches.delete(name);
      throw err;
    }
  }
  try {
    for (const file of missing) {
      stamps[file.path] = await download(cache, id, revision, file, onProgress, source);
      report.downloaded.push(file.path);
      report.bytes += file.bytes;
      report.hashed_bytes += file.bytes;
    }
  } catch (err) {
    if (isQuotaError(err)) {
      await caches.delete(name);
      throw await quotaError(id, needed, err);
    }
    if (err?.name === "UnknownError" || err?.name === "InvalidStateError") {
      await caches.delete(name);
      throw new CacheUnavailable(String(err.message ?? err));
    }
    throw err;
  }
  if (JSON.stringify(stamps) !== stampsBefore) await writeStamps(cache, id, revision, stamps);
  if (manifest) {
    await cache.put(new URL(MANIFEST_KEY, modelBaseUrl(id, revision)).href, Response.json(manifest));
  }
  await deleteOtherRevisions(id, revision);
  return report;
}

/** Downloads `file` into `cache`, hashing it on the way; returns its verified stamp. */
async function download(cache, id, revision, file, onProgress, source) {
  const url = artifactUrl(id, revision, file.path); // the cache key, whatever the bytes' origin
  const from = fileUrl(source, file.path);
  const where = new URL(from).origin === self.location.origin ? "the server" : new URL(from).origin;
  for (let attempt = 1; ; attempt++) {
    let response;
    try {
      response = await fetch(from, { cache: "no-store" });
    } catch (err) {
      // A cross-origin host without CORS headers (or unreachable) fails here, not with a status.
      throw new EdgeChatError(
        ErrorCode.MODEL_MISSING,
        `Could not download ${file.path} from ${where}: it is unreachable or does not allow this page (CORS).`,
        `${from}: ${err?.message ?? err}`,
      );
    }
    if (!response.ok || !response.body) {
      throw new EdgeChatError(
        ErrorCode.MODEL_MISSING,
        `${where === "the server" ? "The server" : where} did not deliver ${file.path} (HTTP ${response.status}).`,
        `${from}: ${response.status}`,
      );
    }
    const identity = crypto.randomUUID();
    const headers = new Headers(response.headers);
    headers.set(PUT_HEADER, identity);
    const hashing = await hashingStream((loaded) => onProgress?.({ file: file.path, loaded, total: file.bytes, phase: "download" }));
    await cache.put(url, new Response(response.body.pipeThrough(hashing.stream), { status: 200, headers }));
    const got = hashing.result();
    if (got.bytes === file.bytes && got.sha256 === file.sha256) return { sha256: got.sha256, bytes: got.bytes, identity };
    await cache.delete(url);
    if (attempt >= 2) {
      throw new EdgeChatError(
        ErrorCode.MODEL_MISSING,
        `${file.path} from ${where} does not match its manifest, twice (${got.bytes} of ${file.bytes} bytes, sha256 ${got.sha256.slice(0, 12)}… instead of ${file.sha256.slice(0, 12)}…); it was not stored. Reload to try again.`,
        from,
      );
    }
  }
}

async function deleteOtherRevisions(id, revision) {
  for (const name of await caches.keys()) {
    const parsed = parseModelCacheName(name);
    if (parsed && parsed.id === id && parsed.revision !== revision) await deleteModelCache(name);
    else if (LEGACY_CACHES.includes(name)) await caches.delete(name);
  }
}

/**
 * A Web-Cache-like object for Transformers.js (env.customCache): reads this revision's verified files,
 * never writes (put is a no-op), and knows nothing else, so the ORT wasm comes from the SW's precache.
 */
export function transformersCache(id, revision) {
  const base = modelBaseUrl(id, revision);
  return {
    async match(key) {
      const url = new URL(typeof key === "string" ? key : key.url, self.location.origin).href;
      if (!url.startsWith(base)) return undefined;
      const cache = await caches.open(modelCacheName(id, revision));
      return (await cache.match(url)) ?? undefined;
    },
    async put() {},
  };
}

/**
 * One verified artifact as a Blob, for runtimes that take files rather than URLs (wllama reads a GGUF slice by
 * slice from it). A Blob from Cache Storage is backed by the browser's disk copy, not by a second copy in
 * memory. Without a cache entry (a private window refused to store the model) it comes from the server.
 */
export async function cachedArtifactBlob(id, revision, path, onProgress) {
  const url = artifactUrl(id, revision, path);
  const cache = await caches.open(modelCacheName(id, revision));
  const response = (await cache.match(url)) ?? (await fetch(url, { cache: "no-store" }));
  if (!response.ok) {
    throw new EdgeChatError(ErrorCode.MODEL_MISSING, `The server did not deliver ${path} (HTTP ${response.status}).`, url);
  }
  const blob = await response.blob();
  onProgress?.(blob.size, blob.size);
  return blob;
}

/** The manifest stored with a verified revision (for loading offline), or null. */
export async function cachedManifest(id, revision) {
  const name = modelCacheName(id, revision);
  if (!(await caches.has(name))) return null;
  const response = await (await caches.open(name)).match(new URL(MANIFEST_KEY, modelBaseUrl(id, revision)).href);
  return response ? response.json() : null;
}

/**
 * "Verify now": hashes every stored file of a model cache against its stored manifest, evicts damaged entries
 * (the next load fetches them again) and renews the stamps. Returns {verified, damaged, hashed_bytes}.
 */
export async function verifyModelCache(name, onProgress) {
  const parsed = parseModelCacheName(name);
  if (!parsed) throw new Error(`${name} is not a model cache`);
  const { id, revision } = parsed;
  const manifest = await cachedManifest(id, revision);
  /** @type {{verified: string[], damaged: string[], hashed_bytes: number}} */
  const report = { verified: [], damaged: [], hashed_bytes: 0 };
  if (!manifest) return report;
  const cache = await caches.open(name);
  const stamps = await readStamps(cache, id, revision);
  for (const file of manifest.files ?? []) {
    const url = artifactUrl(id, revision, file.path);
    const cached = await cache.match(url);
    if (!cached) continue; // not part of the dtype this device loads
    const got = await hashStream(cached.clone().body, (loaded) => onProgress?.({ file: file.path, loaded, total: file.bytes }));
    report.hashed_bytes += got.bytes;
    if (got.bytes === file.bytes && got.sha256 === file.sha256) {
      stamps[file.path] = { sha256: got.sha256, bytes: got.bytes, identity: entryIdentity(cached) };
      report.verified.push(file.path);
    } else {
      await cache.delete(url);
      delete stamps[file.path];
      report.damaged.push(file.path);
    }
  }
  await writeStamps(cache, id, revision, stamps);
  return report;
}

/** [{name, id, revision, bytes, files}] for every model cache, from the entries' Content-Length. */
export async function listModelCaches() {
  const out = [];
  for (const name of await caches.keys()) {
    const parsed = parseModelCacheName(name);
    if (!parsed) continue;
    const cache = await caches.open(name);
    let bytes = 0;
    let files = 0;
    for (const request of await cache.keys()) {
      if (isBookkeeping(request.url)) continue;
      const response = await cache.match(request);
      bytes += Number(response?.headers.get("content-length") ?? 0);
      files += 1;
    }
    out.push({ name, ...parsed, bytes, files });
  }
  return out;
}

/**
 * Deletes a model cache. Entries go first: Chromium frees a deleted cache's bytes only once no script
 * (e.g. the worker that loaded the model) holds it open, but a deleted entry's bytes right away.
 */
export async function deleteModelCache(name) {
  if (!parseModelCacheName(name)) throw new Error(`${name} is not a model cache`);
  const cache = await caches.open(name);
  for (const request of await cache.keys()) await cache.delete(request);
  return caches.delete(name);
}

export { modelCacheName, parseModelCacheName, storageNumbers };
