// Device choice: which backend (WebGPU or WASM) and which dtype variant of a model to load, and why.
//
// `chooseDevice` is pure (capabilities + manifest in, decision out) so it can be tested with synthetic
// inputs; `probeCapabilities` is the only part that touches the browser. Typed errors turn the raw
// messages of WebGPU / ORT / the Cache API into something a person can act on.

/** Error codes the UI understands. */
export const ErrorCode = Object.freeze({
  NO_WEBGPU: "no-webgpu",
  NO_F16: "no-f16",
  DEVICE_LOST: "device-lost",
  OUT_OF_MEMORY: "out-of-memory",
  QUOTA_EXCEEDED: "quota-exceeded",
  NO_VARIANT: "no-variant",
  MODEL_MISSING: "model-missing",
  UNKNOWN: "unknown",
});

const MESSAGES = {
  [ErrorCode.NO_WEBGPU]:
    "This browser has no usable WebGPU adapter. Edge Chat can still run on the CPU (WASM): reload without ?device=webgpu.",
  [ErrorCode.NO_F16]:
    "The GPU does not support 16-bit floats (shader-f16), which this model variant needs. Choose the q4 variant (?dtype=q4) or the CPU (?device=wasm).",
  [ErrorCode.DEVICE_LOST]:
    "The GPU device was lost (driver reset, sleep or another tab using too much GPU memory). Reload the page to start again.",
  [ErrorCode.OUT_OF_MEMORY]:
    "Not enough memory to load or run this model. Close other tabs, pick a smaller model, or try the other device.",
  [ErrorCode.QUOTA_EXCEEDED]:
    "The browser's storage quota is full, so the model cannot be cached. Free some site data (browser settings → site data) and reload.",
  [ErrorCode.NO_VARIANT]: "This model has no variant that can run on this device.",
  [ErrorCode.MODEL_MISSING]:
    "A model file could not be fetched from the server. Check that the server is running and the model folder is complete.",
  [ErrorCode.UNKNOWN]: "Something went wrong.",
};

/** An error with a code from `ErrorCode` and a message meant for a person. */
export class EdgeChatError extends Error {
  constructor(code, message = MESSAGES[code] ?? MESSAGES[ErrorCode.UNKNOWN], detail = "") {
    super(message);
    this.name = "EdgeChatError";
    this.code = code;
    this.detail = detail;
  }
}

/**
 * Maps anything thrown by WebGPU, ORT-web, Transformers.js or the Cache API to {code, message, detail}.
 * `message` is for a person, `detail` is the raw text (for logs and bug reports).
 */
export function describeError(err) {
  if (err instanceof EdgeChatError || (err && err.name === "EdgeChatError" && err.code)) {
    return { code: err.code, message: err.message, detail: err.detail ?? "" };
  }
  const detail = String(err?.message ?? err ?? "");
  const name = String(err?.name ?? "");
  const text = `${name} ${detail}`.toLowerCase();
  let code = ErrorCode.UNKNOWN;
  if (name === "QuotaExceededError" || text.includes("quota")) code = ErrorCode.QUOTA_EXCEEDED;
  else if (text.includes("device lost") || text.includes("device was lost") || text.includes("devicelost"))
    code = ErrorCode.DEVICE_LOST;
  else if (text.includes("does not support fp16") || text.includes("shader-f16") || text.includes("shader_f16"))
    code = ErrorCode.NO_F16;
  else if (
    text.includes("out of memory") ||
    text.includes("outofmemory") ||
    text.includes("cannot allocate") ||
    text.includes("failed to allocate") ||
    text.includes("array buffer allocation failed") ||
    name === "RangeError"
  )
    code = ErrorCode.OUT_OF_MEMORY;
  else if (text.includes("webgpu") && (text.includes("not supported") || text.includes("no adapter") || text.includes("no available backend")))
    code = ErrorCode.NO_WEBGPU;
  else if (text.includes("404") || text.includes("could not locate file") || text.includes("failed to fetch"))
    code = ErrorCode.MODEL_MISSING;
  const message = code === ErrorCode.UNKNOWN ? `Something went wrong: ${detail || name}` : MESSAGES[code];
  return { code, message, detail };
}

/**
 * The runtime that runs `dtype` of this manifest: "llama.cpp" for a GGUF (wllama, CPU only), else
 * "onnxruntime-web". A manifest dtype entry may name it ({runtime}); GGUF dtypes are named "gguf-<type>".
 */
export function runtimeOf(dtype, manifest) {
  const entry = manifest?.dtypes?.[dtype];
  if (entry && typeof entry === "object" && entry.runtime) return entry.runtime;
  return typeof dtype === "string" && dtype.startsWith("gguf") ? "llama.cpp" : "onnxruntime-web";
}

const RUNTIME_WHY = {
  "llama.cpp":
    "It runs on llama.cpp compiled to WebAssembly (wllama): its 4-bit GGUF is the smallest download and needs a " +
    "quarter of the memory of ONNX Runtime Web's fp32 model on a CPU.",
  "onnxruntime-web": "It runs on ONNX Runtime Web.",
};

// dtypes a GPU without shader-f16 cannot run (their graphs carry fp16 tensors).
const F16_DTYPES = new Set(["fp16", "q4f16"]);
// When the manifest's devices map has no entry for a device class, fall back to these, best first.
const FALLBACK = {
  "webgpu-f16": ["q4f16", "q4", "fp16", "q8", "fp32"],
  webgpu: ["q4", "q8", "fp32"],
  wasm: ["fp32", "q8", "q4", "fp16", "q4f16"],
};

// Which entries of the manifest's devices map a device class may use, in order: an f16-capable GPU
// can run whatever the pipeline chose for plain WebGPU.
const MAPPED = { "webgpu-f16": ["webgpu-f16", "webgpu"], webgpu: ["webgpu"], wasm: ["wasm"] };

function pickDtype(deviceClass, manifest, hasF16) {
  const dtypes = manifest?.dtypes ?? {};
  const usable = (d) => typeof d === "string" && d in dtypes && (hasF16 || !F16_DTYPES.has(d));
  for (const key of MAPPED[deviceClass]) {
    const mapped = manifest?.devices?.[key];
    if (usable(mapped)) return { dtype: mapped, mappedBy: key };
  }
  const fallback = FALLBACK[deviceClass].find(usable);
  return fallback ? { dtype: fallback, mappedBy: null } : null;
}

function describeAdapter(capabilities) {
  const a = capabilities?.adapter ?? {};
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ");
  const fallback = a.isFallbackAdapter ? " (software fallback adapter)" : "";
  return `${name || "WebGPU adapter"}${fallback}`;
}

/**
 * Decides device and dtype. Pure: no browser access.
 *
 * @param {{webgpu: boolean, f16: boolean, adapter?: object, error?: string}} capabilities from probeCapabilities()
 * @param {{devices?: Record<string,string>, dtypes?: Record<string, unknown>}} manifest a catalog entry or manifest
 * @param {{device?: string|null, dtype?: string|null}} [forced] overrides (the ?device= / ?dtype= query params)
 * @returns {{device: "webgpu"|"wasm", dtype: string, runtime: string, reason: string}}
 * @throws {EdgeChatError} when the forced device is missing or no variant fits
 */
export function chooseDevice(capabilities, manifest, forced = {}) {
  const caps = capabilities ?? {};
  const hasGpu = Boolean(caps.webgpu);
  const hasF16 = hasGpu && Boolean(caps.f16);
  const forcedDevice = forced?.device || null;
  const forcedDtype = forced?.dtype || null;
  const dtypes = manifest?.dtypes ?? {};

  if (forcedDevice && forcedDevice !== "webgpu" && forcedDevice !== "wasm") {
    throw new EdgeChatError(ErrorCode.NO_VARIANT, `Unknown device "${forcedDevice}": use webgpu or wasm.`);
  }
  if (forcedDevice === "webgpu" && !hasGpu) throw new EdgeChatError(ErrorCode.NO_WEBGPU);

  let device;
  let why;
  if (forcedDevice) {
    device = forcedDevice;
    why = `${forcedDevice === "webgpu" ? "WebGPU" : "WASM (CPU)"} was forced by ?device=${forcedDevice}`;
  } else if (hasGpu) {
    device = "webgpu";
    why = `WebGPU is available (${describeAdapter(caps)})`;
  } else {
    device = "wasm";
    why = `WebGPU is not available${caps.error ? ` (${caps.error})` : ""}, so the model runs on the CPU via WASM`;
  }
  const deviceClass = device === "webgpu" ? (hasF16 ? "webgpu-f16" : "webgpu") : "wasm";

  if (forcedDtype) {
    if (!(forcedDtype in dtypes)) {
      throw new EdgeChatError(
        ErrorCode.NO_VARIANT,
        `This model has no ${forcedDtype} variant (it has: ${Object.keys(dtypes).join(", ") || "none"}).`,
      );
    }
    if (device === "webgpu" && !hasF16 && F16_DTYPES.has(forcedDtype)) throw new EdgeChatError(ErrorCode.NO_F16);
    const runtime = runtimeOf(forcedDtype, manifest);
    if (runtime === "llama.cpp" && device === "webgpu") {
      if (forcedDevice === "webgpu") {
        throw new EdgeChatError(ErrorCode.NO_VARIANT, `${forcedDtype} runs on the CPU (llama.cpp), not on WebGPU.`);
      }
      device = "wasm";
      why = `${forcedDtype} runs on the CPU`;
    }
    return {
      device,
      dtype: forcedDtype,
      runtime,
      reason: `${why}; dtype ${forcedDtype} was forced by ?dtype=${forcedDtype}. ${RUNTIME_WHY[runtime] ?? ""}`.trim(),
    };
  }

  const pick = pickDtype(deviceClass, manifest, device === "webgpu" ? hasF16 : true);
  if (!pick) {
    throw new EdgeChatError(
      ErrorCode.NO_VARIANT,
      `This model has no variant for ${deviceClass} (it has: ${Object.keys(dtypes).join(", ") || "none"}).`,
    );
  }
  let gpuWhy = "";
  if (device === "webgpu") {
    gpuWhy = hasF16
      ? "; the GPU supports shader-f16"
      : "; the GPU lacks shader-f16, so fp16 variants are ruled out";
  }
  let dtypeWhy;
  if (pick.mappedBy === deviceClass) dtypeWhy = `the model's manifest picks ${pick.dtype} for ${deviceClass}`;
  else if (pick.mappedBy)
    dtypeWhy = `the manifest names no ${deviceClass} variant, so its ${pick.mappedBy} choice, ${pick.dtype}, is used`;
  else dtypeWhy = `the manifest names no usable variant for ${deviceClass}, so the best available one, ${pick.dtype}, is used`;
  const runtime = runtimeOf(pick.dtype, manifest);
  return {
    device,
    dtype: pick.dtype,
    runtime,
    reason: `${why}${gpuWhy}; ${dtypeWhy}. ${RUNTIME_WHY[runtime] ?? ""}`.trim(),
  };
}

/**
 * Asks the browser what it can do. Works in a window and in a worker.
 * @returns {Promise<{webgpu: boolean, f16: boolean, adapter: object|null, error: string|null,
 *   crossOriginIsolated: boolean, hardwareConcurrency: number, limits: object|null}>}
 */
export async function probeCapabilities() {
  const caps = {
    webgpu: false,
    f16: false,
    adapter: null,
    error: null,
    limits: null,
    crossOriginIsolated: Boolean(globalThis.crossOriginIsolated),
    hardwareConcurrency: globalThis.navigator?.hardwareConcurrency ?? 1,
  };
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) {
    caps.error = "navigator.gpu is missing";
    return caps;
  }
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) {
      caps.error = "no WebGPU adapter";
      return caps;
    }
    const info = adapter.info ?? {};
    caps.webgpu = true;
    caps.f16 = adapter.features.has("shader-f16");
    caps.adapter = {
      vendor: info.vendor ?? "",
      architecture: info.architecture ?? "",
      description: info.description ?? "",
      isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
      features: [...adapter.features].sort(),
    };
    caps.limits = {
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    };
  } catch (err) {
    caps.error = `requestAdapter failed: ${err?.message ?? err}`;
  }
  return caps;
}
