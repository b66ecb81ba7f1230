// Saved conversations in the page's origin, so they survive reloads and work offline; export to and import from
// JSON. No DOM here. IndexedDB is used directly: a few calls on two stores do not earn a wrapper library.
//
// A conversation: {id, title, created, updated, model, dropped, messages: [{role, content, images?, imagesLost?,
// interrupted?}]} where an assistant message's content is the reply as decoded (a reasoning model's <think>…</think>
// included: thinking.js splits it for display and for later turns). A user turn's `images` are kept images
// (image-codec.js: {id, type, width, height, bytes}, id = SHA-256 of the encoded bytes); `imagesLost` counts images
// it had that are not kept (saved before images were kept, when `images` was a count, or refused on import).
//
// Two object stores: "conversations" (keyed by id) and "images" (keyed by the content hash: {id, blob, type, width,
// height, bytes}). Images live in their own store so the chat list never reads pixels, and the same picture in two
// chats (an import of a chat already here, a resent photo) is stored once. Its reference count is the database's
// own: the conversations store indexes every record's `imageIds` (multiEntry), and a write or delete that drops an
// id deletes the blob in the same transaction when the index no longer counts it. No counter can drift.

import { EdgeChatError, ErrorCode } from "./errors.js";
import { IMAGE_CAPS_TEXT } from "./image-codec.js";

const DB_NAME = "edge-chat";
const DB_VERSION = 2; // 2: the images store and the conversations' image index
const STORE = "conversations";
const IMAGES = "images";
const BY_IMAGE = "by-image";
export const EXPORT_FORMAT = "edge-chat-conversations";
export const EXPORT_VERSION = 2; // 2: kept images inline (base64); version 1 files (image counts) still import
export const MAX_IMPORT_BYTES = 100 * 1024 * 1024;
export const IMPORT_CAPS_TEXT = `${IMAGE_CAPS_TEXT}; a whole file at most ${MAX_IMPORT_BYTES / (1024 * 1024)} MB`;
const ROLES = new Set(["user", "assistant"]);
const BLOCKED =
  "Saved chats are held by another tab of Edge Chat running an older version: reload or close that tab, then reload this one. Until then, chats here last until this tab closes.";

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

/** A message's kept images ([] when none; a count from before images were kept is not a list). */
export const keptImages = (message) => (Array.isArray(message?.images) ? message.images : []);

/** How many images a message had that are not kept. */
export const lostImages = (message) =>
  (Number.isInteger(message?.images) ? message.images : 0) +
  (Number.isInteger(message?.imagesLost) ? message.imagesLost : 0);

/** The ids of the images `messages` keep, each once, in order. */
export const imageIdsOf = (messages) => [...new Set(messages.flatMap((m) => keptImages(m).map((i) => i.id)))];

const imageMeta = ({ id, type, width, height, bytes }) => ({ id, type, width, height, bytes });

/** What is stored: plain data only (blobs go to the images store; `imageIds` is what the image index reads). */
export function storable(conversation) {
  const messages = conversation.messages.map((m) => {
    const out = { role: m.role, content: m.content };
    const kept = keptImages(m);
    if (kept.length) out.images = kept.map(imageMeta);
    const lost = lostImages(m);
    if (lost) out.imagesLost = lost;
    if (m.interrupted) out.interrupted = true;
    return out;
  });
  return {
    id: conversation.id,
    title: conversation.title ?? "",
    created: conversation.created,
    updated: conversation.updated,
    model: conversation.model ?? null,
    dropped: conversation.dropped ?? 0,
    messages,
    imageIds: imageIdsOf(messages),
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
    req.onupgradeneeded = (event) => {
      const db = req.result;
      const conversations =
        event.oldVersion < 1 ? db.createObjectStore(STORE, { keyPath: "id" }) : req.transaction.objectStore(STORE);
      if (event.oldVersion < 2) {
        db.createObjectStore(IMAGES, { keyPath: "id" });
        conversations.createIndex(BY_IMAGE, "imageIds", { multiEntry: true });
      }
    };
    req.onsuccess = () => {
      const db = req.result;
      db.onversionchange = () => db.close(); // a newer page upgrades the database: let it
      resolve(db);
    };
    req.onerror = () => reject(req.error);
    // Another tab still runs an older page on the older database (it cannot know to let go): say so, not "private".
    req.onblocked = () => reject(Object.assign(new Error("blocked by another tab"), { blocked: true }));
  });
}

/**
 * Writes the blobs of `conversation`'s kept images that the page holds (the rest are stored already).
 * @param {IDBObjectStore} images
 */
async function writeImages(images, conversation) {
  for (const m of conversation.messages) {
    for (const image of keptImages(m)) {
      if (!image.blob || (await request(images.count(image.id)))) continue;
      await request(images.put({ ...imageMeta(image), bytes: image.blob.size, blob: image.blob }));
    }
  }
}

/** Deletes each of `ids` that no stored conversation refers to any more (same transaction as the write). */
async function release(tx, ids) {
  const index = tx.objectStore(STORE).index(BY_IMAGE);
  for (const id of ids) if (!(await request(index.count(id)))) await request(tx.objectStore(IMAGES).delete(id));
}

/**
 * The store in IndexedDB; where the browser refuses it, a memory store and `persistent: false`, with `reason`
 * set when what stands in the way is another tab of this site (it holds the database at an older version).
 */
export async function openConversationStore() {
  let db;
  try {
    db = await openDatabase();
  } catch (err) {
    console.warn("[conversations] IndexedDB unavailable", err);
    return { ...memoryStore(), reason: err?.blocked ? BLOCKED : undefined };
  }
  const run = async (mode, fn) => {
    const tx = db.transaction([STORE, IMAGES], mode);
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    });
    let result;
    try {
      result = await fn(tx);
    } catch (err) {
      tx.abort(); // nothing half-written
      throw err;
    }
    await done;
    return result;
  };
  const chats = (tx) => tx.objectStore(STORE);
  const putOne = async (tx, conversation) => {
    const old = await request(chats(tx).get(conversation.id));
    await writeImages(tx.objectStore(IMAGES), conversation);
    const record = storable(conversation);
    await request(chats(tx).put(record));
    await release(
      tx,
      (old?.imageIds ?? []).filter((id) => !record.imageIds.includes(id)),
    );
  };
  return {
    persistent: true,
    list: () => run("readonly", (tx) => request(chats(tx).getAll())).then(sortByUpdated),
    get: (id) => run("readonly", (tx) => request(chats(tx).get(id))),
    put: (conversation) => run("readwrite", (tx) => putOne(tx, conversation)),
    /** Adds several conversations (and their images) in one transaction: all of them or (on an error) none. */
    putAll: (conversations) =>
      run("readwrite", async (tx) => {
        for (const c of conversations) await putOne(tx, c);
      }),
    /** Deletes a conversation and every image no other conversation keeps. */
    delete: (id) =>
      run("readwrite", async (tx) => {
        const old = await request(chats(tx).get(id));
        await request(chats(tx).delete(id));
        await release(tx, old?.imageIds ?? []);
      }),
    /** A kept image: {id, blob, type, width, height, bytes}, or undefined. */
    image: (id) => run("readonly", (tx) => request(tx.objectStore(IMAGES).get(id))),
    /** How many images are kept and their bytes. */
    imageUsage: () =>
      run("readonly", async (tx) => {
        const all = await request(tx.objectStore(IMAGES).getAll());
        return { count: all.length, bytes: all.reduce((sum, i) => sum + (i.blob?.size ?? 0), 0) };
      }),
  };
}

function memoryStore() {
  const data = new Map();
  const images = new Map();
  const put = (c) => {
    for (const m of c.messages)
      for (const i of keptImages(m))
        if (i.blob && !images.has(i.id)) images.set(i.id, { ...imageMeta(i), blob: i.blob });
    data.set(c.id, structuredClone(storable(c)));
    prune();
  };
  const prune = () => {
    const used = new Set([...data.values()].flatMap((c) => c.imageIds));
    for (const id of images.keys()) if (!used.has(id)) images.delete(id);
  };
  return {
    persistent: false,
    list: async () => sortByUpdated([...data.values()].map((c) => structuredClone(c))),
    get: async (id) => (data.has(id) ? structuredClone(data.get(id)) : undefined),
    put: async (c) => put(c),
    putAll: async (cs) => cs.forEach(put),
    delete: async (id) => {
      data.delete(id);
      prune();
    },
    image: async (id) => images.get(id),
    imageUsage: async () => ({ count: images.size, bytes: [...images.values()].reduce((s, i) => s + i.blob.size, 0) }),
  };
}

const sortByUpdated = (list) => list.sort((a, b) => String(b.updated).localeCompare(String(a.updated)));

/**
 * The export file's text: every conversation, its kept images inline.
 * @param {object[]} conversations  as stored
 * @param {Map<string, {type: string, width: number, height: number, data: string}>} images  id → base64 bytes;
 *   an image missing here is exported as lost
 */
export function exportConversations(conversations, images = new Map()) {
  const out = conversations.map((c) => {
    const { imageIds: _ids, ...record } = storable(c);
    record.messages = record.messages.map((m) => {
      const kept = (m.images ?? []).filter((i) => images.has(i.id));
      const lost = (m.imagesLost ?? 0) + (m.images?.length ?? 0) - kept.length;
      const { images: _images, imagesLost: _lost, ...rest } = m;
      return {
        ...rest,
        ...(kept.length ? { images: kept.map((i) => ({ id: i.id, ...images.get(i.id) })) } : {}),
        ...(lost ? { imagesLost: lost } : {}),
      };
    });
    return record;
  });
  return JSON.stringify(
    { format: EXPORT_FORMAT, version: EXPORT_VERSION, exported: new Date().toISOString(), conversations: out },
    null,
    2,
  );
}

function bad(why) {
  return new EdgeChatError(
    ErrorCode.BAD_IMPORT,
    `That file is not an Edge Chat conversation export (${why}); nothing was imported.`,
  );
}

const isoOr = (value, fallback) => (typeof value === "string" && !Number.isNaN(Date.parse(value)) ? value : fallback);

/** Throws bad-import when a file of `size` bytes is over the import cap. */
export function checkImportSize(size) {
  if (size > MAX_IMPORT_BYTES) throw bad(`larger than ${MAX_IMPORT_BYTES / (1024 * 1024)} MB`);
}

/**
 * The conversations in an export file's text, checked. Ids that `existing` already has get new ones, so an
 * import never replaces a conversation. Throws bad-import (naming what is wrong) for anything else. A user
 * turn's images come back as the file has them (entries to check with `settleImportedImages`).
 * @param {string} text
 * @param {Set<string>} existing  ids already stored
 */
export function parseImport(text, existing = new Set()) {
  if (typeof text !== "string") throw bad("not text");
  checkImportSize(text.length);
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON: ${err.message}`);
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) throw bad("not a JSON object");
  if (data.format !== EXPORT_FORMAT) throw bad(`"format" is not "${EXPORT_FORMAT}"`);
  if (data.version !== 1 && data.version !== EXPORT_VERSION) {
    throw bad(`version ${JSON.stringify(data.version)} is not 1 or ${EXPORT_VERSION}`);
  }
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
      // Images are checked one by one later: a bad one is refused without losing its turn or its chat.
      if (m.role === "user" && Array.isArray(m.images) && m.images.length) out.images = m.images;
      const count = (n) => (Number.isInteger(n) && n > 0 ? n : 0);
      const lost = count(m.images) + count(m.imagesLost); // a version 1 file counted images it did not keep
      if (lost) out.imagesLost = lost;
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

/**
 * Checks each image of parsed conversations with `restore` (image-codec.js's restoreImage: throws why an image
 * is refused). A good image becomes a kept image with its blob; a refused one is dropped from its turn and counted
 * in `imagesLost`, and the rest of the turn and the chat stay. Returns one line per refused image, naming the chat,
 * the message and the image.
 * @param {object[]} conversations  from parseImport (changed in place)
 * @param {(entry: unknown) => Promise<object>} restore
 * @returns {Promise<string[]>}
 */
export async function settleImportedImages(conversations, restore) {
  const refused = [];
  for (const c of conversations) {
    for (const [j, m] of c.messages.entries()) {
      if (!Array.isArray(m.images)) continue;
      const kept = [];
      for (const [k, entry] of m.images.entries()) {
        try {
          kept.push(await restore(entry));
        } catch (err) {
          m.imagesLost = (m.imagesLost ?? 0) + 1;
          refused.push(`chat “${conversationTitle(c)}”, message ${j + 1}, image ${k + 1}: ${err?.message ?? err}`);
        }
      }
      if (kept.length) m.images = kept;
      else delete m.images;
    }
  }
  return refused;
}

/** The error an import with refused images shows (everything else of the file was imported). */
export function refusedImagesError(refused, imported) {
  const chats = `${imported} chat${imported === 1 ? " was" : "s were"} imported`;
  const images = `${refused.length} image${refused.length === 1 ? " was" : "s were"} refused`;
  const message = `${chats}, but ${images} and left out: ${refused.join("; ")}. The limits are ${IMPORT_CAPS_TEXT}.`;
  return new EdgeChatError(ErrorCode.BAD_IMPORT, message);
}
