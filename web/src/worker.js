// The model worker: owns the tokenizer, the ONNX sessions and the KV cache. The UI thread never runs
// inference. Protocol (docs/architecture.md):
//   UI → worker: {type:"check"} {type:"load", model, dtype, device} {type:"generate", messages, options}
//                {type:"interrupt"} {type:"reset"}
//   (load also takes optional `files`, the dtype's manifest files, and `threads`; model is {id, revision}
//   or "id/revision"; generate options: {max_new_tokens, min_new_tokens, reuse_cache}: min_new_tokens keeps
//   EOS out until that many tokens (benchmarks decode a fixed count); reuse_cache: false prefills from scratch;
//   expose_inputs: true posts {type:"text-inputs", prompt_ids, new_ids} before "done", for tests)
//   (load's optional `artifacts` [{path, bytes, sha256}] and `manifest`: files to verify into the model cache)
//   worker → UI: {type:"capabilities", ...} {type:"progress", file, loaded, total} {type:"ready", load_s}
//                {type:"cache", downloaded, repaired, verified, bytes, seconds}
//                {type:"token", text} {type:"done", text, metrics} {type:"error", code, message}

import {
  AutoModelForCausalLM,
  AutoTokenizer,
  env,
  InterruptableStoppingCriteria,
} from "/static/vendor/transformers.min.js";
import { CacheUnavailable, cachedArtifactBlob, ensureModelCached, transformersCache } from "./cache.js";
import { describeError, EdgeChatError, ErrorCode, probeCapabilities, runtimeOf } from "./device.js";
import { cacheAfter, greedyTurn, sameTokens, turnMetrics } from "./turn.js";
import { RUNTIME as LLAMA_CPP, WllamaRuntime } from "./runtime-wllama.js";
import { createVLM, isVisionModel, messagesHaveImages } from "./vlm.js"; // image chat (SmolVLM)

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
// Transformers.js keeps the wasm in the Cache API under its URL; the version query keeps a vendored
// upgrade from pairing new JS glue with an old cached binary.
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
  model: null,
  llama: null, // WllamaRuntime when the dtype is a GGUF (llama.cpp); then `model` stays null
  info: null, // {id, revision, device, dtype, load_s}
  cache: null, // {pkv, ids: bigint[]} — KV cache of the conversation so far and the token ids it covers
};
const stopper = new InterruptableStoppingCriteria();

const post = (message) => self.postMessage(message);

function postError(err) {
  const { code, message, detail } = describeError(err);
  console.error("[worker]", err);
  post({ type: "error", code, message, detail });
}

async function disposeCache() {
  const pkv = state.cache?.pkv;
  state.cache = null;
  if (pkv) {
    try {
      await pkv.dispose();
    } catch (err) {
      console.warn("[worker] disposing the KV cache failed", err);
    }
  }
}

async function check() {
  const caps = await probeCapabilities();
  post({ type: "capabilities", ...caps });
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
async function prepareCache(id, revision, artifacts, manifest, verify) {
  const last = new Map();
  const onProgress = ({ file, loaded, total, phase }) => {
    const key = `${phase}: ${file}`;
    const step = Math.max(8 * 1024 * 1024, total / 50);
    if (loaded < total && loaded - (last.get(key) ?? -Infinity) < step) return;
    last.set(key, loaded);
    post({ type: "progress", file: key, loaded, total, phase });
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
    post({ type: "cache", ...cache });
    return cache;
  }
  const cache = { ...report, seconds: Number(((performance.now() - t0) / 1000).toFixed(3)) };
  post({ type: "cache", ...cache });
  return cache;
}

async function unloadText() {
  await disposeCache();
  await state.model?.dispose?.();
  await state.llama?.dispose?.();
  state.model = state.tokenizer = state.info = state.llama = null;
}

/** What this worker's threads can do: ORT-web and wllama both need crossOriginIsolated + SharedArrayBuffer. */
function threadSupport() {
  return {
    crossOriginIsolated: Boolean(self.crossOriginIsolated),
    sharedArrayBuffer: typeof SharedArrayBuffer !== "undefined",
    hardwareConcurrency: self.navigator?.hardwareConcurrency ?? 1,
  };
}

async function load({ model, dtype, device, files, threads, artifacts, manifest, session_options, verify }) {
  const t0 = performance.now();
  const { id, revision } = parseModel(model);
  if (!id || !revision) throw new EdgeChatError(ErrorCode.MODEL_MISSING, "The load message names no model id/revision.");
  await unloadText();
  if (runtimeOf(dtype, manifest) === "llama.cpp") {
    return loadLlamaCpp({ id, revision, dtype, files, threads, artifacts, manifest, verify, t0 });
  }
  if (Number.isInteger(threads) && threads > 0) env.backends.onnx.wasm.numThreads = threads;

  const modelId = `${id}/${revision}`;
  env.customCache = transformersCache(id, revision);
  const cache = Array.isArray(artifacts) && artifacts.length ? await prepareCache(id, revision, artifacts, manifest, verify) : null;
  const progress_callback = (p) => {
    if (p.status === "progress") {
      post({ type: "progress", file: p.file, loaded: p.loaded, total: p.total });
    } else if (p.status === "initiate" || p.status === "done") {
      post({ type: "progress", file: p.file, status: p.status });
    }
  };
  const [tokenizer, llm] = await Promise.all([
    AutoTokenizer.from_pretrained(modelId, { progress_callback }),
    AutoModelForCausalLM.from_pretrained(modelId, {
      dtype,
      device,
      progress_callback,
      use_external_data_format: externalData(files),
      // Bench only (bench.js ?session_options=): ORT session options tried for thread scaling.
      ...(session_options ? { session_options } : {}),
    }),
  ]);
  // Yield to the event loop before every forward pass, so an interrupt is seen before the next token.
  const forward = llm.forward.bind(llm);
  llm.forward = async (inputs) => {
    await nextTask();
    return forward(inputs);
  };
  state.tokenizer = tokenizer;
  state.model = llm;
  // Warm-up: compiles kernels/shaders so the first reply's TTFT measures the model, not the setup.
  const warm = tokenizer("Hi", { return_tensor: true });
  await llm.generate({ ...warm, max_new_tokens: 1, do_sample: false });
  const load_s = (performance.now() - t0) / 1000;
  state.info = { id, revision, device, dtype, load_s };
  const runtime = { name: "onnxruntime-web", threads: env.backends.onnx.wasm.numThreads, ...threadSupport() };
  post({ type: "ready", load_s, model: id, revision, device, dtype, cache, runtime });
}

/** The GGUF of `dtype` on llama.cpp (wllama), tokenized by Transformers.js like the ORT path. */
async function loadLlamaCpp({ id, revision, dtype, files, threads, artifacts, manifest, verify, t0 }) {
  const modelId = `${id}/${revision}`;
  env.customCache = transformersCache(id, revision);
  const cache = Array.isArray(artifacts) && artifacts.length ? await prepareCache(id, revision, artifacts, manifest, verify) : null;
  const ggufPath = (files ?? []).find((f) => f.endsWith(".gguf"));
  if (!ggufPath) throw new EdgeChatError(ErrorCode.NO_VARIANT, `The ${dtype} variant lists no .gguf file.`);
  const [tokenizer, blob] = await Promise.all([
    AutoTokenizer.from_pretrained(modelId),
    cachedArtifactBlob(id, revision, ggufPath, (loaded, total) => post({ type: "progress", file: ggufPath, loaded, total })),
  ]);
  post({ type: "progress", file: ggufPath, status: "done" });
  const llama = await WllamaRuntime.load({
    blob,
    threads: Number.isInteger(threads) && threads > 0 ? threads : undefined,
    contextLength: manifest?.context_length,
  });
  state.tokenizer = tokenizer;
  state.llama = llama;
  const load_s = (performance.now() - t0) / 1000;
  state.info = { id, revision, device: "wasm", dtype, load_s };
  const runtime = { name: LLAMA_CPP, ...llama.info, ...threadSupport() };
  post({ type: "ready", load_s, model: id, revision, device: "wasm", dtype, cache, runtime });
}

async function generateLlamaCpp({ messages, options = {} }) {
  const { tokenizer, llama, info } = state;
  const t0 = performance.now();
  const prompt = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, tokenize: false });
  const ids = Array.from(tokenizer(prompt, { add_special_tokens: false }).input_ids.data, Number);
  let turn;
  try {
    turn = await llama.generate({ prompt, options, onToken: (text) => post({ type: "token", text }) });
  } catch (err) {
    llama.reset(); // a failed turn's KV must not leak into the next one
    throw err;
  }
  const { text, first, last, count, interrupted, reused, promptTokens } = turn;
  // llama.cpp tokenized the prompt itself: the same count as Transformers.js's ids, or the turn says so.
  const promptIdsMatch = promptTokens === null || promptTokens === ids.length;
  if (!promptIdsMatch) console.warn(`[worker] llama.cpp counted ${promptTokens} prompt tokens, Transformers.js ${ids.length}`);
  const metrics = turnMetrics(info, { t0, first, last, count, promptTokens: ids.length - reused });
  // Tests: llama.cpp reports no ids, so new_ids are the reply re-tokenized (new_ids_exact: false).
  if (options.expose_inputs) {
    const newIds = Array.from(tokenizer(text, { add_special_tokens: false }).input_ids.data, Number);
    post({ type: "text-inputs", prompt_ids: ids, new_ids: newIds, new_ids_exact: false });
  }
  post({
    type: "done",
    text,
    metrics,
    context: {
      context_tokens: ids.length,
      reused_tokens: reused,
      interrupted,
      runtime: LLAMA_CPP,
      prompt_ids_match: promptIdsMatch,
    },
  });
}

async function generate({ messages, options = {} }) {
  if (state.llama) return generateLlamaCpp({ messages, options });
  if (!state.model) throw new EdgeChatError(ErrorCode.MODEL_MISSING, "No model is loaded yet.");
  const { tokenizer, model, info } = state;
  const t0 = performance.now();
  const inputs = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, return_dict: true });
  const ids = Array.from(inputs.input_ids.data); // bigint[]
  const contextTokens = ids.length;

  // KV reuse: the cache covers `cache.ids`; it is valid for this turn only if the re-templated
  // conversation starts with exactly those tokens (then only the rest is prefilled).
  let reused = 0;
  if (options.reuse_cache === false) await disposeCache();
  if (state.cache) {
    const cached = state.cache.ids;
    if (cached.length < ids.length && sameTokens(cached, ids, cached.length)) reused = cached.length;
    else await disposeCache();
  }

  let turn;
  try {
    const pastKeyValues = reused ? state.cache.pkv : null;
    turn = await greedyTurn({ model, tokenizer, inputs, pastKeyValues, options, stopper, post });
  } catch (err) {
    await disposeCache(); // a half-extended cache must not leak into the next turn
    throw err;
  }
  const { output, first, last, count, interrupted } = turn;
  const sequence = Array.from(output.sequences.data); // bigint[]: prompt + new tokens
  const newIds = sequence.slice(contextTokens);
  const text = tokenizer.decode(newIds, { skip_special_tokens: true });

  // Keep the cache for the next turn (the old one, if reused, was extended in place or replaced).
  if (state.cache && state.cache.pkv !== output.past_key_values) await disposeCache();
  state.cache = cacheAfter(output, sequence);
  const metrics = turnMetrics(info, { t0, first, last, count, promptTokens: contextTokens - reused });
  // Tests: the exact ids, compared with Python onnxruntime token for token (images: vlm.js's "vlm-inputs").
  if (options.expose_inputs) post({ type: "text-inputs", prompt_ids: ids.map(Number), new_ids: newIds.map(Number) });
  post({
    type: "done",
    text,
    metrics,
    // Beyond the metrics schema: what the KV cache did this turn (shown in the UI, read by tests).
    context: { context_tokens: contextTokens, reused_tokens: reused, interrupted },
  });
}

// Image-text-to-text models (SmolVLM) live in vlm.js; the text path below is untouched by them.
const vlm = createVLM({ post, stopper, nextTask, externalData, env });

const handlers = {
  check,
  async load(message) {
    if (!isVisionModel(message)) {
      await vlm.unload();
      return load(message);
    }
    const { id, revision } = parseModel(message.model);
    if (!id || !revision) throw new EdgeChatError(ErrorCode.MODEL_MISSING, "The load message names no model id/revision.");
    await unloadText();
    return vlm.load(message, { id, revision });
  },
  async generate(message) {
    if (vlm.active) return vlm.generate(message);
    if (messagesHaveImages(message.messages)) {
      throw new EdgeChatError(ErrorCode.UNKNOWN, "This model reads text only; load a model tagged “image” to ask about images.");
    }
    return generate(message);
  },
  async reset() {
    state.llama?.reset();
    await disposeCache();
    await vlm.reset();
  },
  interrupt() {
    stopper.interrupt();
    state.llama?.interrupt();
  },
};

// Messages that touch the model run one at a time; an interrupt never waits in that queue.
let queue = Promise.resolve();
self.addEventListener("message", (event) => {
  const message = event.data ?? {};
  const handler = handlers[message.type];
  if (!handler) {
    post({ type: "error", code: ErrorCode.UNKNOWN, message: `Unknown message type "${message.type}".` });
    return;
  }
  if (message.type === "interrupt") {
    handler(message);
    return;
  }
  queue = queue.then(async () => {
    try {
      await handler(message);
    } catch (err) {
      postError(err);
    }
  });
});
