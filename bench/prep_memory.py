"""Peak RSS and wall time per stage of a whole recipe, on a model with Qwen3-0.6B's exact config (random weights).

The hub is unreachable here, so the config is written by hand from Qwen/Qwen3-0.6B's config.json. Run:
    python -m bench.prep_memory [--out DIR]    (nox -s bench runs it too)
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


def build_random_qwen3(folder: Path) -> Path:
    """Qwen3-0.6B's shapes with random bf16 weights, and the tiny Qwen3's tokenizer (ids stay < 151936)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from model_prep.sources.tiny import build_tiny

    tiny = build_tiny("qwen3", folder.parent / "tiny-qwen3-tokenizer")
    torch.manual_seed(0)
    config = Qwen3Config(**{k: v for k, v in QWEN3_0_6B.items() if k not in ("architectures", "model_type")})
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny / name).is_file():
            (tmp / name).write_bytes((tiny / name).read_bytes())
    generation = json.loads((tiny / "generation_config.json").read_text())
    (tmp / "generation_config.json").write_text(json.dumps(generation))
    tmp.rename(folder)
    return folder


def run_with_rss(cmd: list[str]) -> list[dict]:
    """Run `cmd`, sampling the RSS of its process tree every 50 ms; split by the pipeline's stage lines."""
    import psutil

    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, bufsize=1)
    parent = psutil.Process(proc.pid)
    stages: list[dict] = []
    current = {"stage": "start", "t0": time.perf_counter(), "peak_rss": 0}
    import threading

    lines: list[str] = []

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=reader, daemon=True).start()
    seen = 0
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.Error:
            rss = 0
        current["peak_rss"] = max(current["peak_rss"], rss)
        for line in lines[seen:]:
            sys.stderr.write(line)
            if line.startswith("[") and line.rstrip().endswith("…"):
                stages.append(_close(current))
                current = {"stage": line.split("]")[1].split()[0], "t0": time.perf_counter(), "peak_rss": rss}
        seen = len(lines)
        time.sleep(0.05)
    stages.append(_close(current))
    if proc.returncode != 0:
        raise SystemExit(f"export failed with exit code {proc.returncode}")
    return [s for s in stages if s["stage"] != "start"]


def _close(stage: dict) -> dict:
    return {"stage": stage["stage"], "wall_s": time.perf_counter() - stage.pop("t0"), "peak_rss": stage["peak_rss"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("build/prep-memory"))
    args = parser.parse_args()
    source = build_random_qwen3(args.out / "qwen3-0.6b-random")
    cmd = [
        sys.executable,
        "-m",
        "model_prep",
        "export",
        "qwen3-0.6b",
        "--source",
        str(source),
        "--out",
        str(args.out / "models"),
        "--floor",  # random weights: the fidelity of a noise model means nothing, the memory and time do
        "0,inf",
    ]
    stages = run_with_rss(cmd)
    print(f"\nqwen3-0.6b recipe (Qwen3-0.6B config, random weights), {len(stages)} stages")
    print(f"{'stage':<10} {'wall s':>8} {'peak RSS GB':>12}")
    for s in stages:
        print(f"{s['stage']:<10} {s['wall_s']:>8.1f} {s['peak_rss'] / 1e9:>12.2f}")
    total = sum(s["wall_s"] for s in stages)
    peak = max(s["peak_rss"] for s in stages)
    print(f"{'total':<10} {total:>8.1f} {peak / 1e9:>12.2f}   (targets: ≤ 600 s, ≤ 4.00 GB)")
    # The 50 ms samples can miss a short spike; the kernel's high-water mark cannot (one process, not the tree).
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"largest single process, kernel high-water mark (ru_maxrss): {largest / 1e9:.2f} GB")
    manifest = json.loads((args.out / "models" / "qwen3-0.6b" / "manifest.json").read_text())
    targets = {"q4f16": "  (target: ≤ 360 MB; onnx-community ≈ 570 MB, onnxruntime-genai 346 MB)"}
    for dtype, info in manifest["dtypes"].items():
        print(f"  {dtype:<6} {info['bytes'] / 1e6:8.0f} MB{targets.get(dtype, '')}")


if __name__ == "__main__":
    main()
