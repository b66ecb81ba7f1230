// Sampling settings → the arguments of each runtime: Transformers.js's generate() and llama.cpp's sampler chain (at
// the end). Pure (no runtime import), so the page can check settings with the same rules and the tests can run the
// filter on synthetic logits and read the llama.cpp mapping.
//
// What Transformers.js 4.3.1 does itself: temperature (TemperatureLogitsWarper) and top_k (its multinomial sampler
// keeps the k largest logits). Its repetition_penalty (RepetitionPenaltyLogitsProcessor) counts prompt and reply
// ids; the penalty here counts the reply's only (penalizedIds), so it is a logits processor of ours. What it does
// not do: its TopPLogitsWarper has no _call and is left out of the processor list (a TODO in modeling_utils.js), and
// it has no min_p at all. Both are done here, as one logits processor that runs after its temperature, in the order
// HF transformers applies them: temperature → top_k → top_p → min_p.

import { EdgeChatError, ErrorCode } from "./errors.js";

/** Greedy decoding: the exactness tests' setting, and what a request without sampling gets. */
export const GREEDY = Object.freeze({ temperature: 0, top_p: 1, top_k: 0, min_p: 0, repetition_penalty: 1 });

/** [min, max] of each setting (integers where noted); the settings panel uses the same table. */
export const SAMPLING_LIMITS = Object.freeze({
  temperature: { min: 0, max: 2 },
  top_p: { min: 0.01, max: 1 },
  top_k: { min: 0, max: 1000, integer: true },
  min_p: { min: 0, max: 0.99 },
  repetition_penalty: { min: 1, max: 2 },
  seed: { min: 0, max: 2 ** 32 - 1, integer: true },
});

/**
 * The sampling to use, every field checked; missing fields come from GREEDY. Throws a bad-setting error naming
 * the field when one is not a number in its range.
 * @param {Partial<import("./protocol.js").Sampling> | undefined} sampling
 * @returns {import("./protocol.js").Sampling}
 */
export function checkSampling(sampling) {
  const out = { ...GREEDY };
  for (const [key, value] of Object.entries(sampling ?? {})) {
    if (!(key in SAMPLING_LIMITS)) continue;
    if (value === undefined || value === null || value === "") continue;
    const { min, max, integer } = SAMPLING_LIMITS[key];
    const x = Number(value);
    if (!Number.isFinite(x) || x < min || x > max || (integer && !Number.isInteger(x))) {
      throw new EdgeChatError(
        ErrorCode.BAD_SETTING,
        `${key} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max} (got ${JSON.stringify(value)}).`,
      );
    }
    out[key] = x;
  }
  return out;
}

/**
 * Keeps, in one row of logits (already divided by the temperature), the tokens that top_k, then top_p, then
 * min_p keep, and sets the others to -Infinity. top_p keeps the most probable tokens until their mass reaches
 * top_p (the token that crosses it included), as HF's TopPLogitsWarper does; min_p keeps tokens at least min_p
 * times as probable as the most probable one. At least one token always stays.
 * @param {Float32Array} row
 * @param {{top_k: number, top_p: number, min_p: number}} settings
 * @returns {number} how many tokens stayed
 */
export function filterLogits(row, { top_k = 0, top_p = 1, min_p = 0 }) {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  // Tokens more than 40 below the best have probability < 4e-18 of it: they never reach a top_p below 1 and
  // never pass a min_p, so only the rest is sorted (a 151k vocabulary stays cheap).
  const floor = max - 40;
  let order = [];
  for (let i = 0; i < row.length; i++) if (row[i] >= floor) order.push(i);
  order.sort((a, b) => row[b] - row[a] || a - b);
  if (top_k > 0 && order.length > top_k) order = order.slice(0, top_k);
  const weights = order.map((i) => Math.exp(row[i] - max));
  const total = weights.reduce((a, b) => a + b, 0);
  let keep = order.length;
  if (top_p < 1) {
    let mass = 0;
    for (let k = 0; k < order.length; k++) {
      if (mass >= top_p) {
        keep = k;
        break;
      }
      mass += weights[k] / total;
    }
  }
  if (min_p > 0) {
    let k = 1;
    while (k < keep && weights[k] >= min_p) k++; // weights[k] is p_k / p_max
    keep = k;
  }
  keep = Math.max(1, keep);
  const kept = new Uint8Array(row.length);
  for (let k = 0; k < keep; k++) kept[order[k]] = 1;
  for (let i = 0; i < row.length; i++) if (!kept[i]) row[i] = -Infinity;
  return keep;
}

/**
 * The ids the repetition penalty counts when picking the token after `ids` (prompt + reply so far; the reply starts
 * at `promptLength`): the reply's own tokens, never the prompt's. A penalty over the whole context (HF's rule, the
 * old default) lowers every token of a pasted text: a rewrite or a code fix drifts from the words it should keep,
 * and prompt lookup finds nothing it can keep (docs/sampling.md, "Repetition penalty and prompt lookup").
 * @template T
 * @param {ArrayLike<T>} ids
 * @param {number} promptLength
 * @returns {T[]}
 */
export function penalizedIds(ids, promptLength) {
  return Array.prototype.slice.call(ids, Math.min(promptLength, ids.length));
}

/**
 * HF's repetition penalty on one row of logits, in place: each distinct id of `ids` has its logit divided by
 * `penalty` when above 0 and multiplied when below (llama.cpp's rule is the same).
 * @param {Float32Array} row
 * @param {ArrayLike<number|bigint>} ids
 * @param {number} penalty
 */
export function penalizeRow(row, ids, penalty) {
  if (penalty === 1) return row;
  for (const id of new Set(Array.from(ids, Number))) {
    const x = row[id];
    row[id] = x < 0 ? x * penalty : x / penalty;
  }
  return row;
}

/**
 * The processed row plain decoding picks from, in place: the repetition penalty over `penalizedIds`, then (when
 * sampling) the temperature, then top_k → top_p → min_p (filterLogits). One function for every decode loop, so a
 * loop that verifies drafted tokens picks exactly as the loop without drafts (prompt-lookup.js).
 * @param {Float32Array} row
 * @param {ArrayLike<number|bigint>} ids the context the row's logits follow (prompt + reply so far)
 * @param {number} promptLength
 * @param {import("./protocol.js").Sampling} s checked (checkSampling)
 */
export function processRow(row, ids, promptLength, s) {
  penalizeRow(row, penalizedIds(ids, promptLength), s.repetition_penalty);
  if (s.temperature > 0) {
    for (let i = 0; i < row.length; i++) row[i] /= s.temperature;
    filterLogits(row, s);
  }
  return row;
}

/**
 * The token a processed row (processRow) gives: its argmax at temperature 0 (the lower id on a tie), else one draw
 * of `random()` (uniform in [0, 1)) against the softmax of the kept logits in id order: exactly one draw per token.
 * @param {Float32Array} row
 * @param {{temperature: number}} s
 * @param {() => number} random
 * @returns {number}
 */
export function pickToken(row, s, random) {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  if (!(s.temperature > 0)) return best;
  const max = row[best];
  let total = 0;
  for (let i = 0; i < row.length; i++) if (row[i] > -Infinity) total += Math.exp(row[i] - max);
  let u = random() * total;
  let last = best;
  for (let i = 0; i < row.length; i++) {
    if (!(row[i] > -Infinity)) continue;
    last = i;
    u -= Math.exp(row[i] - max);
    if (u < 0) return i;
  }
  return last; // rounding left a sliver of u: the last kept token
}

/**
 * generate() arguments for `sampling` (checked with checkSampling): greedy at temperature 0, else multinomial
 * sampling with the missing warpers as a logits processor. `echo` is what the turn reports it used.
 */
export function generateArguments(sampling) {
  const s = checkSampling(sampling);
  const echo = { ...s, do_sample: s.temperature > 0 };
  // Transformers.js' own repetition penalty counts the prompt too (so it is set to 1 here): this one counts
  // penalizedIds (see there). It runs before the top_p / min_p filter; its order against the temperature does not
  // matter (both scale a logit without changing its sign).
  const processors = s.repetition_penalty !== 1 ? [replyPenalty(s.repetition_penalty)] : [];
  if (s.temperature === 0) {
    // Greedy: the argmax is the same with or without the warpers; the repetition penalty still applies.
    const kwargs = { do_sample: false, repetition_penalty: 1 };
    return { kwargs: { ...kwargs, ...(processors.length ? { logits_processor: processors } : {}) }, echo };
  }
  const kwargs = {
    do_sample: true,
    temperature: s.temperature,
    top_k: s.top_k, // the sampler's own top_k: only the k best are sorted and drawn from (0: all)
    repetition_penalty: 1, // its own would count the prompt (and generation_config.json's would apply unasked)
  };
  if (s.top_p < 1 || s.min_p > 0) {
    processors.push((_inputIds, logits) => {
      const vocab = logits.dims.at(-1);
      for (let b = 0; b * vocab < logits.data.length; b++) {
        filterLogits(logits.data.subarray(b * vocab, (b + 1) * vocab), s);
      }
      return logits;
    });
  }
  if (processors.length) kwargs.logits_processor = processors;
  return { kwargs, echo };
}

/**
 * A generate() logits processor: the repetition penalty over penalizedIds. generate() calls it first with the
 * prompt's ids (the whole conversation, a reused KV cache or not), then with one more id per step: the first call's
 * length is the prompt's.
 * @param {number} penalty
 */
function replyPenalty(penalty) {
  let promptLength = null;
  return (inputIds, logits) => {
    const vocab = logits.dims.at(-1);
    for (let b = 0; b < inputIds.length; b++) {
      promptLength ??= inputIds[b].length;
      penalizeRow(logits.data.subarray(b * vocab, (b + 1) * vocab), penalizedIds(inputIds[b], promptLength), penalty);
    }
    return logits;
  };
}

// llama.cpp (runtime-wllama.js) samples itself, with its own chain: penalties → … → top_k → top_p → min_p → …
// → temperature → a seeded draw. Its temperature comes last (so top_p and min_p would see unscaled probabilities):
// the chain is set to HF's order here. Its repetition penalty (the same rule, ÷ above 0 and × below) counts the
// latest `repeat_last_n` tokens, and llama.cpp's server feeds the prompt to the sampler too, so it cannot count the
// reply alone: a window of LLAMA_CPP_PENALTY_LAST_N tokens is the nearest it has (it reaches into the prompt only for
// the reply's first tokens; docs/sampling.md measures both against the whole context).
export const LLAMA_CPP_SAMPLERS = Object.freeze(["penalties", "temperature", "top_k", "top_p", "min_p"]);
export const LLAMA_CPP_PENALTY_LAST_N = 64;

/**
 * llama.cpp server parameters for `sampling` (checked with checkSampling) on a context of `contextLength` tokens
 * (n_ctx: the penalty's window never passes it), and the `echo` the turn reports, in the shape generateArguments
 * gives. temperature 0
 * is greedy there too: its temperature sampler keeps only the most likely token (after the penalty), and the draw
 * picks it. No seed: llama.cpp draws one.
 */
export function llamaCppSampling(sampling, contextLength) {
  if (!(Number.isInteger(contextLength) && contextLength > 0)) {
    throw new EdgeChatError(ErrorCode.BAD_REQUEST, "llama.cpp's sampler needs the context length it runs with.");
  }
  const s = checkSampling(sampling);
  const params = {
    temperature: s.temperature,
    top_k: s.top_k,
    top_p: s.top_p,
    min_p: s.min_p,
    repeat_penalty: s.repetition_penalty,
    repeat_last_n: Math.min(LLAMA_CPP_PENALTY_LAST_N, contextLength),
    samplers: [...LLAMA_CPP_SAMPLERS],
    ...(s.seed !== undefined ? { seed: s.seed } : {}),
  };
  return { params, echo: { ...s, do_sample: s.temperature > 0 } };
}
