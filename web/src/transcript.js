// The transcript: a conversation's messages as DOM, each with its actions (copy, edit and resend, regenerate,
// continue), and the reply being streamed. User text is shown as typed; model output only through markdown.js
// (marked + DOMPurify), the answer and a reasoning model's thinking alike, which goes into a collapsible
// "Thinking" block and never into the answer (thinking.js decides which is which).
//
// A user turn's kept images show as thumbnails (button.message-image[data-image-id]); a click opens the image
// whole in a modal <dialog class="image-viewer"> (Escape or the close button shuts it). Images a saved chat no
// longer has are said in words (.image-note).
//
// For tests: article[data-role][data-index], assistant [data-raw] (the whole reply as decoded), [data-answer],
// [data-thinking], [data-streamed] (what arrived token by token this turn), [data-done], [data-interrupted];
// buttons [data-action=copy|edit|regenerate|continue|edit-send|edit-cancel].

import { keptImages, lostImages } from "./conversations.js";
import { setMarkdown } from "./markdown.js";
import { splitThinking } from "./thinking.js";

const EMPTY_TEXT =
  "Load a model, then ask something. The first load downloads the model once; after that it comes from the browser's cache.";

function button(action, label, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "message-action";
  b.dataset.action = action;
  b.textContent = label;
  if (title) b.title = title;
  return b;
}

/** Paints a reply (complete or streaming) into its node: thinking in the block, the answer in the body. */
export function paintReply(node, raw, { streaming = false } = {}) {
  const { thinking, answer, thinkingOpen } = splitThinking(raw);
  const block = node.querySelector(".thinking");
  const body = node.querySelector(".body");
  node.dataset.raw = raw;
  node.dataset.answer = answer;
  node.dataset.thinking = thinking ?? "";
  block.hidden = thinking === null;
  if (thinking !== null) {
    block.querySelector("summary").textContent = thinkingOpen && streaming ? "Thinking…" : "Thinking";
    setMarkdown(block.querySelector(".thinking-body"), thinking);
    if (streaming && !block.dataset.touched) block.open = thinkingOpen; // open while it thinks, shut when it answers
  }
  setMarkdown(body, answer);
}

/** The full view of an image: one modal <dialog>, made on first use. */
function createViewer() {
  let dialog = null;
  return (url, label) => {
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.className = "image-viewer";
      const form = document.createElement("form");
      form.method = "dialog";
      const close = document.createElement("button");
      close.className = "image-viewer-close";
      close.textContent = "Close";
      close.setAttribute("aria-label", "Close the image");
      form.append(close);
      const img = document.createElement("img");
      dialog.append(form, img);
      // A click on the backdrop (outside the image) closes it too, as people expect of a photo viewer.
      dialog.addEventListener("click", (event) => {
        if (event.target === dialog) dialog.close();
      });
      document.body.append(dialog);
    }
    const img = dialog.querySelector("img");
    img.src = url;
    img.alt = label;
    dialog.showModal();
  };
}

/**
 * @param {{container: HTMLElement, onAction: (action: string, index: number, text?: string) => void,
 *          imageUrl?: (image: {id: string, blob?: Blob}) => Promise<string | null>}} options
 *   imageUrl: a URL that shows a kept image (chats.js)
 */
export function createTranscript({ container, onAction, imageUrl = async () => null }) {
  let busy = false;
  const view = createViewer();

  function imageRow(images) {
    const row = document.createElement("div");
    row.className = "message-images";
    images.forEach((image, i) => {
      const label = `attached image ${i + 1} (${image.width} × ${image.height})`;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "message-image";
      open.dataset.imageId = image.id;
      open.title = "Open the image";
      open.setAttribute("aria-label", `Open ${label}`);
      const img = document.createElement("img");
      img.alt = label;
      open.append(img);
      // A blob: URL of the kept image, never model output.
      const url = imageUrl(image).catch(() => null);
      url.then((u) => {
        if (u) img.src = u;
        else open.dataset.missing = "true";
      });
      open.addEventListener("click", async () => {
        const u = await url;
        if (u) view(u, label);
      });
      row.append(open);
    });
    return row;
  }

  function messageNode(message, index, { last, lastAssistant }) {
    const node = document.createElement("article");
    node.className = `message ${message.role}`;
    node.dataset.role = message.role;
    node.dataset.index = String(index);
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    const actions = document.createElement("div");
    actions.className = "actions";
    node.append(who);
    if (message.role === "user") {
      const kept = keptImages(message);
      if (kept.length) node.append(imageRow(kept));
      const lost = lostImages(message);
      if (lost) {
        const note = document.createElement("p");
        note.className = "muted image-note";
        note.dataset.lost = String(lost);
        note.textContent = `${lost} image${lost > 1 ? "s" : ""} attached here ${lost > 1 ? "are" : "is"} not kept with this chat`;
        node.append(note);
      }
      body.textContent = message.content; // as typed, never parsed
      node.append(body, actions);
      actions.append(button("edit", "Edit", "Edit this message and send it again (what followed is dropped)"));
    } else {
      const block = document.createElement("details");
      block.className = "thinking";
      block.hidden = true;
      const summary = document.createElement("summary");
      summary.textContent = "Thinking";
      const inner = document.createElement("div");
      inner.className = "thinking-body";
      block.append(summary, inner);
      block.addEventListener("toggle", () => {
        if (node.dataset.done === "false") block.dataset.touched = "true";
      });
      const meta = document.createElement("div");
      meta.className = "meta muted";
      meta.textContent = message.meta ?? "";
      node.append(block, body, meta, actions);
      paintReply(node, message.content);
      node.dataset.done = "true";
      if (message.interrupted) node.dataset.interrupted = "true";
      actions.append(button("copy", "Copy", "Copy the answer"));
      if (lastAssistant && last) {
        actions.append(button("regenerate", "Regenerate", "Write this reply again"));
        actions.append(button("continue", "Continue", "Let the model go on from where this reply stops"));
      }
    }
    return node;
  }

  function startEdit(node, index, text) {
    const body = node.querySelector(".body");
    const actions = node.querySelector(".actions");
    const area = document.createElement("textarea");
    area.className = "edit-area";
    area.value = text;
    area.rows = Math.min(8, Math.max(2, text.split("\n").length));
    body.replaceChildren(area);
    actions.replaceChildren(button("edit-send", "Send", "Send the edited message"), button("edit-cancel", "Cancel"));
    actions.querySelector('[data-action="edit-send"]').addEventListener("click", () => {
      if (area.value.trim()) onAction("edit", index, area.value.trim());
    });
    actions.querySelector('[data-action="edit-cancel"]').addEventListener("click", () => onAction("render", index));
    area.focus();
  }

  container.addEventListener("click", (event) => {
    const target = event.target.closest?.("button[data-action]");
    if (!target || !container.contains(target) || busy) return;
    const node = target.closest("article[data-index]");
    const index = Number(node?.dataset.index);
    const action = target.dataset.action;
    if (action === "edit") startEdit(node, index, node.querySelector(".body").textContent);
    else if (action === "copy" || action === "regenerate" || action === "continue") onAction(action, index);
  });

  return {
    /** Draws `conversation` from scratch. */
    render(conversation) {
      container.replaceChildren();
      if (conversation.dropped) {
        const note = document.createElement("p");
        note.className = "muted dropped-note";
        note.dataset.dropped = String(conversation.dropped);
        note.textContent = `${conversation.dropped} earlier message${conversation.dropped > 1 ? "s were" : " was"} dropped to fit the model's context.`;
        container.append(note);
      }
      const messages = conversation.messages;
      if (messages.length === 0) {
        const empty = document.createElement("p");
        empty.className = "empty muted";
        empty.textContent = EMPTY_TEXT;
        container.append(empty);
        return;
      }
      const lastAssistant = messages.findLastIndex((m) => m.role === "assistant");
      messages.forEach((m, i) =>
        container.append(messageNode(m, i, { last: i === messages.length - 1, lastAssistant: i === lastAssistant })),
      );
      this.setBusy(busy);
      container.lastElementChild?.scrollIntoView({ block: "end" });
    },

    /** The node of message `index` (the reply being streamed, or the message edited). */
    node(index) {
      return container.querySelector(`article[data-index="${index}"]`);
    },

    /** Marks the node of a reply as streaming: tokens go to `update(raw)`. */
    streaming(index) {
      const node = this.node(index);
      node.dataset.done = "false";
      node.dataset.streamed = "";
      delete node.dataset.interrupted;
      delete node.dataset.error;
      node.querySelector(".actions").replaceChildren();
      node.querySelector(".meta").textContent = "";
      let pending = false;
      let latest = node.dataset.raw ?? "";
      return {
        node,
        update(raw, streamed) {
          latest = raw;
          node.dataset.streamed = streamed;
          node.dataset.raw = raw;
          if (pending) return;
          pending = true;
          requestAnimationFrame(() => {
            pending = false;
            paintReply(node, latest, { streaming: true });
            node.scrollIntoView({ block: "end" });
          });
        },
      };
    },

    /** Turns every message action off while a reply is being written. */
    setBusy(value) {
      busy = value;
      for (const b of container.querySelectorAll("button[data-action]")) b.disabled = value;
    },
  };
}
