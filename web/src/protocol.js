// @ts-check
// The model-worker protocol: every message the page and the model worker exchange, in the spirit of WebLLM's
// message.ts. worker.js serves it for every runtime behind it (ONNX Runtime Web: runtime-ort.js and vlm.js;
// llama.cpp: runtime-wllama.js) with one set of handlers, so the page never knows which one runs but for its name.
//
// Every request carries an `id`; every reply to it (streamed or final) carries the same `id`, so the page
// matches a reply, and above all an error, to the request that caused it, never to what the page happens to be
// doing. Each request ends with exactly one final reply (FINAL_REPLY) or one `error`; `interrupt` has none.
// docs/architecture.md ("Worker protocol") is the prose version of this file.

import { describeError, EdgeChatError, ErrorCode } from "./errors.js";

/** Page → worker. */
export const Request = Object.freeze({
  CHECK: "check",
  LOAD: "load",
  GENERATE: "generate",
  COUNT: "count",
  INTERRUPT: "interrupt",
  RESET: "reset",
});

/** Worker → page. */
export const Reply = Object.freeze({
  CAPABILITIES: "capabilities",
  PROGRESS: "progress",
  CACHE: "cache",
  READY: "ready",
  TOKEN: "token",
  TEXT_INPUTS: "text-inputs",
  VLM_INPUTS: "vlm-inputs",
  DONE: "done",
  COUNTED: "counted",
  CLEARED: "cleared",
  ERROR: "error",
});

/** The reply that ends each request (an `error` ends any of them instead). */
export const FINAL_REPLY = Object.freeze({
  [Request.CHECK]: Reply.CAPABILITIES,
  [Request.LOAD]: Reply.READY,
  [Request.GENERATE]: Reply.DONE,
  [Request.COUNT]: Reply.COUNTED,
  [Request.RESET]: Reply.CLEARED,
});

// ------------------------------------------------------------------------------------------------ requests

/**
 * @typedef {{role: "system"|"user"|"assistant", content: string | Array<{type: "text", text: string} | {type: "image", id: string}>}} ChatMessage
 */

/**
 * @typedef {Object} LoadRequest
 * @property {"load"} type
 * @property {string} id
 * @property {{id: string, revision: string} | string} model  `{id, revision}` or "id/revision"
 * @property {string} dtype  a Transformers.js dtype name (fp32, q8, q4, q4f16, fp16), or a GGUF's (gguf-q4_1: its
 *   manifest entry says runtime "llama.cpp", which runs on the CPU only, device "wasm")
 * @property {"webgpu"|"wasm"} device
 * @property {string[]} [files]  the dtype's files (ONNX: external data chunks are counted from them; GGUF: the .gguf)
 * @property {Array<{path: string, bytes: number, sha256: string}>} [artifacts]  verified into the model cache first
 * @property {{context_length?: number|null, dtypes?: Record<string, any>, [key: string]: any}} [manifest]  stored with
 *   the verified cache (offline loads); its `dtypes[dtype].runtime` / `kv_cache` and `context_length` are read
 * @property {"stamp"|"full"} [verify]  "full": hash every cached file; "stamp" (default): only entries whose verified
 *   stamp no longer holds (cache.js, docs/architecture.md "Warm start")
 * @property {number} [threads]  WASM threads (either runtime)
 * @property {object} [session_options]  ONNX Runtime session options (the benchmark's thread experiments)
 * @property {"static"|"dynamic"} [kv]  WebGPU's KV cache: "static" (default) or "dynamic" (runtime-ort.js KV_MODES)
 * @property {string} [task]  "text-generation" | "image-text-to-text"
 * @property {{text: boolean, image: boolean}} [capabilities]
 */

/**
 * Sampling. temperature 0 is greedy decoding (the exactness tests use it); top_k 0 and top_p 1, min_p 0,
 * repetition_penalty 1 turn each one off. `seed` makes a sampled reply reproducible.
 * @typedef {Object} Sampling
 * @property {number} temperature
 * @property {number} top_p
 * @property {number} top_k
 * @property {number} min_p
 * @property {number} repetition_penalty
 * @property {number} [seed]
 */

/**
 * @typedef {Object} GenerateOptions
 * @property {number} [max_new_tokens]
 * @property {number} [min_new_tokens]  EOS held off until then (benchmarks decode a fixed count; llama.cpp: only
 *   min_new_tokens = max_new_tokens, else a bad-request error)
 * @property {Sampling} [sampling]  absent: greedy
 * @property {Record<string, unknown>} [chat_template_kwargs]  e.g. {enable_thinking: false} for Qwen3
 * @property {boolean} [continue_final]  the last message is an assistant reply to continue, not a finished turn
 * @property {number} [context_limit]  tokens the prompt plus max_new_tokens may use; more is a context-full error
 * @property {boolean} [reuse_cache]  false: drop the KV cache and prefill everything
 * @property {boolean} [prompt_lookup]  false: no prompt lookup (ONNX Runtime on WASM drafts tokens from the
 *   conversation by default: decode-lookup.js; the same tokens, and `generation.tokens_per_pass` in the reply)
 * @property {boolean} [expose_inputs]  tests: post text-inputs / vlm-inputs before done
 */

/**
 * @typedef {Object} GenerateRequest
 * @property {"generate"} type
 * @property {string} id
 * @property {ChatMessage[]} messages
 * @property {Array<{id: string, width: number, height: number, data: ArrayBuffer}>} [images]
 * @property {GenerateOptions} [options]
 */

/**
 * Token count of a conversation as the next generate would template it.
 * @typedef {{type: "count", id: string, messages: ChatMessage[], options?: GenerateOptions}} CountRequest
 * Stops the running generate if its id is `target` (any running generate when `target` is absent).
 * @typedef {{type: "interrupt", id: string, target?: string}} InterruptRequest
 * @typedef {{type: "reset", id: string}} ResetRequest
 * @typedef {{type: "check", id: string}} CheckRequest
 */

/** @typedef {CheckRequest | LoadRequest | GenerateRequest | CountRequest | InterruptRequest | ResetRequest} WorkerRequest */

// ------------------------------------------------------------------------------------------------- replies

/**
 * One metrics schema for the UI, the tests and the benchmark (docs/architecture.md).
 * @typedef {Object} Metrics
 * @property {number} load_s
 * @property {number} ttft_s
 * @property {number} prefill_tokens_per_s
 * @property {number|null} decode_tokens_per_s
 * @property {number} prompt_tokens
 * @property {number} new_tokens
 * @property {string} device
 * @property {string} dtype
 * @property {"onnxruntime-web"|"llama.cpp"} runtime
 * @property {string} model
 * @property {string} revision
 * @property {object} [gpu]  WebGPU only: what each decode step asked of the WebGPU API (gpu-counters.js)
 */

/**
 * @typedef {{vendor: string, architecture: string, description: string, isFallbackAdapter: boolean, features: string[]}} AdapterInfo
 * @typedef {{type: "capabilities", id: string, webgpu: boolean, f16: boolean, adapter: AdapterInfo|null, error: string|null,
 *   limits: {maxBufferSize: number, maxStorageBufferBindingSize: number}|null, crossOriginIsolated: boolean,
 *   hardwareConcurrency: number}} CapabilitiesReply
 *   limits: the adapter's buffer limits (the page warns when a model's largest tensor cannot fit one)
 * @typedef {{type: "progress", id: string, file: string, loaded?: number, total?: number, status?: string, phase?: string}} ProgressReply
 * @typedef {{type: "cache", id: string, downloaded?: string[], repaired?: string[], verified?: string[], trusted?: string[], bytes?: number, hashed_bytes?: number, seconds: number, unavailable?: string}} CacheReply
 *   trusted: verified on their stamp without reading; hashed_bytes: what this load read through sha256
 * @typedef {{name: "onnxruntime-web"|"llama.cpp", label: string, threads: number|null, multithread?: boolean,
 *   libllama?: string, crossOriginIsolated?: boolean, sharedArrayBuffer?: boolean, hardwareConcurrency?: number}} RuntimeInfo
 *   what runs: `threads` is the count the runtime was set to for this load (null on WebGPU); llama.cpp adds
 *   multithread and libllama; the worker adds what its threads can use (crossOriginIsolated, sharedArrayBuffer)
 * @typedef {{type: "ready", id: string, load_s: number, model: string, revision: string, device: string, dtype: string, vision?: boolean, chat: {thinking: boolean, context_length: number|null}, runtime: RuntimeInfo, cache: object|null}} ReadyReply
 *   chat.context_length: the runtime's own context in tokens (llama.cpp: what it allocated at load); the page's
 *   context limit never passes it
 * @typedef {{type: "text-inputs", id: string, prompt_ids: number[], new_ids: number[], new_ids_exact?: false}} TextInputsReply
 *   tests (expose_inputs): new_ids_exact false when the runtime reported text only (llama.cpp) and the ids are its
 *   reply tokenized again
 * @typedef {{type: "token", id: string, text: string}} TokenReply
 * @typedef {{type: "counted", id: string, tokens: number, limit: number|null, approximate?: boolean}} CountedReply
 *   limit: the context the next generate may fill (the request's context_limit, never more than the runtime's own;
 *   null: no limit known); approximate (image models): images not sent yet are not counted
 * @typedef {{id: string, rows: number, cols: number, width: number, height: number}} ImageLayout
 * @typedef {{dims: number[], type: string, data: ArrayLike<number>}} TensorCopy
 * @typedef {{type: "vlm-inputs", id: string, prompt_ids: number[], new_ids: number[], images: ImageLayout[],
 *   encoded_images: number, pixel_values: TensorCopy|null, pixel_attention_mask: TensorCopy|null}} VlmInputsReply
 *   tests (expose_inputs, image models): the ids and the pixels this turn encoded (encoded_images of them)
 * @typedef {{type: "cleared", id: string}} ClearedReply
 * @typedef {{type: "error", id: string|undefined, code: string, message: string, detail: string, data?: object}} ErrorReply
 */

/**
 * @typedef {Object} DoneReply
 * @property {"done"} type
 * @property {string} id
 * @property {string} text  the whole reply, decoded once at the end
 * @property {Metrics} metrics
 * @property {{context_tokens: number, reused_tokens: number, interrupted: boolean, generation: object,
 *   prompt_ids_match?: boolean, images?: number, encoded_images?: number}} context
 *   what the KV cache did this turn, and `generation`: the sampling and limits the runtime was called with (llama.cpp
 *   adds `llama_cpp`: the sampler parameters they mapped to, sampling.js); llama.cpp adds `prompt_ids_match`: its
 *   own tokenization of the prompt had as many tokens as Transformers.js's; image models add `images` (in the
 *   conversation) and `encoded_images` (encoded this turn, the rest came from the KV cache)
 */

/** What the worker's browser can do (device.js probeCapabilities). @typedef {Omit<CapabilitiesReply, "type" | "id">} Capabilities */

/**
 * @typedef {CapabilitiesReply | ProgressReply | CacheReply | ReadyReply | TextInputsReply | VlmInputsReply | TokenReply
 *   | CountedReply | ClearedReply | ErrorReply | DoneReply} WorkerReply
 */

/**
 * A message as its sender writes it: serveRequests and WorkerClient add the `id`. Distributes over a union, so a
 * reply is checked against the member its `type` names (an unknown field is an error, not a silent extra).
 * @template T
 * @typedef {T extends unknown ? Omit<T, "id"> : never} WithoutId
 */

/** @typedef {(reply: WithoutId<WorkerReply>) => void} ReplyFn  posts a reply with the request's id */

/**
 * The worker's handlers, keyed by Request kind: each gets its request and `reply`, and returns its final reply
 * (FINAL_REPLY); `interrupt` returns nothing.
 * @typedef {Object} Handlers
 * @property {(m: CheckRequest, reply: ReplyFn) => Promise<WithoutId<CapabilitiesReply>>} check
 * @property {(m: LoadRequest, reply: ReplyFn) => Promise<WithoutId<ReadyReply>>} load
 * @property {(m: GenerateRequest, reply: ReplyFn) => Promise<WithoutId<DoneReply>>} generate
 * @property {(m: CountRequest, reply: ReplyFn) => Promise<WithoutId<CountedReply>>} count
 * @property {(m: ResetRequest, reply: ReplyFn) => Promise<WithoutId<ClearedReply>>} reset
 * @property {(m: InterruptRequest, reply: ReplyFn) => void} interrupt
 */

// ------------------------------------------------------------------------------------------------ worker side

/**
 * Runs a worker's request handlers: one request at a time in arrival order (they share the model), except
 * `interrupt`, which must reach a running generate at once. A handler gets (message, reply) — `reply` posts
 * with the request's id — and returns its final reply; whatever it throws becomes an `error` with that id.
 *
 * @param {{addEventListener: Function, postMessage: Function}} scope  the worker's global scope
 * @param {Handlers} handlers
 */
export function serveRequests(scope, handlers) {
  let queue = Promise.resolve();
  scope.addEventListener("message", (event) => {
    const message = event.data ?? {};
    /** @type {ReplyFn} */
    const reply = (m) => scope.postMessage({ ...m, id: message.id });
    const fail = (err) => {
      const { code, message: text, detail, data } = describeError(err);
      console.error("[worker]", err);
      reply({ type: Reply.ERROR, code, message: text, detail, ...(data !== undefined ? { data } : {}) });
    };
    const handler = Object.hasOwn(handlers, message.type) ? handlers[message.type] : null;
    if (!handler) {
      fail(new EdgeChatError(ErrorCode.BAD_REQUEST, `Unknown request type "${message.type}".`));
      return;
    }
    if (message.type === Request.INTERRUPT) {
      handler(message, reply);
      return;
    }
    queue = queue.then(async () => {
      try {
        const final = await handler(message, reply);
        if (final) reply(final);
      } catch (err) {
        fail(err);
      }
    });
  });
}

// -------------------------------------------------------------------------------------------------- page side

/** An `error` reply, as an Error: its code, message (for a person), detail and data, and the request id. */
export class WorkerError extends Error {
  constructor({ code, message, detail = "", data, id }) {
    super(message || "The model worker failed.");
    this.name = "WorkerError";
    this.code = code;
    this.detail = detail;
    this.data = data;
    this.requestId = id;
  }
}

/**
 * The page's end of the protocol: `request()` posts a request with a fresh id and resolves with its final
 * reply (rejects with a WorkerError on its error); replies in between go to that request's `onMessage`.
 */
export class WorkerClient {
  /** @param {Worker} worker */
  constructor(worker) {
    this.worker = worker;
    this.pending = new Map(); // id → {final, resolve, reject, onMessage}
    this.counter = 0;
    /** Replies that match no pending request (a late token after an error, say); ignored unless set. */
    this.onUnmatched = null;
    worker.addEventListener("message", (event) => this.dispatch(event.data ?? {}));
  }

  dispatch(message) {
    const pending = this.pending.get(message.id);
    if (!pending) {
      this.onUnmatched?.(message);
      return;
    }
    if (message.type === Reply.ERROR) {
      this.pending.delete(message.id);
      pending.reject(new WorkerError(message));
    } else if (message.type === pending.final) {
      this.pending.delete(message.id);
      pending.onMessage?.(message);
      pending.resolve(message);
    } else {
      pending.onMessage?.(message);
    }
  }

  /**
   * @param {WithoutId<WorkerRequest>} message  a request without `id` (one is added)
   * @param {{onMessage?: (reply: object) => void, transfer?: Transferable[]}} [options]
   * @returns {{id: string, done: Promise<object>}}
   */
  request(message, { onMessage, transfer = [] } = {}) {
    const id = `r${++this.counter}`;
    const final = FINAL_REPLY[message.type];
    if (!final) throw new EdgeChatError(ErrorCode.BAD_REQUEST, `"${message.type}" has no reply; use post().`);
    const done = new Promise((resolve, reject) => this.pending.set(id, { final, resolve, reject, onMessage }));
    this.worker.postMessage({ ...message, id }, transfer);
    return { id, done };
  }

  /**
   * A request without a reply (interrupt).
   * @param {WithoutId<InterruptRequest>} message
   */
  post(message) {
    const id = `r${++this.counter}`;
    this.worker.postMessage({ ...message, id });
    return id;
  }

  /** Rejects every pending request (the worker died). */
  failAll(err) {
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      pending.reject(err);
    }
  }
}
