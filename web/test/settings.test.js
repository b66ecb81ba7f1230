// settings.js: a model's sampling defaults from its generation_config.json, and the query-parameter overrides.
import assert from "node:assert/strict";
import { test } from "node:test";

import { samplingDefaults, settingsFromQuery } from "../src/settings.js";

test("sampling defaults follow generation_config.json", () => {
  const qwen3 = {
    do_sample: true,
    temperature: 0.6,
    top_p: 0.95,
    top_k: 20,
    min_p: 0,
    sampling_without_thinking: { temperature: 0.7, top_p: 0.8, top_k: 20, min_p: 0 },
  };
  assert.deepEqual(samplingDefaults(qwen3, { thinking: true }), { temperature: 0.6, top_p: 0.95, top_k: 20, min_p: 0, repetition_penalty: 1 });
  assert.deepEqual(samplingDefaults(qwen3, { thinking: false }), { temperature: 0.7, top_p: 0.8, top_k: 20, min_p: 0, repetition_penalty: 1 });
  // HF GenerationConfig's defaults for what the file leaves out
  assert.deepEqual(samplingDefaults({ do_sample: true, temperature: 0.3 }), {
    temperature: 0.3,
    top_p: 1,
    top_k: 50,
    min_p: 0,
    repetition_penalty: 1,
  });
  assert.equal(samplingDefaults({ eos_token_id: 2 }).temperature, 0);
  assert.equal(samplingDefaults(null).temperature, 0);
  assert.equal(samplingDefaults({ do_sample: false, repetition_penalty: 1.2 }).repetition_penalty, 1.2);
});

test("query parameters override, checked", () => {
  const query = settingsFromQuery(new URLSearchParams("temperature=0&top_k=20&thinking=0&system_prompt=Be+brief&x=1"));
  assert.deepEqual(query, { temperature: 0, top_k: 20, thinking: false, system_prompt: "Be brief" });
  assert.throws(() => settingsFromQuery(new URLSearchParams("temperature=9")), (err) => err.code === "bad-setting");
});
