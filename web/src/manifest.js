// @ts-check
// The page's end of the manifest hand-over, one copy for the chat (models.js, main.js) and /bench: the catalog the
// server embeds in the page, a model's full manifest, the artifacts a dtype loads, and the load request built from
// them. No DOM: the caller passes the catalog's text; runs in Node for its tests (web/test/manifest.test.js).

import { cachedManifest } from "./cache.js";
import { Request } from "./protocol.js";

/**
 * @typedef {{id: string, revision: string, name?: string, task?: string, capabilities?: {text: boolean, image: boolean},
 *   dtypes?: Record<string, any>, [key: string]: any}} CatalogEntry  one model of the server's catalog
 * @typedef {NonNullable<import("./protocol.js").LoadRequest["manifest"]>} Manifest
 * @typedef {{path: string, bytes: number, sha256: string}} Artifact
 */

/** A query parameter that must be a whole number above 0 (?threads=, ?new_tokens=), else undefined. */
export const positiveInt = (/** @type {string|null|undefined} */ v) =>
  /^\d+$/.test(v ?? "") && Number(v) > 0 ? Number(v) : undefined;

/**
 * The catalog's models that name an id and a revision, from the JSON the server put in the page (a list, or
 * {models: [...]}); [] when it is missing or unreadable.
 * @param {string|null|undefined} text
 * @returns {CatalogEntry[]}
 */
export function readCatalog(text) {
  try {
    const data = JSON.parse(text || "[]");
    const models = Array.isArray(data) ? data : (data?.models ?? []);
    return models.filter((/** @type {any} */ m) => m && m.id && m.revision);
  } catch (err) {
    console.error("catalog", err);
    return [];
  }
}

/**
 * The full manifest of `model` from the server, else (offline, or the server moved to another revision) the
 * verified copy stored with that revision's model cache; null when neither has it.
 * @param {{id: string, revision: string}} model
 * @returns {Promise<Manifest|null>}
 */
export async function fetchManifest(model) {
  /** @type {Manifest|null} */
  let manifest = null;
  try {
    const response = await fetch(`/api/models/${encodeURIComponent(model.id)}`);
    if (response.ok) manifest = await response.json();
  } catch (err) {
    console.warn("manifest", err);
  }
  if (manifest?.revision !== model.revision) manifest = await cachedManifest(model.id, model.revision).catch(() => null);
  return manifest;
}

/**
 * The manifest entries a dtype loads: its files plus every file that belongs to no dtype.
 * @param {{files?: Artifact[], dtypes?: Record<string, any>}} manifest
 * @param {string} dtype
 * @returns {Artifact[]}
 */
export function artifactsFor(manifest, dtype) {
  const variantFiles = new Set(Object.values(manifest.dtypes ?? {}).flatMap((d) => d?.files ?? []));
  const wanted = new Set(manifest.dtypes?.[dtype]?.files ?? []);
  return (manifest.files ?? []).filter((f) => wanted.has(f.path) || !variantFiles.has(f.path));
}

/**
 * The load request for `model` with the device chosen for it (device.js chooseDevice): the dtype's files, every
 * artifact verified into the model cache first (cache.js), the manifest stored beside them, and what the model
 * takes (its task and capabilities: an image model loads in vlm.js).
 * @param {CatalogEntry} model
 * @param {{device: "webgpu"|"wasm", dtype: string}} choice
 * @param {Manifest|null} manifest
 * @param {{threads?: number, verify?: "stamp"|"full", session_options?: object, kv?: "static"|"dynamic"}} [options]
 * @returns {import("./protocol.js").WithoutId<import("./protocol.js").LoadRequest>}
 */
export function loadRequest(model, choice, manifest, { threads, verify = "stamp", session_options, kv } = {}) {
  return {
    type: Request.LOAD,
    model: { id: model.id, revision: model.revision },
    dtype: choice.dtype,
    device: choice.device,
    files: manifest?.dtypes?.[choice.dtype]?.files,
    artifacts: manifest ? artifactsFor(manifest, choice.dtype) : undefined,
    manifest: manifest ?? undefined,
    verify,
    task: model.task,
    capabilities: model.capabilities,
    ...(threads !== undefined ? { threads } : {}),
    ...(session_options !== undefined ? { session_options } : {}),
    ...(kv !== undefined ? { kv } : {}),
  };
}
