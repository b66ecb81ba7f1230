// One chat turn, for every runtime: the prompt (chat template, continue_final, chat_template_kwargs), the context
// check, the token limits and the one metrics schema (docs/architecture.md); and for Transformers.js (text:
// runtime-ort.js, images: vlm.js) generation with the turn's sampling, streaming and stop, and the KV cache kept for
// the next turn.

import { random, Tensor, TextStreamer } from "/static/vendor/transformers.min.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { Reply } from "./protocol.js";
import { generateArguments } from "./sampling.js";

/**
 * `model.generate` with `options.sampling` (absent or temperature 0: greedy, which the e2e tests compare with
 * Python onnxruntime token for token), streaming each piece of text to `reply` and stopping within a token on
 * `stopper.interrupt()`. Returns the output (return_dict_in_generate), the performance.now() marks of the first
 * and last streamed token, and `generation`: the sampling and limits generate() was called with.
 */
/**
 * A TextStreamer that sends each piece of reply text to `reply` as a token reply, and the performance.now() marks
 * of the first and last streamed token beside it (every decode loop times its turn the same way).
 * @param {object} tokenizer
 * @param {(message: object) => void} reply
 */
export function replyStreamer(tokenizer, reply) {
  const marks = { first: 0, last: 0, count: 0 };
  const streamer = new TextStreamer(tokenizer, {
    skip_prompt: true,
    skip_special_tokens: true,
    callback_function: (text) => reply({ type: Reply.TOKEN, text }),
    token_callback_function: () => {
      marks.last = performance.now();
      if (marks.count++ === 0) marks.first = marks.last;
    },
  });
  return { streamer, marks };
}

export async function decodeTurn({ model, tokenizer, inputs, pastKeyValues, options, stopper, reply }) {
  const { maxNew, minNew } = newTokenLimits(options);
  const { kwargs, echo } = generateArguments(options.sampling);
  const { streamer, marks } = replyStreamer(tokenizer, reply);
  // A seed makes a sampled reply reproducible (Transformers.js draws from one global Mersenne Twister).
  if (echo.seed !== undefined) random.seed(echo.seed);
  stopper.reset();
  const output = await model.generate({
    ...inputs,
    ...(pastKeyValues ? { past_key_values: pastKeyValues } : {}),
    ...kwargs,
    max_new_tokens: maxNew,
    ...(minNew ? { min_new_tokens: minNew } : {}),
    streamer,
    stopping_criteria: stopper,
    return_dict_in_generate: true,
  });
  const generation = { ...echo, max_new_tokens: maxNew, ...(minNew ? { min_new_tokens: minNew } : {}) };
  return { output, ...marks, interrupted: stopper.interrupted, generation };
}

/** The turn's max_new_tokens (at least 1, default 256) and min_new_tokens (null: none), as every runtime reads them. */
export function newTokenLimits(options = {}) {
  const maxNew = Math.max(1, Math.floor(Number(options.max_new_tokens ?? 256)));
  const minNew = Math.min(maxNew, Math.max(0, Math.floor(Number(options.min_new_tokens ?? 0)))) || null;
  return { maxNew, minNew };
}

// Arguments of apply_chat_template that a request may not set through chat_template_kwargs.
const TEMPLATE_RESERVED = new Set([
  "messages",
  "conversation",
  "add_generation_prompt",
  "tokenize",
  "return_dict",
  "return_tensor",
  "tools",
  "documents",
  "chat_template",
  "tokenizer_kwargs",
  "padding",
  "truncation",
  "max_length",
]);

/** The request's chat_template_kwargs (Qwen3's enable_thinking, …): plain values only, none of the call's own. */
export function templateKwargs(options) {
  const out = {};
  for (const [key, value] of Object.entries(options?.chat_template_kwargs ?? {})) {
    if (TEMPLATE_RESERVED.has(key) || !["boolean", "number", "string"].includes(typeof value)) {
      throw new EdgeChatError(ErrorCode.BAD_REQUEST, `chat_template_kwargs.${key} cannot be set.`);
    }
    out[key] = value;
  }
  return out;
}

/** True when the tokenizer's chat template reads `name` (e.g. enable_thinking). */
export function templateTakes(tokenizer, name) {
  const template = tokenizer.chat_template ?? tokenizer.config?.chat_template ?? "";
  return JSON.stringify(template).includes(name);
}

/**
 * The turn's prompt: the conversation through the chat template with the generation prompt, or, with
 * `options.continue_final`, the conversation before the last (assistant) message with the generation prompt,
 * followed by that message's text as it stands, so the model continues it. Returns the rendered `text`, the
 * tokenized inputs and their ids (bigint[]); tokenizing the rendered text is what apply_chat_template does itself
 * (and what llama.cpp does with `text`: runtime-wllama.js).
 */
export function chatPrompt(tokenizer, messages, options = {}) {
  const kwargs = templateKwargs(options);
  let text;
  if (options.continue_final) {
    const last = messages.at(-1);
    if (last?.role !== "assistant" || typeof last.content !== "string") {
      throw new EdgeChatError(ErrorCode.BAD_REQUEST, "Only an assistant reply can be continued.");
    }
    const before = messages.slice(0, -1);
    text = tokenizer.apply_chat_template(before, { ...kwargs, add_generation_prompt: true, tokenize: false });
    text += last.content;
  } else {
    text = tokenizer.apply_chat_template(messages, { ...kwargs, add_generation_prompt: true, tokenize: false });
  }
  const inputs = tokenizer(text, { add_special_tokens: false });
  return { text, inputs, ids: Array.from(inputs.input_ids.data) };
}

/**
 * Refuses a turn whose prompt plus max_new_tokens would pass `limit` (the page's context limit or the model's
 * own max_position_embeddings, whichever is smaller): the person is told, nothing is cut silently.
 */
export function checkContext(promptTokens, maxNewTokens, limit) {
  if (!(limit > 0) || promptTokens + maxNewTokens <= limit) return;
  throw new EdgeChatError(
    ErrorCode.CONTEXT_FULL,
    `This conversation is ${promptTokens} tokens long; with up to ${maxNewTokens} new tokens it would pass the ` +
      `${limit}-token context limit. Start a new chat, drop the oldest turns, or lower “Max new tokens”.`,
    "",
    { tokens: promptTokens, max_new_tokens: maxNewTokens, limit },
  );
}

/**
 * How many leading ids the KV cache can keep for this turn: the common prefix of the ids it covers and the
 * turn's ids, leaving at least one id to prefill (generate needs logits for the last prompt position).
 */
export function reusableLength(cachedIds, ids) {
  const n = Math.min(cachedIds.length, ids.length - 1);
  let i = 0;
  while (i < n && cachedIds[i] === ids[i]) i++;
  return i;
}

/**
 * Cuts a KV cache back to its first `n` positions, in place. Only caches in CPU memory (WASM) can be cut here;
 * returns false for GPU tensors, and the caller prefills from scratch. Causal attention makes the first `n`
 * positions of a longer cache exactly the cache of those `n` tokens.
 */
export function cropCache(pkv, n) {
  const entries = Object.entries(pkv ?? {});
  if (!entries.length || entries.some(([name, t]) => !name.startsWith("past_key_values.") || t.location !== "cpu")) {
    return false;
  }
  for (const [name, t] of entries) {
    const [batch, heads, length, dim] = t.dims;
    if (n > length) return false;
    const out = new t.data.constructor(batch * heads * n * dim);
    for (let i = 0; i < batch * heads; i++) {
      out.set(t.data.subarray(i * length * dim, i * length * dim + n * dim), i * n * dim);
    }
    pkv[name] = new Tensor(t.type, out, [batch, heads, n, dim]);
  }
  return true;
}

/** True when the first `n` token ids of `a` and `b` agree: the cached prefix still matches the conversation. */
export function sameTokens(a, b, n) {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The cache to keep after `generate()`: prompt + new tokens − 1 (the last sampled token is never fed back). */
export function cacheAfter(output, sequence) {
  const pkv = output.past_key_values;
  const cachedLength = pkv?.get_seq_length?.() ?? 0;
  return pkv && cachedLength > 0 ? { pkv, ids: sequence.slice(0, cachedLength) } : null;
}

const round = (x, d = 3) => (Number.isFinite(x) ? Number(x.toFixed(d)) : null);

/**
 * Times are performance.now() readings: t0 before generate, first/last at the first and last streamed token.
 * `info` is the loaded model: {id, revision, device, dtype, runtime, load_s}. `gpu`, on WebGPU only, is what each
 * decode step asked of the WebGPU API (gpu-counters.js GpuStepMetrics); other devices' metrics have no `gpu` key.
 * @param {{id: string, revision: string, device: string, dtype: string, runtime: "onnxruntime-web"|"llama.cpp",
 *   load_s: number}} info
 * @param {{t0: number, first: number, last: number, count: number, promptTokens: number, decodeSeconds?: number,
 *   gpu?: object}} timing
 */
export function turnMetrics(info, { t0, first, last, count, promptTokens, decodeSeconds: measured, gpu }) {
  const ttft = (first - t0) / 1000;
  // A runtime that times its own decode (llama.cpp) passes it: its text can arrive later than its tokens.
  const decodeSeconds = measured ?? (last - first) / 1000;
  return {
    load_s: round(info.load_s),
    ttft_s: round(ttft),
    prefill_tokens_per_s: round(promptTokens / ttft, 2),
    decode_tokens_per_s: count > 1 && decodeSeconds > 0 ? round((count - 1) / decodeSeconds, 2) : null,
    prompt_tokens: promptTokens,
    new_tokens: count,
    device: info.device,
    dtype: info.dtype,
    runtime: info.runtime,
    model: info.id,
    revision: info.revision,
    ...(gpu ? { gpu } : {}),
  };
}
