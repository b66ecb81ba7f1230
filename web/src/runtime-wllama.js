// The llama.cpp text runtime (wllama: llama.cpp compiled to WASM, threads over SharedArrayBuffer) for text models on
// the CPU, with the methods of runtime-ort.js. It runs the GGUF the pipeline wrote and verified (manifest dtype
// "gguf-…", runtime "llama.cpp"), read from Edge Chat's verified model cache as a Blob (disk-backed: wllama reads it
// slice by slice into its heap, no second copy).
//
// worker.js templates the conversation with the same Transformers.js tokenizer as the ONNX path (so Qwen3's
// enable_thinking, continue_final and the system prompt are identical), and the templated text goes to llama.cpp
// through a pass-through template. Why text and not token ids: wllama 3.8 has no low-level API ("TODO: add back"),
// its completion takes text only (a JSON array of ids aborts in its glue), and of its two text endpoints only the
// chat one survives a token that is not valid UTF-8 on its own (the raw completion, and any response carrying
// per-token ids or logprobs, dumps the bytes as JSON and breaks the glue for good: seen with random-weight models).
// So llama.cpp tokenizes the prompt itself, special tokens parsed; the pipeline verifies that its tokenizer gives
// tokenizer.json's ids on chat-formatted text (verification.json: tokenizer_agrees) and each turn checks the count
// (prompt_ids_match). The reply arrives as text (llama.cpp's own detokenization, U+FFFD for invalid bytes) with the
// token count; it reports no ids.
// wllama 3.x embeds llama.cpp's server: a completion keeps its slot's KV cache, and the next one with cache_prompt
// reuses the longest common prefix of token ids, removes the KV tail after it and prefills only the rest: the
// prefix rule of the ONNX path (Qwen3's dropped thinking included), done by llama.cpp itself (one slot, so always
// that cache).

import { Wllama, WllamaAbortError } from "/static/vendor/wllama/index.js";
import { LLAMA_CPP } from "./contracts.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { Reply } from "./protocol.js";
import { llamaCppSampling } from "./sampling.js";
import { newTokenLimits } from "./turn.js";

export const RUNTIME = LLAMA_CPP;
const WASM_URL = "/static/vendor/wllama/wllama.wasm";
// The worker sends the conversation already templated, as the one message; llama.cpp's output parser is off.
const PASS_THROUGH = "{{ messages[0]['content'] }}";

export class LlamaCppRuntime {
  /**
   * Loads the GGUF `blob` with `threads` (default: what wllama picks, half the logical cores) and a context of
   * `contextLength` tokens: llama.cpp allocates the KV cache for all of them now, of type `kvCache` (the manifest's,
   * which verification ran; llama.cpp's f16 when absent). Resolves with a runtime whose first decode already ran
   * (warm-up), like the ONNX path's load.
   */
  static async load({ blob, threads, contextLength, kvCache = "f16", overrides = {}, logger = console }) {
    const wllama = new Wllama(
      { default: new URL(WASM_URL, self.location.origin).href },
      { logger: { debug() {}, log() {}, warn: logger.warn, error: logger.error }, suppressNativeLog: true },
    );
    await wllama.loadModel([blob], {
      n_ctx: contextLength,
      n_threads: threads || undefined,
      n_gpu_layers: 0, // the CPU path: WebGPU devices get the ONNX q4/q4f16 graphs
      n_parallel: 1, // one slot: the conversation's KV cache is always the one reused
      kv_unified: true,
      flash_attn: true, // a quantized V cache needs it; verification runs with it too
      cache_type_k: kvCache,
      cache_type_v: kvCache,
      warmup: true,
      chat_template: PASS_THROUGH,
      jinja: true,
      reasoning_format: "none", // <think> stays in the text: the page splits it, as for the ONNX path
      // The template's own output parser (content only, for this template) passes the text through as generated.
      // skip_chat_parsing's "pure content" parser would not: it dropped a reply's leading whitespace (" The" came
      // out as "The", so Continue glued words together) and ended random-weight replies after their first piece.
      skip_chat_parsing: false,
      ...overrides,
    });
    // wllama resolves even when llama.cpp refused the file (it logs "failed to load model"): check.
    if (!(wllama.getModelMetadata()?.hparams?.nVocab > 0)) {
      await wllama.exit().catch(() => {});
      throw new EdgeChatError(
        ErrorCode.MODEL_MISSING,
        "llama.cpp could not load the model's GGUF file: it is damaged or of a kind this version cannot run. Delete the model in the storage panel and load it again.",
      );
    }
    return new LlamaCppRuntime(wllama, contextLength);
  }

  constructor(wllama, contextLength) {
    this.wllama = wllama;
    this.keepCache = false; // false after reset(): the next completion prefills from scratch
    this.abort = null;
    /** What runs, for the ready reply (the page names it). */
    this.info = {
      name: RUNTIME,
      label: "llama.cpp (wllama)",
      threads: wllama.getNumThreads(),
      multithread: wllama.isMultithread(),
      libllama: Wllama.getLibllamaVersion?.() ?? "",
    };
    /** llama.cpp's n_ctx: the KV cache was allocated for this many tokens, no turn may pass it. */
    this.contextLength = contextLength;
  }

  /**
   * Decodes one turn after `prompt` (the templated conversation as text; `ids` are Transformers.js's ids of it).
   * Streams each piece of text to `reply`. Returns {text, newIds: null (llama.cpp reports no ids), first, last,
   * count, decodeSeconds, interrupted, reused, generation, context}: first/last are performance.now() marks of the
   * first token's chunk and of the last piece, count is llama.cpp's count of new tokens, decodeSeconds llama.cpp's
   * own decode time, reused the prompt tokens its KV cache already held.
   */
  async turn({ prompt, ids, options, reply }) {
    const { maxNew, minNew } = newTokenLimits(options);
    // llama.cpp holds EOS off for the whole reply or not at all (benchmarks decode a fixed count).
    if (minNew && minNew < maxNew) {
      throw new EdgeChatError(
        ErrorCode.BAD_REQUEST,
        "llama.cpp can hold off the end of a reply only for all of it: min_new_tokens must be 0 or max_new_tokens.",
      );
    }
    const { params, echo } = llamaCppSampling(options.sampling, this.contextLength);
    const reuse = this.keepCache && options.reuse_cache !== false;
    const marks = { first: 0, last: 0, pieces: 0 };
    let text = "";
    let timings = null;
    let interrupted = false;
    this.abort = new AbortController();
    this.keepCache = false; // until this turn settles: a failed turn leaves no cache to trust
    const onData = (chunk) => {
      if (chunk.timings) timings = chunk.timings;
      // The server streams a chunk for the first token even when it holds the token's text back (a byte piece that
      // is not valid UTF-8 on its own waits for the rest): TTFT is that chunk, not the first text.
      if (!marks.first) marks.first = performance.now();
      const piece = chunk.choices?.[0]?.delta?.content;
      if (!piece) return;
      marks.last = performance.now();
      marks.pieces++;
      text += piece;
      reply({ type: Reply.TOKEN, text: piece });
    };
    try {
      await this.wllama.createChatCompletion({
        messages: [{ role: "user", content: prompt }],
        max_tokens: maxNew,
        ...params,
        ...(minNew ? { ignore_eos: true } : {}),
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
    if (!marks.first) marks.first = performance.now(); // nothing streamed (stopped before the first token)
    if (marks.pieces === 0) marks.last = marks.first; // no text (EOS at once, or only held-back bytes)
    const reused = timings?.cache_n ?? 0;
    // llama.cpp tokenized the prompt itself: the same count as Transformers.js's ids, or the turn says so.
    const promptTokens = timings ? reused + (timings.prompt_n ?? 0) : null;
    const promptIdsMatch = promptTokens === null || promptTokens === ids.length;
    if (!promptIdsMatch) console.warn(`[worker] llama.cpp counted ${promptTokens} prompt tokens, Transformers.js ${ids.length}`);
    const generation = { ...echo, max_new_tokens: maxNew, ...(minNew ? { min_new_tokens: minNew } : {}), llama_cpp: params };
    return {
      text,
      newIds: null,
      first: marks.first,
      last: marks.last,
      count: timings?.predicted_n ?? marks.pieces,
      // llama.cpp's own clock from its first new token to its last (the server's t_token_generation): the pieces'
      // arrival would not do, because bytes of an unfinished character are held back until it completes.
      decodeSeconds: timings?.predicted_ms > 0 ? timings.predicted_ms / 1000 : undefined,
      interrupted,
      reused,
      generation,
      context: { prompt_ids_match: promptIdsMatch },
    };
  }

  interrupt() {
    this.abort?.abort();
  }

  /** Drops the KV cache: the next turn prefills from scratch. */
  async reset() {
    this.keepCache = false;
  }

  async dispose() {
    this.abort?.abort();
    await this.wllama.exit();
  }
}
