// The llama.cpp runtime (wllama: llama.cpp compiled to WASM, threads over SharedArrayBuffer) for text models on
// the CPU. It runs the GGUF the pipeline wrote and verified (manifest dtype "gguf-…"), read from Edge Chat's
// verified model cache as a Blob (disk-backed: wllama reads it slice by slice into its heap, no second copy).
//
// The chat template is applied by the worker with the same Transformers.js tokenizer as the ORT path (so Qwen3's
// enable_thinking works the same), and the templated text goes to llama.cpp through a pass-through template.
// Why text and not token ids: wllama 3.8 has no low-level API ("TODO: add back"), its completion takes text only
// (a JSON array of ids aborts in its glue), and of its two text endpoints only the chat one survives a token that
// is not valid UTF-8 on its own (the raw completion, and any response carrying per-token ids or logprobs, dumps the
// bytes as JSON and breaks the glue for good: seen with random-weight models). So llama.cpp tokenizes the prompt
// itself, special tokens parsed; the pipeline verifies that its tokenizer gives tokenizer.json's ids on
// chat-formatted text (verification.json: tokenizer_agrees) and each turn checks the count (prompt_ids_match).
// The reply arrives as text (llama.cpp's own detokenization, U+FFFD for invalid bytes) with the token count; it
// reports no ids.
// wllama 3.x embeds llama.cpp's server: a completion keeps its slot's KV cache, and the next one with
// cache_prompt reuses the longest common prefix of token ids, removes the KV tail after it and prefills only
// the rest: the prefix rule of the ORT path, done by llama.cpp itself (one slot, so always that cache).

import { Wllama, WllamaAbortError } from "/static/vendor/wllama/index.js";

export const RUNTIME = "llama.cpp (wllama)";
const WASM_URL = "/static/vendor/wllama/wllama.wasm";
const DEFAULT_CONTEXT = 4096;
// The worker sends the conversation already templated, as the one message; llama.cpp's output parser is off.
const PASS_THROUGH = "{{ messages[0]['content'] }}";

/**
 * The chat's sampling options → llama.cpp's sampler. temperature 0 (or absent) is greedy: argmax, as the
 * e2e tests compare token for token with Python llama.cpp.
 */
export function samplingParams(options = {}) {
  const t = Number(options.temperature ?? 0);
  const out = { temperature: Number.isFinite(t) && t > 0 ? t : 0 };
  if (out.temperature > 0) {
    if (Number.isFinite(options.top_p)) out.top_p = options.top_p;
    if (Number.isInteger(options.top_k)) out.top_k = options.top_k;
    if (Number.isFinite(options.min_p)) out.min_p = options.min_p;
    if (Number.isInteger(options.seed)) out.seed = options.seed;
  }
  const penalty = Number(options.repetition_penalty ?? 1);
  if (Number.isFinite(penalty) && penalty > 0 && penalty !== 1) {
    out.repeat_penalty = penalty;
    out.repeat_last_n = 64;
  }
  return out;
}

export class WllamaRuntime {
  constructor(wllama, info) {
    this.wllama = wllama;
    this.info = info; // {threads, multithread, n_ctx, libllama}
    this.keepCache = false; // false after reset(): the next completion prefills from scratch
    this.abort = null;
  }

  /**
   * Loads the GGUF `blob` with `threads` (default: what wllama picks, half the logical cores). Resolves with
   * a runtime whose first decode already ran (warm-up), like the ORT path's load.
   */
  static async load({ blob, threads, contextLength, logger = console }) {
    const wllama = new Wllama(
      { default: new URL(WASM_URL, self.location.origin).href },
      { logger: { debug() {}, log() {}, warn: logger.warn, error: logger.error }, suppressNativeLog: true },
    );
    const n_ctx = Math.min(contextLength || DEFAULT_CONTEXT, DEFAULT_CONTEXT);
    await wllama.loadModel([blob], {
      n_ctx,
      n_threads: threads || undefined,
      n_gpu_layers: 0, // the CPU path: WebGPU devices get the ONNX q4/q4f16 graphs
      n_parallel: 1, // one slot: the conversation's KV cache is always the one reused
      kv_unified: true,
      warmup: true,
      chat_template: PASS_THROUGH,
      jinja: true,
      reasoning_format: "none",
      skip_chat_parsing: true,
    });
    // wllama resolves even when llama.cpp refused the file (it logs "failed to load model"): check.
    if (!(wllama.getModelMetadata()?.hparams?.nVocab > 0)) {
      await wllama.exit().catch(() => {});
      throw new Error("llama.cpp could not load the GGUF file (see the console): it is damaged or of an unsupported kind");
    }
    return new WllamaRuntime(wllama, {
      threads: wllama.getNumThreads(),
      multithread: wllama.isMultithread(),
      n_ctx,
      libllama: Wllama.getLibllamaVersion?.() ?? "",
    });
  }

  /** Drops the KV cache: the next turn prefills from scratch. */
  reset() {
    this.keepCache = false;
  }

  interrupt() {
    this.abort?.abort();
  }

  /**
   * Generates after `prompt` (the templated conversation as text). onToken(text) gets each piece as it comes.
   * Returns {text, first, last, count, interrupted, reused, promptTokens}: first/last are performance.now() marks
   * of the first and last piece; count is llama.cpp's count of new tokens; promptTokens how many prompt tokens
   * llama.cpp saw (cached + prefilled).
   */
  async generate({ prompt, options = {}, onToken }) {
    const maxNew = Math.max(1, Math.floor(Number(options.max_new_tokens ?? 256)));
    const minNew = Math.min(maxNew, Math.max(0, Math.floor(Number(options.min_new_tokens ?? 0))));
    const reuse = this.keepCache && options.reuse_cache !== false;
    const marks = { first: 0, last: 0, pieces: 0 };
    let text = "";
    let timings = null;
    let interrupted = false;
    this.abort = new AbortController();
    this.keepCache = false; // until this turn settles: a failed turn leaves no cache to trust
    const onData = (chunk) => {
      if (chunk.timings) timings = chunk.timings;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (!piece) return;
      marks.last = performance.now();
      if (marks.pieces++ === 0) marks.first = marks.last;
      text += piece;
      onToken?.(piece);
    };
    try {
      await this.wllama.createChatCompletion({
        messages: [{ role: "user", content: prompt }],
        max_tokens: maxNew,
        ...samplingParams(options),
        // min_new_tokens: EOS ignored for exactly that many tokens (benchmarks decode a fixed count).
        ...(minNew >= maxNew ? { ignore_eos: true } : {}),
        cache_prompt: reuse,
        timings_per_token: true,
        stream: true,
        onData,
        abortSignal: this.abort.signal,
      });
    } catch (err) {
      if (!(err instanceof WllamaAbortError || err?.name === "AbortError")) throw err;
      interrupted = true;
    } finally {
      this.abort = null;
    }
    this.keepCache = true;
    const reused = timings?.cache_n ?? 0;
    const promptTokens = timings ? reused + (timings.prompt_n ?? 0) : null;
    const count = timings?.predicted_n ?? marks.pieces;
    return { text, first: marks.first, last: marks.last, count, interrupted, reused, promptTokens };
  }

  async dispose() {
    this.abort?.abort();
    await this.wllama.exit();
  }
}
