// The chat page: model picker, loading progress, transcript, composer and metrics. It never runs the
// model itself; it talks to worker.js with the message protocol of docs/architecture.md.
//
// Query parameters (tests, benchmarks): ?model=<id> ?device=wasm|webgpu ?dtype=<dtype>
// ?max_new_tokens=<n> ?threads=<n> ?autoload=1 ?verify=full (re-hash every cached file, not only changed ones)
// ?expose_inputs=1 (each turn's token ids → window.__edgeChatTextInputs,
// or window.__edgeChatVLMInputs for image models)
// State for tests: body[data-state] = idle|loading|ready|generating, body[data-device|data-dtype],
// #metrics[data-metrics] (JSON of the last reply) and [data-context] (KV-cache use of that turn),
// assistant messages [data-role=assistant][data-raw][data-streamed][data-done],
// body[data-sw] = unsupported|registering|registered|controlled|updated, body[data-cache] (JSON: what the
// model cache did on the last load), body[data-memory-warning], #storage-list li[data-cache-name][data-bytes].

import { cachedManifest, deleteModelCache, listModelCaches, storageNumbers, verifyModelCache } from "./cache.js";
import { DEFAULT_MODEL } from "./contracts.js";
import { chooseDevice, describeError } from "./device.js";
import { setMarkdown } from "./markdown.js";
import { createAttachments } from "./attachments.js"; // images: picker, paste, drop, downscale

const $ = (id) => document.getElementById(id);
const el = {
  modelSelect: $("model-select"),
  loadButton: $("load-button"),
  modelInfo: $("model-info"),
  deviceStatus: $("device-status"),
  progress: $("progress"),
  progressTotal: $("progress-total"),
  progressTotalText: $("progress-total-text"),
  progressFiles: $("progress-files"),
  error: $("error"),
  transcript: $("transcript"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send-button"),
  stop: $("stop-button"),
  newChat: $("new-chat-button"),
  metrics: $("metrics"),
  maxNewTokens: $("max-new-tokens"),
  memoryWarning: $("memory-warning"),
  update: $("update-banner"),
  updateReload: $("update-reload"),
  storageSummary: $("storage-summary"),
  storageList: $("storage-list"),
  storageRefresh: $("storage-refresh"),
};

const params = new URLSearchParams(location.search);
const forced = { device: params.get("device"), dtype: params.get("dtype") };
const positiveInt = (v) => (/^\d+$/.test(v ?? "") && Number(v) > 0 ? Number(v) : undefined);
el.maxNewTokens.value = String(positiveInt(params.get("max_new_tokens")) ?? 512);
const maxNewTokens = () => positiveInt(el.maxNewTokens.value) ?? 512;
const THREADS = positiveInt(params.get("threads"));

const app = {
  catalog: readCatalog(),
  capabilities: null,
  capabilitiesReady: null,
  model: null, // catalog entry being loaded / loaded
  choice: null, // {device, dtype, reason}
  messages: [], // [{role, content}] — the conversation as the model sees it
  current: null, // the assistant message being streamed: {node, body, raw}
  files: new Map(), // file → {loaded, total, row}
  renderPending: false,
};

function readCatalog() {
  try {
    const data = JSON.parse($("catalog")?.textContent || "[]");
    const models = Array.isArray(data) ? data : (data?.models ?? []);
    return models.filter((m) => m && m.id && m.revision);
  } catch (err) {
    console.error("catalog", err);
    return [];
  }
}

// ---------------------------------------------------------------- state

function setState(state) {
  document.body.dataset.state = state;
  const loaded = Boolean(app.choice) && (state === "ready" || state === "generating");
  el.loadButton.disabled = state === "loading" || state === "generating" || app.catalog.length === 0;
  el.modelSelect.disabled = state === "loading" || state === "generating";
  el.prompt.disabled = !loaded;
  el.send.disabled = state !== "ready";
  el.stop.disabled = state !== "generating";
  el.newChat.disabled = !loaded || state === "generating";
}

function showError(err) {
  const { code, message, detail } = describeError(err);
  el.error.hidden = false;
  el.error.textContent = message;
  el.error.title = detail || "";
  document.body.dataset.error = code;
}

function clearError() {
  el.error.hidden = true;
  el.error.textContent = "";
  delete document.body.dataset.error;
}

// ---------------------------------------------------------------- formatting

const fmtBytes = (n) => {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const units = ["B", "kB", "MB", "GB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
  return `${(n / 1000 ** i).toFixed(i >= 2 ? 1 : 0)} ${units[i]}`;
};
const fmtNum = (x, digits = 2) => (x == null || !Number.isFinite(x) ? "–" : x.toFixed(digits));
const deviceLabel = (d) => (d === "webgpu" ? "WebGPU" : "WASM (CPU)");

function metricsLine(m) {
  return [
    `${deviceLabel(m.device)} · ${m.dtype}`,
    `TTFT ${fmtNum(m.ttft_s)} s`,
    `decode ${fmtNum(m.decode_tokens_per_s, 1)} tok/s`,
    `prefill ${fmtNum(m.prefill_tokens_per_s, 0)} tok/s`,
    `${m.prompt_tokens} prompt / ${m.new_tokens} new tokens`,
  ].join(" · ");
}

// ---------------------------------------------------------------- model picker

function fillModelPicker() {
  el.modelSelect.replaceChildren();
  for (const m of app.catalog) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.name ? `${m.name} (${m.id})` : m.id;
    if (m.capabilities?.image) option.textContent += " · [image]"; // takes images (no emoji: fonts vary)
    option.dataset.image = String(Boolean(m.capabilities?.image));
    el.modelSelect.append(option);
  }
  if (app.catalog.length === 0) {
    const option = document.createElement("option");
    option.textContent = "No models on this server";
    el.modelSelect.append(option);
    el.modelInfo.textContent = "Export a model with model_prep into the server's models folder, then reload.";
    return;
  }
  const wanted = params.get("model");
  const initial = app.catalog.find((m) => m.id === wanted) ?? app.catalog.find((m) => m.id === DEFAULT_MODEL);
  if (initial) el.modelSelect.value = initial.id;
  describeSelectedModel();
}

function selectedModel() {
  return app.catalog.find((m) => m.id === el.modelSelect.value) ?? null;
}

function describeSelectedModel() {
  const m = selectedModel();
  if (!m) return;
  const sizes = Object.entries(m.dtypes ?? {})
    .map(([dtype, v]) => `${dtype} ${fmtBytes(typeof v === "number" ? v : v?.bytes)}`)
    .join(", ");
  el.modelInfo.textContent = `${m.name ?? m.id} · revision ${m.revision}${sizes ? ` · variants: ${sizes}` : ""}`;
}

// ---------------------------------------------------------------- progress

function resetProgress() {
  app.files.clear();
  el.progressFiles.replaceChildren();
  el.progressTotal.value = 0;
  el.progressTotalText.textContent = "";
  el.progress.hidden = false;
}

function fileRow(file) {
  let entry = app.files.get(file);
  if (entry) return entry;
  const row = document.createElement("li");
  row.dataset.file = file;
  const name = document.createElement("span");
  name.className = "progress-label";
  name.textContent = file.replace(/^\//, "");
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  const text = document.createElement("span");
  text.className = "progress-text";
  row.append(name, bar, text);
  el.progressFiles.append(row);
  entry = { loaded: 0, total: 0, bar, text, done: false };
  app.files.set(file, entry);
  return entry;
}

function onProgress({ file, loaded, total, status }) {
  if (!file) return;
  const entry = fileRow(file);
  if (Number.isFinite(loaded)) entry.loaded = loaded;
  if (Number.isFinite(total) && total > 0) entry.total = total;
  if (status === "done") {
    entry.done = true;
    if (entry.total) entry.loaded = entry.total;
  }
  const fraction = entry.total ? entry.loaded / entry.total : entry.done ? 1 : 0;
  entry.bar.value = fraction;
  entry.text.textContent = entry.total ? `${fmtBytes(entry.loaded)} / ${fmtBytes(entry.total)}` : entry.done ? "done" : "";
  let sumLoaded = 0;
  let sumTotal = 0;
  for (const f of app.files.values()) {
    sumLoaded += f.loaded;
    sumTotal += f.total;
  }
  el.progressTotal.value = sumTotal ? sumLoaded / sumTotal : 0;
  el.progressTotalText.textContent = `${fmtBytes(sumLoaded)} / ${fmtBytes(sumTotal)}`;
}

// ---------------------------------------------------------------- transcript

function clearTranscript() {
  el.transcript.replaceChildren();
}

function addMessage(role, text) {
  el.transcript.querySelector(".empty")?.remove();
  const node = document.createElement("article");
  node.className = `message ${role}`;
  node.dataset.role = role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  if (role === "user") {
    body.textContent = text; // user text is shown as typed, never parsed
  }
  node.append(who, body);
  el.transcript.append(node);
  node.scrollIntoView({ block: "end" });
  return { node, body };
}

function scheduleRender() {
  if (app.renderPending) return;
  app.renderPending = true;
  requestAnimationFrame(() => {
    app.renderPending = false;
    const cur = app.current;
    if (!cur) return;
    setMarkdown(cur.body, cur.raw);
    cur.node.scrollIntoView({ block: "end" });
  });
}

// ---------------------------------------------------------------- worker

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const attachments = createAttachments({ worker, showError, clearError, params });

worker.addEventListener("message", (event) => {
  const msg = event.data;
  switch (msg.type) {
    case "capabilities":
      onCapabilities(msg);
      break;
    case "progress":
      onProgress(msg);
      break;
    case "ready":
      onReady(msg);
      break;
    case "cache":
      onCache(msg);
      break;
    case "token":
      onToken(msg);
      break;
    case "text-inputs": // ?expose_inputs=1: the turn's exact token ids, for tests
      window.__edgeChatTextInputs = msg;
      break;
    case "done":
      onDone(msg);
      break;
    case "error":
      onWorkerError(msg);
      break;
    default:
      break;
  }
});
worker.addEventListener("error", (event) => {
  showError(new Error(`The model worker failed to start: ${event.message || "unknown error"}`));
  setState("idle");
});

let resolveCapabilities;
app.capabilitiesReady = new Promise((resolve) => {
  resolveCapabilities = resolve;
});

function onCapabilities(caps) {
  const { type: _type, ...rest } = caps;
  app.capabilities = rest;
  document.body.dataset.webgpu = String(Boolean(rest.webgpu));
  const gpu = rest.webgpu
    ? `WebGPU available${rest.f16 ? " with shader-f16" : " (no shader-f16)"}${rest.adapter?.isFallbackAdapter ? ", software adapter" : ""}`
    : `no WebGPU (${rest.error ?? "unavailable"})`;
  el.deviceStatus.textContent = `This browser: ${gpu}. Press “Load model”.`;
  resolveCapabilities(rest);
}

function onReady(msg) {
  el.progress.hidden = true;
  const rt = msg.runtime;
  const runtime = rt?.name ? ` (${rt.name}${Number.isInteger(rt.threads) ? `, ${rt.threads} thread${rt.threads === 1 ? "" : "s"}` : ""})` : "";
  if (rt?.name) document.body.dataset.runtime = rt.name;
  el.deviceStatus.textContent = `Ready: ${app.model.name ?? app.model.id} on ${deviceLabel(app.choice.device)} with ${app.choice.dtype}${runtime}, loaded in ${fmtNum(msg.load_s, 1)} s. ${app.choice.reason}`;
  setState("ready");
  el.prompt.focus();
}

function onCache({ type: _type, ...report }) {
  document.body.dataset.cache = JSON.stringify(report);
  refreshStorage();
}

function onToken({ text }) {
  const cur = app.current;
  if (!cur) return;
  cur.raw += text;
  cur.node.dataset.raw = cur.raw;
  cur.node.dataset.streamed = cur.raw;
  scheduleRender();
}

function onDone({ text, metrics, context }) {
  const cur = app.current;
  app.current = null;
  if (cur) {
    // data-streamed keeps what arrived token by token; data-raw becomes the worker's full decode.
    cur.raw = text;
    cur.node.dataset.raw = text;
    cur.node.dataset.done = "true";
    if (context?.interrupted) cur.node.dataset.interrupted = "true";
    setMarkdown(cur.body, text);
    const meta = document.createElement("div");
    meta.className = "meta muted";
    const cache = context?.reused_tokens ? ` · ${context.reused_tokens} tokens reused from the KV cache` : "";
    meta.textContent = `${metricsLine(metrics)}${cache}${context?.interrupted ? " · stopped" : ""}`;
    cur.node.append(meta);
  }
  app.messages.push({ role: "assistant", content: text });
  el.metrics.dataset.metrics = JSON.stringify(metrics);
  el.metrics.dataset.context = JSON.stringify(context ?? {});
  el.metrics.textContent = `Last reply: ${metricsLine(metrics)}`;
  setState("ready");
}

function onWorkerError({ code, message, detail }) {
  console.error("[edge-chat]", code, message, detail);
  el.error.hidden = false;
  el.error.textContent = message;
  el.error.title = detail ?? "";
  document.body.dataset.error = code;
  const state = document.body.dataset.state;
  if (state === "loading") {
    el.progress.hidden = true;
    app.choice = null;
    el.deviceStatus.textContent = "Loading failed.";
    setState("idle");
  } else if (state === "generating") {
    const cur = app.current;
    app.current = null;
    if (cur) {
      cur.node.dataset.done = "true";
      cur.node.dataset.error = code;
      // The failed turn is dropped from the conversation; the worker's KV cache no longer matches it.
      app.messages.pop();
      worker.postMessage({ type: "reset" });
    }
    setState("ready");
  }
}

// ---------------------------------------------------------------- actions

async function loadModel() {
  const model = selectedModel();
  if (!model) return;
  clearError();
  setState("loading");
  const caps = await app.capabilitiesReady;
  let choice;
  try {
    choice = chooseDevice(caps, model, forced);
  } catch (err) {
    showError(err);
    setState(app.choice ? "ready" : "idle");
    return;
  }
  app.model = model;
  app.choice = choice;
  app.messages = [];
  clearTranscript();
  document.body.dataset.device = choice.device;
  document.body.dataset.dtype = choice.dtype;
  el.deviceStatus.textContent = `Loading ${model.name ?? model.id} on ${deviceLabel(choice.device)} with ${choice.dtype}. ${choice.reason}`;
  el.deviceStatus.dataset.reason = choice.reason;
  resetProgress();
  attachments.setModel(model);
  warnAboutMemory(model, choice);
  requestPersistentStorage();
  // The full manifest says which files the chosen dtype needs (external data chunks, if any) and their
  // sha256, which the worker checks every cached byte against. Offline: the copy stored with the cache.
  let manifest = null;
  try {
    const response = await fetch(`/api/models/${encodeURIComponent(model.id)}`);
    if (response.ok) manifest = await response.json();
  } catch (err) {
    console.warn("manifest", err);
  }
  if (manifest?.revision !== model.revision) manifest = await cachedManifest(model.id, model.revision).catch(() => null);
  const files = manifest?.dtypes?.[choice.dtype]?.files;
  worker.postMessage({
    type: "load",
    model: { id: model.id, revision: model.revision },
    dtype: choice.dtype,
    device: choice.device,
    files,
    artifacts: manifest ? artifactsFor(manifest, choice.dtype) : undefined,
    manifest: manifest ?? undefined,
    threads: THREADS,
    verify: params.get("verify") === "full" ? "full" : "stamp",
    task: model.task,
    capabilities: model.capabilities,
  });
}

/** The manifest entries a dtype loads: its ONNX files plus every file that belongs to no dtype. */
function artifactsFor(manifest, dtype) {
  const variantFiles = new Set(Object.values(manifest.dtypes ?? {}).flatMap((d) => d.files ?? []));
  const wanted = new Set(manifest.dtypes?.[dtype]?.files ?? []);
  return (manifest.files ?? []).filter(
    (f) => wanted.has(f.path) || (!variantFiles.has(f.path) && f.path !== "verification.json"),
  );
}

/** Warns (without blocking) when the dtype's working memory exceeds what the device reports. */
function warnAboutMemory(model, choice) {
  const need = model.memory_bytes?.[choice.dtype];
  const deviceGB = navigator.deviceMemory; // rounded down, capped at 8 in Chromium; absent in Firefox/Safari
  const maxBuffer = app.capabilities?.limits?.maxBufferSize;
  let warning = "";
  if (Number.isFinite(need) && Number.isFinite(deviceGB) && need > deviceGB * 2 ** 30) {
    warning = `${model.name ?? model.id} needs about ${fmtBytes(need)} of memory with ${choice.dtype}; this device reports ${deviceGB} GB. Loading may fail or make the device sluggish.`;
  } else if (choice.device === "webgpu" && Number.isFinite(maxBuffer) && Number.isFinite(need) && need > 4 * maxBuffer) {
    warning = `This GPU allows buffers of at most ${fmtBytes(maxBuffer)}, and ${choice.dtype} needs about ${fmtBytes(need)}. Loading may fail.`;
  }
  el.memoryWarning.hidden = !warning;
  el.memoryWarning.textContent = warning;
  if (warning) document.body.dataset.memoryWarning = "true";
  else delete document.body.dataset.memoryWarning;
}

function requestPersistentStorage() {
  // Persistent storage keeps the browser from evicting a 650 MB model under storage pressure.
  navigator.storage
    ?.persist?.()
    .then((granted) => {
      document.body.dataset.persisted = String(granted);
    })
    .catch(() => {});
}

// ---------------------------------------------------------------- storage panel

async function refreshStorage() {
  if (typeof caches === "undefined") {
    el.storageSummary.textContent = "This browser has no Cache Storage here (it needs https or localhost).";
    return;
  }
  const [models, numbers, persisted] = await Promise.all([
    listModelCaches(),
    storageNumbers(),
    navigator.storage?.persisted?.().catch(() => false) ?? false,
  ]);
  el.storageList.replaceChildren();
  for (const m of models) {
    const row = document.createElement("li");
    row.dataset.cacheName = m.name;
    row.dataset.bytes = String(m.bytes);
    const label = document.createElement("span");
    const known = app.catalog.find((c) => c.id === m.id);
    const stale = known && known.revision !== m.revision ? " (not the served revision)" : "";
    label.textContent = `${known?.name ?? m.id} · revision ${m.revision}${stale} · ${fmtBytes(m.bytes)} in ${m.files} files`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "storage-delete";
    button.textContent = "Delete";
    button.setAttribute("aria-label", `Delete ${m.id} revision ${m.revision} from this device`);
    button.addEventListener("click", async () => {
      button.disabled = true;
      await deleteModelCache(m.name);
      await refreshStorage();
    });
    const verify = document.createElement("button");
    verify.type = "button";
    verify.className = "storage-verify";
    verify.textContent = "Verify";
    verify.setAttribute("aria-label", `Check every stored byte of ${m.id} revision ${m.revision}`);
    verify.addEventListener("click", async () => {
      verify.disabled = true;
      const result = await verifyModelCache(m.name);
      row.dataset.verified = JSON.stringify(result);
      label.textContent += result.damaged.length
        ? ` · ${result.damaged.length} damaged file(s) removed: load the model again to fetch them`
        : ` · ${result.verified.length} files intact`;
      verify.disabled = false;
    });
    row.append(label, verify, button);
    el.storageList.append(row);
  }
  if (models.length === 0) {
    const row = document.createElement("li");
    row.className = "muted";
    row.textContent = "No model is stored on this device yet.";
    el.storageList.append(row);
  }
  const used = numbers ? `${fmtBytes(numbers.usage)} used of about ${fmtBytes(numbers.quota)} available to this site` : "Usage unknown";
  el.storageSummary.textContent = `${used}${persisted ? " · persistent storage granted" : ""}.`;
  el.storageSummary.dataset.usage = String(numbers?.usage ?? "");
  el.storageSummary.dataset.quota = String(numbers?.quota ?? "");
  document.body.dataset.storageRefreshed = String(Date.now());
}

// ---------------------------------------------------------------- service worker

function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) {
    document.body.dataset.sw = "unsupported";
    return;
  }
  const hadController = Boolean(navigator.serviceWorker.controller);
  document.body.dataset.sw = hadController ? "controlled" : "registering";
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (!hadController) {
      document.body.dataset.sw = "controlled"; // the first install claimed this page
      return;
    }
    // A new version took over (skipWaiting + clientsClaim) and this page runs the old code.
    document.body.dataset.sw = "updated";
    if (document.body.dataset.state === "idle") location.reload();
    else el.update.hidden = false;
  });
  navigator.serviceWorker
    .register("/sw.js", { scope: "/" })
    .then(() => {
      if (document.body.dataset.sw === "registering") document.body.dataset.sw = "registered";
    })
    .catch((err) => {
      console.warn("service worker", err);
      document.body.dataset.sw = "failed";
    });
}

async function send() {
  const text = el.prompt.value.trim();
  if ((!text && !attachments.count) || document.body.dataset.state !== "ready") return;
  clearError();
  // Busy from the click on: preparing images is async, and a second Enter or click must not send twice.
  setState("generating");
  // Attached images (attachments.js): null means refused with a message shown, and nothing is sent.
  const turn = await attachments.takeTurn(text, app.model);
  if (!turn) {
    setState("ready");
    return;
  }
  el.prompt.value = "";
  attachments.showIn(addMessage("user", text).node, turn);
  app.messages.push({ role: "user", content: turn.content });
  const { node, body } = addMessage("assistant", "");
  node.dataset.raw = "";
  node.dataset.done = "false";
  app.current = { node, body, raw: "" };
  worker.postMessage({
    type: "generate",
    messages: app.messages.map(({ role, content }) => ({ role, content })),
    images: turn.images,
    options: { max_new_tokens: maxNewTokens(), ...turn.options },
  }, turn.transfer);
}

function stop() {
  if (document.body.dataset.state === "generating") worker.postMessage({ type: "interrupt" });
}

function newChat() {
  if (document.body.dataset.state === "generating") return;
  app.messages = [];
  clearTranscript();
  el.metrics.textContent = "";
  el.metrics.dataset.metrics = "";
  clearError();
  worker.postMessage({ type: "reset" });
  el.prompt.focus();
}

el.loadButton.addEventListener("click", loadModel);
el.modelSelect.addEventListener("change", describeSelectedModel);
el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
el.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
el.stop.addEventListener("click", stop);
el.updateReload.addEventListener("click", () => location.reload());
el.storageRefresh.addEventListener("click", refreshStorage);
el.newChat.addEventListener("click", newChat);

fillModelPicker();
setState("idle");
registerServiceWorker();
refreshStorage();
worker.postMessage({ type: "check" });
if (params.get("autoload") === "1") loadModel();
