// Prompt lookup: draft the next tokens by copying what followed the latest few tokens the last time they occurred in
// the conversation (prompt + reply), and let one forward pass check the drafts. Pure (no runtime import): the decode
// loop owns the model; this module owns what to draft, which drafted tokens to keep, and when drafting is not worth
// its cost. bench/lookup_twin.py is its Python twin for counting passes offline: keep the rules in step.
//
// Lossless. A pass fed [last, d1 … dk] returns logits for k + 1 positions; position i's logits are what plain decoding
// would see after accepting d1 … di. The decode loop picks a token at each position with exactly plain decoding's
// rule (argmax at temperature 0; else the same logits processors, in the same order, and one draw from the same
// random stream) and keeps going only while the pick equals the draft. So every emitted token is the token plain
// decoding would have emitted at that point, and the random stream advances once per emitted token, as in plain
// decoding: the sequence is plain decoding's, token for token, for any seed (prompt-lookup.test.js checks it).

/** @typedef {number | bigint} TokenId */

/**
 * k = 4 drafted tokens from a 3-token exact match: a k-token pass costs more than a 1-token one on CPUs (WASM,
 * llama.cpp), and shorter matches draft often and miss often (docs/sampling.md, "Repetition penalty and prompt
 * lookup"). The switch: after `window` drafting passes that kept fewer than `minRate` of their drafted tokens, draft
 * nothing for `pause` emitted tokens, then try again (open chat rarely repeats the prompt; a rewrite soon does).
 */
export const LOOKUP_DEFAULTS = Object.freeze({
  maxDraft: 4,
  maxNgram: 3,
  minNgram: 3,
  adaptive: true,
  window: 4,
  minRate: 0.25,
  pause: 16,
});

/**
 * The draft after `ids`: the tokens that followed the last earlier occurrence of the latest n ids (n from maxNgram
 * down to minNgram), at most maxDraft of them; [] when nothing matches.
 * @param {ArrayLike<TokenId>} ids the context so far (prompt + emitted tokens)
 * @param {{maxDraft?: number, maxNgram?: number, minNgram?: number}} [options]
 * @returns {TokenId[]}
 */
export function proposeDraft(ids, options = {}) {
  const { maxDraft, maxNgram, minNgram } = { ...LOOKUP_DEFAULTS, ...options };
  const size = ids.length;
  if (!(maxDraft > 0)) return [];
  for (let n = maxNgram; n >= minNgram; n--) {
    if (size <= n) continue;
    // The match must end before the context does, so at least one token follows it; the latest match wins (the
    // conversation's most recent use of the phrase predicts best).
    for (let start = size - n - 1; start >= 0; start--) {
      let same = true;
      for (let j = 0; j < n && same; j++) same = ids[start + j] === ids[size - n + j];
      if (same) return Array.from({ length: Math.min(maxDraft, size - start - n) }, (_, j) => ids[start + n + j]);
    }
  }
  return [];
}

/**
 * The tokens one verifying pass emits. `pick(i)` returns the token plain decoding chooses at position i of the pass
 * (after the context and draft[0 … i-1]); it is called in order and only for the positions whose token is emitted, so a
 * sampler draws exactly once per emitted token. Stops after the first pick that differs from the draft (that pick is
 * emitted: it is the model's own token), after the pick for the position past the draft, or after a pick for which
 * `final(token, emittedCount)` is true (end of sequence, token limit): nothing after an end is emitted.
 * @param {TokenId[]} draft
 * @param {(i: number) => TokenId} pick
 * @param {(token: TokenId, emitted: number) => boolean} [final]
 * @returns {{tokens: TokenId[], accepted: number}} emitted tokens (1 … draft.length + 1), and how many were draft
 */
export function acceptDraft(draft, pick, final = () => false) {
  const tokens = [];
  let accepted = 0;
  for (let i = 0; i <= draft.length; i++) {
    const token = pick(i);
    tokens.push(token);
    const kept = i < draft.length && token === draft[i];
    if (kept) accepted++;
    if (!kept || final(token, tokens.length)) break;
  }
  return { tokens, accepted };
}

/**
 * One turn's prompt lookup: drafts (when drafting is on), the adaptive switch, and the counts for the metrics.
 */
export class PromptLookup {
  /** @param {Partial<typeof LOOKUP_DEFAULTS>} [options] */
  constructor(options = {}) {
    this.options = { ...LOOKUP_DEFAULTS, ...options };
    for (const key of ["maxDraft", "maxNgram", "minNgram", "window", "pause"]) {
      if (!Number.isInteger(this.options[key]) || this.options[key] < (key === "maxDraft" ? 0 : 1)) {
        throw new RangeError(`prompt lookup: ${key} must be a whole number (got ${this.options[key]})`);
      }
    }
    if (this.options.minNgram > this.options.maxNgram) throw new RangeError("prompt lookup: minNgram > maxNgram");
    this.recent = []; // [drafted, accepted] of the latest drafting passes
    this.paused = 0; // emitted tokens left before drafting again
    this.passes = 0;
    this.tokens = 0;
    this.drafted = 0;
    this.accepted = 0;
  }

  /**
   * The draft for the next pass after `ids`, at most `room` tokens (the tokens still allowed minus the one the pass
   * emits anyway); [] while the switch has drafting paused.
   * @param {ArrayLike<TokenId>} ids
   * @param {number} room
   */
  draft(ids, room = Infinity) {
    if (this.paused > 0 || room <= 0) return [];
    return proposeDraft(ids, { ...this.options, maxDraft: Math.min(this.options.maxDraft, room) });
  }

  /**
   * Records one forward pass: `drafted` tokens were fed after the last emitted one, `accepted` of them kept, and
   * `emitted` tokens came out (accepted + 1, or fewer at an end). The prefill's pass is recorded with 0 drafted.
   */
  record(drafted, accepted, emitted) {
    this.passes++;
    this.tokens += emitted;
    this.drafted += drafted;
    this.accepted += accepted;
    if (this.paused > 0) {
      this.paused -= emitted;
      return;
    }
    if (!this.options.adaptive || drafted === 0) return;
    this.recent.push([drafted, accepted]);
    if (this.recent.length > this.options.window) this.recent.shift();
    if (this.recent.length === this.options.window) {
      const rate = this.recent.reduce((a, [, k]) => a + k, 0) / this.recent.reduce((a, [d]) => a + d, 0);
      if (rate < this.options.minRate) {
        this.paused = this.options.pause;
        this.recent = [];
      }
    }
  }

  /** Emitted tokens per forward pass (1 without lookup), for the metrics line; null before any pass. */
  tokensPerPass() {
    return this.passes ? this.tokens / this.passes : null;
  }
}
