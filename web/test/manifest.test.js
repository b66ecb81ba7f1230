// manifest.js: the catalog, the artifacts a dtype loads and the load request, one copy for the chat and /bench.
import assert from "node:assert/strict";
import { test } from "node:test";

import { artifactsFor, loadRequest, positiveInt, readCatalog } from "../src/manifest.js";

const MANIFEST = {
  revision: "0123456789ab",
  context_length: 8192,
  files: [
    { path: "config.json", bytes: 10, sha256: "a" },
    { path: "onnx/model.onnx", bytes: 100, sha256: "b" },
    { path: "onnx/model.onnx_data", bytes: 1000, sha256: "c" },
    { path: "onnx/model_q4.onnx", bytes: 50, sha256: "d" },
    { path: "model-q8_0.gguf", bytes: 70, sha256: "e" },
  ],
  dtypes: {
    fp32: { bytes: 1110, files: ["onnx/model.onnx", "onnx/model.onnx_data"] },
    q4: { bytes: 60, files: ["onnx/model_q4.onnx"] },
    "gguf-q8_0": { bytes: 80, files: ["model-q8_0.gguf"], runtime: "llama.cpp" },
  },
};

test("the catalog keeps the models that name an id and a revision", () => {
  const models = [{ id: "a", revision: "r" }, { id: "b" }, null, { revision: "r" }];
  assert.deepEqual(readCatalog(JSON.stringify({ models })), [{ id: "a", revision: "r" }]);
  assert.deepEqual(readCatalog(JSON.stringify(models)), [{ id: "a", revision: "r" }]);
  assert.deepEqual(readCatalog(undefined), []);
  const error = console.error;
  console.error = () => {};
  try {
    assert.deepEqual(readCatalog("{not json"), []);
  } finally {
    console.error = error;
  }
});

test("a dtype loads its own files and the shared ones, never another dtype's", () => {
  const paths = (dtype) => artifactsFor(MANIFEST, dtype).map((f) => f.path);
  assert.deepEqual(paths("q4"), ["config.json", "onnx/model_q4.onnx"]);
  assert.deepEqual(paths("fp32"), ["config.json", "onnx/model.onnx", "onnx/model.onnx_data"]);
  assert.deepEqual(paths("gguf-q8_0"), ["config.json", "model-q8_0.gguf"]);
  assert.deepEqual(artifactsFor(MANIFEST, "q4")[1], { path: "onnx/model_q4.onnx", bytes: 50, sha256: "d" });
});

test("the load request carries what the worker needs, an image model's task and capabilities included", () => {
  const model = { id: "vlm", revision: "0123456789ab", task: "image-text-to-text", capabilities: { text: true, image: true } };
  const request = loadRequest(model, { device: "wasm", dtype: "q4" }, MANIFEST);
  assert.deepEqual(request, {
    type: "load",
    model: { id: "vlm", revision: "0123456789ab" },
    dtype: "q4",
    device: "wasm",
    files: ["onnx/model_q4.onnx"],
    artifacts: artifactsFor(MANIFEST, "q4"),
    manifest: MANIFEST,
    verify: "stamp",
    task: "image-text-to-text",
    capabilities: { text: true, image: true },
  });
  const bench = loadRequest(model, { device: "wasm", dtype: "fp32" }, MANIFEST, {
    threads: 2,
    verify: "full",
    session_options: { intraOpNumThreads: 2 },
  });
  assert.deepEqual([bench.threads, bench.verify, bench.session_options], [2, "full", { intraOpNumThreads: 2 }]);
  // without a manifest (offline, never loaded): no file lists, the worker loads from the server as is
  const bare = loadRequest({ id: "m", revision: "r" }, { device: "wasm", dtype: "q4" }, null);
  assert.deepEqual([bare.files, bare.artifacts, bare.manifest], [undefined, undefined, undefined]);
});

test("query numbers are whole and above 0", () => {
  assert.deepEqual(["2", "0", "-1", "1.5", "x", "", null, undefined].map(positiveInt), [2, undefined, undefined, undefined, undefined, undefined, undefined, undefined]);
});
