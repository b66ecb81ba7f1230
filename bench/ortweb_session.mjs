// Session creation and decode of an fp32 decoder on onnxruntime-web (WASM, 1 thread) in Node.
// node bench/ortweb_session.mjs MODEL.onnx [steps]   (after `nox -s tests` or `npm ci` in web/)
// Prints {session_s, ttft_s, decode_tok_s} for a 38-token prompt and `steps` greedy tokens, KV cache fed back.
import * as ort from "../web/node_modules/onnxruntime-web/dist/ort.node.min.mjs";
import fs from "node:fs";
import path from "node:path";
const file = process.argv[2];
const steps = Number(process.argv[3] ?? 32);
ort.env.wasm.numThreads = 1;
const bytes = fs.readFileSync(file);
const dir = path.dirname(file);
const ext = fs.readdirSync(dir).filter((f) => f.startsWith(path.basename(file) + "_data") || f === path.basename(file) + ".data");
const externalData = ext.map((f) => ({ path: f, data: fs.readFileSync(path.join(dir, f)) }));
const t0 = performance.now();
const s = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], externalData });
const session_s = (performance.now() - t0) / 1000;
const cfg = JSON.parse(fs.readFileSync(path.join(dir, "..", "config.json")));
const L = cfg.num_hidden_layers, H = cfg.num_key_value_heads, D = cfg.head_dim ?? cfg.hidden_size / cfg.num_attention_heads;
const feeds = (ids, past, pastLen) => {
  const f = { input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) };
  const total = pastLen + ids.length;
  f.attention_mask = new ort.Tensor("int64", new BigInt64Array(total).fill(1n), [1, total]);
  if (s.inputNames.includes("position_ids"))
    f.position_ids = new ort.Tensor("int64", BigInt64Array.from(ids.map((_, i) => BigInt(pastLen + i))), [1, ids.length]);
  for (let l = 0; l < L; l++)
    for (const kv of ["key", "value"]) {
      const name = `past_key_values.${l}.${kv}`;
      f[name] = past?.[`present.${l}.${kv}`] ?? new ort.Tensor("float32", new Float32Array(0), [1, H, 0, D]);
    }
  return f;
};
const prompt = Array.from({ length: 38 }, (_, i) => 100 + i * 7);
let t1 = performance.now();
let out = await s.run(feeds(prompt, null, 0));
const ttft = (performance.now() - t1) / 1000;
let len = prompt.length;
t1 = performance.now();
for (let i = 0; i < steps; i++) {
  const logits = out.logits.data;
  const V = out.logits.dims[2];
  let best = 0;
  for (let j = 1; j < V; j++) if (logits[(out.logits.dims[1] - 1) * V + j] > logits[(out.logits.dims[1] - 1) * V + best]) best = j;
  const next = await s.run(feeds([best], out, len));
  len += 1;
  out = next;
}
const decode = steps / ((performance.now() - t1) / 1000);
console.log(JSON.stringify({ file, session_s: +session_s.toFixed(2), ttft_s: +ttft.toFixed(2), decode_tok_s: +decode.toFixed(1) }));
