"""The GPU gate: every variant of an exported text model on onnxruntime's WebGPU EP (or the CPU EP, for its code
paths on machines without a GPU), the way Transformers.js runs it: KV cache kept on the device through IO binding.

For each variant: session creation; greedy tokens on the recipe's verification prompts, which must equal the CPU
EP's tokens of the same graph (and, for the record, the fp32 graph's); no NaN and no all-zero logits; TTFT and
decode tok/s with the KV cache on the device; the CPU-EP kernel launches in a profiled run of a few decode steps
(on the WebGPU EP every such launch is a node ORT placed on the CPU). Exit code 1 when a variant fails.

    python -m bench.gpu_gate MODEL_DIR [--ep webgpu|cpu] [--dtypes q4f16 q4 ...] [--new-tokens 64]

bench/README.md has the commands for a lent GPU machine (the `device` tool).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SUFFIX = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}  # Transformers.js names
PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
)
PROFILED_STEPS = 4


def sessions(ep: str):
    """A factory of onnxruntime sessions on `ep` ("webgpu": the onnxruntime-ep-webgpu plugin, Dawn on Vulkan)."""
    import onnxruntime as ort

    devices = []
    if ep == "webgpu":
        import onnxruntime_ep_webgpu as webgpu_ep

        ort.register_execution_provider_library("webgpu", webgpu_ep.get_library_path())
        devices = [d for d in ort.get_ep_devices() if d.ep_name == webgpu_ep.get_ep_name()]
        if not devices:
            raise SystemExit("no WebGPU EP device: is a Vulkan driver installed? (see bench/README.md)")

    def make(path: Path, profile_prefix: str | None = None, cpu: bool = False):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        if ep == "webgpu" and not cpu:
            options.add_provider_for_devices(devices[:1], {})
            return ort.InferenceSession(str(path), options)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    return make


class Decoder:
    """Greedy decoding through IO binding; present.* stay on the device (`kv_device`) and come back as the past."""

    def __init__(self, session, kv_device: str) -> None:
        self.session = session
        self.kv_device = kv_device
        inputs = {i.name: i for i in session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        first = inputs[self.past_names[0]]
        self.kv_shape = (int(first.shape[1]), int(first.shape[3]))
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        self.positions = "position_ids" in inputs
        self.outputs = [o.name for o in session.get_outputs()]

    def run(self, prompt: list[int], new_tokens: int) -> dict:
        past: dict = {n: np.zeros((1, self.kv_shape[0], 0, self.kv_shape[1]), self.kv_dtype) for n in self.past_names}
        step, length, tokens, marks, bad = list(prompt), 0, [], [], []
        start = time.perf_counter()
        for _ in range(new_tokens):
            io = self.session.io_binding()
            io.bind_cpu_input("input_ids", np.array([step], np.int64))
            io.bind_cpu_input("attention_mask", np.ones((1, length + len(step)), np.int64))
            if self.positions:
                io.bind_cpu_input("position_ids", np.arange(length, length + len(step), dtype=np.int64)[None])
            for name, value in past.items():
                io.bind_cpu_input(name, value) if isinstance(value, np.ndarray) else io.bind_ortvalue_input(name, value)
            io.bind_output("logits")
            for name in self.outputs[1:]:
                if self.kv_device == "cpu":
                    io.bind_output(name)
                else:
                    io.bind_output(name, device_type=self.kv_device, device_id=0)
            self.session.run_with_iobinding(io)
            values = io.get_outputs()
            logits = values[0].numpy()[0, -1]
            if not np.isfinite(logits).all() or not np.abs(logits).max() > 0:
                bad.append(len(tokens))
            past = {
                o.replace("present.", "past_key_values."): v for o, v in zip(self.outputs[1:], values[1:], strict=True)
            }
            length += len(step)
            token = int(np.argmax(logits))
            tokens.append(token)
            step = [token]
            marks.append(time.perf_counter())
        decode_s = marks[-1] - marks[0]
        return {
            "tokens": tokens,
            "ttft_s": marks[0] - start,
            "decode_tokens_per_s": (new_tokens - 1) / decode_s if new_tokens > 1 and decode_s > 0 else None,
            "bad_logit_steps": bad,
        }


def profile_launches(make, path: Path, prompt: list[int], kv_device: str) -> dict:
    """Kernel launches per execution provider over a prefill and PROFILED_STEPS decode steps."""
    with tempfile.TemporaryDirectory() as tmp:
        session = make(path, profile_prefix=str(Path(tmp) / "gate"))
        Decoder(session, kv_device).run(prompt, 1 + PROFILED_STEPS)
        trace = json.loads(Path(session.end_profiling()).read_text())
    counts: dict[str, int] = {}
    cpu_ops: dict[str, int] = {}
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        provider = event.get("args", {}).get("provider", "?")
        counts[provider] = counts.get(provider, 0) + 1
        if provider == "CPUExecutionProvider":
            op = event["args"].get("op_name", "?")
            cpu_ops[op] = cpu_ops.get(op, 0) + 1
    return {"kernel_launches": counts, "cpu_ep_ops": cpu_ops, "profiled_runs": 1 + PROFILED_STEPS}


def gate(model_dir: Path, ep: str, dtypes: list[str] | None, new_tokens: int) -> list[dict]:
    from transformers import AutoTokenizer

    manifest = json.loads((model_dir / "manifest.json").read_text())
    if manifest.get("capabilities", {}).get("image"):
        raise SystemExit(f"{model_dir.name} is an image model: its decoder is gated in the browser (bench/README.md)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True))
        for p in PROMPTS
    ]
    make = sessions(ep)
    kv_device = "webgpu" if ep == "webgpu" else "cpu"
    fp32_path = model_dir / "onnx" / "model.onnx"
    fp32_tokens = None
    if fp32_path.is_file():  # the reference every variant is also compared with (CPU EP)
        fp32 = Decoder(make(fp32_path, cpu=True), "cpu")
        fp32_tokens = [fp32.run(p, new_tokens)["tokens"] for p in prompts]
        del fp32  # one session at a time: Qwen3-0.6B's fp32 graph is 2.4 GB
    rows = []
    # ONNX dtypes only: a GGUF (manifest "runtime": "llama.cpp") runs on llama.cpp on the CPU, never on an EP here.
    onnx_dtypes = [d for d, entry in manifest["dtypes"].items() if "runtime" not in entry]
    for dtype in dtypes or onnx_dtypes:
        path = model_dir / "onnx" / f"model{SUFFIX[dtype]}.onnx"
        row: dict = {"model": manifest["id"], "revision": manifest["revision"], "dtype": dtype, "ep": ep}
        try:
            t0 = time.perf_counter()
            session = make(path)
            row["session_create_s"] = round(time.perf_counter() - t0, 3)
            decoder = Decoder(session, kv_device)
            decoder.run(prompts[0], 4)  # shader compilation and first-run allocations
            runs = [decoder.run(p, new_tokens) for p in prompts]
            del decoder, session
            if ep == "cpu":  # the gate's own run is the CPU EP's
                want = [r["tokens"] for r in runs]
            else:
                cpu = Decoder(make(path, cpu=True), "cpu")
                want = [cpu.run(p, new_tokens)["tokens"] for p in prompts]
                del cpu
            row["tokens_equal_cpu_ep"] = [r["tokens"] for r in runs] == want
            if fp32_tokens is not None:
                row["tokens_equal_fp32"] = [r["tokens"] for r in runs] == fp32_tokens
            row["nan_or_zero_logit_steps"] = sum(len(r["bad_logit_steps"]) for r in runs)
            row["ttft_s"] = round(float(np.median([r["ttft_s"] for r in runs])), 4)
            row["decode_tokens_per_s"] = round(float(np.median([r["decode_tokens_per_s"] for r in runs])), 2)
            row["first_tokens"] = runs[0]["tokens"][:12]
            row.update(profile_launches(make, path, prompts[0], kv_device))
            row["pass"] = row["tokens_equal_cpu_ep"] and row["nan_or_zero_logit_steps"] == 0
        except Exception as err:  # a graph the EP refuses is a failed gate, reported like the others
            row.update(error=repr(err)[:400], **{"pass": False})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--ep", choices=("webgpu", "cpu"), default="webgpu")
    parser.add_argument("--dtypes", nargs="*", help="default: every dtype in the manifest")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    rows = gate(args.model_dir, args.ep, args.dtypes, args.new_tokens)
    failed = [r["dtype"] for r in rows if not r["pass"]]
    print(
        f"gpu gate ({args.ep}): {len(rows) - len(failed)} passed, {len(failed)} failed {failed or ''}", file=sys.stderr
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
