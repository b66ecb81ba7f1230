// Reasoning models (Qwen3) write `<think>…</think>` before their answer. This splits a reply, complete or still
// streaming, into the thinking and the answer, the way Qwen3's chat template does when it drops the thinking
// from earlier turns: reasoning = text before the first `</think>` (after a `<think>`, newlines trimmed), answer =
// text after the last `</think>` with leading newlines removed. While streaming, a tag that has only partly
// arrived is held back, so neither "<thi" nor "</th" ever shows in the answer or the thinking block. Pure.

export const THINK_OPEN = "<think>";
export const THINK_CLOSE = "</think>";

/** The longest tail of `text` that is a proper prefix of `tag` (a tag still arriving), or "". */
function partialTag(text, tag) {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) {
    if (tag.startsWith(text.slice(text.length - n))) return text.slice(text.length - n);
  }
  return "";
}

const trimNewlinesStart = (s) => s.replace(/^\n+/, "");
const trimNewlinesEnd = (s) => s.replace(/\n+$/, "");

/**
 * @param {string} raw  the reply as decoded so far
 * @returns {{thinking: string|null, answer: string, thinkingOpen: boolean}}
 *   thinking: null when the reply has no thinking (so far); thinkingOpen: `<think>` came, `</think>` not yet
 */
export function splitThinking(raw) {
  const text = String(raw ?? "");
  if (text.includes(THINK_CLOSE)) {
    const parts = text.split(THINK_CLOSE);
    const reasoning = trimNewlinesStart(trimNewlinesEnd(parts[0]).split(THINK_OPEN).at(-1));
    return { thinking: reasoning, answer: trimNewlinesStart(parts.at(-1)), thinkingOpen: false };
  }
  const open = text.indexOf(THINK_OPEN);
  if (open >= 0) {
    const inside = text.slice(open + THINK_OPEN.length);
    const held = partialTag(inside, THINK_CLOSE);
    const thinking = trimNewlinesStart(inside.slice(0, inside.length - held.length));
    return { thinking, answer: text.slice(0, open).trim(), thinkingOpen: true };
  }
  // A reply that so far is only the beginning of "<think>" may be about to think: show nothing yet.
  const lead = text.trimStart();
  if (lead.length > 0 && lead.length < THINK_OPEN.length && THINK_OPEN.startsWith(lead)) {
    return { thinking: null, answer: "", thinkingOpen: false };
  }
  return { thinking: null, answer: text, thinkingOpen: false };
}

/**
 * A finished assistant message as later turns send it to the model: the answer only, which is what Qwen3's
 * template keeps of a reply before the last user message (for models that never think this is the reply as is).
 */
export const historyContent = (raw) => splitThinking(raw).answer;
