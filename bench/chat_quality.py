"""`python -m bench.chat_quality`: does the default model loop on everyday prompts with a given setting?

Drives the real page in Chromium (the chat's own worker, sampling and template) through twelve everyday
conversations, follow-ups included ("Summarize that in one sentence." after a list), once per setting and seed,
and prints per turn whether the reply loops (bench/loops.py). Settings are the page's query parameters:
`greedy` (temperature 0), `card` (SmolLM2-135M-Instruct's model card: temperature 0.2, top-p 0.9, HF's top-k 50)
and `defaults` (none given: the model's generation_config.json, as a person gets it); add more with
`--config name=temperature:0.3,repetition_penalty:1.1`. The page runs what it runs on a CPU (`devices["wasm"]`: the
GGUF on llama.cpp for the default model); `--dtype` forces another (`q4`: ONNX Runtime Web). Sampling is random, so
this is a report, not a test: seeds are fixed to make a run repeatable. Each row names the runtime that ran it.
Writes build/chat-quality/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from urllib.parse import urlencode

from .loops import check
from .server import serving

ROOT = Path(__file__).resolve().parents[1]

# Twelve conversations: each a list of user turns, sent one after the other in one chat.
CONVERSATIONS: list[list[str]] = [
    ["Write a short poem about autumn leaves."],
    ["Give me a packing list for a weekend camping trip.", "Summarize that in one sentence."],
    ["How do I make pancakes? Give me a simple recipe."],
    ["Write a short email to my manager asking for Friday off."],
    ["Explain how a refrigerator keeps food cold, in simple terms."],
    ["List five tips for sleeping better."],
    ["What are the benefits of regular exercise?", "Which of those matters most for older people?"],
    ["Tell me a short story about a robot who learns to paint."],
    ["What is the difference between weather and climate?"],
    ["Suggest three names for a small coffee shop and say why each works."],
    ["Write a haiku about the sea.", "Now write one about mountains."],
    ["I have eggs, spinach and cheese. What can I cook for dinner?", "Summarize that in one sentence."],
]

CONFIGS: dict[str, dict[str, float]] = {
    "greedy": {"temperature": 0, "repetition_penalty": 1},
    "card": {"temperature": 0.2, "top_p": 0.9, "top_k": 50, "min_p": 0, "repetition_penalty": 1},
    "defaults": {},
}

LAST_REPLY_JS = """() => {
  const node = [...document.querySelectorAll('[data-role="assistant"]')].at(-1);
  const metrics = document.getElementById('metrics');
  return {
    raw: node?.dataset.raw ?? '',
    metrics: JSON.parse(metrics.dataset.metrics || '{}'),
    context: JSON.parse(metrics.dataset.context || '{}'),
    error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
  };
}"""


def parse_config(spec: str) -> tuple[str, dict[str, float]]:
    name, _, values = spec.partition("=")
    if not values:
        if name not in CONFIGS:
            raise SystemExit(f"unknown config {name!r}: use one of {', '.join(CONFIGS)} or name=key:value,...")
        return name, CONFIGS[name]
    settings = {}
    for item in values.split(","):
        key, _, value = item.partition(":")
        settings[key.strip()] = float(value)
    return name, settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chat_quality", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=ROOT / "models")
    p.add_argument("--web", type=Path, default=ROOT / "web")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--config", nargs="+", default=["greedy", "card", "defaults"], help="name or name=key:value,...")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="one run per seed (greedy: one run)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="WASM threads (0: the runtime's default)")
    p.add_argument("--dtype", help="force a dtype (?dtype=): default, the manifest's wasm choice")
    p.add_argument("--conversations", type=int, nargs="+", help="indices into the prompt set (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "chat-quality")
    p.add_argument("--chromium", default=os.environ.get("EDGE_CHAT_CHROMIUM", "/usr/bin/chromium"))
    return p.parse_args(argv)


def run_config(browser, base_url: str, args, name: str, settings: dict, seed: int | None, out) -> list[dict]:
    query = {"model": args.model, "device": "wasm", "max_new_tokens": args.max_new_tokens, "autoload": 1}
    query.update({k: (int(v) if float(v).is_integer() else v) for k, v in settings.items()})
    if seed is not None:
        query["seed"] = seed
    if args.threads:
        query["threads"] = args.threads
    if args.dtype:
        query["dtype"] = args.dtype
    context = browser.new_context()
    page = context.new_page()
    rows = []
    try:
        page.goto(f"{base_url}/?{urlencode(query)}")
        page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=600_000, polling=500)
        for c, turns in enumerate(CONVERSATIONS):
            if args.conversations and c not in args.conversations:
                continue
            page.click("#new-chat-button")
            for t, prompt in enumerate(turns):
                page.fill("#prompt", prompt)
                page.click("#send-button")
                page.wait_for_function("() => document.body.dataset.state === 'ready'", timeout=900_000, polling=200)
                reply = page.evaluate(LAST_REPLY_JS)
                new_tokens = reply["metrics"].get("new_tokens", 0)
                hit_max = new_tokens >= args.max_new_tokens
                loop = check(reply["raw"])
                row = {
                    "config": name,
                    "runtime": reply["metrics"].get("runtime"),
                    "dtype": reply["metrics"].get("dtype"),
                    "seed": seed,
                    "conversation": c,
                    "turn": t,
                    "prompt": prompt,
                    "reply": reply["raw"],
                    "new_tokens": new_tokens,
                    "hit_max_new_tokens": hit_max,
                    "repeat_coverage": round(loop.coverage, 3),
                    "top_phrase": f"{loop.top_phrase} ×{loop.top_count}",
                    "loops": loop.loops(hit_max),
                    "generation": reply["context"].get("generation"),
                    "decode_tokens_per_s": reply["metrics"].get("decode_tokens_per_s"),
                    "error": reply["error"],
                }
                rows.append(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                mark = "LOOP" if row["loops"] else "ok  "
                print(
                    f"{name:>10} seed {seed} c{c}.{t} {mark} {new_tokens:>4} tok  cover {loop.coverage:4.0%}  "
                    f"{prompt[:44]!r}",
                    flush=True,
                )
    finally:
        context.close()
    return rows


def summary(rows: list[dict]) -> str:
    """A markdown table: one line per turn, one column per config (loops in how many of its runs), and a total line
    per config with the replies cut at max_new_tokens."""
    configs = list(dict.fromkeys(r["config"] for r in rows))
    turns = list(dict.fromkeys((r["conversation"], r["turn"], r["prompt"]) for r in rows))
    lines = ["| # | prompt | " + " | ".join(configs) + " |", "|---|---|" + "---|" * len(configs)]
    for c, t, prompt in turns:
        cells = []
        for name in configs:
            runs = [r for r in rows if (r["config"], r["conversation"], r["turn"]) == (name, c, t)]
            looped = sum(r["loops"] for r in runs)
            cells.append(f"{'loops' if looped else 'ok'} {looped}/{len(runs)}" if runs else "")
        lines.append(f"| {c}.{t} | {prompt} | " + " | ".join(cells) + " |")
    totals, cut = [], []
    for name in configs:
        runs = [r for r in rows if r["config"] == name]
        totals.append(f"{sum(r['loops'] for r in runs)}/{len(runs)} loop")
        cut.append(f"{sum(r['hit_max_new_tokens'] for r in runs)}/{len(runs)} cut")
    lines.append("| | **all turns** | " + " | ".join(totals) + " |")
    lines.append("| | **cut at max new tokens** | " + " | ".join(cut) + " |")
    runtimes = sorted({f"{r['runtime']} {r['dtype']}" for r in rows if r.get("runtime")})
    lines.append(f"\nran on: {', '.join(runtimes) or 'unknown'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    started = time.monotonic()
    rows: list[dict] = []
    with (
        serving(args.models, args.web, args.out / "bench.sqlite") as base_url,
        sync_playwright() as playwright,
        results.open("w") as out,
    ):
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--disable-quic"])
        try:
            for spec in args.config:
                name, settings = parse_config(spec)
                seeds = [None] if settings.get("temperature") == 0 else args.seeds
                for seed in seeds:
                    rows += run_config(browser, base_url, args, name, settings, seed, out)
        finally:
            browser.close()
    print()
    print(summary(rows))
    print(f"\n{len(rows)} replies in {time.monotonic() - started:.0f} s; rows in {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
