// A decode loop with prompt lookup (prompt-lookup.js) for the ONNX Runtime text runtime: each forward pass feeds the
// last token and the drafted ones through model.forward (so runtime-ort.js' wrapper still yields before every pass
// and meters it), reads the logits of every fed position, keeps the tokens plain decoding would have picked, and cuts
// the cache back past the rejected drafts. Two caches: on WASM Transformers.js' DynamicCache in CPU memory (cut by
// turn.js cropCache), on WebGPU the static cache of decode-loop.js (`kv`: model.forward runs on it; cut by
// truncate, a length change). Tokens are picked with sampling.js' processRow/pickToken, the same rules as generate()'s arguments;
// random draws come from Transformers.js' seeded generator, one per emitted token.
//
// It returns what turn.js decodeTurn returns, so runtime-ort.js keeps the cache and builds the reply the same way;
// its `generation` adds the turn's tokens per forward pass, which the metrics line shows.

import { DynamicCache, random, Tensor } from "/static/vendor/transformers.min.js";
import { acceptDraft, PromptLookup } from "./prompt-lookup.js";
import { checkSampling, pickToken, processRow } from "./sampling.js";
import { cropCache, newTokenLimits, replyStreamer } from "./turn.js";

/** The model's end-of-sequence ids (generation_config.json's eos_token_id, a number or a list). */
export function eosIds(model) {
  const eos = model.generation_config?.eos_token_id ?? model.config?.eos_token_id;
  return new Set((Array.isArray(eos) ? eos : eos == null ? [] : [eos]).map(Number));
}

/**
 * One turn after `ids` (bigint[]: the whole conversation), on `pastKeyValues` (a DynamicCache covering a prefix of
 * `ids`, or null) or on `kv` (decode-loop.js' KvDecoder, holding a prefix of `ids`, which model.forward runs on).
 * Streams text to `reply`, stops within a pass on `stopper.interrupt()`. `lookup`: PromptLookup's options
 * ({maxDraft: 0}: plain decoding, one token a pass).
 * @returns {Promise<{output: {sequences: {data: BigInt64Array}, past_key_values: object}, first: number, last: number,
 *   count: number, interrupted: boolean, generation: object}>} `generation` says prompt_lookup: true and the turn's
 *   tokens_per_pass (emitted tokens per forward pass, the prefill's included)
 */
export async function decodeLookupTurn({
  model,
  tokenizer,
  ids,
  pastKeyValues,
  kv,
  options,
  stopper,
  reply,
  lookup = {},
  tensor = (type, data, dims) => new Tensor(type, data, dims), // Node tests: ORT's Tensor class is not there
}) {
  const { maxNew, minNew } = newTokenLimits(options);
  const s = checkSampling(options.sampling);
  const eos = eosIds(model);
  const { streamer, marks } = replyStreamer(tokenizer, reply);
  if (s.seed !== undefined) random.seed(s.seed);
  stopper.reset();
  streamer.put([ids]);

  const promptLength = ids.length;
  const all = [...ids]; // prompt + emitted tokens
  const drafts = new PromptLookup(lookup);
  let pkv = kv ? null : (pastKeyValues ?? null);
  let cached = kv ? kv.length : (pkv?.get_seq_length?.() ?? 0);
  let feed = ids.slice(cached); // the prompt's uncached part, then [last token, ...draft]
  let draft = [];
  let done = false;

  // The token plain decoding picks after `context` (prompt, emitted tokens, and the drafts accepted so far in this
  // pass) from one row of logits: the same processors, the same random stream.
  const pick = (logits, row, context) => {
    const vocab = logits.dims.at(-1);
    const scores = logits.data.slice(row * vocab, (row + 1) * vocab); // a copy: processRow works in place
    const emitted = context.length - promptLength;
    if (minNew && emitted < minNew) for (const id of eos) scores[id] = -Infinity; // as MinNewTokensLength does
    return BigInt(pickToken(processRow(scores, context, promptLength, s), s, random.random.bind(random)));
  };

  while (!done) {
    const total = cached + feed.length;
    const out = await model.forward({
      input_ids: tensor("int64", BigInt64Array.from(feed), [1, feed.length]),
      attention_mask: tensor("int64", new BigInt64Array(total).fill(1n), [1, total]),
      ...(kv ? {} : { past_key_values: pkv }),
    });
    if (!kv) pkv = presentCache(out, pkv);
    const logits = out.logits.type === "float32" ? out.logits : out.logits.to("float32"); // a q4f16 graph's
    cached = total;
    // Rows of the positions whose next token is picked: the last one of a prefill, else the last token's and each draft's.
    const first = logits.dims[1] - (draft.length + 1);
    const final = (token, n) => {
      const emitted = all.length - promptLength + n;
      return eos.has(Number(token)) || emitted >= maxNew;
    };
    const pickAt = (i) => pick(logits, first + i, i ? all.concat(draft.slice(0, i)) : all);
    const { tokens, accepted } = acceptDraft(draft, pickAt, final);
    for (const token of tokens) {
      all.push(token);
      streamer.put([[token]]);
    }
    drafts.record(draft.length, accepted, tokens.length);
    const last = all.at(-1);
    done = eos.has(Number(last)) || all.length - promptLength >= maxNew || stopper.interrupted;
    // The cache holds the fed positions; keep those of tokens that stay (the last emitted token is fed next).
    const keep = all.length - 1;
    if (cached > keep) {
      if (kv) kv.truncate(keep);
      else if (!cropCache(pkv, keep)) throw new Error("prompt lookup: the KV cache could not be cut back");
      cached = keep;
    }
    if (done) break;
    draft = drafts.draft(all, maxNew - (all.length - promptLength) - 1);
    feed = [last, ...draft];
  }
  streamer.end();
  const generation = {
    ...s,
    do_sample: s.temperature > 0,
    max_new_tokens: maxNew,
    ...(minNew ? { min_new_tokens: minNew } : {}),
    prompt_lookup: true,
    tokens_per_pass: Number(drafts.tokensPerPass().toFixed(2)),
  };
  return {
    output: { sequences: { data: BigInt64Array.from(all) }, past_key_values: pkv },
    ...marks,
    interrupted: stopper.interrupted,
    generation,
  };
}

/** The DynamicCache after a pass: the pass' present.* outputs as past_key_values.* (CPU tensors: nothing to free). */
function presentCache(outputs, previous) {
  const entries = {};
  for (const [name, tensor] of Object.entries(outputs)) {
    if (name.startsWith("present")) entries[name.replace("present", "past_key_values")] = tensor;
  }
  if (previous) {
    previous.update(entries);
    return previous;
  }
  return new DynamicCache(entries);
}
