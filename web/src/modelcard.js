// The model card: where a model comes from, what each variant costs to download, its context length and what
// quantization cost in fidelity, as model_prep measured it (verification.json: each variant against the torch
// model, top-1 agreement and perplexity). Built with DOM calls only: nothing in a manifest is parsed as HTML.

const fmtMB = (n) => (Number.isFinite(n) ? `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)} MB` : "–");
const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : "–");
const fixed = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "–");

/** Which device classes load each dtype, from the manifest's devices map. */
function usedOn(manifest) {
  const names = { "webgpu-f16": "WebGPU with f16", webgpu: "WebGPU", wasm: "CPU (WASM)" };
  const out = {};
  for (const [device, dtype] of Object.entries(manifest?.devices ?? {})) (out[dtype] ??= []).push(names[device] ?? device);
  return out;
}

/** The card's rows: [{dtype, bytes, used, top1, perplexity, delta}] plus the reference perplexity. */
export function cardRows(manifest, verification) {
  const used = usedOn(manifest);
  const reference = verification?.reference?.perplexity;
  const rows = Object.entries(manifest?.dtypes ?? {}).map(([dtype, info]) => {
    const v = verification?.variants?.[dtype] ?? {};
    return {
      dtype,
      bytes: typeof info === "number" ? info : info?.bytes,
      used: used[dtype] ?? [],
      top1: v.top1_agreement,
      perplexity: v.perplexity,
      delta: Number.isFinite(v.perplexity) && Number.isFinite(reference) ? v.perplexity / reference - 1 : undefined,
    };
  });
  return { rows, reference };
}

function cell(tag, text, cls) {
  const td = document.createElement(tag);
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

/**
 * Fills `element` with the card of `manifest` (GET /api/models/{id}) and `verification` (its verification.json,
 * or null when it could not be read).
 */
export function renderModelCard(element, manifest, verification, { contextLimit } = {}) {
  element.replaceChildren();
  const facts = document.createElement("dl");
  facts.className = "card-facts";
  const fact = (name, value) => {
    facts.append(cell("dt", name), cell("dd", value));
  };
  fact("Source", manifest.source ?? "unknown");
  fact("Architecture", manifest.architecture ?? manifest.model_type ?? "unknown");
  fact("Revision", `${manifest.revision}${manifest.created ? ` (built ${manifest.created.slice(0, 10)})` : ""}`);
  fact(
    "Context",
    Number.isFinite(manifest.context_length)
      ? `${manifest.context_length.toLocaleString("en")} tokens${
          contextLimit && contextLimit < manifest.context_length ? ` (this page uses up to ${contextLimit.toLocaleString("en")} by default: see the settings)` : ""
        }`
      : "unknown",
  );
  element.append(facts);

  const { rows, reference } = cardRows(manifest, verification);
  const table = document.createElement("table");
  table.className = "card-variants";
  const head = document.createElement("tr");
  for (const h of ["Variant", "Download", "Loaded on", "Top-1 agreement", "Perplexity"]) head.append(cell("th", h));
  table.append(head);
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.dtype = r.dtype;
    const delta = Number.isFinite(r.delta) ? ` (${r.delta >= 0 ? "+" : ""}${(100 * r.delta).toFixed(1)} %)` : "";
    tr.append(
      cell("td", r.dtype),
      cell("td", fmtMB(r.bytes)),
      cell("td", r.used.join(", ") || "–"),
      cell("td", pct(r.top1)),
      cell("td", `${fixed(r.perplexity)}${delta}`),
    );
    table.append(tr);
  }
  element.append(table);
  const note = document.createElement("p");
  note.className = "muted";
  note.textContent = verification
    ? `Fidelity: each variant against the torch model in fp32 on fixed prompts (reference perplexity ${fixed(reference)}); top-1 agreement is how often both pick the same next token.`
    : "This model has no verification report (verification.json), so its fidelity is unknown.";
  element.append(note);
}
