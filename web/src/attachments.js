// Page side of image chat: attach images by file picker (camera on phones), paste and drag-and-drop;
// thumbnails with a remove button. On send each image is downscaled to the model's preprocessor size.longest_edge
// and encoded compactly (image-codec.js); the model gets the pixels of that kept image, the same bytes the chat
// stores, as transferred buffers.
//
// main.js calls: createAttachments(...), setModel(model) when a model loads, takeTurn(text, model) when
// sending (null: refused with a message, nothing sent). Tests: #attachments[data-count], #attach-input (the
// exact tensors the worker fed come back as vlm-inputs replies with ?expose_inputs=1: main.js stores them as
// window.__edgeChatVLMInputs).

import { EdgeChatError, ErrorCode } from "./errors.js";
import { keepImage, pixelsOf } from "./image-codec.js";

const DEFAULT_LONGEST_EDGE = 2048; // when a model's preprocessor_config.json says nothing
const THUMB = 96;
const READABLE = "JPEG, PNG, WebP, GIF, BMP or AVIF"; // what Chromium, Firefox and Safari all decode

let counter = 0;

/** Longest edge the processor resizes to (Idefics3: size.longest_edge; else max_image_size / size). */
export function longestEdge(preprocessor) {
  const p = preprocessor ?? {};
  const candidates = [p.size?.longest_edge, p.max_image_size?.longest_edge, p.size?.height, p.size?.width];
  return candidates.find((x) => Number.isFinite(x) && x > 0) ?? DEFAULT_LONGEST_EDGE;
}

export function createAttachments({ showError, clearError, params }) {
  const $ = (id) => document.getElementById(id);
  const el = { input: $("attach-input"), button: $("attach-button"), strip: $("attachments"), composer: $("composer") };
  const pending = []; // {id, blob, name, url, node}
  let limit = DEFAULT_LONGEST_EDGE;
  let busy = false;
  const expose = params.get("expose_inputs") === "1";

  function render() {
    el.strip.dataset.count = String(pending.length);
    el.strip.hidden = pending.length === 0;
  }

  function remove(item) {
    const i = pending.indexOf(item);
    if (i >= 0) pending.splice(i, 1);
    item.node.remove();
    URL.revokeObjectURL(item.url);
    render();
  }

  function notAnImage(name) {
    const message = `“${name || "That file"}” is not an image this browser can read, so nothing was attached or sent. Attach a ${READABLE} picture (on an iPhone, a HEIC photo shared as “Most Compatible” is JPEG).`;
    showError(new EdgeChatError(ErrorCode.NOT_AN_IMAGE, message));
  }

  async function add(files) {
    for (const file of files) {
      // Decoding is the test: type and extension can lie. Nothing is attached unless it decodes.
      try {
        const bitmap = await createImageBitmap(file);
        bitmap.close();
      } catch {
        notAnImage(file.name);
        continue;
      }
      const item = { id: `img-${Date.now().toString(36)}-${++counter}`, blob: file, name: file.name || "image" };
      item.url = URL.createObjectURL(file);
      const node = document.createElement("figure");
      node.className = "attachment";
      node.dataset.id = item.id;
      const img = document.createElement("img");
      img.src = item.url;
      img.alt = item.name;
      img.width = THUMB;
      img.height = THUMB;
      const x = document.createElement("button");
      x.type = "button";
      x.className = "attachment-remove";
      x.textContent = "×";
      x.title = `Remove ${item.name}`;
      x.setAttribute("aria-label", `Remove ${item.name}`);
      x.addEventListener("click", () => remove(item));
      node.append(img, x);
      item.node = node;
      el.strip.append(node);
      pending.push(item);
      clearError();
    }
    render();
  }

  const imagesOf = (dataTransfer) => {
    const files = [...(dataTransfer?.files ?? [])];
    if (files.length) return files;
    return [...(dataTransfer?.items ?? [])]
      .filter((i) => i.kind === "file")
      .map((i) => i.getAsFile())
      .filter(Boolean);
  };

  el.button.addEventListener("click", () => el.input.click());
  el.input.addEventListener("change", () => {
    const files = [...el.input.files];
    el.input.value = "";
    add(files);
  });
  document.addEventListener("paste", (event) => {
    const files = imagesOf(event.clipboardData);
    if (!files.length) return; // plain text pastes as usual
    event.preventDefault();
    add(files);
  });
  document.addEventListener("dragover", (event) => {
    if ([...(event.dataTransfer?.types ?? [])].includes("Files")) {
      event.preventDefault();
      el.composer.classList.add("dragging");
    }
  });
  document.addEventListener("dragleave", () => el.composer.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    el.composer.classList.remove("dragging");
    const files = imagesOf(event.dataTransfer);
    if (!files.length) return;
    event.preventDefault();
    add(files);
  });
  render();

  return {
    get count() {
      return pending.length;
    },

    /** Reads the model's preprocessor size (the page downscales to it before anything goes to the worker). */
    async setModel(model) {
      limit = DEFAULT_LONGEST_EDGE;
      if (!model?.capabilities?.image) return;
      const base = model.base_url ?? `/models/${model.id}/${model.revision}/`;
      try {
        const response = await fetch(`${base}preprocessor_config.json`);
        if (response.ok) limit = longestEdge(await response.json());
      } catch (err) {
        console.warn("preprocessor_config.json", err);
      }
    },

    /**
     * The user turn to send: {content, images, transfer, options, kept}. `images` are the worker's inputs (RGBA of
     * the kept bytes), `kept` the images to store with the turn (image-codec.js). Text-only turns keep string
     * content. Returns null (after showing why) when images are attached but the model reads text only, or one fails.
     */
    async takeTurn(text, model) {
      if (busy) return null;
      const options = expose ? { expose_inputs: true } : {};
      if (!pending.length) return { content: text, images: [], transfer: [], options, kept: [] };
      if (!model?.capabilities?.image) {
        const name = model?.name ?? model?.id ?? "This model";
        const why = `${name} reads text only, so nothing was sent. Load a model tagged “[image]” to ask about images, or remove the image.`;
        showError(new EdgeChatError(ErrorCode.TEXT_ONLY_MODEL, why));
        return null;
      }
      busy = true;
      try {
        const items = pending.slice();
        const images = [];
        const kept = [];
        for (const item of items) {
          let image;
          let pixels;
          try {
            // The model reads the decoded kept bytes, not the file: after a reload it reads exactly these again.
            const { original: _original, ...rest } = await keepImage(item.blob, limit);
            image = rest;
            pixels = await pixelsOf(image.blob);
          } catch {
            notAnImage(item.name);
            return null;
          }
          kept.push(image);
          images.push({ id: image.id, width: pixels.width, height: pixels.height, data: pixels.data.buffer });
        }
        for (const item of items) remove(item);
        const content = [...images.map(({ id }) => ({ type: "image", id })), ...(text ? [{ type: "text", text }] : [])];
        return { content, images, transfer: images.map((i) => i.data), options, kept };
      } finally {
        busy = false;
      }
    },
  };
}
