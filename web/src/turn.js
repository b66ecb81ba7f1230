// One chat turn, for text (worker.js) and image (vlm.js) models alike: greedy generation with streaming and stop,
// then the KV cache kept for the next turn and the one metrics schema (docs/architecture.md).

import { TextStreamer } from "/static/vendor/transformers.min.js";
import { Reply } from "./protocol.js";

/**
 * Greedy `model.generate` (the e2e tests compare with Python onnxruntime token for token), streaming each piece of
 * text to `reply` and stopping within a token on `stopper.interrupt()`. Returns the output (return_dict_in_generate)
 * and the performance.now() marks of the first and last streamed token.
 */
export async function greedyTurn({ model, tokenizer, inputs, pastKeyValues, options, stopper, reply }) {
  const maxNew = Math.max(1, Math.floor(Number(options.max_new_tokens ?? 256)));
  const minNew = Math.min(maxNew, Math.max(0, Math.floor(Number(options.min_new_tokens ?? 0)))) || null;
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
  stopper.reset();
  const output = await model.generate({
    ...inputs,
    ...(pastKeyValues ? { past_key_values: pastKeyValues } : {}),
    do_sample: false,
    repetition_penalty: 1.0,
    max_new_tokens: maxNew,
    ...(minNew ? { min_new_tokens: minNew } : {}),
    streamer,
    stopping_criteria: stopper,
    return_dict_in_generate: true,
  });
  return { output, ...marks, interrupted: stopper.interrupted };
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

/** Times are performance.now() readings: t0 before generate, first/last at the first and last streamed token. */
export function turnMetrics(info, { t0, first, last, count, promptTokens }) {
  const ttft = (first - t0) / 1000;
  const decodeSeconds = (last - first) / 1000;
  return {
    load_s: round(info.load_s),
    ttft_s: round(ttft),
    prefill_tokens_per_s: round(promptTokens / ttft, 2),
    decode_tokens_per_s: count > 1 && decodeSeconds > 0 ? round((count - 1) / decodeSeconds, 2) : null,
    prompt_tokens: promptTokens,
    new_tokens: count,
    device: info.device,
    dtype: info.dtype,
    model: info.id,
    revision: info.revision,
  };
}
