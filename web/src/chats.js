// The chats the page keeps: the one open and the stored list, and what the sidebar asks of them (open, new,
// rename, delete, export, import). The store is conversations.js's IndexedDB store; the sidebar draws the list.

import {
  exportConversations,
  newConversation,
  openConversationStore,
  parseImport,
} from "./conversations.js";
import { EdgeChatError, ErrorCode } from "./errors.js";

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
 *          onError: (err: unknown) => void}} options  onShow: a different chat is now open
 */
export function createChats({ sidebar, onShow, onError }) {
  let store = null;
  let stored = []; // newest first
  let current = newConversation();

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
      if (!store.persistent) onError(new EdgeChatError(ErrorCode.STORAGE_UNAVAILABLE));
      try {
        stored = await store.list();
        const id = recall();
        const found = id ? await store.get(id) : null;
        if (found) current = found;
      } catch (err) {
        console.warn("[chats]", err);
      }
      show();
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
    },

    async open(id) {
      const found = await store.get(id);
      if (!found) return;
      current = found; // as stored: images are counts, the worker no longer has their pixels
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
    },

    async exportAll() {
      const all = await store.list();
      const blob = new Blob([exportConversations(all)], { type: "application/json" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `edge-chat-${new Date().toISOString().slice(0, 10)}.json`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
      sidebar.say(`Exported ${all.length} chat${all.length === 1 ? "" : "s"}.`);
    },

    /** Adds the chats of an export file, all or (when anything in it is wrong) none. */
    async importFile(file) {
      let imported;
      try {
        const existing = new Set((await store.list()).map((c) => c.id));
        imported = parseImport(await file.text(), existing);
        await store.putAll(imported); // one transaction
      } catch (err) {
        onError(err);
        sidebar.say("Nothing was imported.");
        return;
      }
      stored = await store.list();
      redraw();
      sidebar.say(`Imported ${imported.length} chat${imported.length === 1 ? "" : "s"}.`);
    },
  };
}
