"""Before/after table of exported decoders: graph shape, static CPU-EP placement on WebGPU, CPU-EP speed, fidelity.

    python -m bench.graph_compare OLD_DIR NEW_DIR [--dtypes fp32 q4 q4f16] [--threads 2] [--new-tokens 32]

Per model folder and variant: nodes, nodes in the busiest layer, nodes ORT would run on its CPU EP in one WebGPU
decode step and how many of those wait for a GPU result (bench/cpu_placement.py), then on this machine's CPU EP:
session creation, TTFT and decode tok/s (a 38-token chat prompt, greedy), and top-1 / perplexity change from the
folder's verification.json. Prints a markdown table and writes JSON lines to stdout's end. Figures depend on the
machine's load: note `uptime` with them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from model_prep.verify.onnx_runner import DecoderSession

from .cpu_placement import placement
from .gpu_gate import SUFFIX

PROMPT = "Explain in two sentences why the sky is blue."


def layer_counts(path: Path) -> int:
    import re

    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        match = re.search(r"layers\.(\d+)[./]", node.name)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return max(counts.values(), default=0)


def speed(path: Path, ids: list[int], threads: int, new_tokens: int) -> dict:
    t0 = time.perf_counter()
    session = DecoderSession(path, threads=threads)
    created = time.perf_counter() - t0
    session.forward(ids[:4])  # first-run allocations
    session.reset()
    t1 = time.perf_counter()
    token = int(np.argmax(session.forward(ids)[-1]))
    ttft = time.perf_counter() - t1
    t2 = time.perf_counter()
    for _ in range(new_tokens - 1):
        token = int(np.argmax(session.forward([token])[-1]))
    return {
        "session_create_s": round(created, 2),
        "ttft_s": round(ttft, 3),
        "decode_tokens_per_s": round((new_tokens - 1) / (time.perf_counter() - t2), 2),
    }


def rows(model_dir: Path, dtypes: list[str], threads: int, new_tokens: int) -> list[dict]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = list(tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True))
    verification = model_dir / "verification.json"  # absent for a graph exported without the pipeline
    report = json.loads(verification.read_text()) if verification.is_file() else {"variants": {}}
    out = []
    for dtype in dtypes:
        path = model_dir / "onnx" / f"model{SUFFIX[dtype]}.onnx"
        if not path.is_file():
            continue
        fidelity = report["variants"].get(dtype, {})
        p = placement(path)
        row = {
            "folder": str(model_dir),
            "dtype": dtype,
            "nodes": p.nodes,
            "nodes_busiest_layer": layer_counts(path),
            "cpu_ep_nodes_per_webgpu_step": len(p.cpu),
            "gpu_readbacks_per_step": len(p.readbacks),
            **speed(path, ids, threads, new_tokens),
            "top1": fidelity.get("top1_agreement"),
            "perplexity_change": fidelity["perplexity"] / report["reference"]["perplexity"] - 1 if fidelity else None,
        }
        out.append(row)
    return out


def table(all_rows: list[dict]) -> str:
    head = (
        "| folder | dtype | nodes | busiest layer | CPU-EP nodes / WebGPU step (readbacks) | session s | TTFT s "
        "| decode tok/s | top-1 | ppl |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in all_rows:
        ppl = "" if r["perplexity_change"] is None else f"{r['perplexity_change']:+.1%}"
        top1 = "" if r["top1"] is None else f"{r['top1']:.1%}"
        lines.append(
            f"| {Path(r['folder']).name} | {r['dtype']} | {r['nodes']:,} | {r['nodes_busiest_layer']} "
            f"| {r['cpu_ep_nodes_per_webgpu_step']} ({r['gpu_readbacks_per_step']}) | {r['session_create_s']} "
            f"| {r['ttft_s']} | {r['decode_tokens_per_s']} | {top1} | {ppl} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--dtypes", nargs="*", default=["fp32", "q4", "q4f16", "q8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    all_rows = [r for folder in args.folders for r in rows(folder, args.dtypes, args.threads, args.new_tokens)]
    print(table(all_rows))
    for r in all_rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
