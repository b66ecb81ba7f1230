// `node --test web/test/prompt-lookup.test.js`: prompt lookup drafts what it should, keeps only the model's own
// tokens, and a decode loop with it emits exactly plain decoding's tokens, greedy and sampled with the same seed.

import assert from "node:assert/strict";
import { test } from "node:test";
import { acceptDraft, PromptLookup, proposeDraft } from "../src/prompt-lookup.js";
import { checkSampling, pickToken, processRow } from "../src/sampling.js";

const VOCAB = 24;
const EOS = 0;

/** A seeded uniform [0, 1) stream (mulberry32). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A fake model: deterministic logits as a function of the whole prefix. The last token (and the parity of the one
 * before) mostly decides the next, so text runs in short cycles and drafts get accepted, the prefix's length and sum add noise (so a draft is sometimes
 * wrong), and EOS grows likely late.
 */
function fakeLogits(prefix) {
  const n = prefix.length;
  const a = prefix[n - 1] ?? 1;
  const b = prefix[n - 2] ?? 2;
  const sum = prefix.reduce((s, x) => s + x, 0);
  const row = new Float32Array(VOCAB);
  for (let t = 0; t < VOCAB; t++) {
    const h = Math.imul((t + 1) * 2654435761 + a * 40503 + b * 69069 + ((sum * 7 + n) % 13), 2246822519) >>> 0;
    row[t] = (h % 1000) / 400 - 1.2;
  }
  row[((a * 5 + (b % 2)) % (VOCAB - 1)) + 1] += 4;
  row[EOS] = n > 70 ? 3 : -3;
  return row;
}

/** Plain decoding: one pass per token, the sampler's processors and one draw per token. */
function plainDecode(prompt, sampling, seed, maxNew) {
  const s = checkSampling(sampling);
  const random = rng(seed);
  const ids = [...prompt];
  while (ids.length - prompt.length < maxNew) {
    const token = pickToken(processRow(fakeLogits(ids), ids, prompt.length, s), s, random);
    ids.push(token);
    if (token === EOS) break;
  }
  return { tokens: ids.slice(prompt.length), passes: ids.length - prompt.length };
}

/**
 * Decoding with prompt lookup, as a decode loop runs it: a pass feeds the last token and the draft and gets the
 * logits of every position (computed here from the prefix each position sees); acceptDraft picks in order.
 */
function lookupDecode(prompt, sampling, seed, maxNew, options = {}) {
  const s = checkSampling(sampling);
  const random = rng(seed);
  const lookup = new PromptLookup(options);
  const ids = [...prompt];
  const final = (token, emitted) => token === EOS || ids.length - prompt.length + emitted >= maxNew;
  // the prefill's pass gives the first token
  const first = pickToken(processRow(fakeLogits(ids), ids, prompt.length, s), s, random);
  ids.push(first);
  lookup.record(0, 0, 1);
  while (ids.at(-1) !== EOS && ids.length - prompt.length < maxNew) {
    const draft = lookup.draft(ids, maxNew - (ids.length - prompt.length) - 1);
    const rows = draft.length + 1; // what one forward pass over [last, ...draft] returns
    const pick = (i) => {
      assert.ok(i < rows);
      const context = [...ids, ...draft.slice(0, i)];
      return pickToken(processRow(fakeLogits(context), context, prompt.length, s), s, random);
    };
    const { tokens, accepted } = acceptDraft(draft, pick, final);
    ids.push(...tokens);
    lookup.record(draft.length, accepted, tokens.length);
  }
  return { tokens: ids.slice(prompt.length), passes: lookup.passes, lookup };
}

const PROMPTS = [
  [5, 6, 7, 8, 9, 5, 6, 7, 10, 11, 12, 5, 6, 7, 8],
  [3, 4, 3, 4, 3, 4, 13, 14, 15, 16, 13, 14, 15],
  [17, 18, 19, 20, 21, 22, 23, 17, 18, 19],
];
const SAMPLED = { temperature: 0.9, top_p: 0.95, top_k: 12, min_p: 0.02, repetition_penalty: 1.15 };

test("proposeDraft copies what followed the latest earlier match of the longest suffix", () => {
  const ids = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3];
  assert.deepEqual(proposeDraft(ids, { maxDraft: 4, minNgram: 3 }), [7, 8, 5, 1]); // the later "1 2 3" wins
  assert.deepEqual(proposeDraft(ids, { maxDraft: 2, minNgram: 3 }), [7, 8]);
  assert.deepEqual(proposeDraft([4, 5, 7, 1, 2, 9, 6, 1, 2], { maxDraft: 3, minNgram: 3 }), []); // no 3-gram
  assert.deepEqual(proposeDraft([4, 5, 7, 1, 2, 9, 6, 1, 2], { maxDraft: 3, minNgram: 2 }), [9, 6, 1]);
  assert.deepEqual(proposeDraft([4, 5, 6, 1], { maxDraft: 3, minNgram: 1 }), []); // 1 never occurred before
  assert.deepEqual(proposeDraft([1, 2, 3, 1, 2, 3], { maxDraft: 8, minNgram: 3 }), [1, 2, 3]); // runs to the end
  assert.deepEqual(proposeDraft([7n, 8n, 9n, 4n, 7n, 8n, 9n], { maxDraft: 2 }), [4n, 7n]); // bigint ids too
  assert.deepEqual(proposeDraft([1, 2, 3, 1, 2, 3], { maxDraft: 0 }), []);
});

test("acceptDraft keeps drafts while they equal the picks and emits the first differing pick", () => {
  const picks = [5, 6, 42, 99];
  const calls = [];
  const pick = (i) => (calls.push(i), picks[i]);
  assert.deepEqual(acceptDraft([5, 6, 7, 8], pick), { tokens: [5, 6, 42], accepted: 2 });
  assert.deepEqual(calls, [0, 1, 2], "no pick (no random draw) after the first mismatch");
  assert.deepEqual(acceptDraft([5, 6, 42, 99], (i) => [5, 6, 42, 99, 3][i]), { tokens: [5, 6, 42, 99, 3], accepted: 4 });
  assert.deepEqual(acceptDraft([], () => 11), { tokens: [11], accepted: 0 });
  // an end among accepted drafts stops the pass: nothing after EOS or past the token limit is emitted
  assert.deepEqual(acceptDraft([5, 0, 6], (i) => [5, 0, 6, 7][i], (t) => t === 0), { tokens: [5, 0], accepted: 2 });
  assert.deepEqual(acceptDraft([5, 6, 7], (i) => [5, 6, 7, 8][i], (_, n) => n >= 2), { tokens: [5, 6], accepted: 2 });
});

test("the switch stops drafting after drafts keep failing, and drafts again after the pause", () => {
  const lookup = new PromptLookup({ window: 2, minRate: 0.5, pause: 3, minNgram: 1 });
  const ids = [1, 2, 1, 2];
  assert.deepEqual(lookup.draft(ids), [1, 2]);
  lookup.record(2, 0, 1);
  lookup.record(2, 1, 2); // 1 of 4 kept: below 0.5
  assert.deepEqual(lookup.draft(ids), [], "paused");
  lookup.record(0, 0, 1);
  lookup.record(0, 0, 1);
  assert.deepEqual(lookup.draft(ids), []);
  lookup.record(0, 0, 1); // 3 tokens emitted while paused
  assert.deepEqual(lookup.draft(ids), [1, 2]);
  assert.equal(lookup.tokensPerPass(), 6 / 5);
  const eager = new PromptLookup({ adaptive: false, window: 1, minRate: 1, minNgram: 1 });
  eager.record(4, 0, 1);
  assert.deepEqual(eager.draft(ids), [1, 2], "not adaptive: never pauses");
  assert.throws(() => new PromptLookup({ maxDraft: 1.5 }), RangeError);
  assert.throws(() => new PromptLookup({ minNgram: 4, maxNgram: 3 }), RangeError);
});

test("greedy: tokens equal plain decoding's, in fewer passes", () => {
  let plainPasses = 0;
  let lookupPasses = 0;
  for (const prompt of PROMPTS) {
    for (const minNgram of [1, 3]) {
      const plain = plainDecode(prompt, { temperature: 0, repetition_penalty: 1.1 }, 0, 60);
      const fast = lookupDecode(prompt, { temperature: 0, repetition_penalty: 1.1 }, 0, 60, { minNgram, adaptive: false });
      assert.deepEqual(fast.tokens, plain.tokens);
      plainPasses += plain.passes;
      lookupPasses += fast.passes;
    }
  }
  assert.ok(lookupPasses < plainPasses, `lookup took ${lookupPasses} passes, plain ${plainPasses}: nothing accepted`);
});

test("sampled with a seed: the same tokens as plain sampled decoding with the same seed stream", () => {
  let plainPasses = 0;
  let lookupPasses = 0;
  let differ = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const prompt = PROMPTS[seed % PROMPTS.length];
    const plain = plainDecode(prompt, { ...SAMPLED, seed }, seed, 80);
    for (const options of [{ minNgram: 1, maxDraft: 8, adaptive: false }, {}]) {
      const fast = lookupDecode(prompt, { ...SAMPLED, seed }, seed, 80, options);
      assert.deepEqual(fast.tokens, plain.tokens, `seed ${seed} ${JSON.stringify(options)}`);
      lookupPasses += fast.passes;
      plainPasses += plain.passes;
    }
    if (plainDecode(prompt, SAMPLED, seed + 1000, 80).tokens.join() !== plain.tokens.join()) differ++;
  }
  assert.ok(lookupPasses < plainPasses, `lookup took ${lookupPasses} passes, plain ${plainPasses}: nothing accepted`);
  assert.ok(differ > 30, "the seed barely changes the output: the check above would prove little");
});

test("the check catches a verifier that draws for every drafted position", () => {
  // A common mistake: sample all k + 1 positions up front, then compare. The stream then advances once per drafted
  // token, not per emitted one, and the output leaves plain decoding's.
  const seed = 7;
  const prompt = PROMPTS[0];
  const plain = plainDecode(prompt, SAMPLED, seed, 80);
  const s = checkSampling(SAMPLED);
  const random = rng(seed);
  const lookup = new PromptLookup({ minNgram: 1, adaptive: false });
  const ids = [...prompt];
  ids.push(pickToken(processRow(fakeLogits(ids), ids, prompt.length, s), s, random));
  while (ids.at(-1) !== EOS && ids.length - prompt.length < 80) {
    const draft = lookup.draft(ids, 80 - (ids.length - prompt.length) - 1);
    const picks = Array.from({ length: draft.length + 1 }, (_, i) => {
      const context = [...ids, ...draft.slice(0, i)];
      return pickToken(processRow(fakeLogits(context), context, prompt.length, s), s, random);
    });
    const { tokens } = acceptDraft(draft, (i) => picks[i], (t) => t === EOS);
    ids.push(...tokens);
  }
  assert.notDeepEqual(ids.slice(prompt.length, prompt.length + 80), plain.tokens);
});
