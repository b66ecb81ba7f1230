// @ts-check
// The contracts the browser shares with Python, written once per language: here and in edge_contracts.py
// (tests/unit/test_contracts.py runs this module in Node and checks that the two agree). No DOM, no imports:
// it runs in the page, the workers and Node alike.

/** The model the page selects first, the pipeline builds offline, and the tests and the benchmark use. */
export const DEFAULT_MODEL = "smollm2-135m";

/** One Cache Storage cache per model revision: MODEL_CACHE_PREFIX + "<id>-<revision>" (cache.js). */
export const MODEL_CACHE_PREFIX = "edge-chat-model-";

export const REVISION_HEX_DIGITS = 12;

/**
 * The runtimes a dtype can run on (the manifest's dtypes[d].runtime, absent for ONNX; the metrics' `runtime`):
 * ONNX Runtime Web (Transformers.js) for ONNX graphs, llama.cpp (wllama) for a GGUF.
 */
export const ONNX_RUNTIME = "onnxruntime-web";
export const LLAMA_CPP = "llama.cpp";
export const RUNTIMES = Object.freeze([ONNX_RUNTIME, LLAMA_CPP]);

/** The one metrics schema of every generation (docs/architecture.md): the UI, the tests and the benchmark. */
export const METRIC_NUMBERS = Object.freeze([
  "load_s",
  "ttft_s",
  "prefill_tokens_per_s",
  "decode_tokens_per_s",
  "prompt_tokens",
  "new_tokens",
]);
export const METRIC_TEXTS = Object.freeze(["device", "dtype", "runtime", "model", "revision"]);
export const METRICS = Object.freeze([...METRIC_NUMBERS, ...METRIC_TEXTS]);
/** What a benchmark run adds per row, beyond the metrics (posted by /bench, stored by app/bench_results.py). */
export const BENCH_NUMBERS = Object.freeze(["warm_load_s", "turn2_ttft_s", "turn2_ttft_no_reuse_s", "peak_memory_bytes", "threads"]);
export const BENCH_TEXTS = Object.freeze(["prompt", "error"]);

/**
 * The KV cache the manifest's memory_bytes budgets for (model_prep/layout.py KV_CONTEXT_FOR_MEMORY). A longer context
 * grows the cache past what the memory warning assumed, so the page stops there unless the person raises the limit,
 * and llama.cpp allocates no more at load.
 */
export const KV_BUDGET_TOKENS = 4096;

/**
 * The context limit the page applies by default: the model's own, capped at the memory budget.
 * @param {number|null|undefined} contextLength
 */
export function contextCap(contextLength) {
  return Number.isFinite(contextLength) && Number(contextLength) > 0
    ? Math.min(Number(contextLength), KV_BUDGET_TOKENS)
    : KV_BUDGET_TOKENS;
}

export const modelCacheName = (id, revision) => `${MODEL_CACHE_PREFIX}${id}-${revision}`;

/** {id, revision} from a cache name, or null for caches that are not model caches. */
export function parseModelCacheName(name) {
  if (!name.startsWith(MODEL_CACHE_PREFIX)) return null;
  const m = new RegExp(`^(.+)-([0-9a-f]{${REVISION_HEX_DIGITS}})$`).exec(name.slice(MODEL_CACHE_PREFIX.length));
  return m ? { id: m[1], revision: m[2] } : null;
}

const utf8 = new TextEncoder();

/** Byte order of the UTF-8 encodings = code point order, which is how Python sorts strings (UTF-16 order is not). */
function compareUtf8(a, b) {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * A manifest's revision from its files ([{path, sha256}]): the first 12 hex digits of sha256 over the sorted
 * `path\0sha256\n` lines. Resolves to a string (crypto.subtle is async).
 */
export async function revisionOf(files) {
  const lines = files.map((f) => `${f.path}\0${f.sha256}\n`).sort(compareUtf8);
  const digest = await crypto.subtle.digest("SHA-256", utf8.encode(lines.join("")));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return hex.slice(0, REVISION_HEX_DIGITS);
}

/**
 * A model folder's manifest.json (schema 1), declared once per language: edge_contracts.Manifest in Python, which
 * the pipeline writes and app/catalog.py checks (tests/unit/test_contracts.py holds the field names equal).
 * @typedef {Object} Manifest
 * @property {1} schema
 * @property {string} id
 * @property {string} name
 * @property {string} revision  revisionOf(files)
 * @property {string} architecture
 * @property {string} model_type
 * @property {string} task
 * @property {ManifestCapabilities} capabilities
 * @property {number} context_length  positive; at most the model config's max_position_embeddings
 * @property {string} created
 * @property {Record<string, ManifestDtype>} dtypes
 * @property {Record<string, string>} devices  device class → a key of dtypes
 * @property {Record<string, number>} memory_bytes
 * @property {ManifestFile[]} files
 * @property {string} [source]  public forms only ("local" otherwise), as /api/models/{id} serves it
 * @property {string} [recipe]
 */
/** @typedef {{text: boolean, image: boolean}} ManifestCapabilities */
/**
 * One variant; a GGUF names its runtime and the KV cache type it was verified with.
 * @typedef {{files: string[], bytes: number, runtime?: "onnxruntime-web"|"llama.cpp", kv_cache?: "f16"|"q8_0"}} ManifestDtype
 */
/** @typedef {{path: string, bytes: number, sha256: string}} ManifestFile */

/**
 * The field names of each manifest record, for test_contracts.py: tsc holds every list to its typedef (a key
 * missing or not declared there fails the check), and the test holds them to edge_contracts.Manifest.
 * @type {{manifest: Record<keyof Manifest, true>, capabilities: Record<keyof ManifestCapabilities, true>,
 *   dtype: Record<keyof ManifestDtype, true>, file: Record<keyof ManifestFile, true>}}
 */
export const MANIFEST_FIELDS = {
  manifest: {
    schema: true, id: true, name: true, revision: true, architecture: true, model_type: true, task: true,
    capabilities: true, context_length: true, created: true, dtypes: true, devices: true, memory_bytes: true,
    files: true, source: true, recipe: true,
  },
  capabilities: { text: true, image: true },
  dtype: { files: true, bytes: true, runtime: true, kv_cache: true },
  file: { path: true, bytes: true, sha256: true },
};
