// Saved conversations: one IndexedDB object store ("conversations", keyed by id) in the page's origin, so they
// survive reloads and work offline; export to and import from JSON. No DOM here.
//
// A conversation: {id, title, created, updated, model, dropped, messages: [{role, content, images?, interrupted?}]}
// where an assistant message's content is the reply as decoded (a reasoning model's <think>…</think> included:
// thinking.js splits it for display and for later turns) and `images` counts the images a user turn had (the
// pixels are not kept). IndexedDB is used directly: four calls on one store do not earn a wrapper library.

import { EdgeChatError, ErrorCode } from "./errors.js";

const DB_NAME = "edge-chat";
const DB_VERSION = 1;
const STORE = "conversations";
export const EXPORT_FORMAT = "edge-chat-conversations";
export const EXPORT_VERSION = 1;
const MAX_IMPORT_BYTES = 50 * 1024 * 1024;
const ROLES = new Set(["user", "assistant"]);

/** A fresh, empty conversation (not stored until it has a message). */
export function newConversation(model = null) {
  const now = new Date().toISOString();
  return { id: crypto.randomUUID(), title: "", created: now, updated: now, model, dropped: 0, messages: [] };
}

/** The title a conversation shows: its own, or the start of its first user message. */
export function conversationTitle(conversation) {
  if (conversation.title) return conversation.title;
  const first = conversation.messages.find((m) => m.role === "user" && m.content.trim());
  if (!first) return "New chat";
  const text = first.content.trim().replace(/\s+/g, " ");
  return text.length > 48 ? `${text.slice(0, 47)}…` : text;
}

/** What is stored and exported: plain data only (a live turn's image ids and thumbnails stay in the page). */
export function storable(conversation) {
  return {
    id: conversation.id,
    title: conversation.title ?? "",
    created: conversation.created,
    updated: conversation.updated,
    model: conversation.model ?? null,
    dropped: conversation.dropped ?? 0,
    messages: conversation.messages.map((m) => {
      const out = { role: m.role, content: m.content };
      const images = m.imageIds?.length ?? m.images ?? 0;
      if (images) out.images = images;
      if (m.interrupted) out.interrupted = true;
      return out;
    }),
  };
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "id" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("the conversation database is blocked by another tab"));
  });
}

/** The store in IndexedDB; where the browser refuses it, a memory store and `persistent: false`. */
export async function openConversationStore() {
  let db;
  try {
    db = await openDatabase();
  } catch (err) {
    console.warn("[conversations] IndexedDB unavailable", err);
    return memoryStore();
  }
  const run = async (mode, fn) => {
    const tx = db.transaction(STORE, mode);
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    });
    const result = await fn(tx.objectStore(STORE));
    await done;
    return result;
  };
  return {
    persistent: true,
    list: () => run("readonly", (s) => request(s.getAll())).then(sortByUpdated),
    get: (id) => run("readonly", (s) => request(s.get(id))),
    put: (conversation) => run("readwrite", (s) => request(s.put(storable(conversation)))),
    /** Adds several conversations in one transaction: all of them or (on an error) none. */
    putAll: (conversations) =>
      run("readwrite", async (s) => {
        for (const c of conversations) await request(s.put(storable(c)));
      }),
    delete: (id) => run("readwrite", (s) => request(s.delete(id))),
  };
}

function memoryStore() {
  const data = new Map();
  const copy = (c) => structuredClone(storable(c));
  return {
    persistent: false,
    list: async () => sortByUpdated([...data.values()].map((c) => structuredClone(c))),
    get: async (id) => (data.has(id) ? structuredClone(data.get(id)) : undefined),
    put: async (c) => void data.set(c.id, copy(c)),
    putAll: async (cs) => cs.forEach((c) => data.set(c.id, copy(c))),
    delete: async (id) => void data.delete(id),
  };
}

const sortByUpdated = (list) => list.sort((a, b) => String(b.updated).localeCompare(String(a.updated)));

/** The export file's text: every conversation, as stored. */
export function exportConversations(conversations) {
  return JSON.stringify(
    {
      format: EXPORT_FORMAT,
      version: EXPORT_VERSION,
      exported: new Date().toISOString(),
      conversations: conversations.map(storable),
    },
    null,
    2,
  );
}

function bad(why) {
  return new EdgeChatError(ErrorCode.BAD_IMPORT, `That file is not an Edge Chat conversation export (${why}); nothing was imported.`);
}

const isoOr = (value, fallback) => (typeof value === "string" && !Number.isNaN(Date.parse(value)) ? value : fallback);

/**
 * The conversations in an export file's text, checked. Ids that `existing` already has get new ones, so an
 * import never replaces a conversation. Throws bad-import (naming what is wrong) for anything else.
 * @param {string} text
 * @param {Set<string>} existing  ids already stored
 */
export function parseImport(text, existing = new Set()) {
  if (typeof text !== "string" || text.length > MAX_IMPORT_BYTES) throw bad("larger than 50 MB");
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON: ${err.message}`);
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) throw bad("not a JSON object");
  if (data.format !== EXPORT_FORMAT) throw bad(`"format" is not "${EXPORT_FORMAT}"`);
  if (data.version !== EXPORT_VERSION) throw bad(`version ${JSON.stringify(data.version)} is not ${EXPORT_VERSION}`);
  if (!Array.isArray(data.conversations)) throw bad('"conversations" is not a list');
  const now = new Date().toISOString();
  const seen = new Set(existing);
  return data.conversations.map((c, i) => {
    const where = `conversation ${i + 1}`;
    if (!c || typeof c !== "object" || Array.isArray(c)) throw bad(`${where} is not an object`);
    if (!Array.isArray(c.messages)) throw bad(`${where} has no list of messages`);
    const messages = c.messages.map((m, j) => {
      if (!m || typeof m !== "object") throw bad(`${where}, message ${j + 1} is not an object`);
      if (!ROLES.has(m.role)) throw bad(`${where}, message ${j + 1} has role ${JSON.stringify(m.role)}`);
      if (typeof m.content !== "string") throw bad(`${where}, message ${j + 1} has no text content`);
      const out = { role: m.role, content: m.content };
      if (Number.isInteger(m.images) && m.images > 0) out.images = m.images;
      if (m.interrupted === true) out.interrupted = true;
      return out;
    });
    if (c.title !== undefined && typeof c.title !== "string") throw bad(`${where} has a title that is not text`);
    let id = typeof c.id === "string" && c.id ? c.id : crypto.randomUUID();
    if (seen.has(id)) id = crypto.randomUUID();
    seen.add(id);
    return {
      id,
      title: c.title ?? "",
      created: isoOr(c.created, now),
      updated: isoOr(c.updated, now),
      model: typeof c.model === "string" ? c.model : null,
      dropped: Number.isInteger(c.dropped) && c.dropped > 0 ? c.dropped : 0,
      messages,
    };
  });
}
