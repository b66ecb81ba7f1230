// The ONNX Runtime Web text runtime (Transformers.js): the ONNX graph of a text model's dtype on WebGPU or WASM, and
// the KV cache of the conversation between turns. worker.js owns what both text runtimes share (the tokenizer, the
// prompt, the context check, metrics and replies); this module only decodes and keeps its cache. The other text
// runtime, llama.cpp, is runtime-wllama.js, with the same methods.

import { AutoModelForCausalLM, env } from "/static/vendor/transformers.min.js";
import { KV_BUDGET_TOKENS, ONNX_RUNTIME } from "./contracts.js";
import { createStaticKv, forwardFor, staticSessionOptions } from "./decode-loop.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { decodeLookupTurn } from "./decode-lookup.js";
import { createStepMeter } from "./gpu-counters.js";
import { cacheAfter, cropCache, decodeTurn, newTokenLimits, reusableLength } from "./turn.js";

export const RUNTIME = ONNX_RUNTIME;

/**
 * The KV cache modes on WebGPU (load option `kv`): "static" (decode-loop.js, the default) or "dynamic" (Transformers.js'
 * DynamicCache, the path before it, kept for the benchmark's side-by-side rows).
 */
export const KV_MODES = Object.freeze(["static", "dynamic"]);

export class OrtTextRuntime {
  /**
   * Builds the dtype's graph from the revision's model cache (worker.js verified it first) and runs one token,
   * so the first reply's TTFT measures the model, not kernel or shader compilation.
   * `tokenizer` may be a promise (it loads beside the graph); the worker has set the WASM thread count.
   *
   * On WebGPU the KV cache is static (decode-loop.js) unless `kv` is "dynamic": `capacity` positions (the page's
   * context limit, never past the model's own), grown when a turn needs more. A graph the static cache cannot bind
   * (no fused GroupQueryAttention) falls back to the dynamic cache, with a console warning.
   * @param {{modelId: string, tokenizer: object|Promise<object>, dtype: string, device: string,
   *   progress_callback: Function, useExternalData?: object, sessionOptions?: object, stopper: object,
   *   nextTask: () => Promise<void>, kv?: "static"|"dynamic", capacity?: number}} options
   */
  static async load({ modelId, dtype, device, progress_callback, useExternalData, sessionOptions, stopper, nextTask, kv, capacity, ...rest }) {
    if (kv !== undefined && !KV_MODES.includes(kv)) {
      throw new EdgeChatError(ErrorCode.BAD_REQUEST, `kv must be one of ${KV_MODES.join(", ")}, not ${JSON.stringify(kv)}.`);
    }
    const wantStatic = device === "webgpu" && kv !== "dynamic";
    const options = wantStatic ? staticSessionOptions(sessionOptions) : sessionOptions;
    const [tokenizer, model] = await Promise.all([
      rest.tokenizer,
      AutoModelForCausalLM.from_pretrained(modelId, {
        dtype,
        device,
        progress_callback,
        use_external_data_format: useExternalData,
        ...(options ? { session_options: options } : {}),
      }),
    ]);
    const runtime = new OrtTextRuntime(model, tokenizer, stopper, device);
    // Yield to the event loop before every forward pass, so an interrupt is seen before the next token; the
    // turn's step meter counts the WebGPU calls of each pass (gpu-counters.js).
    const dynamicForward = model.forward.bind(model);
    const staticForward = forwardFor(() => runtime.kv);
    model.forward = async (inputs) => {
      await nextTask();
      runtime.meter?.begin();
      try {
        return await (runtime.kv ? staticForward(inputs) : dynamicForward(inputs));
      } finally {
        runtime.meter?.end();
      }
    };
    const own = runtime.contextLength ?? Infinity;
    if (wantStatic) {
      try {
        runtime.kv = await createStaticKv(model.sessions.model, Math.min(capacity ?? KV_BUDGET_TOKENS, own));
        await runtime.warmUp();
      } catch (err) {
        console.warn("[worker] the static KV cache cannot run this graph; using the dynamic one:", err);
        runtime.kv?.dispose();
        runtime.kv = null;
      }
    }
    if (!runtime.kv) await runtime.warmUp();
    runtime.kv?.truncate(0);
    runtime.info.kv = device === "webgpu" ? (runtime.kv ? "static" : "dynamic") : null;
    return runtime;
  }

  constructor(model, tokenizer, stopper, device) {
    this.model = model;
    this.tokenizer = tokenizer;
    this.stopper = stopper;
    this.device = device;
    this.meter = null; // the step meter of the turn being decoded (WebGPU only: gpu-counters.js)
    /** @type {import("./decode-loop.js").KvDecoder|null} the static KV cache (WebGPU), else null */
    this.kv = null;
    // {pkv, ids: bigint[]}: the KV cache of the conversation so far and the token ids it covers (static: pkv null,
    // the ids are the first kv.length positions)
    this.cache = null;
    /** What runs, for the ready reply (the page names it). */
    this.info = {
      name: RUNTIME,
      label: "ONNX Runtime Web",
      threads: device === "wasm" ? (env.backends.onnx.wasm.numThreads ?? null) : null,
    };
    /** The model's own context (tokens); the KV cache grows as needed up to it. */
    this.contextLength = model.config?.max_position_embeddings ?? null;
  }

  /** One greedy token, so kernels and shaders are compiled before the first reply. */
  async warmUp() {
    const warm = this.tokenizer("Hi", { return_tensor: true });
    await this.model.generate({ ...warm, max_new_tokens: 1, do_sample: false });
  }

  /**
   * Decodes one turn after `inputs` (tokenized `ids`, bigint[]): streams tokens to `reply`, keeps the KV cache.
   * Returns {text, newIds, first, last, count, interrupted, reused, generation, gpu}: `gpu` on WebGPU only, the
   * per-step WebGPU counts of the turn's decode steps (gpu-counters.js GpuStepMetrics).
   *
   * KV reuse: the cache covers `cache.ids`. The part of it this turn's ids start with is kept and only the rest is
   * prefilled. Qwen3 drops the thinking of earlier replies from the template, so after such a reply only the
   * prefix up to it matches: the cache is cut back to that prefix (CPU tensors; a GPU cache is dropped).
   */
  async turn({ inputs, ids, options, reply }) {
    if (this.kv) return this.staticTurn({ inputs, ids, options, reply });
    const { model, tokenizer } = this;
    let reused = 0;
    if (options.reuse_cache === false) await this.reset();
    if (this.cache) {
      const n = reusableLength(this.cache.ids, ids);
      if (n > 0 && n === this.cache.ids.length) reused = n;
      else if (n > 0 && cropCache(this.cache.pkv, n)) {
        this.cache.ids = this.cache.ids.slice(0, n);
        reused = n;
      } else await this.reset();
    }
    let turn;
    const meter = this.device === "webgpu" ? createStepMeter() : null;
    this.meter = meter;
    try {
      const pastKeyValues = reused ? this.cache.pkv : null;
      // WASM: prompt lookup unless the turn turns it off (decode-lookup.js; the same tokens, fewer forward passes).
      turn =
        this.device === "wasm" && options.prompt_lookup !== false
          ? await decodeLookupTurn({ model, tokenizer, ids, pastKeyValues, options, stopper: this.stopper, reply })
          : await decodeTurn({ model, tokenizer, inputs, pastKeyValues, options, stopper: this.stopper, reply });
    } catch (err) {
      await this.reset(); // a half-extended cache must not leak into the next turn
      throw err;
    } finally {
      this.meter = null;
    }
    const { output, first, last, count, interrupted, generation } = turn;
    const sequence = Array.from(output.sequences.data); // bigint[]: prompt + new tokens
    const newIds = sequence.slice(ids.length);
    const text = tokenizer.decode(newIds, { skip_special_tokens: true });
    // Keep the cache for the next turn (the old one, if reused, was extended in place or replaced).
    if (this.cache && this.cache.pkv !== output.past_key_values) await this.reset();
    this.cache = cacheAfter(output, sequence);
    const gpu = meter?.summary() ?? undefined;
    return { text, newIds: newIds.map(Number), first, last, count, interrupted, reused, generation, gpu };
  }

  /**
   * turn() on the static KV cache: a cache this turn's ids extend is kept and only the rest is prefilled; a turn
   * longer than the capacity grows the cache (a new one, empty).
   */
  async staticTurn({ inputs, ids, options, reply }) {
    const { model, tokenizer } = this;
    if (options.reuse_cache === false) await this.reset();
    const need = ids.length + newTokenLimits(options).maxNew;
    if (need > this.kv.capacity) await this.grow(need);
    // The whole cache is kept when this turn's ids extend it (then the tokens are the DynamicCache's). A cache that
    // would be cut back (Qwen3's dropped thinking, a reply that tokenizes differently in the template) is dropped, as
    // the DynamicCache's is on WebGPU: a prefill after a truncation runs other kernels than a whole prefill, whose
    // float differences turned near-tie greedy tokens of the tiny random models (tests/e2e/test_gpu_overhead.py).
    const n = this.cache ? reusableLength(this.cache.ids, ids) : 0;
    const reused = n > 0 && n === this.cache.ids.length ? n : 0;
    this.kv.truncate(reused);
    this.cache = null; // set again once the turn has finished: a failed turn leaves no cache behind
    const meter = createStepMeter();
    this.meter = meter;
    let turn;
    try {
      // Prompt lookup unless the turn turns it off: drafts verified in one pass, rejected ones dropped by truncate.
      turn =
        options.prompt_lookup !== false
          ? await decodeLookupTurn({ model, tokenizer, ids, kv: this.kv, options, stopper: this.stopper, reply })
          : await decodeTurn({ model, tokenizer, inputs, pastKeyValues: null, options, stopper: this.stopper, reply });
    } catch (err) {
      await this.reset();
      throw err;
    } finally {
      this.meter = null;
    }
    const { output, first, last, count, interrupted, generation } = turn;
    await output.past_key_values?.dispose(); // generate()'s own (empty) cache: the positions are in this.kv
    const sequence = Array.from(output.sequences.data); // bigint[]: prompt + new tokens
    const newIds = sequence.slice(ids.length);
    const text = tokenizer.decode(newIds, { skip_special_tokens: true });
    // The cache holds prompt + new tokens − 1 (the last sampled token is never fed back).
    this.cache = this.kv.length > 0 ? { pkv: null, ids: sequence.slice(0, this.kv.length) } : null;
    const gpu = meter.summary() ?? undefined;
    return { text, newIds: newIds.map(Number), first, last, count, interrupted, reused, generation, gpu };
  }

  /** Replaces the static cache with one of at least `need` positions (never past the model's own context). */
  async grow(need) {
    const own = this.contextLength ?? Infinity;
    const capacity = Math.min(Math.max(need, 2 * this.kv.capacity), own);
    if (capacity < need) return; // the context check refuses such turns before this
    await this.reset();
    this.kv.dispose();
    this.kv = await createStaticKv(this.model.sessions.model, capacity);
  }

  interrupt() {
    this.stopper.interrupt();
  }

  /** Drops the KV cache: the next turn prefills the whole conversation. */
  async reset() {
    const pkv = this.cache?.pkv;
    this.cache = null;
    this.kv?.truncate(0);
    if (pkv) {
      try {
        await pkv.dispose();
      } catch (err) {
        console.warn("[worker] disposing the KV cache failed", err);
      }
    }
  }

  async dispose() {
    await this.reset();
    this.kv?.dispose();
    this.kv = null;
    await this.model.dispose?.();
  }
}
