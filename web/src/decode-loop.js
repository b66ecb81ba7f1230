// A static KV cache for the fused decoder on WebGPU: one GPU buffer per past_key_values.* input, allocated once at a
// fixed capacity, bound as both the input and the `present.*` output of every forward pass, with the valid length
// kept here. GroupQueryAttention sees past and present on the same buffer (its past_present_share_buffer form) and
// writes only the new positions, so a decode step creates no GPU buffer and reads back only the logits. Rolling back
// (a rejected draft, Qwen3's dropped thinking, a conversation that parted from the cache) is a length change.
//
// Transformers.js' generate() keeps deciding every token (logits processors, sampler, streamer, stopping criteria:
// sampling.js's arguments, exactly as on the other paths); only the model's forward pass is replaced (forwardFor).
//
// The interface other decoders build on (prompt lookup verifies k drafted tokens in one pass, then truncates):
/**
 * @typedef {Object} KvDecoder
 * @property {number} length    positions the cache holds (the tokens fed so far, minus any truncated)
 * @property {number} capacity  positions it can hold
 * @property {(ids: Array<number|bigint>) => Promise<Float32Array[]>} step
 *   feeds `ids` (k ≥ 1) at positions length … length+k−1 in one forward pass and returns the logits of each of the
 *   k positions (views into one readback, vocab floats each); the cache then holds length+k positions
 * @property {(ids: Array<number|bigint>) => Promise<{type: string, dims: number[], data: ArrayLike<number>}>} run
 *   the same pass, returning the logits [1, k, vocab] in one array (float32; a long prefill of an fp16 graph: its type)
 * @property {(length: number) => void} truncate  keeps the first `length` positions (no GPU work)
 * @property {() => void} dispose  frees the GPU buffers
 */

import { env, Tensor } from "/static/vendor/transformers.min.js";

/**
 * The fused graph's attention-mask nodes (model_prep/export/decoder_graph.py `mask`): on the CPU they hand
 * GroupQueryAttention its lengths without a GPU→CPU readback per step.
 */
export const MASK_NODES = Object.freeze([
  "attn_mask/cast",
  "attn_mask/sum",
  "attn_mask/seqlens_k",
  "attn_mask/total_length",
]);

/** Session options for a model decoded by a static cache (merged over the caller's). */
export function staticSessionOptions(sessionOptions = {}) {
  return { ...sessionOptions, executionProviders: [{ name: "webgpu", forceCpuNodeNames: [...MASK_NODES] }] };
}

const BYTES = { float32: 4, float16: 2 };

/**
 * The Tensor class `session.run` accepts as a pre-allocated fetch. The bundle holds two copies of onnxruntime-common:
 * Transformers.js builds its tensors from one, the session checks fetches with `instanceof` against the other and
 * silently ignores a fetch of the wrong class (it then neither writes nor returns that output). The class the
 * session returns its outputs in is the one it checks, so one probe pass asks for the logits alone (a string
 * fetch needs no class) and reads it off the result.
 */
async function fetchTensorClass(session, feeds) {
  const out = await session.run(feeds, ["logits"]);
  return out.logits.constructor;
}

/**
 * A static KV cache of `capacity` positions over `session` (the decoder's ORT InferenceSession, already created on
 * WebGPU with present.* in "gpu-buffer").
 * @param {object} session
 * @param {number} capacity
 * @returns {Promise<KvDecoder>}
 */
export async function createStaticKv(session, capacity) {
  if (!(Number.isInteger(capacity) && capacity > 0)) throw new Error(`a static KV cache needs a capacity, not ${capacity}`);
  const device = await env.backends.onnx.webgpu?.device;
  if (!device) throw new Error("ONNX Runtime has no WebGPU device: a static KV cache runs on WebGPU only");
  const pasts = session.inputMetadata.filter((m) => m.name.startsWith("past_key_values."));
  if (!pasts.length || !session.inputNames.includes("attention_mask")) {
    throw new Error("this decoder has no past_key_values.* / attention_mask inputs");
  }
  const buffers = [];
  const shapes = [];
  for (const meta of pasts) {
    const [, heads, , dim] = meta.shape;
    if (!Number.isInteger(heads) || !Number.isInteger(dim) || !(meta.type in BYTES)) {
      throw new Error(`${meta.name}: shape ${JSON.stringify(meta.shape)} / ${meta.type} cannot be cached statically`);
    }
    const buffer = device.createBuffer({
      size: heads * capacity * dim * BYTES[meta.type],
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    buffers.push(buffer);
    shapes.push({ name: meta.name, dataType: meta.type, dims: [1, heads, capacity, dim] });
  }
  const onBuffers = (TensorClass) =>
    Object.fromEntries(shapes.map((s, i) => [s.name, TensorClass.fromGpuBuffer(buffers[i], s)]));
  const TransformersTensor = new Tensor("float32", new Float32Array(1), [1]).ort_tensor.constructor;
  const oneToken = (TensorClass) => ({
    input_ids: new TensorClass("int64", BigInt64Array.of(0n), [1, 1]),
    attention_mask: new TensorClass("int64", BigInt64Array.of(1n), [1, 1]),
  });
  let OrtTensor;
  try {
    OrtTensor = await fetchTensorClass(session, { ...oneToken(TransformersTensor), ...onBuffers(TransformersTensor) });
  } catch (err) {
    for (const buffer of buffers) buffer.destroy();
    throw err;
  }
  // past_key_values.i.* → the tensor on its buffer; the same tensor is present.i.*'s output
  const bound = onBuffers(OrtTensor);
  const fetches = { logits: null };
  for (const [name, tensor] of Object.entries(bound)) fetches[name.replace("past_key_values.", "present.")] = tensor;
  const firstPresent = Object.keys(fetches)[1];

  const decoder = {
    length: 0,
    capacity,
    async run(ids) {
      const k = ids.length;
      if (k < 1) throw new Error("a forward pass needs at least one token");
      if (decoder.length + k > capacity) {
        throw new Error(`the KV cache holds ${capacity} positions; ${decoder.length} + ${k} do not fit`);
      }
      const total = decoder.length + k;
      const feeds = {
        input_ids: new OrtTensor("int64", BigInt64Array.from(ids, (x) => BigInt(x)), [1, k]),
        attention_mask: new OrtTensor("int64", new BigInt64Array(total).fill(1n), [1, total]),
        ...bound,
      };
      const out = await session.run(feeds, fetches);
      decoder.length = total;
      if (out[firstPresent] !== fetches[firstPresent]) {
        throw new Error("ONNX Runtime did not write present.* in place: the static KV cache cannot run this session");
      }
      return { type: out.logits.type, dims: out.logits.dims, data: out.logits.data };
    },
    async step(ids) {
      const logits = await decoder.run(ids);
      const [, k, vocab] = logits.dims;
      const data = logits.data;
      return Array.from({ length: k }, (_, i) => data.subarray(i * vocab, (i + 1) * vocab));
    },
    truncate(length) {
      if (!(Number.isInteger(length) && length >= 0)) throw new Error(`cannot truncate the KV cache to ${length}`);
      decoder.length = Math.min(decoder.length, length);
    },
    dispose() {
      for (const buffer of buffers.splice(0)) buffer.destroy();
      decoder.length = 0;
    },
  };
  return decoder;
}

/**
 * A model.forward for Transformers.js' generate() that runs on `decoder` instead of its DynamicCache. generate()
 * feeds the whole prompt first and then each sampled token, with an attention mask as long as the sequence: the
 * positions the cache does not hold yet are the last ones of `input_ids`.
 * @param {() => KvDecoder} current  the decoder to run on (the runtime may replace it when it grows)
 */
export function forwardFor(current) {
  return async ({ input_ids, attention_mask }) => {
    const decoder = current();
    const total = attention_mask.dims.at(-1);
    const fresh = total - decoder.length;
    const ids = input_ids.data;
    if (input_ids.dims[0] !== 1 || fresh < 1 || fresh > ids.length) {
      throw new Error(`the static KV cache holds ${decoder.length} positions; generate() fed ${ids.length} of ${total}`);
    }
    const logits = await decoder.run(Array.from(ids.subarray(ids.length - fresh)));
    return { logits: new Tensor(logits.type, logits.data, logits.dims) };
  };
}
