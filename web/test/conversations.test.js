// conversations.js and image-codec.js, the pure parts: what is stored of a chat with images (the index field), the
// export's inline images, an import's version 1 counts, and an import whose images are refused one by one while
// the rest of the file imports.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  exportConversations,
  imageIdsOf,
  parseImport,
  refusedImagesError,
  settleImportedImages,
  storable,
} from "../src/conversations.js";
import { base64Bytes, fitWithin, restoreImage, toBase64 } from "../src/image-codec.js";

const image = (id, extra = {}) => ({ id, type: "image/webp", width: 20, height: 10, bytes: 3, ...extra });
const chat = (messages, title = "") => ({
  id: "c1",
  title,
  created: "2026-01-01T00:00:00Z",
  updated: "2026-01-01T00:00:00Z",
  messages,
});

test("a stored chat names its images once for the index, and never stores a blob in the record", () => {
  const blob = new Blob([new Uint8Array([1, 2, 3])], { type: "image/webp" });
  const c = chat([
    { role: "user", content: "a", images: [image("sha256-a", { blob }), image("sha256-b")] },
    { role: "assistant", content: "b" },
    { role: "user", content: "c", images: [image("sha256-a")] },
    { role: "user", content: "old", images: 2 }, // a record from before images were kept: a count
  ]);
  const record = storable(c);
  assert.deepEqual(record.imageIds, ["sha256-a", "sha256-b"]);
  assert.deepEqual(record.messages[0].images, [image("sha256-a"), image("sha256-b")]);
  assert.deepEqual(record.messages[3], { role: "user", content: "old", imagesLost: 2 });
  assert.deepEqual(imageIdsOf(record.messages), record.imageIds);
  assert.doesNotThrow(() => structuredClone(record));
  assert.ok(!JSON.stringify(record).includes("blob"));
});

test("an export carries the images it has inline and counts the ones it has not", () => {
  const c = chat([{ role: "user", content: "a", images: [image("sha256-a"), image("sha256-gone")] }]);
  const data = { type: "image/webp", width: 20, height: 10, data: "AQID" };
  const out = JSON.parse(exportConversations([storable(c)], new Map([["sha256-a", data]])));
  assert.equal(out.version, 2);
  assert.deepEqual(out.conversations[0].messages[0], {
    role: "user",
    content: "a",
    images: [{ id: "sha256-a", ...data }],
    imagesLost: 1,
  });
  assert.equal(out.conversations[0].imageIds, undefined);
});

test("a version 1 file's image counts import as images not kept", () => {
  const file = {
    format: "edge-chat-conversations",
    version: 1,
    conversations: [{ messages: [{ role: "user", content: "x", images: 2 }] }],
  };
  const [c] = parseImport(JSON.stringify(file));
  assert.deepEqual(c.messages, [{ role: "user", content: "x", imagesLost: 2 }]);
});

test("a refused image costs only itself: its turn and chat import, and the error names chat, message and image", async () => {
  const file = {
    format: "edge-chat-conversations",
    version: 2,
    conversations: [
      {
        title: "Trip",
        messages: [
          { role: "user", content: "one", images: [{ bad: true }, { good: 1 }] },
          { role: "assistant", content: "ok" },
        ],
      },
    ],
  };
  const [c] = parseImport(JSON.stringify(file));
  const restore = async (entry) => {
    if (entry.bad) throw new Error("it does not decode as an image (damaged)");
    return image("sha256-good");
  };
  const refused = await settleImportedImages([c], restore);
  assert.deepEqual(refused, ["chat “Trip”, message 1, image 1: it does not decode as an image (damaged)"]);
  assert.deepEqual(c.messages[0], { role: "user", content: "one", images: [image("sha256-good")], imagesLost: 1 });
  assert.equal(c.messages[1].content, "ok");
  const message = refusedImagesError(refused, 1).message;
  assert.match(message, /^1 chat was imported, but 1 image was refused/);
  assert.match(message, /each image at most 8\.0 MB and 4096 px on its longest edge.*a whole file at most 100 MB/);
});

test("an image over a cap or of another type is refused before it is decoded", async () => {
  const entry = (extra) => ({
    type: "image/webp",
    width: 20,
    height: 10,
    data: toBase64(new Uint8Array(30)),
    ...extra,
  });
  await assert.rejects(restoreImage(entry({ type: "image/heic" })), /is not WebP, JPEG or PNG/);
  await assert.rejects(restoreImage(entry({ width: 5000 })), /5000 × 10 px, over the cap of 4096 px/);
  await assert.rejects(
    restoreImage(entry({ data: "A".repeat(12 * 1024 * 1024) })),
    /it is 9\.0 MB, over the cap of 8\.0 MB/,
  );
  await assert.rejects(restoreImage(entry({ id: "sha256-00" })), /do not match its checksum/);
});

test("images are downscaled to the processor's longest edge and never upscaled", () => {
  assert.deepEqual(fitWithin(600, 300, 256), { width: 256, height: 128 });
  assert.deepEqual(fitWithin(200, 150, 256), { width: 200, height: 150 });
  assert.deepEqual(fitWithin(1, 4000, 2048), { width: 1, height: 2048 });
  for (const n of [0, 1, 2, 3, 4, 5, 100]) assert.equal(base64Bytes(toBase64(new Uint8Array(n))), n);
});
