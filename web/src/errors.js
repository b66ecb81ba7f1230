// @ts-check
// Every error a person can see, in one place: the codes the page, the model workers and the caches use, the
// message each one shows, and the mapping from raw browser/runtime errors (WebGPU, ORT-web, Transformers.js,
// the Cache API, IndexedDB) to those codes. A code names what the person can act on, not where it happened.

/** Error codes. Every code a module throws or a worker posts is one of these (tests/unit/test_web_errors.py). */
export const ErrorCode = Object.freeze({
  NO_WEBGPU: "no-webgpu",
  NO_F16: "no-f16",
  DEVICE_LOST: "device-lost",
  OUT_OF_MEMORY: "out-of-memory",
  QUOTA_EXCEEDED: "quota-exceeded",
  NO_VARIANT: "no-variant",
  MODEL_MISSING: "model-missing",
  MODEL_NOT_LOADED: "model-not-loaded",
  NOT_AN_IMAGE: "not-an-image",
  TEXT_ONLY_MODEL: "text-only-model",
  BAD_REQUEST: "bad-request",
  BAD_SETTING: "bad-setting",
  CONTEXT_FULL: "context-full",
  BAD_IMPORT: "bad-import",
  STORAGE_UNAVAILABLE: "storage-unavailable",
  UNKNOWN: "unknown",
});

/** @typedef {typeof ErrorCode[keyof typeof ErrorCode]} ErrorCodeValue */

/** @type {Set<string>} */
const CODES = new Set(Object.values(ErrorCode));

/** True when `code` is one of ErrorCode's values. */
export const isErrorCode = (code) => CODES.has(code);

/** The default message of each code (a thrower may pass a more specific one). */
export const ERROR_MESSAGES = Object.freeze({
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
  [ErrorCode.MODEL_NOT_LOADED]: "No model is loaded yet: press “Load model” first.",
  [ErrorCode.NOT_AN_IMAGE]: "That file is not an image this browser can read, so nothing was attached or sent.",
  [ErrorCode.TEXT_ONLY_MODEL]:
    "This model reads text only, so nothing was sent. Load a model tagged “[image]” to ask about images, or remove the image.",
  [ErrorCode.BAD_REQUEST]: "The model worker received a request it cannot carry out. Reload the page.",
  [ErrorCode.BAD_SETTING]: "A chat setting is out of range; fix it in the settings panel.",
  [ErrorCode.CONTEXT_FULL]:
    "This conversation no longer fits in the model's context. Start a new chat or drop the oldest turns.",
  [ErrorCode.BAD_IMPORT]: "That file is not an Edge Chat conversation export; nothing was imported.",
  [ErrorCode.STORAGE_UNAVAILABLE]:
    "This browser does not let the page store conversations (private window or storage turned off); they last until the tab closes.",
  [ErrorCode.UNKNOWN]: "Something went wrong.",
});

/** An error with a code from `ErrorCode`, a message meant for a person, and optional raw detail / data. */
export class EdgeChatError extends Error {
  /**
   * @param {string} code one of ErrorCode
   * @param {string} [message] for a person; the code's default message if omitted
   * @param {string} [detail] the raw text (logs, bug reports)
   * @param {object} [data] structured facts the page acts on (e.g. {tokens, limit} for context-full)
   */
  constructor(code, message, detail = "", data = undefined) {
    super(message || ERROR_MESSAGES[code] || ERROR_MESSAGES[ErrorCode.UNKNOWN]);
    this.name = "EdgeChatError";
    this.code = isErrorCode(code) ? code : ErrorCode.UNKNOWN;
    this.detail = detail;
    if (data !== undefined) this.data = data;
  }
}

/**
 * Maps anything thrown (or an {code, message, detail} posted by a worker) to {code, message, detail, data}.
 * `message` is for a person, `detail` is the raw text (for logs and bug reports).
 */
export function describeError(err) {
  if (err && (err instanceof EdgeChatError || err.name === "EdgeChatError" || err.name === "WorkerError") && isErrorCode(err.code)) {
    return { code: err.code, message: err.message, detail: err.detail ?? "", data: err.data };
  }
  const detail = String(err?.message ?? err ?? "");
  const name = String(err?.name ?? "");
  const text = `${name} ${detail}`.toLowerCase();
  /** @type {ErrorCodeValue} */
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
  const message = code === ErrorCode.UNKNOWN ? `Something went wrong: ${detail || name}` : ERROR_MESSAGES[code];
  return { code, message, detail, data: undefined };
}
