// The chats the page keeps: the one open and the stored list, and what the sidebar asks of them (open, new,
// rename, delete, export, import), and their kept images (a URL to show one, the pixels to resend one to the
// worker). The store is conversations.js's IndexedDB store; the sidebar draws the list.

import {
  exportConversations,
  imageIdsOf,
  keptImages,
  checkImportSize,
  newConversation,
  openConversationStore,
  parseImport,
  refusedImagesError,
  settleImportedImages,
} from "./conversations.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { pixelsOf, restoreImage, toBase64 } from "./image-codec.js";

const CURRENT_KEY = "edge-chat-current-conversation";

const remember = (value) => {
  try {
    localStorage.setItem(CURRENT_KEY, value);
  } catch {
    // storage off: the open chat is not remembered across reloads
  }
};
const recall = () => {
  try {
    return localStorage.getItem(CURRENT_KEY);
  } catch {
    return null;
  }
};

/**
 * @param {{sidebar: ReturnType<import("./sidebar.js").createSidebar>, onShow: () => void,
 *          onError: (err: unknown) => void, onStored?: () => void}} options  onShow: a different chat is now open;
 *          onStored: what is stored changed (the storage panel counts the images)
 */
export function createChats({ sidebar, onShow, onError, onStored = () => {} }) {
  let store = null;
  let stored = []; // newest first
  let current = newConversation();
  const urls = new Map(); // image id → blob: URL (kept images are small: downscaled to the model's size)

  /** The blob of a kept image: the open chat's own (a turn not saved yet) or the store's. */
  async function blobOf(id) {
    const here = current.messages.flatMap(keptImages).find((i) => i.id === id && i.blob);
    return here?.blob ?? (await store?.image(id))?.blob ?? null;
  }

  const redraw = () => sidebar.render(stored, current.id);

  function show() {
    document.body.dataset.conversation = current.id;
    remember(current.id);
    redraw();
    onShow();
  }

  return {
    get current() {
      return current;
    },

    /** Opens the store and the chat that was open last time. */
    async start() {
      store = await openConversationStore();
      try {
        stored = await store.list();
        const id = recall();
        const found = id ? await store.get(id) : null;
        if (found) current = found;
      } catch (err) {
        console.warn("[chats]", err);
      }
      show();
      // After show(): showing a chat clears the error line, and this one must stay.
      if (!store.persistent) onError(new EdgeChatError(ErrorCode.STORAGE_UNAVAILABLE, store.reason));
    },

    /** Stores the open chat (once it has a message) and redraws the list. */
    async save() {
      if (!store || current.messages.length === 0) return;
      current.updated = new Date().toISOString();
      try {
        await store.put(current);
        stored = await store.list();
      } catch (err) {
        onError(new EdgeChatError(ErrorCode.STORAGE_UNAVAILABLE, undefined, String(err?.message ?? err)));
      }
      redraw();
      onStored();
    },

    /** A URL that shows a kept image (null when it is gone). */
    async imageUrl(image) {
      if (urls.has(image.id)) return urls.get(image.id);
      const blob = image.blob ?? (await blobOf(image.id));
      if (!blob) return null;
      if (!urls.has(image.id)) urls.set(image.id, URL.createObjectURL(blob));
      return urls.get(image.id);
    },

    /**
     * The worker's image inputs ({id, width, height, data: ArrayBuffer}) for kept images it does not hold, decoded
     * from the very bytes that are stored: a reopened chat feeds the model what it saw the first time.
     * @param {string[]} ids
     */
    async pixelsFor(ids) {
      const out = [];
      for (const id of ids) {
        const blob = await blobOf(id);
        if (!blob)
          throw new EdgeChatError(
            ErrorCode.STORAGE_UNAVAILABLE,
            "An image of this chat is no longer stored on this device; start a new chat to ask about it again.",
          );
        const { width, height, data } = await pixelsOf(blob);
        out.push({ id, width, height, data: data.buffer });
      }
      return out;
    },

    /** {count, bytes} of the kept images (null before the store is open). */
    imageUsage() {
      return store ? store.imageUsage() : Promise.resolve(null);
    },

    async open(id) {
      const found = await store.get(id);
      if (!found) return;
      current = found; // as stored: images by id (the worker gets their pixels again when a turn needs them)
      show();
    },

    startNew(model = null) {
      current = newConversation(model);
      show();
    },

    async rename(id, title) {
      if (title) {
        const chat = id === current.id ? current : await store.get(id);
        if (chat) {
          chat.title = title;
          await store.put(chat);
          stored = await store.list();
        }
      }
      redraw();
    },

    async remove(id) {
      await store.delete(id);
      stored = await store.list();
      if (id === current.id) {
        current = newConversation(current.model);
        show();
      } else {
        redraw();
      }
      sidebar.say("Chat deleted.");
      onStored();
    },

    async exportAll() {
      const all = await store.list();
      const images = new Map();
      for (const id of imageIdsOf(all.flatMap((c) => c.messages))) {
        const image = await store.image(id);
        if (!image) continue; // exported as lost
        const data = toBase64(new Uint8Array(await image.blob.arrayBuffer()));
        images.set(id, { type: image.type, width: image.width, height: image.height, data });
      }
      const blob = new Blob([exportConversations(all, images)], { type: "application/json" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `edge-chat-${new Date().toISOString().slice(0, 10)}.json`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      sidebar.say(`Exported ${all.length} chat${all.length === 1 ? "" : "s"}.`);
    },

    /**
     * Adds the chats of an export file: none when the file itself is wrong; when only some images are (too large,
     * damaged), those images are refused with a message naming each, and everything else is imported.
     */
    async importFile(file) {
      let imported;
      let refused;
      try {
        const existing = new Set((await store.list()).map((c) => c.id));
        checkImportSize(file.size); // before reading it
        imported = parseImport(await file.text(), existing);
        refused = await settleImportedImages(imported, restoreImage);
        await store.putAll(imported); // one transaction
      } catch (err) {
        onError(err);
        sidebar.say("Nothing was imported.");
        return;
      }
      stored = await store.list();
      redraw();
      onStored();
      const chats = `Imported ${imported.length} chat${imported.length === 1 ? "" : "s"}`;
      if (refused.length) onError(refusedImagesError(refused, imported.length));
      sidebar.say(
        refused.length
          ? `${chats}; ${refused.length} image${refused.length === 1 ? " was" : "s were"} refused.`
          : `${chats}.`,
      );
    },
  };
}
