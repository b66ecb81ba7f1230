"""ORT's WebGPU execution provider outside the browser (the `onnxruntime-ep-webgpu` plugin, Dawn on Vulkan).

The same WebGPU kernels ORT-web runs in Chromium, on a machine without a browser: how fast a variant decodes on a
real GPU, and whether a graph loads on the WebGPU EP at all. Run: python -m bench.webgpu_native MODEL_DIR [DTYPE...]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_prep.layout import SUFFIX
from model_prep.verify.replies import load_tokenizer

from .prompts import NEW_TOKENS, prompt_set


def webgpu_session(path: Path) -> ort.InferenceSession:
    import onnxruntime_ep_webgpu as webgpu_ep

    if "webgpu" not in getattr(webgpu_session, "registered", set()):
        ort.register_execution_provider_library("webgpu", webgpu_ep.get_library_path())
        webgpu_session.registered = {"webgpu"}
    devices = [d for d in ort.get_ep_devices() if d.ep_name == webgpu_ep.get_ep_name()]
    if not devices:
        raise RuntimeError("no WebGPU EP device: is a Vulkan driver installed?")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_provider_for_devices(devices[:1], {})
    return ort.InferenceSession(str(path), options)


def run(model_dir: Path, dtypes: list[str]) -> list[dict]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    tokenizer = load_tokenizer(model_dir)
    rows = []
    for dtype in dtypes:
        t0 = time.perf_counter()
        try:
            session = webgpu_session(model_dir / "onnx" / f"model{SUFFIX[dtype]}.onnx")
        except Exception as err:  # a graph the EP refuses is a finding, not a crash
            rows.append({"runner": "native-webgpu", "model": manifest["id"], "dtype": dtype, "error": str(err)[:300]})
            continue
        load_s = time.perf_counter() - t0
        for name, text in prompt_set(tokenizer).items():
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
            row = decode(session, list(ids))
            rows.append(
                {
                    "runner": "native-webgpu",
                    "prompt": name,
                    "model": manifest["id"],
                    "revision": manifest["revision"],
                    "device": "webgpu",
                    "dtype": dtype,
                    "load_s": load_s,
                    **row,
                }
            )
    return rows


def decode(session: ort.InferenceSession, ids: list[int]) -> dict:
    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    heads, head_dim = inputs[past_names[0]].shape[1], inputs[past_names[0]].shape[3]
    past = {n: np.zeros((1, heads, 0, head_dim), np.float32) for n in past_names}
    outputs = [o.name for o in session.get_outputs()]
    length, tokens, marks = 0, [], []
    step = ids
    start = time.perf_counter()
    for _ in range(NEW_TOKENS):
        feed = {
            "input_ids": np.array([step], np.int64),
            "attention_mask": np.ones((1, length + len(step)), np.int64),
            **past,
        }
        if "position_ids" in inputs:
            feed["position_ids"] = np.arange(length, length + len(step), dtype=np.int64)[None]
        values = session.run(None, feed)
        length += len(step)
        past = {o.replace("present.", "past_key_values."): v for o, v in zip(outputs[1:], values[1:], strict=True)}
        token = int(np.argmax(values[0][0, -1]))
        tokens.append(token)
        step = [token]
        marks.append(time.perf_counter())
    ttft = marks[0] - start
    decode_s = marks[-1] - marks[0]
    return {
        "ttft_s": ttft,
        "prefill_tokens_per_s": len(ids) / ttft,
        "decode_tokens_per_s": (NEW_TOKENS - 1) / decode_s,
        "prompt_tokens": len(ids),
        "new_tokens": NEW_TOKENS,
        "tokens": tokens[:16],
    }


if __name__ == "__main__":
    model = Path(sys.argv[1])
    for line in run(model, sys.argv[2:] or ["q4f16", "q4", "fp32"]):
        print(json.dumps(line), flush=True)
