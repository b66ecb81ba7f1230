// @ts-check
// Device choice: which backend (WebGPU or WASM) and which dtype variant of a model to load, and why.
//
// `chooseDevice` is pure (capabilities + manifest in, decision out) so it can be tested with synthetic
// inputs; `probeCapabilities` is the only part that touches the browser. Its errors are errors.js's codes.

import { LLAMA_CPP, ONNX_RUNTIME, RUNTIMES } from "./contracts.js";
import { EdgeChatError, ErrorCode } from "./errors.js";

/**
 * The runtime that runs `dtype` of this manifest: "llama.cpp" for a GGUF (wllama, CPU only), else
 * "onnxruntime-web". A manifest dtype entry may name it ({runtime}); GGUF dtypes are named "gguf-<type>".
 */
export function runtimeOf(dtype, manifest) {
  const entry = manifest?.dtypes?.[dtype];
  if (entry && typeof entry === "object" && RUNTIMES.includes(entry.runtime)) return entry.runtime;
  return typeof dtype === "string" && dtype.startsWith("gguf") ? LLAMA_CPP : ONNX_RUNTIME;
}

const RUNTIME_WHY = {
  [LLAMA_CPP]:
    "It runs on llama.cpp compiled to WebAssembly (wllama): a GGUF a fraction of the fp32 model's download and " +
    "memory, on a runtime that gets faster with more CPU cores.",
  [ONNX_RUNTIME]: "It runs on ONNX Runtime Web.",
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
  // llama.cpp runs on the CPU only: a GPU class never picks a GGUF.
  const usable = (d) =>
    typeof d === "string" &&
    d in dtypes &&
    (hasF16 || !F16_DTYPES.has(d)) &&
    (deviceClass === "wasm" || runtimeOf(d, manifest) !== LLAMA_CPP);
  for (const key of MAPPED[deviceClass]) {
    const mapped = manifest?.devices?.[key];
    if (usable(mapped)) return { dtype: mapped, mappedBy: key };
  }
  const fallback = FALLBACK[deviceClass].find(usable);
  return fallback ? { dtype: fallback, mappedBy: null } : null;
}

/** @param {Partial<import("./protocol.js").Capabilities>} capabilities */
function describeAdapter(capabilities) {
  /** @type {Partial<import("./protocol.js").AdapterInfo>} */
  const a = capabilities?.adapter ?? {};
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(" ");
  const fallback = a.isFallbackAdapter ? " (software fallback adapter)" : "";
  return `${name || "WebGPU adapter"}${fallback}`;
}

/**
 * Decides device and dtype. Pure: no browser access.
 *
 * @param {Partial<import("./protocol.js").Capabilities> | null | undefined} capabilities from probeCapabilities()
 * @param {{devices?: Record<string,string>, dtypes?: Record<string, unknown>}} manifest a catalog entry or manifest
 * @param {{device?: string|null, dtype?: string|null}} [forced] overrides (the ?device= / ?dtype= query params)
 * @returns {{device: "webgpu"|"wasm", dtype: string, runtime: string, reason: string}}
 * @throws {EdgeChatError} when the forced device is missing or no variant fits
 */
export function chooseDevice(capabilities, manifest, forced = {}) {
  /** @type {Partial<import("./protocol.js").Capabilities>} */
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
    if (runtime === LLAMA_CPP && device === "webgpu") {
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
 * ONNX Runtime Web's WASM thread count when a load asks for none (its wasm backend's own rule): 1 unless the page is
 * cross-origin isolated (threads need SharedArrayBuffer), else half the logical cores, at most 4.
 * @param {{crossOriginIsolated?: boolean, hardwareConcurrency?: number}} [scope]
 */
export function defaultWasmThreads({ crossOriginIsolated = false, hardwareConcurrency = 1 } = {}) {
  return crossOriginIsolated ? Math.min(4, Math.ceil((hardwareConcurrency || 1) / 2)) : 1;
}

/**
 * Asks the browser what it can do. Works in a window and in a worker.
 * @returns {Promise<import("./protocol.js").Capabilities>}
 */
export async function probeCapabilities() {
  /** @type {import("./protocol.js").Capabilities} */
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
    /** @type {Partial<GPUAdapterInfo> & {isFallbackAdapter?: boolean}} */
    const info = adapter.info ?? {};
    caps.webgpu = true;
    caps.f16 = adapter.features.has("shader-f16");
    caps.adapter = {
      vendor: info.vendor ?? "",
      architecture: info.architecture ?? "",
      description: info.description ?? "",
      // GPUAdapter.isFallbackAdapter: the older spelling, before GPUAdapterInfo had it
      isFallbackAdapter: Boolean(info.isFallbackAdapter ?? /** @type {any} */ (adapter).isFallbackAdapter),
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
