// How much of the model's context a chat uses: the meter under the composer, the warning near the limit with its
// two ways out (a new chat, or dropping the oldest turns), and the rule for dropping. Counting is the worker's
// (it templates and tokenizes); this module only shows and decides.

// Above this share of the context the page says so.
export const NEAR_CONTEXT = 0.75;

/**
 * Drops whole turns from the start (the oldest user message and the replies up to the next one) until `count`
 * of what is left, with room for a reply, fits in the limit and in half of it (so the next turns fit too), or only
 * the latest exchange is left. Changes `messages` in place; returns how many messages went.
 * @param {object[]} messages
 * @param {(messages: object[]) => Promise<number|null>} count
 * @param {{limit: number, maxNewTokens: number}} budget
 */
export async function dropOldestTurns(messages, count, { limit, maxNewTokens }) {
  let dropped = 0;
  let tokens = await count(messages);
  while (tokens != null && limit && (tokens + maxNewTokens > limit || tokens > limit / 2)) {
    const next = messages.findIndex((m, i) => i > 0 && m.role === "user");
    if (next <= 0) break; // only the latest exchange is left
    messages.splice(0, next);
    dropped += next;
    tokens = await count(messages);
  }
  return dropped;
}

/** @param {{meter: HTMLElement, box: HTMLElement, text: HTMLElement}} el */
export function createContextMeter(el) {
  const state = { tokens: null, limit: null };

  function warn(text, { error = false } = {}) {
    el.text.textContent = text;
    el.box.hidden = false;
    if (error) el.box.dataset.error = "true";
    document.body.dataset.contextWarning = "true";
  }

  function hide() {
    el.box.hidden = true;
    delete el.box.dataset.error;
    delete document.body.dataset.contextWarning;
  }

  return {
    warn,
    hide,
    /** Shows `tokens` of `limit` (either may be left as it was); warns near the limit or when a reply won't fit. */
    show({ tokens = state.tokens, limit = state.limit, maxNewTokens = 0 } = {}) {
      Object.assign(state, { tokens, limit });
      el.meter.dataset.tokens = tokens ?? "";
      el.meter.dataset.limit = limit ?? "";
      if (tokens == null || !limit) {
        el.meter.textContent = "";
        return;
      }
      const share = tokens / limit;
      el.meter.textContent = `${tokens.toLocaleString("en")} / ${limit.toLocaleString("en")} tokens`;
      el.meter.dataset.near = String(share >= NEAR_CONTEXT);
      if (share >= NEAR_CONTEXT || tokens + maxNewTokens > limit) {
        warn(
          `This chat uses ${tokens.toLocaleString("en")} of the ${limit.toLocaleString("en")} tokens the model can ` +
            `attend to (${Math.round(100 * share)} %). Start a new chat, or drop the oldest turns to make room.`,
        );
      } else if (!el.box.dataset.error) {
        hide();
      }
    },
  };
}
