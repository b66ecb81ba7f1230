// sampling.js: settings checked with one set of rules, mapped to Transformers.js's generate() and to llama.cpp.
// (Which tokens top_k / top_p / min_p keep is compared with HF transformers' warpers in
// tests/unit/test_web_sampling.py: its reference is PyTorch.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { checkSampling, generateArguments, GREEDY, llamaCppSampling } from "../src/sampling.js";

const codeOf = (fn) => {
  try {
    fn();
    return null;
  } catch (err) {
    return err.code;
  }
};

test("sampling settings are checked", () => {
  const bad = [{ temperature: -1 }, { temperature: "hot" }, { top_p: 0 }, { top_k: 2.5 }, { min_p: 1 }, { repetition_penalty: 0.5 }, { seed: -3 }];
  assert.deepEqual(bad.map((s) => codeOf(() => checkSampling(s))), bad.map(() => "bad-setting"));
  const greedyDefaults = { temperature: 0, top_p: 1, top_k: 0, min_p: 0, repetition_penalty: 1 };
  assert.deepEqual(checkSampling(undefined), greedyDefaults);
  assert.deepEqual({ ...GREEDY }, greedyDefaults);

  const greedy = generateArguments({ temperature: 0, top_p: 0.5, repetition_penalty: 1.3 });
  assert.deepEqual(greedy.kwargs, { do_sample: false, repetition_penalty: 1.3 });
  assert.equal(greedy.echo.do_sample, false);

  const sampled = generateArguments({ temperature: 0.7, top_p: 0.8, top_k: 20, seed: 4 });
  assert.deepEqual(
    { ...sampled.kwargs, logits_processor: sampled.kwargs.logits_processor?.length },
    { do_sample: true, temperature: 0.7, top_k: 20, repetition_penalty: 1, logits_processor: 1 },
  );
  assert.deepEqual(sampled.echo, {
    temperature: 0.7,
    top_p: 0.8,
    top_k: 20,
    min_p: 0,
    repetition_penalty: 1,
    seed: 4,
    do_sample: true,
  });
  // the sampler's own top_k suffices
  assert.equal("logits_processor" in generateArguments({ temperature: 0.7, top_k: 20 }).kwargs, false);
});

test("sampling settings map to llama.cpp with HF's meaning", () => {
  const order = ["penalties", "temperature", "top_k", "top_p", "min_p"]; // HF's: the temperature before the filters
  // absent: greedy (temperature 0 keeps only the best token in llama.cpp too), no penalty
  const absent = llamaCppSampling(undefined, 4096);
  assert.deepEqual(absent.params, {
    temperature: 0,
    top_k: 0,
    top_p: 1,
    min_p: 0,
    repeat_penalty: 1,
    repeat_last_n: 4096,
    samplers: order,
  });
  assert.equal(absent.echo.do_sample, false);
  // greedy with a penalty: over the whole context (its n_ctx), as HF penalises every prompt and reply id
  const penalty = llamaCppSampling({ temperature: 0, top_p: 0.9, repetition_penalty: 1.3 }, 4096);
  assert.equal(penalty.params.temperature, 0);
  assert.equal(penalty.params.repeat_penalty, 1.3);
  assert.equal(penalty.params.repeat_last_n, 4096);
  const sampled = llamaCppSampling({ temperature: 0.7, top_p: 0.9, top_k: 40, min_p: 0.05, repetition_penalty: 1.1, seed: 7 }, 512);
  assert.deepEqual(sampled.params, {
    temperature: 0.7,
    top_k: 40,
    top_p: 0.9,
    min_p: 0.05,
    repeat_penalty: 1.1,
    repeat_last_n: 512,
    samplers: order,
    seed: 7,
  });
  assert.deepEqual(sampled.echo, {
    temperature: 0.7,
    top_p: 0.9,
    top_k: 40,
    min_p: 0.05,
    repetition_penalty: 1.1,
    seed: 7,
    do_sample: true,
  });
  // the same checks as the ONNX path: nothing out of range reaches llama.cpp
  assert.equal(codeOf(() => llamaCppSampling({ temperature: 5 }, 4096)), "bad-setting");
  // no penalty window without the context it runs with
  assert.equal(codeOf(() => llamaCppSampling({}, undefined)), "bad-request");
});
