// The model worker (Transformers.js): owns the tokenizer, the ONNX sessions and the KV cache. The UI thread never
// runs inference. It speaks protocol.js: requests check / load / generate / count / interrupt / reset, each
// answered with replies carrying the request's id (docs/architecture.md, "Worker protocol").

import {
  AutoModelForCausalLM,
  AutoTokenizer,
  env,
  InterruptableStoppingCriteria,
} from "/static/vendor/transformers.min.js";
import { CacheUnavailable, ensureModelCached, transformersCache } from "./cache.js";
import { probeCapabilities } from "./device.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { Reply, Request, serveRequests } from "./protocol.js";
import { checkSampling } from "./sampling.js";
import {
  cacheAfter,
  chatPrompt,
  checkContext,
  cropCache,
  decodeTurn,
  reusableLength,
  templateTakes,
  turnMetrics,
} from "./turn.js";
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
  info: null, // {id, revision, device, dtype, load_s}
  cache: null, // {pkv, ids: bigint[]} — KV cache of the conversation so far and the token ids it covers
};
const stopper = new InterruptableStoppingCriteria();
let running = null; // id of the generate request being decoded (an interrupt names it)

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
async function prepareCache(id, revision, artifacts, manifest, reply) {
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
    report = await ensureModelCached({ id, revision, files: artifacts, manifest, onProgress });
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
 * then build the model from that cache: the text model here, an image model in vlm.js.
 */
async function load(message, reply) {
  const t0 = performance.now();
  const { id, revision } = parseModel(message.model);
  if (!id || !revision) throw new EdgeChatError(ErrorCode.BAD_REQUEST, "The load request names no model id/revision.");
  await disposeCache();
  await state.model?.dispose?.();
  state.model = state.tokenizer = state.info = null;
  await vlm.unload();
  const { threads, artifacts, manifest } = message;
  if (Number.isInteger(threads) && threads > 0) env.backends.onnx.wasm.numThreads = threads;
  env.customCache = transformersCache(id, revision);
  const cache =
    Array.isArray(artifacts) && artifacts.length ? await prepareCache(id, revision, artifacts, manifest, reply) : null;
  const ready = isVisionModel(message)
    ? await vlm.load(message, { id, revision, t0 }, reply)
    : await loadText(message, { id, revision, t0 }, reply);
  return { ...ready, cache };
}

async function loadText({ dtype, device, files }, { id, revision, t0 }, reply) {
  const modelId = `${id}/${revision}`;
  const progress_callback = (p) => {
    if (p.status === "progress") {
      reply({ type: Reply.PROGRESS, file: p.file, loaded: p.loaded, total: p.total });
    } else if (p.status === "initiate" || p.status === "done") {
      reply({ type: Reply.PROGRESS, file: p.file, status: p.status });
    }
  };
  const [tokenizer, llm] = await Promise.all([
    AutoTokenizer.from_pretrained(modelId, { progress_callback }),
    AutoModelForCausalLM.from_pretrained(modelId, {
      dtype,
      device,
      progress_callback,
      use_external_data_format: externalData(files),
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
  // The page shows the thinking switch when the template takes enable_thinking (Qwen3).
  const chat = { thinking: templateTakes(tokenizer, "enable_thinking") };
  return { type: Reply.READY, load_s, model: id, revision, device, dtype, chat };
}

/** The context a turn may fill: the page's limit, never more than the model's own. */
function contextLimit(options) {
  const own = state.model?.config?.max_position_embeddings;
  const asked = Number(options.context_limit);
  return Math.min(asked > 0 ? asked : Infinity, own > 0 ? own : Infinity);
}

async function count({ messages, options = {} }) {
  if (!state.tokenizer) throw new EdgeChatError(ErrorCode.MODEL_NOT_LOADED);
  const { ids } = chatPrompt(state.tokenizer, messages, options);
  const limit = contextLimit(options);
  return { type: Reply.COUNTED, tokens: ids.length, limit: Number.isFinite(limit) ? limit : null };
}

async function generate({ messages, options = {} }, reply) {
  if (!state.model) throw new EdgeChatError(ErrorCode.MODEL_NOT_LOADED);
  const { tokenizer, model, info } = state;
  const t0 = performance.now();
  const { inputs, ids } = chatPrompt(tokenizer, messages, options); // ids: bigint[]
  const contextTokens = ids.length;
  checkContext(contextTokens, Math.max(1, Math.floor(Number(options.max_new_tokens ?? 256))), contextLimit(options));

  // KV reuse: the cache covers `cache.ids`. The part of it this turn's ids start with is kept and only the rest
  // is prefilled. Qwen3 drops the thinking of earlier replies from the template, so after such a reply only the
  // prefix up to it matches: the cache is cut back to that prefix (CPU tensors; a GPU cache is dropped).
  let reused = 0;
  if (options.reuse_cache === false) await disposeCache();
  if (state.cache) {
    const n = reusableLength(state.cache.ids, ids);
    if (n > 0 && n === state.cache.ids.length) reused = n;
    else if (n > 0 && cropCache(state.cache.pkv, n)) {
      state.cache.ids = state.cache.ids.slice(0, n);
      reused = n;
    } else await disposeCache();
  }

  let turn;
  try {
    const pastKeyValues = reused ? state.cache.pkv : null;
    turn = await decodeTurn({ model, tokenizer, inputs, pastKeyValues, options, stopper, reply });
  } catch (err) {
    await disposeCache(); // a half-extended cache must not leak into the next turn
    throw err;
  }
  const { output, first, last, count, interrupted, generation } = turn;
  const sequence = Array.from(output.sequences.data); // bigint[]: prompt + new tokens
  const newIds = sequence.slice(contextTokens);
  const text = tokenizer.decode(newIds, { skip_special_tokens: true });

  // Keep the cache for the next turn (the old one, if reused, was extended in place or replaced).
  if (state.cache && state.cache.pkv !== output.past_key_values) await disposeCache();
  state.cache = cacheAfter(output, sequence);
  const metrics = turnMetrics(info, { t0, first, last, count, promptTokens: contextTokens - reused });
  // Tests: the exact ids, compared with Python onnxruntime token for token (images: vlm.js's "vlm-inputs").
  if (options.expose_inputs) {
    reply({ type: Reply.TEXT_INPUTS, prompt_ids: ids.map(Number), new_ids: newIds.map(Number) });
  }
  return {
    type: Reply.DONE,
    text,
    metrics,
    // Beyond the metrics schema: what the KV cache did this turn (shown in the UI, read by tests).
    context: { context_tokens: contextTokens, reused_tokens: reused, interrupted, generation },
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
    await disposeCache();
    await vlm.reset();
    return { type: Reply.CLEARED };
  },
  [Request.INTERRUPT]({ target }) {
    // Only the generate it names: a late interrupt must not stop the next reply.
    if (running && (!target || target === running)) stopper.interrupt();
  },
});
