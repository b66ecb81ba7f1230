// protocol.js: requests and replies matched by id over a MessageChannel standing in for the worker.
import assert from "node:assert/strict";
import { test } from "node:test";

import { EdgeChatError, ErrorCode } from "../src/errors.js";
import { Reply, Request, serveRequests, WorkerClient, WorkerError } from "../src/protocol.js";

test("replies and errors reach the request that caused them; interrupt overtakes the queue", async () => {
  // port1 is the page's end, port2 the worker's global scope.
  const { port1, port2 } = new MessageChannel();
  port1.start();
  port2.start();
  const log = [];
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  serveRequests(port2, {
    async [Request.GENERATE](message, reply) {
      log.push(`start ${message.id}`);
      reply({ type: Reply.TOKEN, text: message.messages[0].content });
      if (message.messages[0].content === "slow") await gate;
      if (message.messages[0].content === "fail") {
        throw new EdgeChatError(ErrorCode.CONTEXT_FULL, "too long", "", { tokens: 9, limit: 8 });
      }
      log.push(`end ${message.id}`);
      return { type: Reply.DONE, text: message.messages[0].content };
    },
    [Request.INTERRUPT](message) {
      log.push(`interrupt ${message.target}`);
      release();
    },
  });
  const client = new WorkerClient(port1);
  const tokens = {};
  const ask = (content) => {
    const r = client.request(
      { type: Request.GENERATE, messages: [{ role: "user", content }] },
      { onMessage: (m) => m.type === Reply.TOKEN && (tokens[r.id] ??= []).push(m.text) },
    );
    return r;
  };
  const slow = ask("slow");
  const failing = ask("fail");
  const fine = ask("fine");
  await new Promise((resolve) => setTimeout(resolve, 50));
  client.post({ type: Request.INTERRUPT, target: slow.id });
  const settled = await Promise.allSettled([slow.done, failing.done, fine.done]);
  const unknown = client.request({ type: Request.COUNT, messages: [] });
  const unknownError = await unknown.done.then(
    () => null,
    (err) => ({ code: err.code, id: err.requestId, name: err.name }),
  );
  assert.throws(() => client.request({ type: Request.INTERRUPT }), (err) => err.code === "bad-request");
  port1.close();

  const ids = [slow.id, failing.id, fine.id, unknown.id];
  assert.equal(new Set(ids).size, 4);
  // One request at a time, in order; the interrupt did not wait in that queue.
  assert.deepEqual(log, [
    `start ${slow.id}`,
    `interrupt ${slow.id}`,
    `end ${slow.id}`,
    `start ${failing.id}`,
    `start ${fine.id}`,
    `end ${fine.id}`,
  ]);
  assert.deepEqual(tokens, { [slow.id]: ["slow"], [failing.id]: ["fail"], [fine.id]: ["fine"] });
  const outcome = settled.map((s) =>
    s.status === "fulfilled"
      ? { ok: s.value.text, id: s.value.id }
      : { code: s.reason.code, id: s.reason.requestId, data: s.reason.data, isWorkerError: s.reason instanceof WorkerError },
  );
  assert.deepEqual(outcome, [
    { ok: "slow", id: slow.id },
    { code: "context-full", id: failing.id, data: { tokens: 9, limit: 8 }, isWorkerError: true },
    { ok: "fine", id: fine.id },
  ]);
  // count has no handler here: an error with its id, not silence
  assert.deepEqual(unknownError, { code: "bad-request", id: unknown.id, name: "WorkerError" });
  assert.equal(client.pending.size, 0);
});
