// sampling.js: settings checked with one set of rules, mapped to Transformers.js's generate() and to llama.cpp.
// (Which tokens top_k / top_p / min_p keep is compared with HF transformers' warpers in
// tests/unit/test_web_sampling.py: its reference is PyTorch.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { checkSampling, generateArguments, GREEDY, LLAMA_CPP_PENALTY_LAST_N, llamaCppSampling } from "../src/sampling.js";

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

  // The penalty is ours (the reply's ids only): Transformers.js' own, over the prompt too, is off.
  const greedy = generateArguments({ temperature: 0, top_p: 0.5, repetition_penalty: 1.3 });
  assert.deepEqual(
    { ...greedy.kwargs, logits_processor: greedy.kwargs.logits_processor?.length },
    { do_sample: false, repetition_penalty: 1, logits_processor: 1 },
  );
  assert.equal(greedy.echo.do_sample, false);
  assert.equal(greedy.echo.repetition_penalty, 1.3);
  assert.deepEqual(generateArguments({ temperature: 0 }).kwargs, { do_sample: false, repetition_penalty: 1 });

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
    repeat_last_n: LLAMA_CPP_PENALTY_LAST_N,
    samplers: order,
  });
  assert.equal(absent.echo.do_sample, false);
  // greedy with a penalty: over llama.cpp's window of the latest tokens, not the whole context (sampling.js)
  const penalty = llamaCppSampling({ temperature: 0, top_p: 0.9, repetition_penalty: 1.3 }, 4096);
  assert.equal(penalty.params.temperature, 0);
  assert.equal(penalty.params.repeat_penalty, 1.3);
  assert.equal(penalty.params.repeat_last_n, LLAMA_CPP_PENALTY_LAST_N);
  assert.ok(LLAMA_CPP_PENALTY_LAST_N < 4096);
  assert.equal(llamaCppSampling({ repetition_penalty: 1.3 }, 32).params.repeat_last_n, 32); // never past n_ctx
  const sampled = llamaCppSampling({ temperature: 0.7, top_p: 0.9, top_k: 40, min_p: 0.05, repetition_penalty: 1.1, seed: 7 }, 512);
  assert.deepEqual(sampled.params, {
    temperature: 0.7,
    top_k: 40,
    top_p: 0.9,
    min_p: 0.05,
    repeat_penalty: 1.1,
    repeat_last_n: LLAMA_CPP_PENALTY_LAST_N,
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

test("the repetition penalty counts the reply's ids, never the prompt's", () => {
  // generate() calls its processors first with the prompt's ids, then with one more id per step.
  const [penalty] = generateArguments({ temperature: 0, repetition_penalty: 2 }).kwargs.logits_processor;
  const logits = (values) => ({ dims: [1, values.length], data: Float32Array.from(values) });
  const first = penalty([[1n, 2n, 3n]], logits([4, 4, 4, -4, 4]));
  assert.deepEqual(Array.from(first.data), [4, 4, 4, -4, 4], "the prompt's ids are not penalised");
  const later = penalty([[1n, 2n, 3n, 3n, 4n, 3n]], logits([4, 4, 4, -4, 4]));
  assert.deepEqual(Array.from(later.data), [4, 4, 4, -8, 2], "each reply id once: ÷ above 0, × below");
  const sampled = generateArguments({ temperature: 0.5, top_p: 0.9, repetition_penalty: 2 }).kwargs.logits_processor;
  assert.equal(sampled.length, 2, "the penalty, then the top_p / min_p filter");
});
