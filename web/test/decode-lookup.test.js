// `node --import ./scripts/node-vendor.mjs --test test/decode-lookup.test.js` (from web/): the decode loop with prompt
// lookup emits exactly the tokens it emits without drafts, greedy and sampled with a seed, with a repetition penalty
// and min_new_tokens, on a fake model whose logits depend on the whole prefix and whose cache is cut back by length.
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeLookupTurn } from "../src/decode-lookup.js";

const VOCAB = 24;
const EOS = 0;

/** Logits of the next token after `prefix`: mostly the last token's successor, so text repeats and drafts hit. */
function fakeRow(prefix) {
  const n = prefix.length;
  const a = Number(prefix[n - 1] ?? 1n);
  const b = Number(prefix[n - 2] ?? 2n);
  const sum = prefix.reduce((x, t) => x + Number(t), 0);
  const row = new Float32Array(VOCAB);
  for (let t = 0; t < VOCAB; t++) {
    const h = Math.imul((t + 1) * 2654435761 + a * 40503 + b * 69069 + ((sum * 7 + n) % 13), 2246822519) >>> 0;
    row[t] = (h % 1000) / 400 - 1.2;
  }
  row[((a * 5 + (b % 2)) % (VOCAB - 1)) + 1] += 4;
  row[EOS] = n > 70 ? 3 : -3;
  return row;
}

/** A model on a static-cache stand-in: forward feeds the tokens after the cache's `length` and returns [1, k, V]. */
function fakeModel() {
  const kv = {
    ids: [],
    length: 0,
    truncate(n) {
      kv.length = Math.min(kv.length, n);
      kv.ids.length = kv.length;
    },
  };
  let passes = 0;
  const model = {
    generation_config: { eos_token_id: EOS },
    async forward({ input_ids, attention_mask }) {
      passes++;
      const feed = Array.from(input_ids.data);
      assert.equal(attention_mask.dims[1], kv.length + feed.length, "the mask covers the cache and the fed tokens");
      const data = new Float32Array(feed.length * VOCAB);
      for (let i = 0; i < feed.length; i++) {
        kv.ids.push(feed[i]);
        data.set(fakeRow(kv.ids), i * VOCAB);
      }
      kv.length = kv.ids.length;
      return { logits: { type: "float32", dims: [1, feed.length, VOCAB], data } };
    },
  };
  return { model, kv, passes: () => passes };
}

const tokenizer = { decode: (ids) => ids.map(String).join(" "), all_special_ids: [EOS] };
const stopper = { interrupted: false, reset() {} };

async function decode(prompt, sampling, lookup, min_new_tokens) {
  const { model, kv, passes } = fakeModel();
  const options = { max_new_tokens: 60, ...(min_new_tokens ? { min_new_tokens } : {}), sampling };
  const tensor = (type, data, dims) => ({ type, data, dims });
  const turn = await decodeLookupTurn({ model, tokenizer, ids: prompt, kv, options, stopper, reply: () => {}, lookup, tensor });
  return { tokens: Array.from(turn.output.sequences.data).slice(prompt.length), passes: passes(), turn, kv };
}

const PROMPTS = [
  [5n, 6n, 7n, 8n, 9n, 5n, 6n, 7n, 10n, 11n, 12n, 5n, 6n, 7n, 8n],
  [3n, 4n, 3n, 4n, 3n, 4n, 13n, 14n, 15n, 16n, 13n, 14n, 15n],
  // the model's own continuation of [1, 2] in the prompt: copied into the reply, new to it, drafts k at a time
  [1n, 2n, 12n, 15n, 7n, 14n, 3n, 16n, 13n, 20n, 10n, 5n, 3n, 17n, 18n, 23n, 9n, 1n, 2n],
];

test("with and without drafts the loop emits the same tokens, in fewer passes with them", async () => {
  let plainPasses = 0;
  let lookupPasses = 0;
  for (const [k, prompt] of PROMPTS.entries()) {
    for (const sampling of [
      { temperature: 0, repetition_penalty: 1.3 },
      { temperature: 0, repetition_penalty: 2 },
      { temperature: 0.9, top_p: 0.95, top_k: 12, repetition_penalty: 1.3, seed: 3 + k },
      { temperature: 0.7, min_p: 0.05, repetition_penalty: 1.15, seed: 11 + k },
    ]) {
      for (const minNew of [0, 50]) {
        const plain = await decode(prompt, sampling, { maxDraft: 0 }, minNew);
        const fast = await decode(prompt, sampling, { minNgram: 1, adaptive: false }, minNew);
        assert.deepEqual(fast.tokens, plain.tokens, `${JSON.stringify(sampling)} min_new_tokens ${minNew}`);
        assert.equal(fast.turn.generation.prompt_lookup, true);
        assert.equal(fast.kv.length, prompt.length + fast.tokens.length - 1, "the cache holds all but the last token");
        if (minNew) assert.ok(!fast.tokens.slice(0, minNew - 1).includes(BigInt(EOS)));
        plainPasses += plain.passes;
        lookupPasses += fast.passes;
      }
    }
  }
  assert.ok(lookupPasses < plainPasses, `lookup took ${lookupPasses} passes, plain ${plainPasses}: nothing accepted`);
});
