// thinking.js: a Qwen3 reply split into thinking and answer, complete or still streaming.
import assert from "node:assert/strict";
import { test } from "node:test";

import { splitThinking } from "../src/thinking.js";

// [reply, thinking, answer]: a Qwen3 reply; a reply that never thinks (its "<" and ">" are not tags); a reply still
// thinking.
const STREAMING = [
  ["<think>\nplan the answer\n</think>\n\nParis is the capital.", "plan the answer", "Paris is the capital."],
  ["No thinking here: a < b and c > d.", null, "No thinking here: a < b and c > d."],
  ["<think>\nstill going", "still going", ""],
];
// Split like Qwen3's template once whole, but not monotonic while streaming: thinking whose opening tag was in the
// prompt (Qwen3-2507 templates; it shows as answer until "</think>" arrives: Edge Chat's models open the block
// themselves), and two closing tags (the template keeps only the text after the last).
const FINAL_ONLY = [
  ["reasoning, opened by the prompt</think>\n\nAnswer.", "reasoning, opened by the prompt", "Answer."],
  ["<think>a</think>b</think>\nc", "a", "c"],
];

test("a finished reply splits as Qwen3's template does", () => {
  for (const [raw, thinking, answer] of [...STREAMING, ...FINAL_ONLY]) {
    const got = splitThinking(raw);
    assert.deepEqual([got.thinking, got.answer], [thinking, answer], raw);
  }
});

test("thinking never streams into the answer", () => {
  // Every prefix of each reply, as it would arrive token by token: the answer shown is always a prefix of the final
  // answer (nothing shown is taken back), the thinking shown a prefix of the final thinking, and neither a tag nor a
  // piece of one ever shows.
  for (const [raw, thinking, answer] of STREAMING) {
    for (let i = 0; i <= raw.length; i++) {
      const step = splitThinking(raw.slice(0, i));
      const where = JSON.stringify([raw, step]);
      assert.ok(answer.startsWith(step.answer), where);
      assert.ok(!step.answer.includes("<think") && !step.answer.includes("</th"), where);
      if (step.thinking !== null) {
        assert.ok(thinking !== null && thinking.startsWith(step.thinking.replace(/\n+$/, "")), where);
        assert.ok(!step.thinking.includes("<"), where);
      }
    }
  }
});
