// The ONNX Runtime Web text runtime (Transformers.js): the ONNX graph of a text model's dtype on WebGPU or WASM, and
// the KV cache of the conversation between turns. worker.js owns what both text runtimes share (the tokenizer, the
// prompt, the context check, metrics and replies); this module only decodes and keeps its cache. The other text
// runtime, llama.cpp, is runtime-wllama.js, with the same methods.

import { AutoModelForCausalLM, env } from "/static/vendor/transformers.min.js";
import { ONNX_RUNTIME } from "./contracts.js";
import { createStepMeter } from "./gpu-counters.js";
import { cacheAfter, cropCache, decodeTurn, reusableLength } from "./turn.js";

export const RUNTIME = ONNX_RUNTIME;

export class OrtTextRuntime {
  /**
   * Builds the dtype's graph from the revision's model cache (worker.js verified it first) and runs one token,
   * so the first reply's TTFT measures the model, not kernel or shader compilation.
   * `tokenizer` may be a promise (it loads beside the graph); the worker has set the WASM thread count.
   * @param {{modelId: string, tokenizer: object|Promise<object>, dtype: string, device: string,
   *   progress_callback: Function, useExternalData?: object, sessionOptions?: object, stopper: object,
   *   nextTask: () => Promise<void>}} options
   */
  static async load({ modelId, dtype, device, progress_callback, useExternalData, sessionOptions, stopper, nextTask, ...rest }) {
    const [tokenizer, model] = await Promise.all([
      rest.tokenizer,
      AutoModelForCausalLM.from_pretrained(modelId, {
        dtype,
        device,
        progress_callback,
        use_external_data_format: useExternalData,
        ...(sessionOptions ? { session_options: sessionOptions } : {}),
      }),
    ]);
    // Yield to the event loop before every forward pass, so an interrupt is seen before the next token; the
    // turn's step meter counts the WebGPU calls of each pass (gpu-counters.js).
    const forward = model.forward.bind(model);
    const meter = { current: null };
    model.forward = async (inputs) => {
      await nextTask();
      meter.current?.begin();
      try {
        return await forward(inputs);
      } finally {
        meter.current?.end();
      }
    };
    const warm = tokenizer("Hi", { return_tensor: true });
    await model.generate({ ...warm, max_new_tokens: 1, do_sample: false });
    return new OrtTextRuntime(model, tokenizer, stopper, device, meter);
  }

  constructor(model, tokenizer, stopper, device, meter) {
    this.model = model;
    this.tokenizer = tokenizer;
    this.stopper = stopper;
    this.device = device;
    this.meter = meter; // {current}: the step meter of the turn being decoded (WebGPU only)
    this.cache = null; // {pkv, ids: bigint[]}: the KV cache of the conversation so far and the token ids it covers
    /** What runs, for the ready reply (the page names it). */
    this.info = {
      name: RUNTIME,
      label: "ONNX Runtime Web",
      threads: device === "wasm" ? (env.backends.onnx.wasm.numThreads ?? null) : null,
    };
    /** The model's own context (tokens); the KV cache grows as needed up to it. */
    this.contextLength = model.config?.max_position_embeddings ?? null;
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
    this.meter.current = meter;
    try {
      const pastKeyValues = reused ? this.cache.pkv : null;
      turn = await decodeTurn({ model, tokenizer, inputs, pastKeyValues, options, stopper: this.stopper, reply });
    } catch (err) {
      await this.reset(); // a half-extended cache must not leak into the next turn
      throw err;
    } finally {
      this.meter.current = null;
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

  interrupt() {
    this.stopper.interrupt();
  }

  /** Drops the KV cache: the next turn prefills the whole conversation. */
  async reset() {
    const pkv = this.cache?.pkv;
    this.cache = null;
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
    await this.model.dispose?.();
  }
}
