// What every chat turn ends with, for text (worker.js) and image (vlm.js) models alike: the KV cache kept for
// the next turn, and the one metrics schema (docs/architecture.md).

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
