// device.js chooseDevice: device and dtype from synthetic capabilities and manifests (no browser).
import assert from "node:assert/strict";
import { test } from "node:test";

import { chooseDevice, defaultWasmThreads } from "../src/device.js";

const FULL = {
  dtypes: { fp32: 652_000_000, q4: 198_000_000, q4f16: 133_000_000 },
  devices: { "webgpu-f16": "q4f16", webgpu: "q4", wasm: "fp32" },
};
const GPU_F16 = { webgpu: true, f16: true, adapter: { vendor: "acme", architecture: "rdna3" } };
const SWIFTSHADER = { vendor: "google", architecture: "swiftshader", isFallbackAdapter: true };
const GPU = { webgpu: true, f16: false, adapter: SWIFTSHADER };
const NO_GPU = { webgpu: false, f16: false, error: "navigator.gpu is missing" };

/** chooseDevice's decision, or {error, message, name} of what it threw. */
function choose(caps, manifest, forced) {
  try {
    return chooseDevice(caps, manifest, forced);
  } catch (err) {
    return { error: err.code, message: err.message, name: err.name };
  }
}

test("WebGPU with f16 picks the f16 variant", () => {
  const choice = choose(GPU_F16, FULL);
  assert.deepEqual([choice.device, choice.dtype], ["webgpu", "q4f16"]);
  assert.ok(choice.reason.includes("shader-f16") && choice.reason.includes("q4f16"));
});

test("WebGPU without f16 picks q4", () => {
  const choice = choose(GPU, FULL);
  assert.deepEqual([choice.device, choice.dtype], ["webgpu", "q4"]);
  assert.ok(choice.reason.includes("lacks shader-f16"));
  assert.ok(choice.reason.includes("swiftshader") && choice.reason.includes("fallback"));
});

test("no WebGPU picks WASM", () => {
  const choice = choose(NO_GPU, FULL);
  assert.deepEqual([choice.device, choice.dtype], ["wasm", "fp32"]);
  assert.ok(choice.reason.includes("WebGPU is not available") && choice.reason.includes("navigator.gpu is missing"));
});

test("missing capabilities mean WASM", () => {
  assert.equal(choose(null, FULL).device, "wasm");
});

const FALLBACKS = [
  // no webgpu-f16 entry: an f16 GPU uses the plain webgpu variant
  [GPU_F16, { dtypes: FULL.dtypes, devices: { webgpu: "q4", wasm: "fp32" } }, ["webgpu", "q4"]],
  // no webgpu entry, GPU without f16: never an fp16 graph, the best non-f16 dtype instead
  [GPU, { dtypes: { q4f16: 1, fp32: 1 }, devices: { "webgpu-f16": "q4f16", wasm: "fp32" } }, ["webgpu", "fp32"]],
  // a manifest that maps the no-f16 class to an f16 dtype is not trusted blindly
  [GPU, { dtypes: { q4f16: 1, q4: 1 }, devices: { webgpu: "q4f16" } }, ["webgpu", "q4"]],
  // the mapped dtype is not among the manifest's dtypes
  [GPU_F16, { dtypes: { q4: 1, fp32: 1 }, devices: { "webgpu-f16": "q4f16" } }, ["webgpu", "q4"]],
  // no devices map at all
  [NO_GPU, { dtypes: { q8: 1, q4: 1 } }, ["wasm", "q8"]],
  [GPU_F16, { dtypes: { fp32: 1, q4f16: 1 } }, ["webgpu", "q4f16"]],
];

for (const [i, [caps, manifest, expected]] of FALLBACKS.entries()) {
  test(`missing manifest entries fall back (${i})`, () => {
    const choice = choose(caps, manifest);
    assert.deepEqual([choice.device, choice.dtype], expected, JSON.stringify(choice));
    assert.ok(choice.reason.includes("manifest"));
  });
}

test("no usable variant is a typed error", () => {
  assert.equal(choose(NO_GPU, { dtypes: {}, devices: {} }).error, "no-variant");
  assert.equal(choose(GPU, { dtypes: { q4f16: 1 }, devices: { webgpu: "q4f16" } }).error, "no-variant");
});

test("forced device and dtype", () => {
  let choice = choose(GPU_F16, FULL, { device: "wasm" });
  assert.deepEqual([choice.device, choice.dtype], ["wasm", "fp32"]);
  assert.ok(choice.reason.includes("forced"));
  choice = choose(GPU_F16, FULL, { device: "webgpu", dtype: "q4" });
  assert.deepEqual([choice.device, choice.dtype], ["webgpu", "q4"]);
  assert.equal(choose(NO_GPU, FULL, { device: "webgpu" }).error, "no-webgpu");
  assert.equal(choose(GPU, FULL, { dtype: "q4f16" }).error, "no-f16");
  assert.equal(choose(NO_GPU, FULL, { dtype: "q8" }).error, "no-variant");
  assert.equal(choose(NO_GPU, FULL, { device: "cuda" }).error, "no-variant");
});

const WITH_GGUF = {
  dtypes: { ...FULL.dtypes, "gguf-q4_1": 98_000_000 },
  devices: { "webgpu-f16": "q4f16", webgpu: "q4", wasm: "gguf-q4_1" },
};

test("WASM runs the GGUF on llama.cpp", () => {
  let choice = choose(NO_GPU, WITH_GGUF);
  assert.deepEqual([choice.device, choice.dtype, choice.runtime], ["wasm", "gguf-q4_1", "llama.cpp"]);
  assert.ok(choice.reason.includes("llama.cpp") && choice.reason.includes("wllama"));
  // GPUs keep the ONNX graphs, and their reason names ONNX Runtime Web
  choice = choose(GPU_F16, WITH_GGUF);
  assert.deepEqual([choice.device, choice.dtype, choice.runtime], ["webgpu", "q4f16", "onnxruntime-web"]);
  assert.ok(!choice.reason.includes("llama.cpp"));
  // ?dtype=fp32 on the CPU: the ONNX graph on ONNX Runtime Web (what the benchmark compares)
  choice = choose(NO_GPU, WITH_GGUF, { dtype: "fp32" });
  assert.deepEqual([choice.device, choice.runtime], ["wasm", "onnxruntime-web"]);
});

test("a forced GGUF runs on the CPU", () => {
  const choice = choose(GPU_F16, WITH_GGUF, { dtype: "gguf-q4_1" });
  assert.deepEqual([choice.device, choice.dtype, choice.runtime], ["wasm", "gguf-q4_1", "llama.cpp"]);
  assert.equal(choose(GPU_F16, WITH_GGUF, { device: "webgpu", dtype: "gguf-q4_1" }).error, "no-variant");
  // a manifest entry may name its runtime instead of the gguf- prefix
  const named = { dtypes: { cpu4: { bytes: 1, runtime: "llama.cpp" } }, devices: { wasm: "cpu4" } };
  assert.equal(choose(NO_GPU, named).runtime, "llama.cpp");
  // a GPU never picks a GGUF, even where a manifest maps one to it: the best ONNX graph instead
  const odd = { dtypes: { q4: 1, "gguf-q4_1": 1 }, devices: { webgpu: "gguf-q4_1", "webgpu-f16": "gguf-q4_1" } };
  assert.deepEqual([choose(GPU_F16, odd).dtype, choose(GPU, odd).dtype], ["q4", "q4"]);
});

test("ONNX Runtime Web's default WASM thread count", () => {
  // threads need SharedArrayBuffer, which needs cross-origin isolation; then half the cores, at most 4
  assert.equal(defaultWasmThreads({ crossOriginIsolated: false, hardwareConcurrency: 16 }), 1);
  assert.deepEqual(
    [1, 2, 3, 7, 8, 16].map((hardwareConcurrency) => defaultWasmThreads({ crossOriginIsolated: true, hardwareConcurrency })),
    [1, 1, 2, 4, 4, 4],
  );
  assert.equal(defaultWasmThreads({ crossOriginIsolated: true }), 1);
  assert.equal(defaultWasmThreads(), 1);
});
