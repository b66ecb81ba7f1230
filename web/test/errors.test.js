// errors.js: the one list of error codes, each with a message, and the mapping of raw errors to them.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { describeError, EdgeChatError, ERROR_MESSAGES, ErrorCode, isErrorCode } from "../src/errors.js";

const SRC = new URL("../src/", import.meta.url);

test("raw errors map to typed messages", () => {
  const quota = new Error("The quota has been exceeded.");
  quota.name = "QuotaExceededError";
  const cases = {
    quota,
    f16: new Error("The device (webgpu) does not support fp16."),
    lost: new Error("WebGPU device lost: destroyed"),
    oom: new RangeError("Array buffer allocation failed"),
    oom2: new Error("failed to allocate a buffer of size 123"),
    nogpu: new Error("no available backend found. ERR: [webgpu] WebGPU is not supported"),
    missing: new Error('Could not locate file: "/models/x/onnx/model.onnx".'),
    typed: new EdgeChatError("device-lost"),
    other: new Error("strange things"),
  };
  const result = Object.fromEntries(Object.entries(cases).map(([k, e]) => [k, describeError(e)]));
  assert.deepEqual(Object.fromEntries(Object.entries(result).map(([k, v]) => [k, v.code])), {
    quota: "quota-exceeded",
    f16: "no-f16",
    lost: "device-lost",
    oom: "out-of-memory",
    oom2: "out-of-memory",
    nogpu: "no-webgpu",
    missing: "model-missing",
    typed: "device-lost",
    other: "unknown",
  });
  assert.ok(result.quota.message.includes("site data"));
  assert.ok(result.other.message.includes("strange things"));
  for (const value of Object.values(result)) assert.ok(value.message);
});

test("every error code has a message", () => {
  const codes = Object.values(ErrorCode);
  for (const code of ["not-an-image", "text-only-model", "context-full", "bad-import"]) assert.ok(codes.includes(code));
  assert.deepEqual(Object.keys(ERROR_MESSAGES).sort(), [...codes].sort(), "a message for every code, none for others");
  for (const code of codes) assert.ok(ERROR_MESSAGES[code].length > 20, code);
  assert.equal(new Set(codes).size, codes.length, "two names share a code");
  const made = codes.map((code) => new EdgeChatError(code));
  assert.deepEqual(made.map((e) => e.code), codes);
  assert.deepEqual(made.map((e) => e.message), codes.map((code) => ERROR_MESSAGES[code]));
  assert.equal(new EdgeChatError("no-such-code").code, "unknown");
  assert.equal(isErrorCode("no-such-code"), false);
});

// What tsc cannot see in the modules it does not check: every `ErrorCode.NAME` written anywhere in web/src names a
// real code, no EdgeChatError is built from a bare string, no module compares a code spelled as a string (how codes
// went missing from the enum), and no other module defines codes.
test("modules use only ErrorCode's codes", () => {
  const names = new Set(Object.keys(ErrorCode));
  const codes = Object.values(ErrorCode);
  for (const file of readdirSync(SRC).filter((f) => f.endsWith(".js"))) {
    const text = readFileSync(new URL(file, SRC), "utf8");
    for (const [, name] of text.matchAll(/\bErrorCode\.(\w+)/g)) assert.ok(names.has(name), `${file}: ErrorCode.${name}`);
    assert.doesNotMatch(text, /new EdgeChatError\(\s*["'`]/, `${file}: EdgeChatError with a string code; use ErrorCode`);
    if (file === "errors.js") continue;
    assert.ok(!text.includes("export const ErrorCode"), `${file} defines codes`);
    for (const code of codes) {
      assert.doesNotMatch(text, new RegExp(`(code|error)\\s*(===|==|:)\\s*["']${code}["']`), `${file}: "${code}"`);
    }
  }
});
