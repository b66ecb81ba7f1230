// The benchmark's peer: wllama (llama.cpp in WASM) running the GGUF the default model was exported from,
// measured like bench.js measures Edge Chat (same prompts, same new-token count, EOS ignored, greedy).
// Bench-only: bench/browser.py serves the GGUF at ?gguf= (same origin) and reads body[data-results].
// Query: ?gguf=<same-origin path> ?threads=<n> ?new_tokens=128 ?prompts=short,long512 ?model=<id>

import { BENCH_PROMPTS } from "./bench-prompts.js";
import { Wllama } from "/static/vendor/wllama/index.js";

const params = new URLSearchParams(location.search);
const positiveInt = (v) => (/^\d+$/.test(v ?? "") && Number(v) > 0 ? Number(v) : undefined);
const prompts = { ...BENCH_PROMPTS, ...(globalThis.__benchConfig?.prompts ?? {}) };
const names = (params.get("prompts") ?? "short,long512").split(",").filter((n) => n in prompts);
const newTokens = positiveInt(params.get("new_tokens")) ?? 128;
const threads = positiveInt(params.get("threads"));
const ggufPath = params.get("gguf") ?? "";
const TURN2 = "Now give three keywords for it.";
const status = (text) => {
  document.getElementById("status").textContent = text;
};
const logger = { debug() {}, log() {}, warn: console.warn, error: console.error };

function newWllama() {
  const wasm = new URL("/static/vendor/wllama/wllama.wasm", location.origin).href;
  return new Wllama({ default: wasm }, { logger, suppressNativeLog: true });
}

async function load(wllama, url) {
  const t0 = performance.now();
  await wllama.loadModelFromUrl(url, { n_threads: threads, n_ctx: 2048, n_gpu_layers: 0 });
  return (performance.now() - t0) / 1000;
}

/**
 * One chat completion, streamed, measured as Edge Chat's llama.cpp path measures a turn (web/src/runtime-wllama.js,
 * web/src/turn.js): TTFT at the first token's chunk (the server holds back a byte piece that is not valid UTF-8 on
 * its own, so the first *text* can come much later: random weights do it all the time), the new-token count and the
 * decode time from llama.cpp's own timings.
 */
async function complete(wllama, messages, maxTokens, cachePrompt) {
  const t0 = performance.now();
  let first = 0;
  let last = 0;
  let pieces = 0;
  let text = "";
  let timings = null;
  let usage = null;
  await wllama.createChatCompletion({
    messages,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    cache_prompt: cachePrompt,
    timings_per_token: true,
    stream: true,
    onData: (chunk) => {
      if (!first) first = performance.now();
      if (chunk.timings) timings = chunk.timings;
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        last = performance.now();
        pieces++;
        text += piece;
      }
    },
  });
  const promptTokens = usage?.prompt_tokens ?? (timings ? (timings.cache_n ?? 0) + (timings.prompt_n ?? 0) : 0);
  const count = timings?.predicted_n ?? usage?.completion_tokens ?? pieces;
  const ttft = (first - t0) / 1000;
  const decode = timings?.predicted_ms > 0 ? timings.predicted_ms / 1000 : (last - first) / 1000;
  return {
    text,
    ttft_s: ttft,
    prefill_tokens_per_s: promptTokens / ttft,
    decode_tokens_per_s: count > 1 && decode > 0 ? (count - 1) / decode : null,
    prompt_tokens: promptTokens,
    new_tokens: count,
    llama_timings: timings,
  };
}

async function main() {
  document.body.dataset.state = "running";
  const url = new URL(ggufPath, location.origin).href;
  const base = { runner: "wllama", model: params.get("model") ?? "gguf", device: "wasm", dtype: "gguf" };
  if (threads) base.threads = threads;
  const rows = [];
  let stage = "load";
  let wllama = newWllama();
  try {
    status("loading (cold)…");
    const coldStart = Date.now();
    const coldLoad = await load(wllama, url);
    base.threads = wllama.getNumThreads?.() ?? threads;
    for (const [i, name] of names.entries()) {
      stage = name;
      status(`prompt ${name}…`);
      const messages = [{ role: "user", content: prompts[name] }];
      const last = i === names.length - 1;
      // The last prompt keeps its KV (cache_prompt) for turn 2; it shares only the chat template's system
      // preamble with the previous prompt, so its prefill is practically from scratch too.
      const done = await complete(wllama, messages, newTokens, last);
      const { text, ...metrics } = done;
      const row = { ...base, prompt: name, load_s: coldLoad, ...metrics };
      if (last) {
        stage = `${name} turn 2`;
        const next = [...messages, { role: "assistant", content: text }, { role: "user", content: TURN2 }];
        // cache_prompt: llama.cpp keeps the previous turn's KV and prefills only the new suffix.
        const reuse = await complete(wllama, next, 4, true);
        const scratch = await complete(wllama, next, 4, false);
        row.turn2_ttft_s = reuse.ttft_s;
        row.turn2_ttft_no_reuse_s = scratch.ttft_s;
      }
      rows.push(row);
    }
    for (const row of rows) row.memory_window_ms = [coldStart, Date.now()]; // as in bench.js
    await wllama.exit();
    stage = "warm load";
    status("loading again (warm)…");
    wllama = newWllama();
    const warmLoad = await load(wllama, url);
    for (const row of rows) row.warm_load_s = warmLoad;
    await wllama.exit();
  } catch (err) {
    console.error(err);
    const text = String(err?.message ?? err);
    const category = /memory|oom/i.test(text)
      ? "out-of-memory"
      : /abort|runtimeerror/i.test(text)
        ? "wasm-abort"
        : err?.type === "download_error" || /fetch|download/i.test(text)
          ? "download"
          : "error";
    rows.push({ ...base, prompt: stage, error: `${category}: ${text}`.slice(0, 390) });
  }
  document.body.dataset.results = JSON.stringify(rows);
  document.body.dataset.state = rows.some((r) => r.error) ? "failed" : "done";
  status("done");
}

// Gated like bench.js: bench/browser.py starts the run once it has measured the idle browser.
if (globalThis.__benchConfig?.gated) globalThis.__benchStart = main;
else main();
