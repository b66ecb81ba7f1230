// @ts-check
// The model worker: owns the tokenizer, the model and its KV cache. The UI thread never runs inference. It speaks
// protocol.js: requests check / load / generate / count / interrupt / reset, each answered with replies carrying the
// request's id (docs/architecture.md, "Worker protocol").
//
// Text models run on one of two runtimes behind the same handlers, chosen by the dtype (device.js runtimeOf):
// ONNX Runtime Web (runtime-ort.js) or llama.cpp for a GGUF (runtime-wllama.js). What a turn means is decided here
// once for both: the tokenizer and chat template (Transformers.js), the context check, the token limits, the
// metrics, the replies. Image models (vlm.js) run on ONNX Runtime Web.

import { AutoTokenizer, env, InterruptableStoppingCriteria } from "/static/vendor/transformers.min.js";
import { CacheUnavailable, cachedArtifactBlob, ensureModelCached, transformersCache } from "./cache.js";
import { contextCap, LLAMA_CPP } from "./contracts.js";
import { defaultWasmThreads, probeCapabilities, runtimeOf } from "./device.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { installGpuCounters } from "./gpu-counters.js";
import { Reply, Request, serveRequests } from "./protocol.js";
import { OrtTextRuntime } from "./runtime-ort.js";
import { LlamaCppRuntime } from "./runtime-wllama.js";
import { checkSampling } from "./sampling.js";
import { chatPrompt, checkContext, newTokenLimits, templateTakes, turnMetrics } from "./turn.js";
import { createVLM, isVisionModel, messagesHaveImages } from "./vlm.js"; // image chat (SmolVLM)

// The protocol's types: tsc checks every reply below against them (`nox -s lint`).
/** @typedef {import("./protocol.js").ReplyFn} ReplyFn */
/**
 * @template T
 * @typedef {import("./protocol.js").WithoutId<T>} WithoutId
 */

// Per-step WebGPU counts for the metrics' `gpu` object (gpu-counters.js): wrapped before ORT creates its device.
installGpuCounters(self);

// Everything comes from this origin: models under /models/{id}/{revision}/, ORT's wasm under /static/vendor/.
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = "/models/";
// Model files come from Edge Chat's own per-revision cache (cache.js), which this worker fills and verifies
// before Transformers.js starts; Transformers.js only reads it (its put is a no-op) and keeps no second
// copy in "transformers-cache". Anything else it asks for (the ORT wasm) goes to fetch → the service worker.
env.useBrowserCache = false;
env.useCustomCache = true;
env.customCache = { match: async () => undefined, put: async () => {} };
// Transformers.js's own wasm cache goes through env.customCache above, whose put is a no-op: each worker fetches
// the wasm and the service worker answers from its precache (sw.js ignores `?v=`). The version query names the ORT
// build the bundled JS glue expects, so no cache keyed by URL can pair new glue with an old binary.
const ortVersion = env.backends.onnx.versions?.web ?? env.version;
const vendorUrl = (name) =>
  new URL(`/static/vendor/${name}?v=${encodeURIComponent(ortVersion)}`, self.location.origin).href;
env.backends.onnx.wasm.wasmPaths = {
  mjs: vendorUrl("ort-wasm-simd-threaded.asyncify.mjs"),
  wasm: vendorUrl("ort-wasm-simd-threaded.asyncify.wasm"),
};

/**
 * Resolves on a fresh macrotask. ORT-web's session.run settles through microtasks only, so without
 * this the worker's message queue (and with it {type:"interrupt"}) would wait until generate() ends.
 */
const channel = new MessageChannel();
const pendingYields = [];
channel.port1.onmessage = () => pendingYields.shift()?.();
function nextTask() {
  return new Promise((resolve) => {
    pendingYields.push(resolve);
    channel.port2.postMessage(0);
  });
}

const state = {
  tokenizer: null,
  runtime: null, // OrtTextRuntime or LlamaCppRuntime: the loaded text model and its KV cache
  info: null, // {id, revision, device, dtype, runtime, load_s}
};
const stopper = new InterruptableStoppingCriteria(); // Transformers.js's stop, shared with vlm.js
let running = null; // id of the generate request being decoded (an interrupt names it)

async function unloadText() {
  const runtime = state.runtime;
  state.runtime = state.tokenizer = state.info = null;
  await runtime?.dispose();
}

/** @returns {Promise<WithoutId<import("./protocol.js").CapabilitiesReply>>} */
async function check() {
  return { type: Reply.CAPABILITIES, ...(await probeCapabilities()) };
}

function parseModel(model) {
  if (typeof model === "string") {
    const [id, revision] = model.split("/");
    return { id, revision };
  }
  return { id: model?.id, revision: model?.revision };
}

/** {"model.onnx": n} when the dtype's files include n external-data chunks, else undefined. */
function externalData(files) {
  const chunks = {};
  for (const f of files ?? []) {
    const m = /^onnx\/(.+\.onnx)_data(?:_\d+)?$/.exec(f);
    if (m) chunks[m[1]] = (chunks[m[1]] ?? 0) + 1;
  }
  return Object.keys(chunks).length ? chunks : undefined;
}

/** Verifies (or downloads) the artifacts this load needs, posting throttled progress rows. */
async function prepareCache(id, revision, artifacts, manifest, verify, reply) {
  const last = new Map();
  const onProgress = ({ file, loaded, total, phase }) => {
    const key = `${phase}: ${file}`;
    const step = Math.max(8 * 1024 * 1024, total / 50);
    if (loaded < total && loaded - (last.get(key) ?? -Infinity) < step) return;
    last.set(key, loaded);
    reply({ type: Reply.PROGRESS, file: key, loaded, total, phase });
  };
  const t0 = performance.now();
  let report;
  try {
    report = await ensureModelCached({ id, revision, files: artifacts, manifest, onProgress, verify });
  } catch (err) {
    if (!(err instanceof CacheUnavailable)) throw err;
    // No offline copy (e.g. a private window): Transformers.js fetches the files itself this time.
    console.warn("[worker]", err.message);
    env.customCache = { match: async () => undefined, put: async () => {} };
    const cache = { unavailable: err.message, seconds: Number(((performance.now() - t0) / 1000).toFixed(3)) };
    reply({ type: Reply.CACHE, ...cache });
    return cache;
  }
  const cache = { ...report, seconds: Number(((performance.now() - t0) / 1000).toFixed(3)) };
  reply({ type: Reply.CACHE, ...cache });
  return cache;
}

/**
 * One load path for text and image models: free what is loaded, verify (or download) the dtype's artifacts into
 * the revision's model cache (sha256 against the manifest, the offline copy, old revisions deleted: cache.js),
 * then build the model from that cache: a text model on its runtime here, an image model in vlm.js.
 * @param {import("./protocol.js").LoadRequest} message
 * @param {ReplyFn} reply
 * @returns {Promise<WithoutId<import("./protocol.js").ReadyReply>>}
 */
async function load(message, reply) {
  const t0 = performance.now();
  const { id, revision } = parseModel(message.model);
  if (!id || !revision) throw new EdgeChatError(ErrorCode.BAD_REQUEST, "The load request names no model id/revision.");
  await unloadText();
  await vlm.unload();
  const { artifacts, manifest, verify } = message;
  const runtime = runtimeOf(message.dtype, manifest);
  if (runtime === LLAMA_CPP && (isVisionModel(message) || message.device !== "wasm")) {
    throw new EdgeChatError(ErrorCode.NO_VARIANT, `${message.dtype} runs on llama.cpp, for text on the CPU (WASM) only.`);
  }
  if (runtime !== LLAMA_CPP) setOrtThreads(message.threads);
  env.customCache = transformersCache(id, revision);
  const cache =
    Array.isArray(artifacts) && artifacts.length
      ? await prepareCache(id, revision, artifacts, manifest, verify, reply)
      : null;
  const ready = isVisionModel(message)
    ? await vlm.load(message, { id, revision, t0 }, reply)
    : await loadText(message, { id, revision, t0, runtime }, reply);
  if (runtime !== LLAMA_CPP) ortPoolThreads = env.backends.onnx.wasm.numThreads;
  return { ...ready, cache };
}

// ONNX Runtime Web sizes its WASM thread pool once, when its first session starts, from env's numThreads (lowered to
// 1 there without SharedArrayBuffer); it never reads the value again. So each load sets it explicitly (the requested
// count, else ORT's own default) and what a ready reply reports is the pool's size; a load that asks for another
// count than a started pool's is refused instead of reporting a count that never ran.
let ortPoolThreads = null;

/** @param {number|undefined} threads  the load request's */
function setOrtThreads(threads) {
  const asked = Number.isInteger(threads) && threads > 0 ? threads : null;
  const wasm = env.backends.onnx.wasm;
  if (ortPoolThreads === null) {
    const scope = { crossOriginIsolated: self.crossOriginIsolated, hardwareConcurrency: self.navigator?.hardwareConcurrency };
    wasm.numThreads = asked ?? defaultWasmThreads(scope);
  } else if (asked !== null && asked !== ortPoolThreads) {
    throw new EdgeChatError(
      ErrorCode.BAD_REQUEST,
      `ONNX Runtime Web runs ${ortPoolThreads} thread(s) in this page; ${asked} needs a new page (reload with ?threads=${asked}).`,
    );
  }
}

/**
 * @param {import("./protocol.js").LoadRequest} message
 * @param {{id: string, revision: string, t0: number, runtime: string}} model
 * @param {ReplyFn} reply
 * @returns {Promise<WithoutId<Omit<import("./protocol.js").ReadyReply, "cache">>>}
 */
async function loadText({ dtype, device, files, threads, manifest, session_options, kv }, { id, revision, t0, runtime }, reply) {
  const modelId = `${id}/${revision}`;
  const progress_callback = (p) => {
    if (p.status === "progress") {
      reply({ type: Reply.PROGRESS, file: p.file, loaded: p.loaded, total: p.total });
    } else if (p.status === "initiate" || p.status === "done") {
      reply({ type: Reply.PROGRESS, file: p.file, status: p.status });
    }
  };
  const tokenizing = AutoTokenizer.from_pretrained(modelId, { progress_callback });
  const loading =
    runtime === LLAMA_CPP
      ? loadGguf({ id, revision, dtype, files, threads, manifest, session_options }, reply)
      : OrtTextRuntime.load({
          modelId,
          tokenizer: tokenizing,
          dtype,
          device,
          progress_callback,
          useExternalData: externalData(files),
          sessionOptions: session_options, // bench only (bench.js ?session_options=): thread settings tried
          kv, // WebGPU's KV cache: "static" (default) or "dynamic" (runtime-ort.js KV_MODES; the bench's ?kv=)
          capacity: contextCap(manifest?.context_length), // the static cache's positions: the page's default limit
          stopper,
          nextTask,
        });
  let tokenizer, model;
  try {
    [tokenizer, model] = await Promise.all([tokenizing, loading]);
  } catch (err) {
    (await loading.catch(() => null))?.dispose(); // the tokenizer failed after the model loaded
    throw err;
  }
  state.tokenizer = tokenizer;
  state.runtime = model;
  const load_s = (performance.now() - t0) / 1000;
  state.info = { id, revision, device, dtype, runtime, load_s };
  // The page shows the thinking switch when the template takes enable_thinking (Qwen3), and caps its context limit
  // at the runtime's own.
  const chat = { thinking: templateTakes(tokenizer, "enable_thinking"), context_length: model.contextLength };
  return { type: Reply.READY, load_s, model: id, revision, device, dtype, chat, runtime: { ...model.info, ...threadSupport() } };
}

/** What this worker's threads can do: both runtimes need crossOriginIsolated + SharedArrayBuffer for more than one. */
function threadSupport() {
  return {
    crossOriginIsolated: Boolean(self.crossOriginIsolated),
    sharedArrayBuffer: typeof SharedArrayBuffer !== "undefined",
    hardwareConcurrency: self.navigator?.hardwareConcurrency ?? 1,
  };
}

/** The dtype's GGUF, from the verified model cache, on llama.cpp. */
async function loadGguf({ id, revision, dtype, files, threads, manifest, session_options }, reply) {
  const gguf = (files ?? []).find((f) => f.endsWith(".gguf"));
  if (!gguf) throw new EdgeChatError(ErrorCode.NO_VARIANT, `The ${dtype} variant lists no .gguf file.`);
  const blob = await cachedArtifactBlob(id, revision, gguf, (loaded, total) =>
    reply({ type: Reply.PROGRESS, file: gguf, loaded, total }),
  );
  reply({ type: Reply.PROGRESS, file: gguf, status: "done" });
  return LlamaCppRuntime.load({
    blob,
    threads: Number.isInteger(threads) && threads > 0 ? threads : undefined,
    // llama.cpp allocates its KV cache for the whole context at load: the page's default limit (the memory budget
    // the manifest's memory_bytes assumes), which the page then cannot raise on this runtime (ready.chat).
    contextLength: contextCap(manifest?.context_length),
    kvCache: manifest?.dtypes?.[dtype]?.kv_cache,
    overrides: session_options, // bench only (bench.js ?session_options=): llama.cpp load settings tried
  });
}

/** The context a turn may fill: the page's limit, never more than the runtime's own. */
function contextLimit(options) {
  const own = state.runtime?.contextLength;
  const asked = Number(options.context_limit);
  return Math.min(asked > 0 ? asked : Infinity, own > 0 ? own : Infinity);
}

/**
 * @param {import("./protocol.js").CountRequest} message
 * @returns {Promise<WithoutId<import("./protocol.js").CountedReply>>}
 */
async function count({ messages, options = {} }) {
  if (!state.tokenizer) throw new EdgeChatError(ErrorCode.MODEL_NOT_LOADED);
  const { ids } = chatPrompt(state.tokenizer, messages, options);
  const limit = contextLimit(options);
  return { type: Reply.COUNTED, tokens: ids.length, limit: Number.isFinite(limit) ? limit : null };
}

/**
 * @param {import("./protocol.js").GenerateRequest} message
 * @param {ReplyFn} reply
 * @returns {Promise<WithoutId<import("./protocol.js").DoneReply>>}
 */
async function generate({ messages, options = {} }, reply) {
  if (!state.runtime) throw new EdgeChatError(ErrorCode.MODEL_NOT_LOADED);
  const { tokenizer, runtime, info } = state;
  const t0 = performance.now();
  const { text: prompt, inputs, ids } = chatPrompt(tokenizer, messages, options); // ids: bigint[]
  checkContext(ids.length, newTokenLimits(options).maxNew, contextLimit(options));
  const turn = await runtime.turn({ prompt, inputs, ids, options, reply });
  const metrics = turnMetrics(info, { t0, ...turn, promptTokens: ids.length - turn.reused });
  // Tests: the exact ids, compared with Python token for token (images: vlm.js's "vlm-inputs"). llama.cpp reports
  // no ids: its reply is tokenized again here (new_ids_exact: false; tests compare its text instead).
  if (options.expose_inputs) {
    const exact = turn.newIds !== null;
    const newIds = exact ? turn.newIds : Array.from(tokenizer(turn.text, { add_special_tokens: false }).input_ids.data, Number);
    reply({ type: Reply.TEXT_INPUTS, prompt_ids: ids.map(Number), new_ids: newIds, ...(exact ? {} : { new_ids_exact: false }) });
  }
  return {
    type: Reply.DONE,
    text: turn.text,
    metrics,
    // Beyond the metrics schema: what the KV cache did this turn (shown in the UI, read by tests).
    context: {
      context_tokens: ids.length,
      reused_tokens: turn.reused,
      interrupted: turn.interrupted,
      generation: turn.generation,
      ...turn.context,
    },
  };
}

// Image-text-to-text models (SmolVLM) live in vlm.js; the text path above is untouched by them.
const vlm = createVLM({ stopper, nextTask, externalData });

serveRequests(self, {
  [Request.CHECK]: check,
  [Request.LOAD]: load,
  async [Request.GENERATE](message, reply) {
    checkSampling(message.options?.sampling); // a bad setting fails before the KV cache is touched
    running = message.id;
    try {
      if (vlm.active) return await vlm.generate(message, reply);
      if (messagesHaveImages(message.messages)) throw new EdgeChatError(ErrorCode.TEXT_ONLY_MODEL);
      return await generate(message, reply);
    } finally {
      running = null;
    }
  },
  async [Request.COUNT](message) {
    return vlm.active ? vlm.count(message) : count(message);
  },
  async [Request.RESET]() {
    await state.runtime?.reset();
    await vlm.reset();
    return { type: Reply.CLEARED };
  },
  [Request.INTERRUPT]({ target }) {
    // Only the generate it names: a late interrupt must not stop the next reply.
    if (!running || (target && target !== running)) return;
    if (state.runtime) state.runtime.interrupt();
    else stopper.interrupt();
  },
});
