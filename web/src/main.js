// The chat page: wires the picker (models.js), saved chats (chats.js, sidebar.js), transcript (transcript.js),
// settings (settings.js) and the context meter (context-meter.js) to the model worker, and runs the load and the
// turn flows. It never runs the model itself; it talks to worker.js through protocol.js (requests with ids,
// replies matched by id).
//
// Query parameters (tests, benchmarks): ?model=<id> ?device=wasm|webgpu ?dtype=<dtype> ?threads=<n>
// ?autoload=1 (load at once) | 0 (never load on open; by default a model already in the verified cache loads on open)
// ?verify=full (re-hash every cached file on load, not only entries whose verified stamp no longer holds)
// ?expose_inputs=1 (each turn's token ids → window.__edgeChatTextInputs, or window.__edgeChatVLMInputs for image
// models); chat settings for this page only (settings.js): ?temperature ?top_p ?top_k ?min_p ?repetition_penalty
// ?seed ?max_new_tokens ?system_prompt ?thinking=0|1 ?context_limit ?prompt_lookup=0
// State for tests: body[data-state] = idle|loading|ready|generating, body[data-device|data-dtype],
// body[data-settings] (JSON: the settings the next reply uses; "null" while one is invalid),
// body[data-autoload] = cached|not-cached|off (what the start-up check found), body[data-conversation] (its id),
// #metrics[data-metrics] (JSON of the last reply) and [data-context] (KV-cache use and generate() arguments of that
// turn), #context-meter[data-tokens][data-limit], the transcript's data attributes (transcript.js),
// body[data-sw] = unsupported|registering|registered|controlled|updated, body[data-cache] (JSON: what the
// model cache did on the last load), body[data-memory-warning], #storage-list li[data-cache-name][data-bytes].

import { createAttachments } from "./attachments.js"; // images: picker, paste, drop, downscale
import { createChats } from "./chats.js";
import { imageIdsOf, keptImages } from "./conversations.js";
import { wireCamera } from "./camera.js";
import { createContextMeter, dropOldestTurns } from "./context-meter.js";
import { chooseDevice } from "./device.js";
import { describeError, EdgeChatError, ErrorCode } from "./errors.js";
import { loadRequest, positiveInt, readCatalog } from "./manifest.js";
import { createModels } from "./models.js";
import { createProgress, fmtBytes } from "./progress.js";
import { Reply, Request, WorkerClient } from "./protocol.js";
import { createSettings, settingsFromQuery } from "./settings.js";
import { createSidebar } from "./sidebar.js";
import { createStoragePanel } from "./storage-panel.js";
import { createLayout } from "./layout.js"; // phone: chats drawer, model sheet, one-line status
import { historyContent, splitThinking } from "./thinking.js";
import { createTranscript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const el = {
  modelSelect: $("model-select"),
  loadButton: $("load-button"),
  deviceStatus: $("device-status"),
  memoryWarning: $("memory-warning"),
  error: $("error"),
  transcript: $("transcript"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send-button"),
  stop: $("stop-button"),
  newChat: $("new-chat-button"),
  metrics: $("metrics"),
  update: $("update-banner"),
};

const params = new URLSearchParams(location.search);
const forced = { device: params.get("device"), dtype: params.get("dtype") };
const THREADS = positiveInt(params.get("threads"));

const app = {
  catalog: readCatalog($("catalog")?.textContent),
  capabilities: null,
  model: null, // catalog entry loaded / being loaded
  choice: null, // {device, dtype, reason}
  vision: false, // the loaded model takes images
  generating: null, // id of the generate request in flight
  liveImages: new Set(), // ids of kept images the worker holds (it drops those the last request did not name)
};

// ---------------------------------------------------------------- state

function setState(state) {
  document.body.dataset.state = state;
  const loaded = Boolean(app.choice) && (state === "ready" || state === "generating");
  el.loadButton.disabled = state === "loading" || state === "generating" || app.catalog.length === 0;
  el.modelSelect.disabled = state === "loading" || state === "generating";
  el.prompt.disabled = !loaded;
  el.send.disabled = state !== "ready";
  el.stop.disabled = state !== "generating";
  el.newChat.disabled = state === "generating";
  transcript.setBusy(state !== "ready");
  sidebar.setBusy(state === "generating");
  layout.setState(state);
}

/** "SmolLM2 135M · WASM (CPU) · 31.2 tok/s": the phone's one-line status once a model is ready. */
function showSummary(speed) {
  const last = Number.isFinite(speed) ? `${fmtNum(speed, 1)} tok/s` : app.choice.dtype;
  layout.setSummary([app.model.name ?? app.model.id, deviceLabel(app.choice.device), last].join(" · "));
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

// ---------------------------------------------------------------- modules

const layout = createLayout();
wireCamera({ button: $("camera-button"), camera: $("camera-input"), attach: $("attach-input") });
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const client = new WorkerClient(worker);
const attachments = createAttachments({ showError, clearError, params });
const progress = createProgress({
  box: $("progress"),
  total: $("progress-total"),
  totalText: $("progress-total-text"),
  list: $("progress-files"),
});
const storagePanel = createStoragePanel({
  summary: $("storage-summary"),
  list: $("storage-list"),
  catalog: app.catalog,
  imageUsage: () => chats.imageUsage(),
});
let settings;
try {
  settings = createSettings({ query: settingsFromQuery(params), onChange: showContext });
} catch (err) {
  showError(err); // a bad query parameter: the stored settings and the model's defaults apply
  settings = createSettings({ query: {}, onChange: showContext });
}
const transcript = createTranscript({
  container: el.transcript,
  onAction: onMessageAction,
  imageUrl: (image) => chats.imageUrl(image),
});
const idle = () => !app.generating;
const sidebar = createSidebar({
  onOpen: (id) => idle() && chats.open(id),
  onRename: (id, title) => chats.rename(id, title),
  onDelete: (id) => idle() && chats.remove(id),
  onExport: () => chats.exportAll(),
  onImport: (file) => {
    clearError();
    chats.importFile(file);
  },
});
const chats = createChats({ sidebar, onShow: onChatShown, onError: showError, onStored: () => storagePanel.refresh() });
const meter = createContextMeter({ meter: $("context-meter"), box: $("context-warning"), text: $("context-warning-text") });
let resolveCapabilities;
const capabilities = new Promise((resolve) => {
  resolveCapabilities = resolve;
});
const models = createModels({
  catalog: app.catalog,
  params,
  forced,
  capabilities,
  settings,
  el: { select: el.modelSelect, info: $("model-info"), card: $("model-card-body"), loadButton: el.loadButton },
});

worker.addEventListener("error", (event) => {
  const err = new Error(`The model worker failed to start: ${event.message || "unknown error"}`);
  client.failAll(err);
  showError(err);
  setState("idle");
});

function onCapabilities(caps) {
  const { type: _type, id: _id, ...rest } = caps;
  app.capabilities = rest;
  document.body.dataset.webgpu = String(Boolean(rest.webgpu));
  const gpu = rest.webgpu
    ? `WebGPU available${rest.f16 ? " with shader-f16" : " (no shader-f16)"}${rest.adapter?.isFallbackAdapter ? ", software adapter" : ""}`
    : `no WebGPU (${rest.error ?? "unavailable"})`;
  el.deviceStatus.textContent = `This browser: ${gpu}. Press “Load model”.`;
  resolveCapabilities(rest);
}

/** On open: the last used model loads by itself when every file it needs is already in the verified cache. */
async function startUp() {
  if (params.get("autoload") === "1") return loadModel();
  if (params.get("autoload") === "0") {
    document.body.dataset.autoload = "off";
    return;
  }
  const cached = await models.loadsOnOpen();
  document.body.dataset.autoload = cached ? "cached" : "not-cached";
  if (cached && document.body.dataset.state === "idle") return loadModel();
  layout.offerLoad();
}

// ---------------------------------------------------------------- loading

async function loadModel() {
  clearError();
  setState("loading");
  const caps = await capabilities;
  await models.ready();
  const model = models.selected;
  const manifest = models.manifest;
  if (!model) {
    setState("idle");
    return;
  }
  let choice;
  try {
    choice = chooseDevice(caps, manifest ?? model, forced);
  } catch (err) {
    showError(err);
    setState(app.choice ? "ready" : "idle");
    return;
  }
  app.model = model;
  app.choice = choice;
  app.liveImages.clear();
  document.body.dataset.device = choice.device;
  document.body.dataset.dtype = choice.dtype;
  el.loadButton.textContent = "Load model";
  el.deviceStatus.textContent = `Loading ${model.name ?? model.id} on ${deviceLabel(choice.device)} with ${choice.dtype}. ${choice.reason}`;
  el.deviceStatus.dataset.reason = choice.reason;
  progress.reset();
  attachments.setModel(model);
  warnAboutMemory(model, choice);
  requestPersistentStorage();
  const request = client.request(
    // Every file is checked against the manifest's sha256 into the model cache first (cache.js).
    loadRequest(model, choice, manifest, { threads: THREADS, verify: params.get("verify") === "full" ? "full" : "stamp" }),
    {
      onMessage(reply) {
        if (reply.type === Reply.PROGRESS) progress.update(reply);
        else if (reply.type === Reply.CACHE) onCache(reply);
      },
    },
  );
  let ready;
  try {
    ready = await request.done;
  } catch (err) {
    showError(err);
    progress.hide();
    app.choice = null;
    el.deviceStatus.textContent = "Loading failed.";
    setState("idle");
    return;
  }
  progress.hide();
  app.vision = Boolean(ready.vision);
  await settings.reloadDefaults();
  settings.setThinkingSupported(ready.chat?.thinking);
  settings.setRuntimeContext(ready.chat?.context_length);
  models.remember(model);
  el.deviceStatus.textContent = `Ready: ${model.name ?? model.id} on ${deviceLabel(choice.device)} with ${choice.dtype}${runtimeLabel(ready.runtime)}, loaded in ${fmtNum(ready.load_s, 1)} s. ${choice.reason}`;
  setState("ready");
  showSummary(null);
  el.prompt.focus();
  countContext();
}

/** " (llama.cpp (wllama), 2 threads)": what really runs, from the ready reply; also body[data-runtime]. */
function runtimeLabel(runtime) {
  if (!runtime?.name) return "";
  document.body.dataset.runtime = runtime.name;
  const threads = Number.isInteger(runtime.threads) ? `, ${runtime.threads} thread${runtime.threads === 1 ? "" : "s"}` : "";
  return ` (${runtime.label ?? runtime.name}${threads})`;
}

function onCache({ type: _type, id: _id, ...report }) {
  document.body.dataset.cache = JSON.stringify(report);
  storagePanel.refresh();
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

// ---------------------------------------------------------------- context

/** The conversation as the model gets it: system prompt, user turns (with their kept images for an image model),
 * replies without their thinking (as Qwen3's template does) except a reply being continued. */
function workerMessages(messages, chat, { continueFinal = false } = {}) {
  const out = chat.system_prompt.trim() ? [{ role: "system", content: chat.system_prompt }] : [];
  messages.forEach((m, i) => {
    if (m.role === "user") {
      const images = app.vision ? keptImages(m).map((i) => i.id) : [];
      const content = images.length
        ? [...images.map((id) => ({ type: "image", id })), ...(m.content ? [{ type: "text", text: m.content }] : [])]
        : m.content;
      out.push({ role: "user", content });
    } else {
      const last = i === messages.length - 1;
      out.push({ role: "assistant", content: continueFinal && last ? m.content : historyContent(m.content) });
    }
  });
  return out;
}

function generationOptions(chat) {
  return {
    max_new_tokens: chat.max_new_tokens,
    sampling: chat.sampling,
    context_limit: chat.context_limit,
    ...(chat.thinking === null ? {} : { chat_template_kwargs: { enable_thinking: chat.thinking } }),
    ...(chat.prompt_lookup === false ? { prompt_lookup: false } : {}),
  };
}

/** A different chat is open: draw it and count it. */
function onChatShown() {
  clearError();
  transcript.render(chats.current);
  el.metrics.textContent = "";
  el.metrics.dataset.metrics = "";
  meter.hide();
  countContext();
}

function newChat() {
  if (app.generating) return;
  chats.startNew(app.model?.id ?? null);
  resetWorker();
  el.prompt.focus();
}

function showContext(tokens) {
  let chat;
  try {
    chat = settings.current();
  } catch {
    return;
  }
  meter.show({ tokens, limit: chat.context_limit, maxNewTokens: chat.max_new_tokens });
}

/** Asks the worker how many tokens `messages` template to (null without a loaded model). */
async function countTokens(messages, chat) {
  if (!app.choice || document.body.dataset.state === "loading") return null;
  const reply = await client.request({
    type: Request.COUNT,
    messages: workerMessages(messages, chat),
    options: generationOptions(chat),
  }).done;
  return reply.tokens;
}

async function countContext() {
  let chat;
  try {
    chat = settings.current();
  } catch {
    return;
  }
  const messages = chats.current.messages;
  let tokens = null;
  try {
    tokens = messages.length ? await countTokens(messages, chat) : app.choice ? 0 : null;
  } catch (err) {
    console.warn("count", err);
  }
  showContext(tokens);
}

/** Drops the oldest turns until the chat, the typed message and a reply fit (context-meter.js); the transcript
 * says how many messages went, so nothing goes silently. */
async function dropOldest() {
  if (app.generating) return;
  const chat = settings.current();
  const c = chats.current;
  const pending = el.prompt.value.trim();
  const count = (messages) => countTokens(pending ? [...messages, { role: "user", content: pending }] : messages, chat);
  const dropped = await dropOldestTurns(c.messages, count, { limit: chat.context_limit, maxNewTokens: chat.max_new_tokens });
  c.dropped = (c.dropped ?? 0) + dropped;
  meter.hide();
  clearError();
  await chats.save();
  transcript.render(c);
  await countContext();
}

// ---------------------------------------------------------------- turns

/**
 * One reply: `edit(messages)` prepares the conversation (adds the user turn, drops what an edit replaces, …);
 * then a new reply is generated, or with `continueFinal` the last reply is continued. On any error the
 * conversation is put back as it was and `restore()` gives the person back what they typed.
 */
async function runTurn({ chat, edit = () => {}, continueFinal = false, images = [], transfer = [], options = {}, restore }) {
  const c = chats.current;
  const before = c.messages.slice();
  edit(c.messages);
  const target = continueFinal ? c.messages.at(-1) : { role: "assistant", content: "" };
  if (!continueFinal) c.messages.push(target);
  const history = continueFinal ? c.messages : c.messages.slice(0, -1);
  const prefix = target.content;
  transcript.render(c);
  const index = c.messages.length - 1;
  const stream = transcript.streaming(index);
  meter.hide();
  setState("generating");
  // Kept images the worker does not hold (a reopened chat, another chat in between) go again, from stored bytes.
  const wanted = app.vision ? imageIdsOf(history) : [];
  const held = new Set([...app.liveImages, ...images.map((i) => i.id)]);
  try {
    const resent = await chats.pixelsFor(wanted.filter((id) => !held.has(id)));
    images = [...images, ...resent];
    transfer = [...transfer, ...resent.map((i) => i.data)];
  } catch (err) {
    c.messages = before;
    transcript.render(c);
    showError(err);
    restore?.();
    setState("ready");
    return;
  }
  app.liveImages = new Set(wanted);
  let streamed = "";
  const request = client.request(
    {
      type: Request.GENERATE,
      messages: workerMessages(history, chat, { continueFinal }),
      images,
      options: { ...generationOptions(chat), ...(continueFinal ? { continue_final: true } : {}), ...options },
    },
    {
      transfer,
      onMessage(reply) {
        if (reply.type === Reply.TOKEN) {
          streamed += reply.text;
          stream.update(prefix + streamed, streamed);
        } else if (reply.type === Reply.TEXT_INPUTS) window.__edgeChatTextInputs = reply; // ?expose_inputs=1
        else if (reply.type === Reply.VLM_INPUTS) window.__edgeChatVLMInputs = reply;
      },
    },
  );
  app.generating = request.id;
  let done;
  try {
    done = await request.done;
  } catch (err) {
    c.messages = before;
    transcript.render(c);
    showError(err);
    if (err.code === ErrorCode.CONTEXT_FULL) meter.warn(err.message, { error: true });
    restore?.();
    resetWorker(); // a failed turn may have left a half-extended KV cache behind
    app.generating = null;
    setState("ready");
    return;
  }
  app.generating = null;
  target.content = prefix + done.text;
  target.interrupted = Boolean(done.context?.interrupted) || undefined;
  const cache = done.context?.reused_tokens ? ` · ${done.context.reused_tokens} tokens reused from the KV cache` : "";
  const perPass = done.context?.generation?.tokens_per_pass; // prompt lookup (decode-lookup.js)
  const lookup = perPass ? ` · ${fmtNum(perPass)} tokens/pass` : "";
  target.meta = `${metricsLine(done.metrics)}${lookup}${cache}${target.interrupted ? " · stopped" : ""}`;
  transcript.render(c);
  const node = transcript.node(index);
  node.dataset.streamed = streamed;
  el.metrics.dataset.metrics = JSON.stringify(done.metrics);
  el.metrics.dataset.context = JSON.stringify(done.context ?? {});
  el.metrics.textContent = `Last reply: ${metricsLine(done.metrics)}${lookup}`;
  showSummary(done.metrics?.decode_tokens_per_s);
  // Stored before the page says ready: a reply shown as done is already in the saved chat and the chat list.
  await chats.save();
  setState("ready");
  showContext((done.context?.context_tokens ?? 0) + (done.metrics?.new_tokens ?? 0));
}

function currentSettings() {
  try {
    return settings.current();
  } catch (err) {
    showError(err); // an out-of-range setting: nothing is sent, what was typed stays
    return null;
  }
}

async function send() {
  const text = el.prompt.value.trim();
  if ((!text && !attachments.count) || document.body.dataset.state !== "ready") return;
  clearError();
  const chat = currentSettings();
  if (!chat) return;
  // Busy from the click on: preparing images is async, and a second Enter or click must not send twice.
  setState("generating");
  // Attached images (attachments.js): null means refused with a message shown, and nothing is sent.
  const turn = await attachments.takeTurn(text, app.model);
  if (!turn) {
    setState("ready");
    return;
  }
  el.prompt.value = "";
  const user = { role: "user", content: text, ...(turn.kept.length ? { images: turn.kept } : {}) };
  if (!chats.current.model) chats.current.model = app.model?.id ?? null;
  await runTurn({
    chat,
    edit: (messages) => messages.push(user),
    images: turn.images,
    transfer: turn.transfer,
    options: turn.options,
    restore: () => {
      if (!el.prompt.value) el.prompt.value = text;
    },
  });
}

const exposeOptions = () => (params.get("expose_inputs") === "1" ? { expose_inputs: true } : {});

async function onMessageAction(action, index, text) {
  const c = chats.current;
  if (action === "render") {
    transcript.render(c);
    return;
  }
  if (action === "copy") {
    const answer = splitThinking(c.messages[index]?.content ?? "").answer;
    try {
      await navigator.clipboard.writeText(answer);
      transcript.node(index).dataset.copied = "true";
    } catch (err) {
      showError(new EdgeChatError(ErrorCode.UNKNOWN, `The browser would not copy to the clipboard: ${err?.message ?? err}`));
    }
    return;
  }
  if (document.body.dataset.state !== "ready") return;
  clearError();
  const chat = currentSettings();
  if (!chat) return;
  if (action === "regenerate") {
    await runTurn({ chat, edit: (messages) => messages.splice(index), options: exposeOptions() });
  } else if (action === "continue") {
    await runTurn({ chat, continueFinal: true, options: exposeOptions() });
  } else if (action === "edit") {
    // The edited message replaces the old one; everything after it is dropped.
    await runTurn({
      chat,
      // Its images stay: an edit changes the words about them.
      edit: (messages) => messages.splice(index, messages.length - index, { ...messages[index], content: text }),
      options: exposeOptions(),
    });
  }
}

function stop() {
  if (app.generating) client.post({ type: Request.INTERRUPT, target: app.generating });
}

/** Drops the worker's KV cache (the next turn prefills the whole conversation). */
function resetWorker() {
  client.request({ type: Request.RESET }).done.catch((err) => console.warn("reset", err));
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

// ---------------------------------------------------------------- wiring

el.loadButton.addEventListener("click", loadModel);
el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
el.prompt.addEventListener("keydown", (event) => {
  // On a touch screen Enter is a new line, as in a phone's chat apps, and the Send button sends (layout.js).
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !layout.enterIsNewline()) {
    event.preventDefault();
    send();
  }
});
el.stop.addEventListener("click", stop);
el.newChat.addEventListener("click", newChat);
$("context-new-chat").addEventListener("click", newChat);
$("context-drop").addEventListener("click", () => dropOldest().catch(showError));
$("update-reload").addEventListener("click", () => location.reload());
$("storage-refresh").addEventListener("click", storagePanel.refresh);

setState("idle");
registerServiceWorker();
storagePanel.refresh();
client.request({ type: Request.CHECK }).done.then(onCapabilities, showError);
chats.start().then(startUp);
