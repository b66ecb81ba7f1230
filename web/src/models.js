// The model picker and what the page knows about the model it shows: its full manifest (from the server, or the
// verified copy in the model cache when offline), its card, what a click on "Load" would download, and whether it
// can load on open (every file the chosen dtype needs already in the verified cache).

import { cachedManifest, modelBaseUrl, modelCacheName, readModelJson } from "./cache.js";
import { contextCap, DEFAULT_MODEL } from "./contracts.js";
import { chooseDevice } from "./device.js";
import { artifactsFor, fetchManifest } from "./manifest.js";
import { renderModelCard } from "./modelcard.js";
import { fmtBytes } from "./progress.js";

const LAST_MODEL_KEY = "edge-chat-last-model";

const fetchVerification = (model) => readModelJson(model, "verification.json");

/** Bytes a load of `model` with `dtype` still has to download (entries already in its model cache count 0). */
async function bytesToDownload(model, manifest, dtype) {
  const files = artifactsFor(manifest, dtype);
  const total = files.reduce((sum, f) => sum + f.bytes, 0);
  const name = modelCacheName(model.id, model.revision);
  if (typeof caches === "undefined" || !(await caches.has(name))) return total;
  const cache = await caches.open(name);
  let missing = 0;
  for (const f of files) {
    const url = new URL(f.path.split("/").map(encodeURIComponent).join("/"), modelBaseUrl(model.id, model.revision));
    if (!(await cache.match(url.href))) missing += f.bytes;
  }
  return missing;
}

/**
 * @param {{catalog: object[], params: URLSearchParams, forced: object, capabilities: Promise<object>,
 *          settings: ReturnType<import("./settings.js").createSettings>,
 *          el: {select: HTMLSelectElement, info: HTMLElement, card: HTMLElement, loadButton: HTMLButtonElement}}} o
 */
export function createModels({ catalog, params, forced, capabilities, settings, el }) {
  const state = { selected: null, manifest: null, ready: Promise.resolve() };

  function fill() {
    el.select.replaceChildren();
    for (const m of catalog) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.name ? `${m.name} (${m.id})` : m.id;
      if (m.capabilities?.image) option.textContent += " · [image]"; // takes images (no emoji: fonts vary)
      option.dataset.image = String(Boolean(m.capabilities?.image));
      el.select.append(option);
    }
    if (catalog.length === 0) {
      const option = document.createElement("option");
      option.textContent = "No models on this server";
      el.select.append(option);
      el.info.textContent = "Export a model with model_prep into the server's models folder, then reload.";
      return;
    }
    let last = null;
    try {
      last = localStorage.getItem(LAST_MODEL_KEY);
    } catch {
      // storage off
    }
    const wanted = params.get("model") ?? last;
    const initial = catalog.find((m) => m.id === wanted) ?? catalog.find((m) => m.id === DEFAULT_MODEL);
    if (initial) el.select.value = initial.id;
  }

  const picked = () => catalog.find((m) => m.id === el.select.value) ?? null;

  /** The load button says what a click costs: the download, or nothing when the model is cached. */
  async function showLoadSize() {
    const model = state.selected;
    const caps = await capabilities;
    if (!model || !state.manifest || state.selected !== model) return null;
    let choice;
    try {
      choice = chooseDevice(caps, state.manifest, forced);
    } catch {
      return null;
    }
    const missing = await bytesToDownload(model, state.manifest, choice.dtype);
    if (state.selected !== model) return null;
    el.loadButton.textContent = missing > 0 ? `Load model (${fmtBytes(missing)} download)` : "Load model";
    el.loadButton.dataset.download = String(missing);
    return missing;
  }

  /** Shows the picker's model: one line, its card, its settings. */
  async function select() {
    const model = picked();
    state.selected = model;
    if (!model) return;
    const sizes = Object.entries(model.dtypes ?? {})
      .map(([dtype, v]) => `${dtype} ${fmtBytes(typeof v === "number" ? v : v?.bytes)}`)
      .join(", ");
    el.info.textContent = `${model.name ?? model.id} · revision ${model.revision}${sizes ? ` · variants: ${sizes}` : ""}`;
    const [manifest, verification] = await Promise.all([fetchManifest(model), fetchVerification(model)]);
    if (state.selected !== model) return; // the picker moved on meanwhile
    state.manifest = manifest;
    const contextLength = manifest?.context_length ?? null;
    if (manifest) renderModelCard(el.card, manifest, verification, { contextLimit: contextCap(contextLength) });
    else el.card.textContent = "The model's manifest could not be read (offline and never loaded here).";
    await settings.setModel(model, { contextLength, contextCap: contextCap(contextLength) });
    await showLoadSize();
  }

  fill();
  el.select.addEventListener("change", () => {
    state.ready = select();
  });
  state.ready = select();

  return {
    get selected() {
      return state.selected;
    },
    get manifest() {
      return state.manifest;
    },
    /** Resolves once the picker's model is shown (manifest, card, settings). */
    ready: () => state.ready,
    /** The revision's verified manifest is cached and nothing the chosen dtype needs is missing. */
    async loadsOnOpen() {
      await state.ready;
      const model = state.selected;
      const verified = model && (await cachedManifest(model.id, model.revision).catch(() => null));
      return Boolean(verified) && (await showLoadSize()) === 0;
    },
    remember(model) {
      try {
        localStorage.setItem(LAST_MODEL_KEY, model.id);
      } catch {
        // storage off
      }
    },
  };
}
