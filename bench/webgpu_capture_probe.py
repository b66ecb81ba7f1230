"""Does the vendored ORT-web capture and replay a decode step on WebGPU? Prints ORT's own log lines about it.

    python -m bench.webgpu_capture_probe --models <folder with the model> --model tiny-llama --dtype fp32

In Chromium (--enable-unsafe-webgpu: SwiftShader where there is no GPU) the page loads the dtype's graph twice: once
through Transformers.js (its session gives the Tensor class fetches must be made of) and once as an InferenceSession
with enableGraphCapture, verbose logging and every output on the GPU. With a static KV cache bound in place (past and
present on one buffer, input_ids / attention_mask / logits in fixed GPU buffers) it runs an uncaptured prefill
(gpu_graph_id -1) and a few decode steps. The proof is ORT's log: "This session will use the graph capture feature"
at creation and "Replaying the captured WebGpuExecutionProvider graph" from the second decode step on; a graph ORT
cannot capture is refused at creation with its reason. Prints figures and log lines; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
async ({ modelId, dtype, file, capacity }) => {
  const T = await import('/static/vendor/transformers.min.js');
  const { env } = T;
  Object.assign(env, { allowRemoteModels: false, allowLocalModels: true, localModelPath: '/models/' });
  env.useBrowserCache = false;
  const wasm = '/static/vendor/ort-wasm-simd-threaded.asyncify';
  env.backends.onnx.wasm.wasmPaths = { mjs: `${wasm}.mjs`, wasm: `${wasm}.wasm` };
  const model = await T.AutoModelForCausalLM.from_pretrained(modelId, { dtype, device: 'webgpu' });
  const plain = model.sessions.model;
  let session;
  try {
    const bytes = new Uint8Array(await (await fetch(`/models/${modelId}/onnx/${file}`)).arrayBuffer());
    session = await plain.constructor.create(bytes, {
      enableGraphCapture: true, logSeverityLevel: 0, logVerbosityLevel: 0,
      executionProviders: [{ name: 'webgpu' }], preferredOutputLocation: 'gpu-buffer',
    });
  } catch (err) {
    return { created: false, error: String(err?.message ?? err) };
  }
  const device = await env.backends.onnx.webgpu.device;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const vocab = session.outputMetadata.find((m) => m.name === 'logits').shape.at(-1);
  const pasts = session.inputMetadata.filter((m) => m.name.startsWith('past_key_values.'));
  const kv = pasts.map((m) => device.createBuffer({ size: m.shape[1] * capacity * m.shape[3] * 4, usage }));
  const ids = device.createBuffer({ size: 64, usage });
  const mask = device.createBuffer({ size: capacity * 8, usage });
  const logits = device.createBuffer({ size: 8 * vocab * 4, usage });
  const on = (Cls, buffer, dataType, dims) => Cls.fromGpuBuffer(buffer, { dataType, dims });
  const feeds = (Cls, k) => {
    const f = { input_ids: on(Cls, ids, 'int64', [1, k]), attention_mask: on(Cls, mask, 'int64', [1, capacity]) };
    pasts.forEach((m, i) => { f[m.name] = on(Cls, kv[i], m.type, [1, m.shape[1], capacity, m.shape[3]]); });
    return f;
  };
  const write = (tokens, total) => {
    device.queue.writeBuffer(ids, 0, BigInt64Array.from(tokens, BigInt));
    const m = new BigInt64Array(capacity);
    m.fill(1n, 0, total);
    device.queue.writeBuffer(mask, 0, m);
  };
  const Loose = new T.Tensor('float32', new Float32Array(1), [1]).ort_tensor.constructor;
  write([1], 1);
  const Cls = (await plain.run(feeds(Loose, 1), ['logits'])).logits.constructor;
  const fetches = (k) => {
    const f = { logits: on(Cls, logits, 'float32', [1, k, vocab]) };
    pasts.forEach((m, i) => {
      f[m.name.replace('past_key_values.', 'present.')] = on(Cls, kv[i], m.type, [1, m.shape[1], capacity, m.shape[3]]);
    });
    return f;
  };
  const prompt = [1, 5, 9, 12];
  write(prompt, prompt.length);
  await session.run(feeds(Cls, prompt.length), fetches(prompt.length), { extra: { gpu_graph_id: '-1' } });
  const steps = [];
  for (let i = 0; i < 4; i++) {
    write([7 + i], prompt.length + 1 + i);
    const t0 = performance.now();
    await session.run(feeds(Cls, 1), fetches(1));
    steps.push(Number((performance.now() - t0).toFixed(2)));
  }
  return { created: true, decode_ms: steps };
}
"""


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from conftest import serve_app  # the test suite's server launcher: `python -m app` on a free port

    p = argparse.ArgumentParser(prog="python -m bench.webgpu_capture_probe", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    manifest = json.loads((args.models / args.model / "manifest.json").read_text())
    file = "model.onnx" if args.dtype == "fp32" else f"model_{args.dtype}.onnx"
    arg = {"modelId": f"{args.model}/{manifest['revision']}", "dtype": args.dtype, "file": file, "capacity": 64}
    logs: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, serve_app(args.models, Path(tmp)) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--enable-unsafe-webgpu", "--disable-quic"])
        page = browser.new_page()
        page.on("console", lambda m: logs.append(m.text))
        page.goto(f"{base}/?autoload=0")
        result = page.evaluate(PROBE, arg)
        browser.close()
    print(json.dumps(result))
    words = ("graph capture", "Replaying", "kernel not found")
    for line in logs:
        if any(w in line for w in words):
            print(line[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
