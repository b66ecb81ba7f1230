#!/usr/bin/env node
// Copies the browser runtime out of node_modules into web/vendor/ (git-ignored), so the page loads every
// byte of code from its own origin: no CDN, works offline.
//
//   cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts && npm run vendor
//
// The ORT wasm files must come from the exact onnxruntime-web version that Transformers.js was built
// against (its JS glue is bundled inside dist/transformers.js), so that version is resolved from
// Transformers.js's own package.json and checked.

import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const webDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const vendorDir = join(webDir, "vendor");

/**
 * Directory of an installed package, looked up the way Node would from `fromDir` (node_modules of that
 * directory and its parents). Not require.resolve: some packages' "exports" hide package.json.
 */
function packageDir(name, fromDir = webDir) {
  const req = createRequire(join(fromDir, "package.json"));
  for (const base of req.resolve.paths(name) ?? []) {
    const dir = join(base, name);
    if (existsSync(join(dir, "package.json"))) return dir;
  }
  throw new Error(`${name} not found from ${fromDir}`);
}

function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

function fail(message) {
  console.error(`vendor: ${message}`);
  process.exit(1);
}

let transformersDir;
try {
  transformersDir = packageDir("@huggingface/transformers");
} catch {
  fail("@huggingface/transformers is not installed: run `ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts` first");
}
const transformersPkg = readJson(join(transformersDir, "package.json"));
const wantedOrt = transformersPkg.dependencies["onnxruntime-web"];
const ortDir = packageDir("onnxruntime-web", transformersDir);
const ortPkg = readJson(join(ortDir, "package.json"));
if (ortPkg.version !== wantedOrt) {
  fail(`Transformers.js ${transformersPkg.version} wants onnxruntime-web ${wantedOrt}, found ${ortPkg.version} in ${ortDir}`);
}
const markedDir = packageDir("marked");
const dompurifyDir = packageDir("dompurify");
// The benchmark's peer (bench-only page): llama.cpp in WASM, self-contained ESM + its one wasm binary.
const wllamaDir = packageDir("@wllama/wllama");

// [source, name in vendor/]
const files = [
  [join(transformersDir, "dist/transformers.min.js"), "transformers.min.js"],
  [join(ortDir, "dist/ort-wasm-simd-threaded.asyncify.mjs"), "ort-wasm-simd-threaded.asyncify.mjs"],
  [join(ortDir, "dist/ort-wasm-simd-threaded.asyncify.wasm"), "ort-wasm-simd-threaded.asyncify.wasm"],
  [join(markedDir, "lib/marked.esm.js"), "marked.esm.js"],
  [join(dompurifyDir, "dist/purify.es.mjs"), "purify.es.mjs"],
  [join(wllamaDir, "esm/index.js"), "wllama/index.js"],
  [join(wllamaDir, "esm/wasm/wllama.wasm"), "wllama/wllama.wasm"],
];
// Workbox for the service worker (web/src/sw.js): workbox-sw loads each module by importScripts from
// /static/vendor/workbox/ (modulePathPrefix), never from Google's CDN.
const WORKBOX_MODULES = ["workbox-core", "workbox-precaching", "workbox-routing", "workbox-strategies", "workbox-range-requests"];
files.push([join(packageDir("workbox-sw"), "build/workbox-sw.js"), "workbox/workbox-sw.js"]);
for (const name of WORKBOX_MODULES) {
  files.push([join(packageDir(name), `build/${name}.prod.js`), `workbox/${name}.prod.js`]);
}
// Streaming sha256 for the model cache's integrity checks (web/src/cache.js).
files.push([join(packageDir("hash-wasm"), "dist/index.esm.min.js"), "hash-wasm.esm.js"]);

rmSync(vendorDir, { recursive: true, force: true });
mkdirSync(join(vendorDir, "workbox"), { recursive: true });
const versions = {
  "@huggingface/transformers": transformersPkg.version,
  "onnxruntime-web": ortPkg.version,
  marked: readJson(join(markedDir, "package.json")).version,
  dompurify: readJson(join(dompurifyDir, "package.json")).version,
  "@wllama/wllama": readJson(join(wllamaDir, "package.json")).version,
  "hash-wasm": readJson(join(packageDir("hash-wasm"), "package.json")).version,
  workbox: readJson(join(packageDir("workbox-sw"), "package.json")).version,
};
let total = 0;
for (const [src, name] of files) {
  mkdirSync(dirname(join(vendorDir, name)), { recursive: true });
  copyFileSync(src, join(vendorDir, name));
  const { size } = statSync(src);
  total += size;
  console.log(`vendor/${name.padEnd(40)} ${(size / 1e6).toFixed(2).padStart(7)} MB`);
}
writeFileSync(join(vendorDir, "versions.json"), `${JSON.stringify(versions, null, 2)}\n`);
console.log(`vendor: ${files.length} files, ${(total / 1e6).toFixed(1)} MB; ${JSON.stringify(versions)}`);
