// Chat settings per model: sampling, max new tokens, system prompt, Qwen3's thinking switch and the context limit.
// Defaults come from the model's generation_config.json (model_prep writes the recipe's sampling there, under
// HF's names); what the person changes is kept per model in localStorage; query parameters (tests, the
// benchmark) override both for this page only. The panel shows the values a reply will use.

import { readModelJson } from "./cache.js";
import { EdgeChatError, ErrorCode } from "./errors.js";
import { GREEDY, SAMPLING_LIMITS } from "./sampling.js";

export const DEFAULT_MAX_NEW_TOKENS = 512;
const STORE_PREFIX = "edge-chat-settings:";
// HF GenerationConfig's defaults for keys a generation_config.json leaves out.
const HF_DEFAULTS = { temperature: 1, top_p: 1, top_k: 50, min_p: 0, repetition_penalty: 1 };
const SAMPLING_KEYS = ["temperature", "top_p", "top_k", "min_p", "repetition_penalty"];

/** [min, max] of every setting the panel edits (sampling's from sampling.js). */
export const SETTING_LIMITS = Object.freeze({
  ...SAMPLING_LIMITS,
  max_new_tokens: { min: 1, max: 8192, integer: true },
  context_limit: { min: 64, max: 1_000_000, integer: true },
});

/**
 * The model's sampling defaults for one thinking mode, from its generation_config.json: greedy (plus its
 * repetition penalty) unless it says do_sample; `sampling_without_thinking` overrides when thinking is off.
 * @param {object|null} config  generation_config.json
 * @param {{thinking?: boolean}} [mode]
 */
export function samplingDefaults(config, { thinking = true } = {}) {
  const c = config ?? {};
  if (!c.do_sample) return { ...GREEDY, repetition_penalty: num(c.repetition_penalty, 1) };
  const base = Object.fromEntries(SAMPLING_KEYS.map((k) => [k, num(c[k], HF_DEFAULTS[k])]));
  const other = !thinking && c.sampling_without_thinking ? c.sampling_without_thinking : {};
  for (const k of SAMPLING_KEYS) if (k in other) base[k] = num(other[k], base[k]);
  return base;
}

const num = (x, fallback) => (typeof x === "number" && Number.isFinite(x) ? x : fallback);

/** A value typed into the panel or a query parameter, checked against SETTING_LIMITS ("" → undefined). */
export function parseSetting(key, raw) {
  if (raw === undefined || raw === null || String(raw).trim() === "") return undefined;
  const limits = SETTING_LIMITS[key];
  const x = Number(raw);
  if (!limits) return raw;
  if (!Number.isFinite(x) || x < limits.min || x > limits.max || (limits.integer && !Number.isInteger(x))) {
    throw new EdgeChatError(
      ErrorCode.BAD_SETTING,
      `${key.replaceAll("_", " ")} must be ${limits.integer ? "a whole number" : "a number"} from ${limits.min} to ${limits.max}.`,
    );
  }
  return x;
}

/** Settings given as query parameters (?temperature=0&seed=1&thinking=0&context_limit=256&system_prompt=…). */
export function settingsFromQuery(params) {
  const out = {};
  for (const key of Object.keys(SETTING_LIMITS)) {
    if (params.has(key)) out[key] = parseSetting(key, params.get(key));
  }
  if (params.has("thinking")) out.thinking = params.get("thinking") !== "0";
  if (params.has("prompt_lookup")) out.prompt_lookup = params.get("prompt_lookup") !== "0";
  if (params.has("system_prompt")) out.system_prompt = params.get("system_prompt");
  return out;
}

function readStored(modelId) {
  try {
    const value = JSON.parse(localStorage.getItem(STORE_PREFIX + modelId) ?? "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

function writeStored(modelId, overrides) {
  try {
    if (Object.keys(overrides).length) localStorage.setItem(STORE_PREFIX + modelId, JSON.stringify(overrides));
    else localStorage.removeItem(STORE_PREFIX + modelId);
  } catch (err) {
    console.warn("settings not saved", err); // storage off: they last for this page
  }
}

/** generation_config.json of a catalog entry (the model cache first: offline too). */
export const fetchGenerationConfig = (model) => readModelJson(model, "generation_config.json");

const INPUTS = {
  temperature: "set-temperature",
  top_p: "set-top-p",
  top_k: "set-top-k",
  min_p: "set-min-p",
  repetition_penalty: "set-repetition-penalty",
  seed: "set-seed",
  context_limit: "set-context-limit",
  max_new_tokens: "max-new-tokens",
};

const describeSampling = (s) =>
  s.temperature === 0
    ? `greedy${s.repetition_penalty !== 1 ? `, repetition penalty ${s.repetition_penalty}` : ""}`
    : `temperature ${s.temperature}, top-p ${s.top_p}, top-k ${s.top_k}, min-p ${s.min_p}, repetition penalty ${s.repetition_penalty}`;

/**
 * The settings panel. `query` (settingsFromQuery) wins over what is stored, which wins over the model's defaults.
 * @param {{query: object, onChange?: () => void}} options
 */
export function createSettings({ query, onChange }) {
  const $ = (id) => document.getElementById(id);
  const el = {
    panel: $("settings-panel"),
    source: $("settings-source"),
    system: $("set-system-prompt"),
    thinking: $("set-thinking"),
    lookup: $("set-prompt-lookup"),
    thinkingRow: $("thinking-row"),
    reset: $("settings-reset"),
    inputs: Object.fromEntries(Object.entries(INPUTS).map(([k, id]) => [k, $(id)])),
  };
  const state = {
    model: null,
    config: null, // generation_config.json
    thinkingSupported: false,
    contextLength: null, // the model's context (manifest) and the cap the page applies
    contextCap: null,
    runtimeContext: null, // the loaded runtime's own context (llama.cpp allocates its KV cache for it at load)
    overrides: {}, // stored per model
  };

  function defaults() {
    const thinking = state.thinkingSupported ? (pick("thinking") ?? true) : true;
    return {
      ...samplingDefaults(state.config, { thinking }),
      seed: undefined,
      max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
      context_limit: ownContext(state.contextCap) ?? undefined,
      system_prompt: "",
      thinking: true,
      prompt_lookup: true,
    };
  }

  /** `tokens` capped at the model's and the loaded runtime's context (null/undefined: no cap known). */
  function ownContext(tokens) {
    const own = Math.min(state.contextLength ?? Infinity, state.runtimeContext ?? Infinity);
    if (!Number.isFinite(own)) return tokens;
    return Math.min(tokens ?? own, own);
  }

  // Query first, then what the person set for this model.
  const pick = (key) => (key in query ? query[key] : key in state.overrides ? state.overrides[key] : undefined);

  /** The settings the next reply uses. Throws bad-setting when a typed value is out of range. */
  function current() {
    const d = defaults();
    const value = (key) => pick(key) ?? d[key];
    for (const [key, input] of Object.entries(el.inputs)) {
      if (input?.dataset.invalid) throw new EdgeChatError(ErrorCode.BAD_SETTING, input.dataset.invalid);
    }
    const sampling = Object.fromEntries(SAMPLING_KEYS.map((k) => [k, value(k)]));
    if (value("seed") !== undefined) sampling.seed = value("seed");
    const limit = value("context_limit");
    return {
      sampling,
      max_new_tokens: value("max_new_tokens"),
      system_prompt: String(value("system_prompt") ?? ""),
      thinking: state.thinkingSupported ? Boolean(value("thinking")) : null,
      prompt_lookup: Boolean(value("prompt_lookup")), // decode-lookup.js; off: plain decoding
      context_limit: ownContext(limit),
    };
  }

  function render() {
    const d = defaults();
    for (const [key, input] of Object.entries(el.inputs)) {
      if (!input) continue;
      const chosen = pick(key);
      input.value = chosen ?? d[key] ?? "";
      input.placeholder = d[key] === undefined ? (key === "seed" ? "random" : "") : String(d[key]);
      input.classList.toggle("overridden", chosen !== undefined);
      delete input.dataset.invalid;
      input.removeAttribute("aria-invalid");
    }
    el.system.value = pick("system_prompt") ?? "";
    el.thinkingRow.hidden = !state.thinkingSupported;
    el.thinking.checked = Boolean(pick("thinking") ?? true);
    if (el.lookup) el.lookup.checked = Boolean(pick("prompt_lookup") ?? true);
    const name = state.model?.name ?? state.model?.id ?? "this model";
    const from = state.config ? "generation_config.json" : "no generation_config.json, so greedy";
    el.source.textContent = `Defaults for ${name} (${from}): ${describeSampling(d)}${
      d.context_limit ? `; context limit ${d.context_limit} tokens` : ""
    }. Temperature 0 decodes greedily.`;
    document.body.dataset.settings = JSON.stringify(safeCurrent());
  }

  function safeCurrent() {
    try {
      return current();
    } catch {
      return null;
    }
  }

  function set(key, value) {
    if (value === undefined) delete state.overrides[key];
    else state.overrides[key] = value;
    delete query[key]; // a change in the panel wins over the query from now on
    if (state.model) writeStored(state.model.id, state.overrides);
  }

  // Every keystroke counts (a half-typed value is marked invalid until it parses); a send reads current().
  for (const [key, input] of Object.entries(el.inputs)) {
    input?.addEventListener("input", () => {
      try {
        set(key, parseSetting(key, input.value));
        delete input.dataset.invalid;
        input.removeAttribute("aria-invalid");
        input.classList.toggle("overridden", input.value !== "");
      } catch (err) {
        input.dataset.invalid = err.message;
        input.setAttribute("aria-invalid", "true");
      }
      document.body.dataset.settings = JSON.stringify(safeCurrent());
      onChange?.();
    });
    input?.addEventListener("change", () => {
      if (!input.dataset.invalid) render(); // shows the default again in a field that was emptied
    });
  }
  el.system.addEventListener("input", () => {
    set("system_prompt", el.system.value.trim() ? el.system.value : undefined);
    document.body.dataset.settings = JSON.stringify(safeCurrent());
    onChange?.();
  });
  el.thinking.addEventListener("change", () => {
    set("thinking", el.thinking.checked);
    render(); // the other mode has other sampling defaults
    onChange?.();
  });
  el.lookup?.addEventListener("change", () => {
    set("prompt_lookup", el.lookup.checked ? undefined : false);
    document.body.dataset.settings = JSON.stringify(safeCurrent());
  });
  el.reset.addEventListener("click", () => {
    state.overrides = {};
    for (const key of Object.keys(query)) delete query[key];
    if (state.model) writeStored(state.model.id, {});
    render();
    onChange?.();
  });

  return {
    current,
    /** Shows `model`'s settings: its defaults from generation_config.json and what was stored for it. */
    async setModel(model, { contextLength = null, contextCap = null } = {}) {
      state.model = model;
      state.overrides = model ? readStored(model.id) : {};
      state.config = model ? await fetchGenerationConfig(model) : null;
      state.thinkingSupported = Boolean(state.config?.sampling_without_thinking);
      state.contextLength = contextLength;
      state.contextCap = contextCap;
      state.runtimeContext = null;
      render();
    },
    /**
     * Reads generation_config.json again after a load: the load verified the model cache, so a copy that was damaged
     * when setModel read it has been repaired, and its defaults (the repetition penalty among them) apply now.
     */
    async reloadDefaults() {
      if (!state.model) return;
      state.config = await fetchGenerationConfig(state.model);
      state.thinkingSupported ||= Boolean(state.config?.sampling_without_thinking);
      render();
    },
    /** The loaded runtime's own context (the worker's ready.chat.context_length): the limit never passes it. */
    setRuntimeContext(tokens) {
      state.runtimeContext = Number.isFinite(tokens) && tokens > 0 ? tokens : null;
      render();
    },
    /** The loaded model's chat template takes enable_thinking (the worker's ready reply says so). */
    setThinkingSupported(supported) {
      state.thinkingSupported = Boolean(supported) || Boolean(state.config?.sampling_without_thinking);
      render();
    },
    render,
  };
}
