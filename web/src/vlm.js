// @ts-check
// Worker side of image chat: SmolVLM / Idefics3 (image-text-to-text) with Transformers.js. worker.js routes
// load/generate/reset here when the model takes images (catalog task "image-text-to-text" or
// capabilities.image); it shares the worker's interrupt (InterruptableStoppingCriteria), its macrotask yield
// and its message protocol (protocol.js: token / done with the same metrics schema). `reply` posts with the
// request's id; load and generate return their final reply.
//
// Images arrive once, with the turn they belong to: generate's `images` is [{id, width, height, data}] (RGBA
// bytes, transferred, already downscaled by the page to the preprocessor's size.longest_edge); message content
// names them as {type:"image", id}. Each image is preprocessed once (Idefics3 tiling) and kept until reset.
//
// KV cache: as for text, the cache is reused when the re-templated conversation starts with the tokens it
// covers. The part that is prefilled then carries only the images whose <image> tokens lie in it, so image
// turns and text follow-ups both reuse it (Transformers.js' generic_text_to_text_forward encodes whatever
// pixel_values come with a multi-token step and merges them over the <image> tokens of that step).
//
// Debug (tests): generate options.expose_inputs = true posts {type: Reply.VLM_INPUTS, ...} before "done": the
// exact pixel_values/pixel_attention_mask fed to the vision encoder this turn, the prompt ids, rows/cols and
// the generated ids.

import {
  AutoModelForVision2Seq,
  AutoProcessor,
  cat,
  env,
  RawImage,
} from "/static/vendor/transformers.min.js";
import { ONNX_RUNTIME } from "./contracts.js"; // image chat runs on ONNX Runtime Web only
import { EdgeChatError, ErrorCode } from "./errors.js";
import { Reply } from "./protocol.js";
import {
  cacheAfter,
  checkContext,
  decodeTurn,
  newTokenLimits,
  sameTokens,
  templateKwargs,
  templateTakes,
  turnMetrics,
} from "./turn.js";

const FAKE = "<fake_token_around_image>";
const IMAGE = "<image>";
const GLOBAL = "<global-img>";

/** The Idefics3 processor's prompt string for one image of rows × cols tiles (plus the global view). */
export function imagePromptString(rows, cols, imageSeqLen) {
  const tokens = IMAGE.repeat(imageSeqLen);
  if (rows === 0 && cols === 0) return `${FAKE}${GLOBAL}${tokens}${FAKE}`;
  let s = "";
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) s += `${FAKE}<row_${r + 1}_col_${c + 1}>${tokens}`;
    s += "\n";
  }
  return `${s}\n${FAKE}${GLOBAL}${tokens}${FAKE}`;
}

/** Chat messages in the template's shape: content is always a list of {type:"text"|"image"} parts. */
export function normaliseMessages(messages) {
  const imageIds = [];
  const out = messages.map(({ role, content }) => {
    let parts;
    if (typeof content === "string") parts = [{ type: "text", text: content }];
    else parts = (content ?? []).map((p) => (p?.type === "image" ? { type: "image" } : { type: "text", text: String(p?.text ?? "") }));
    for (const p of Array.isArray(content) ? content : []) if (p?.type === "image") imageIds.push(p.id);
    // The reply was decoded after "Assistant:"; the template writes ": " itself.
    if (role === "assistant") for (const p of parts) if (p.type === "text") p.text = p.text.trimStart();
    return { role, content: parts };
  });
  return { messages: out, imageIds };
}

export const messagesHaveImages = (messages) =>
  (messages ?? []).some((m) => Array.isArray(m?.content) && m.content.some((p) => p?.type === "image"));

export const isVisionModel = (message) =>
  message?.task === "image-text-to-text" || Boolean(message?.capabilities?.image);

function toBase(tensor) {
  return { dims: tensor.dims, type: tensor.type, data: tensor.data.slice() };
}

/**
 * @param {{stopper: any, nextTask: () => Promise<void>, externalData: Function}} deps
 */
export function createVLM({ stopper, nextTask, externalData }) {
  const s = {
    processor: null,
    model: null,
    info: null,
    cache: null, // {pkv, ids}
    images: new Map(), // id → {pixel_values, pixel_attention_mask, rows, cols, tiles}
  };

  async function disposeCache() {
    const pkv = s.cache?.pkv;
    s.cache = null;
    if (pkv) {
      try {
        await pkv.dispose();
      } catch (err) {
        console.warn("[vlm] disposing the KV cache failed", err);
      }
    }
  }

  async function unload() {
    await disposeCache();
    s.images.clear();
    await s.model?.dispose?.();
    s.model = s.processor = s.info = null;
  }

  async function prepareImage({ width, height, data }) {
    const bytes = data instanceof Uint8ClampedArray ? data : new Uint8ClampedArray(data);
    if (!(width > 0 && height > 0) || bytes.length !== width * height * 4) {
      throw new EdgeChatError(ErrorCode.BAD_REQUEST, "An attached image arrived damaged; attach it again.");
    }
    const image = new RawImage(bytes, width, height, 4).rgb();
    const out = await s.processor.image_processor(image, { return_row_col_info: true });
    return {
      pixel_values: out.pixel_values,
      pixel_attention_mask: out.pixel_attention_mask,
      rows: out.rows[0][0],
      cols: out.cols[0][0],
      tiles: out.pixel_values.dims[1],
      width,
      height,
    };
  }

  /**
   * Builds the model from the revision's cache, which worker.js's load has verified (or filled) first.
   * @param {import("./protocol.js").LoadRequest} message
   * @param {{id: string, revision: string, t0?: number}} model
   * @param {import("./protocol.js").ReplyFn} reply
   * @returns {Promise<import("./protocol.js").WithoutId<Omit<import("./protocol.js").ReadyReply, "cache">>>}
   */
  async function load({ dtype, device, files }, { id, revision, t0 = performance.now() }, reply) {
    await unload();
    const modelId = `${id}/${revision}`;
    const progress_callback = (p) => {
      if (p.status === "progress") reply({ type: Reply.PROGRESS, file: p.file, loaded: p.loaded, total: p.total });
      else if (p.status === "initiate" || p.status === "done") reply({ type: Reply.PROGRESS, file: p.file, status: p.status });
    };
    // One dtype and device for all three graphs (the device table's choice; see the report in
    // docs/architecture.md: the vision encoder follows it).
    const [processor, vlm] = await Promise.all([
      AutoProcessor.from_pretrained(modelId, { progress_callback }),
      AutoModelForVision2Seq.from_pretrained(modelId, {
        dtype: /** @type {any} */ (dtype), // a manifest dtype name, checked by Transformers.js
        device,
        progress_callback,
        use_external_data_format: externalData(files),
      }),
    ]);
    const forward = vlm.forward.bind(vlm);
    vlm.forward = async (inputs) => {
      await nextTask(); // lets {type:"interrupt"} in between forward passes
      return forward(inputs);
    };
    s.processor = processor;
    s.model = vlm;
    // Warm-up: one small image through all three graphs, so the first reply's TTFT measures the model.
    const size = /** @type {any} */ (processor.image_processor).max_image_size?.longest_edge ?? 64;
    const gray = { width: size, height: size, data: new Uint8ClampedArray(size * size * 4).fill(128) };
    const warm = await prepareImage(gray);
    const text = imagePromptString(warm.rows, warm.cols, processor.config.image_seq_len);
    const inputs = processor.tokenizer(`User:${text}Hi`);
    await vlm.generate({
      ...inputs,
      pixel_values: warm.pixel_values,
      pixel_attention_mask: warm.pixel_attention_mask,
      max_new_tokens: 1,
      do_sample: false,
    });
    const load_s = (performance.now() - t0) / 1000;
    s.info = { id, revision, device, dtype, runtime: ONNX_RUNTIME, load_s };
    const config = /** @type {any} */ (vlm.config); // Idefics3: the text model's config is nested
    const own = config.text_config?.max_position_embeddings ?? config.max_position_embeddings ?? null;
    const chat = { thinking: templateTakes(processor.tokenizer, "enable_thinking"), context_length: own };
    /** @type {import("./protocol.js").RuntimeInfo} */
    const runtime = { name: ONNX_RUNTIME, label: "ONNX Runtime Web", threads: device === "wasm" ? (env.backends.onnx.wasm.numThreads ?? null) : null };
    return { type: Reply.READY, load_s, model: id, revision, device, dtype, vision: true, chat, runtime };
  }

  /**
   * The prompt text of `messages` with each image's <image> placeholder expanded to its tiles. Images the worker
   * has not prepared expand to nothing (count only; generate refuses them first).
   */
  function promptFor(messages, options) {
    const { tokenizer } = s.processor;
    const { messages: chat, imageIds } = normaliseMessages(messages);
    const kwargs = { ...templateKwargs(options), add_generation_prompt: true, tokenize: false };
    let templated;
    if (options.continue_final) {
      const last = chat.at(-1);
      if (last?.role !== "assistant") throw new EdgeChatError(ErrorCode.BAD_REQUEST, "Only an assistant reply can be continued.");
      templated = tokenizer.apply_chat_template(chat.slice(0, -1), kwargs);
      templated += last.content.map((p) => (p.type === "text" ? p.text : IMAGE)).join("");
    } else {
      templated = tokenizer.apply_chat_template(chat, kwargs);
    }
    const pieces = templated.split(IMAGE);
    if (pieces.length - 1 !== imageIds.length) {
      throw new EdgeChatError(ErrorCode.BAD_REQUEST, `Messages may not contain the text "${IMAGE}".`);
    }
    const imageSeqLen = s.processor.config.image_seq_len;
    let prompt = pieces[0];
    imageIds.forEach((id, i) => {
      const image = s.images.get(id);
      prompt += (image ? imagePromptString(image.rows, image.cols, imageSeqLen) : "") + pieces[i + 1];
    });
    return { prompt, imageIds };
  }

  /**
   * @param {import("./protocol.js").CountRequest} message
   * @returns {Promise<import("./protocol.js").WithoutId<import("./protocol.js").CountedReply>>}
   */
  async function count({ messages, options = {} }) {
    if (!s.model) throw new EdgeChatError(ErrorCode.MODEL_NOT_LOADED);
    const { prompt, imageIds } = promptFor(messages, options);
    const tokens = s.processor.tokenizer(prompt).input_ids.dims.at(-1);
    const own = s.model.config.text_config?.max_position_embeddings ?? s.model.config.max_position_embeddings;
    const limit = Math.min(Number(options.context_limit) > 0 ? Number(options.context_limit) : Infinity, own ?? Infinity);
    // Images not sent yet are not counted: generate counts them before it prefills.
    const approximate = imageIds.some((id) => !s.images.has(id));
    return { type: Reply.COUNTED, tokens, limit: Number.isFinite(limit) ? limit : null, approximate };
  }

  /**
   * @param {import("./protocol.js").GenerateRequest} message
   * @param {import("./protocol.js").ReplyFn} reply
   * @returns {Promise<import("./protocol.js").WithoutId<import("./protocol.js").DoneReply>>}
   */
  async function generate({ messages, images = [], options = {} }, reply) {
    if (!s.model) throw new EdgeChatError(ErrorCode.MODEL_NOT_LOADED);
    const { processor, model, info } = s;
    const { tokenizer } = processor;
    const t0 = performance.now();
    for (const image of images) if (!s.images.has(image.id)) s.images.set(image.id, await prepareImage(image));

    const { imageIds: wanted } = normaliseMessages(messages);
    const missing = wanted.filter((id) => !s.images.has(id));
    if (missing.length) throw new EdgeChatError(ErrorCode.BAD_REQUEST, "An image of this conversation is gone; start a new chat.");
    for (const id of s.images.keys()) if (!wanted.includes(id)) s.images.delete(id); // no longer in the chat
    const { prompt, imageIds } = promptFor(messages, options);
    const imageSeqLen = processor.config.image_seq_len;
    const inputs = tokenizer(prompt);
    const ids = Array.from(inputs.input_ids.data);
    const contextTokens = ids.length;
    const own = model.config.text_config?.max_position_embeddings ?? model.config.max_position_embeddings;
    const limit = Math.min(Number(options.context_limit) > 0 ? Number(options.context_limit) : Infinity, own ?? Infinity);
    checkContext(contextTokens, newTokenLimits(options).maxNew, limit);

    // Reuse the cache if it covers a prefix of this prompt that ends between whole images.
    let reused = 0;
    if (options.reuse_cache === false) await disposeCache();
    if (s.cache) {
      const cached = s.cache.ids;
      if (cached.length < ids.length && sameTokens(cached, ids, cached.length)) reused = cached.length;
      else await disposeCache();
    }
    const imageTokenId = model.config.image_token_id;
    let coveredImageTokens = 0;
    for (let i = 0; i < reused; i++) if (ids[i] === BigInt(imageTokenId)) coveredImageTokens++;
    let firstNew = 0; // index into imageIds of the first image to encode this turn
    let acc = 0;
    while (firstNew < imageIds.length && acc < coveredImageTokens) {
      acc += s.images.get(imageIds[firstNew]).tiles * imageSeqLen;
      firstNew++;
    }
    if (acc !== coveredImageTokens) {
      await disposeCache(); // the cache ends inside an image: prefill everything
      reused = 0;
      firstNew = 0;
    }
    const fresh = imageIds.slice(firstNew).map((id) => s.images.get(id));
    const pixels = fresh.length
      ? {
          pixel_values: fresh.length === 1 ? fresh[0].pixel_values : cat(fresh.map((x) => x.pixel_values), 1),
          pixel_attention_mask:
            fresh.length === 1 ? fresh[0].pixel_attention_mask : cat(fresh.map((x) => x.pixel_attention_mask), 1),
        }
      : {};

    let turn;
    try {
      const pastKeyValues = reused ? s.cache.pkv : null;
      const turnInputs = { ...inputs, ...pixels };
      turn = await decodeTurn({ model, tokenizer, inputs: turnInputs, pastKeyValues, options, stopper, reply });
    } catch (err) {
      await disposeCache();
      throw err;
    }
    const { output, first, last, count, interrupted, generation } = turn;
    const sequence = Array.from(output.sequences.data);
    const newIds = sequence.slice(contextTokens);
    const text = tokenizer.decode(newIds, { skip_special_tokens: true });

    if (s.cache && s.cache.pkv !== output.past_key_values) await disposeCache();
    s.cache = cacheAfter(output, sequence);
    const metrics = turnMetrics(info, { t0, first, last, count, promptTokens: contextTokens - reused });
    if (options.expose_inputs) {
      /** @type {import("./protocol.js").WithoutId<import("./protocol.js").VlmInputsReply>} */
      const exposed = {
        type: Reply.VLM_INPUTS,
        prompt_ids: ids.map(Number),
        new_ids: newIds.map(Number),
        images: imageIds.map((id) => {
          const { rows, cols, width, height } = s.images.get(id);
          return { id, rows, cols, width, height };
        }),
        encoded_images: fresh.length,
        pixel_values: pixels.pixel_values ? toBase(pixels.pixel_values) : null,
        pixel_attention_mask: pixels.pixel_attention_mask ? toBase(pixels.pixel_attention_mask) : null,
      };
      reply(exposed);
    }
    return {
      type: Reply.DONE,
      text,
      metrics,
      context: {
        context_tokens: contextTokens,
        reused_tokens: reused,
        interrupted,
        generation,
        images: imageIds.length,
        encoded_images: fresh.length,
      },
    };
  }

  return {
    get active() {
      return Boolean(s.model);
    },
    load,
    unload,
    count,
    generate,
    async reset() {
      await disposeCache(); // images stay: the page may resend earlier turns (unused ones go at the next turn)
    },
  };
}
