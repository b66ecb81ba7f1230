// The chat page: model picker, loading progress, transcript, composer and metrics. It never runs the
// model itself; it talks to worker.js with the message protocol of docs/architecture.md.
//
// Query parameters (tests, benchmarks): ?model=<id> ?device=wasm|webgpu ?dtype=<dtype>
// ?max_new_tokens=<n> ?threads=<n> ?autoload=1
// State for tests: body[data-state] = idle|loading|ready|generating, body[data-device|data-dtype],
// #metrics[data-metrics] (JSON of the last reply) and [data-context] (KV-cache use of that turn),
// assistant messages [data-role=assistant][data-raw][data-streamed][data-done].

import { chooseDevice, describeError } from "./device.js";
import { setMarkdown } from "./markdown.js";

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
  const initial = app.catalog.find((m) => m.id === wanted) ?? app.catalog.find((m) => m.id === "smollm2-135m");
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
    case "token":
      onToken(msg);
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
  el.deviceStatus.textContent = `Ready: ${app.model.name ?? app.model.id} on ${deviceLabel(app.choice.device)} with ${app.choice.dtype}, loaded in ${fmtNum(msg.load_s, 1)} s. ${app.choice.reason}`;
  setState("ready");
  el.prompt.focus();
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
  // The full manifest says which files the chosen dtype needs (external data chunks, if any).
  let files;
  try {
    const response = await fetch(`/api/models/${encodeURIComponent(model.id)}`);
    if (response.ok) files = (await response.json())?.dtypes?.[choice.dtype]?.files;
  } catch (err) {
    console.warn("manifest", err);
  }
  worker.postMessage({
    type: "load",
    model: { id: model.id, revision: model.revision },
    dtype: choice.dtype,
    device: choice.device,
    files,
    threads: THREADS,
  });
}

function send() {
  const text = el.prompt.value.trim();
  if (!text || document.body.dataset.state !== "ready") return;
  clearError();
  el.prompt.value = "";
  addMessage("user", text);
  app.messages.push({ role: "user", content: text });
  const { node, body } = addMessage("assistant", "");
  node.dataset.raw = "";
  node.dataset.done = "false";
  app.current = { node, body, raw: "" };
  setState("generating");
  worker.postMessage({
    type: "generate",
    messages: app.messages.map(({ role, content }) => ({ role, content })),
    options: { max_new_tokens: maxNewTokens() },
  });
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
el.newChat.addEventListener("click", newChat);

fillModelPicker();
setState("idle");
worker.postMessage({ type: "check" });
if (params.get("autoload") === "1") loadModel();
