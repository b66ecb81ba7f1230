// The benchmark page (/bench): measures this device with the chat's own worker and protocol, posts the
// figures to /api/bench/results and shows what every device posted. bench/browser.py drives the same page
// in Chromium, so phones and the automated run measure the same way.
//
// One run, for one model × device × dtype (chosen like the chat does, or forced), loaded the way the chat
// loads it: the manifest's artifacts verified into the model cache first, then the runtime the dtype names
// (ONNX Runtime Web, or llama.cpp for a GGUF):
//   cold load (download + verify + init + warm-up) → for each prompt: a fresh conversation, exactly
//   `new_tokens` new tokens (EOS held off by min_new_tokens) → turn 2 on the last prompt's conversation, TTFT
//   with the KV cache reused and with reuse_cache: false → a second worker loads again in the same profile
//   (warm load: what a reload costs, verified stamps and all).
//
// Query parameters: ?model= ?device= ?dtype= ?threads= ?new_tokens=128 ?prompts=short,long512 ?warm=0
// ?turn2=0 ?post=0 ?autorun=1 ?client=<label> ?token=<the --lan server's token, printed with its /bench URL>
// ?session_options=<JSON> (ORT session options, to try thread settings) ?kv=static|dynamic (WebGPU's KV cache; each
// row's metrics.gpu: the WebGPU calls per decode step, gpu-counters.js). bench/browser.py may set
// window.__benchConfig = {prompts: {name: text}, gated} before the page runs (its prompts come from bench/prompts.py).
// State: body[data-state] = idle|running|done|failed; body[data-results] = JSON of the rows of this run.

import { BENCH_PROMPTS } from "./bench-prompts.js";
import { BENCH_NUMBERS, BENCH_TEXTS, DEFAULT_MODEL, METRICS } from "/static/src/contracts.js";
import { chooseDevice, runtimeOf } from "/static/src/device.js";
import { describeError, ErrorCode } from "/static/src/errors.js";
// The chat's own manifest client and worker protocol, so the bench loads exactly what the chat loads.
import { fetchManifest, loadRequest, positiveInt, readCatalog } from "/static/src/manifest.js";
import { Request, WorkerClient, WorkerError } from "/static/src/protocol.js";

const $ = (id) => document.getElementById(id);
const el = {
  modelSelect: $("model-select"),
  client: $("client-label"),
  run: $("run-button"),
  status: $("bench-status"),
  tbody: document.querySelector("#results-table tbody"),
  chart: $("results-chart"),
};
const params = new URLSearchParams(location.search);
const injected = globalThis.__benchConfig ?? {};
const allPrompts = { ...BENCH_PROMPTS, ...(injected.prompts ?? {}) };
const config = {
  device: params.get("device"),
  dtype: params.get("dtype"),
  threads: positiveInt(params.get("threads")),
  newTokens: positiveInt(params.get("new_tokens")) ?? 128,
  prompts: (params.get("prompts") ?? "short,long512").split(",").filter((name) => name in allPrompts),
  warm: params.get("warm") !== "0",
  turn2: params.get("turn2") !== "0",
  post: params.get("post") !== "0",
  sessionOptions: parseJson(params.get("session_options")),
  kv: params.get("kv") ?? undefined, // WebGPU's KV cache: "static" (default) or "dynamic" (runtime-ort.js KV_MODES)
};

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}
const TURN2 = "Now give three keywords for it.";
const TURN2_TOKENS = 4; // only its first token matters: TTFT
const CLIENT_KEY = "edge-chat-bench-client";
// Fields the results endpoint accepts (app/bench_results.py); the page keeps a few more for bench/browser.py.
const POSTED = new Set([...METRICS, ...BENCH_NUMBERS, ...BENCH_TEXTS]);
// On a --lan server, posting from another device needs the token the server printed in this page's URL.
const TOKEN = params.get("token");

const catalog = readCatalog($("catalog")?.textContent);

function setState(state, text) {
  document.body.dataset.state = state;
  if (text !== undefined) el.status.textContent = text;
  el.run.disabled = state === "running" || catalog.length === 0;
}

// ---------------------------------------------------------------- the chat's worker, through its protocol client

/** A model worker of its own per load (a warm load is a new worker): requests resolve with their final reply. */
class ModelWorker {
  constructor() {
    this.worker = new Worker(new URL("/static/src/worker.js", location.origin), { type: "module" });
    this.client = new WorkerClient(this.worker);
    this.worker.addEventListener("error", (event) => {
      this.client.failAll(new BenchError("wasm-abort", `the worker failed: ${event.message || "unknown error"}`));
    });
  }

  /** The final reply to `message` (protocol.js FINAL_REPLY); an error reply rejects with a categorised BenchError. */
  async request(message) {
    try {
      return await this.client.request(message).done;
    } catch (err) {
      throw err instanceof WorkerError ? workerError(err) : err;
    }
  }

  terminate() {
    this.client.failAll(new BenchError("error", "the worker was stopped"));
    this.worker.terminate();
  }
}

class BenchError extends Error {
  constructor(category, message) {
    super(message);
    this.category = category;
  }
}

/** Failure categories: out-of-memory, wasm-abort, download, timeout (bench/browser.py), error. */
function categorise(code, text) {
  const t = String(text ?? "").toLowerCase();
  if (code === ErrorCode.OUT_OF_MEMORY || /out of memory|oom|allocation failed|array buffer allocation/.test(t)) {
    return "out-of-memory";
  }
  if (/abort|runtimeerror|unreachable|memory access out of bounds/.test(t)) return "wasm-abort";
  if (code === ErrorCode.MODEL_MISSING || /fetch|network|could not locate|404|download/.test(t)) return "download";
  return "error";
}

function workerError({ code, message, detail }) {
  const text = `${message ?? ""} ${detail ?? ""}`.trim();
  return new BenchError(categorise(code, text), text || code || "unknown error");
}

// ---------------------------------------------------------------- measurement

/** Bytes this page (workers included) holds, when the browser can say; resolves null otherwise. */
function measureMemory() {
  if (!globalThis.crossOriginIsolated || typeof performance.measureUserAgentSpecificMemory !== "function") {
    return Promise.resolve(null);
  }
  // Chromium leaves out a worker it cannot measure (llama.cpp's, once it runs threads on shared memory): a figure
  // without the workers would pass for the model's memory, so it is no figure.
  return performance.measureUserAgentSpecificMemory().then(
    (m) => (m.breakdown.some((b) => b.attribution.some((a) => a.scope === "DedicatedWorkerGlobalScope")) ? m.bytes : null),
    () => null,
  );
}

/** Loads like the chat (manifest.js): the artifacts go through the verified model cache. Resolves with "ready". */
function loadInto(worker, model, choice, manifest) {
  return worker.request(
    loadRequest(model, choice, manifest, {
      threads: config.threads,
      session_options: config.sessionOptions,
      kv: config.kv,
    }),
  );
}

const generate = (worker, messages, options) => worker.request({ type: Request.GENERATE, messages, options });

/** Runs the benchmark for `model` on this device; returns the rows (one per prompt, or one failed row). */
async function measure(model, say) {
  const base = { model: model.id, revision: model.revision };
  if (config.threads) base.threads = config.threads;
  const memory = [];
  let worker = new ModelWorker();
  let stage = "check";
  let choice = null;
  const rows = [];
  try {
    const caps = await worker.request({ type: Request.CHECK });
    const manifest = await fetchManifest(model);
    choice = chooseDevice(caps, manifest ?? model, { device: config.device, dtype: config.dtype });
    Object.assign(base, { device: choice.device, dtype: choice.dtype, runtime: choice.runtime });

    stage = "load";
    say(`Loading ${model.id} on ${choice.device} with ${choice.dtype} (cold: download + verify + init)…`);
    const coldStart = Date.now();
    const ready = await loadInto(worker, model, choice, manifest);
    const coldLoad = ready.load_s;
    // What really ran: the runtime's own thread count and whether this worker could use threads at all.
    Object.assign(base, {
      runtime_threads: ready.runtime?.threads ?? null,
      cross_origin_isolated: ready.runtime?.crossOriginIsolated ?? null,
      shared_array_buffer: ready.runtime?.sharedArrayBuffer ?? null,
      kv: ready.runtime?.kv ?? null, // the KV cache that ran on WebGPU (rows carry metrics.gpu per decode step)
      download_bytes: manifest?.dtypes?.[choice.dtype]?.bytes ?? null,
      // What this load read through sha256: the download on a first visit, 0 on a returning one (stamps trusted).
      load_hashed_bytes: ready.cache?.hashed_bytes ?? null,
    });
    if (config.sessionOptions) base.session_options = JSON.stringify(config.sessionOptions);
    memory.push(measureMemory());

    for (const [i, name] of config.prompts.entries()) {
      stage = name;
      say(`Prompt ${name}: ${config.newTokens} new tokens…`);
      await worker.request({ type: Request.RESET });
      const messages = [{ role: "user", content: allPrompts[name] }];
      const n = config.newTokens;
      const done = await generate(worker, messages, { max_new_tokens: n, min_new_tokens: n });
      memory.push(measureMemory());
      const row = { ...base, ...done.metrics, load_s: coldLoad, prompt: name };
      if (config.turn2 && i === config.prompts.length - 1) {
        stage = `${name} turn 2`;
        say("Turn 2: TTFT with and without the KV cache…");
        const next = [...messages, { role: "assistant", content: done.text }, { role: "user", content: TURN2 }];
        const options = { max_new_tokens: TURN2_TOKENS, min_new_tokens: TURN2_TOKENS };
        const reuse = await generate(worker, next, options);
        const scratch = await generate(worker, next, { ...options, reuse_cache: false });
        Object.assign(row, {
          turn2_ttft_s: reuse.metrics.ttft_s,
          turn2_ttft_no_reuse_s: scratch.metrics.ttft_s,
          turn2_reused_tokens: reuse.context?.reused_tokens ?? 0,
          turn2_prompt_tokens: scratch.metrics.prompt_tokens,
        });
      }
      rows.push(row);
    }
    // When the cold run (load, prompts, turn 2) began and ended, for bench/browser.py's private-memory samples.
    for (const row of rows) row.memory_window_ms = [coldStart, Date.now()];
    worker.terminate();

    if (config.warm) {
      stage = "warm load";
      say("Loading again in a new worker (warm: from the browser's caches)…");
      worker = new ModelWorker();
      const warm = await loadInto(worker, model, choice, await fetchManifest(model));
      for (const row of rows) {
        row.warm_load_s = warm.load_s;
        row.warm_cache_s = warm.cache?.seconds ?? null;
        row.warm_hashed_bytes = warm.cache?.hashed_bytes ?? null;
      }
    }
  } catch (err) {
    const category = err instanceof BenchError ? err.category : categorise(err?.code, err?.message ?? err);
    const message = err instanceof BenchError ? err.message : describeError(err).message;
    rows.push({
      ...base,
      device: base.device ?? config.device ?? "wasm",
      dtype: base.dtype ?? config.dtype ?? "fp32",
      runtime: base.runtime ?? runtimeOf(base.dtype ?? config.dtype ?? "fp32"),
      prompt: stage,
      error: `${category}: ${message}`.slice(0, 390),
    });
  } finally {
    worker.terminate();
  }
  const sampled = await Promise.race([
    Promise.all(memory),
    new Promise((resolve) => setTimeout(() => resolve([]), 30_000)),
  ]);
  const peak = Math.max(0, ...sampled.filter((b) => Number.isFinite(b)));
  if (peak > 0) for (const row of rows) if (!row.error) row.peak_memory_bytes = peak;
  return rows;
}

async function postResults(client, rows) {
  const results = rows.map((row) =>
    Object.fromEntries(Object.entries(row).filter(([k, v]) => POSTED.has(k) && v !== null && v !== undefined)),
  );
  const response = await fetch("/api/bench/results", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}) },
    body: JSON.stringify({ client, user_agent: navigator.userAgent.slice(0, 400), results }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`the server refused the results (${response.status}): ${body.error ?? ""}`);
  }
}

async function run() {
  const model = catalog.find((m) => m.id === el.modelSelect.value);
  if (!model) return;
  const client = (el.client.value.trim() || "unnamed device").slice(0, 100);
  try {
    localStorage.setItem(CLIENT_KEY, client);
  } catch {
    // storage may be unavailable (private mode); the label is only a convenience
  }
  setState("running", "Starting…");
  delete document.body.dataset.results;
  const rows = await measure(model, (text) => {
    el.status.textContent = text;
  });
  document.body.dataset.results = JSON.stringify(rows);
  const failed = rows.find((r) => r.error);
  let posted = "";
  if (config.post) {
    try {
      await postResults(client, rows);
      posted = " Posted to this server.";
    } catch (err) {
      posted = ` Not posted: ${err.message}`;
    }
  }
  setState(failed ? "failed" : "done", `${failed ? `Failed: ${failed.error}.` : "Done."}${posted}`);
  await refresh();
}

// ---------------------------------------------------------------- stored results: table and charts

const fmt = (x, digits = 2) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–");

function cell(row, text, title) {
  const td = document.createElement("td");
  td.textContent = text; // client labels and errors are user input: text only, never markup
  if (title) td.title = title;
  row.append(td);
}

function renderTable(results) {
  el.tbody.replaceChildren();
  for (const r of results) {
    const tr = document.createElement("tr");
    tr.dataset.client = r.client;
    cell(tr, r.client, r.user_agent);
    cell(tr, r.model, r.revision);
    cell(tr, `${r.device}${r.threads ? ` ×${r.threads}` : ""}`);
    cell(tr, r.dtype);
    cell(tr, r.prompt ?? "");
    cell(tr, fmt(r.load_s));
    cell(tr, fmt(r.warm_load_s));
    cell(tr, fmt(r.ttft_s));
    cell(tr, fmt(r.prefill_tokens_per_s, 1));
    cell(tr, fmt(r.decode_tokens_per_s, 1));
    cell(tr, r.turn2_ttft_s != null ? `${fmt(r.turn2_ttft_s)} / ${fmt(r.turn2_ttft_no_reuse_s)}` : "–");
    cell(tr, r.peak_memory_bytes ? `${(r.peak_memory_bytes / 1e6).toFixed(0)}` : "–");
    cell(tr, new Date(r.received * 1000).toLocaleString());
    cell(tr, r.error ?? "");
    el.tbody.append(tr);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svgNode(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One bar chart of decode tok/s per model · device · dtype, one bar per client and prompt (latest run). */
function renderCharts(results) {
  el.chart.replaceChildren();
  const groups = new Map();
  for (const r of results) {
    if (r.error || !Number.isFinite(r.decode_tokens_per_s)) continue;
    const key = `${r.model} · ${r.device} · ${r.dtype}`;
    const bars = groups.get(key) ?? new Map();
    const label = `${r.client} · ${r.prompt ?? ""}${r.threads ? ` · ${r.threads}t` : ""}`;
    if (!bars.has(label)) bars.set(label, r.decode_tokens_per_s); // results come newest first
    groups.set(key, bars);
  }
  for (const [key, bars] of groups) {
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = `${key}: decode tok/s`;
    const rowH = 22;
    const labelW = 220;
    const width = 560;
    const max = Math.max(...bars.values(), 1e-9);
    const svg = svgNode("svg", { viewBox: `0 0 ${width} ${bars.size * rowH + 4}`, role: "img", width: "100%" });
    svg.append(svgNode("title", {}, `${key}: decode tokens per second`));
    [...bars].forEach(([label, value], i) => {
      const y = i * rowH + 2;
      const w = ((width - labelW - 60) * value) / max;
      svg.append(svgNode("text", { x: labelW - 6, y: y + 15, "text-anchor": "end", "font-size": 12 }, label));
      svg.append(svgNode("rect", { x: labelW, y: y + 3, width: Math.max(1, w), height: rowH - 6, fill: "#4a7bd0" }));
      svg.append(svgNode("text", { x: labelW + w + 4, y: y + 15, "font-size": 12 }, fmt(value, 1)));
    });
    figure.append(caption, svg);
    el.chart.append(figure);
  }
}

async function refresh() {
  try {
    const response = await fetch("/api/bench/results");
    const { results } = await response.json();
    renderTable(results ?? []);
    renderCharts(results ?? []);
    document.body.dataset.stored = String(results?.length ?? 0);
  } catch (err) {
    console.warn("results", err);
  }
}

// ---------------------------------------------------------------- start

for (const m of catalog) {
  const option = document.createElement("option");
  option.value = m.id;
  option.textContent = m.name ? `${m.name} (${m.id})` : m.id;
  el.modelSelect.append(option);
}
const wanted = params.get("model");
const initial = catalog.find((m) => m.id === wanted) ?? catalog.find((m) => m.id === DEFAULT_MODEL) ?? catalog[0];
if (initial) el.modelSelect.value = initial.id;
try {
  el.client.value = params.get("client") ?? localStorage.getItem(CLIENT_KEY) ?? "";
} catch {
  el.client.value = params.get("client") ?? "";
}
el.run.addEventListener("click", run);
setState("idle", catalog.length ? "" : "No models on this server.");
refresh();
// bench/browser.py measures the browser's memory before the run starts: it sets __benchConfig.gated and calls
// __benchStart() itself.
if (params.get("autorun") === "1") {
  if (injected.gated) globalThis.__benchStart = run;
  else run();
}
