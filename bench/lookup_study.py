"""`python -m bench.lookup_study`: which repetition penalty, and how many forward passes prompt lookup saves.

Decodes the prompt set of bench/lookup_prompts.py (open chat, pasted passages, rewrites and code fixes, follow-ups)
on the default model's GGUF with native llama.cpp (logits only: it is 12x faster than native onnxruntime's q4 on
these CPUs; the sampler is HF's, in numpy, as web/src/sampling.js runs it) under each penalty mode:

- `none`: the model card's sampling, no penalty;
- `whole`: penalty over the whole context, prompt and reply (HF's RepetitionPenaltyLogitsProcessor; the old default);
- `reply`: penalty over this turn's generated tokens only;
- `lastN`: penalty over the latest N tokens of prompt + reply (llama.cpp's repeat_last_n).

and reports, per mode: replies that loop (bench/loops.py) on open chat, fidelity on the grounded kinds (keywords
carried / word similarity to the corrected text), lengths; and, from the same token streams, the forward passes per
generated token prompt lookup needs (bench/lookup_twin.py: exact counts, the tokens being plain decoding's).
`--report` prints the tables of an earlier run's build/lookup-study/replies.jsonl.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import time
from pathlib import Path

import numpy as np

from .lookup_prompts import CASES, open_cases
from .lookup_twin import LookupConfig, count_passes
from .loops import check

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "lookup-study" / "replies.jsonl"
MAX_NEW = 128
PAGE = {"temperature": 0.2, "top_p": 0.9, "top_k": 50, "penalty": 1.2}  # SmolLM2's generation_config.json
KINDS = ["open", "grounded", "rewrite", "followup"]


def penalised_ids(mode: str, prompt: list[int], reply: list[int]) -> list[int]:
    if mode == "none":
        return []
    if mode == "whole":
        return prompt + reply
    if mode == "reply":
        return reply
    if mode.startswith("last"):
        n = int(mode[4:])
        return (prompt + reply)[-n:]
    raise ValueError(mode)


def pick(logits: np.ndarray, seen: list[int], penalty: float, temperature: float, rng) -> int:
    """HF's order: repetition penalty → temperature → top_k → top_p, then one uniform draw (none when greedy)."""
    x = logits.astype(np.float32).copy()
    if seen and penalty != 1:
        ids = np.unique(np.asarray(seen, dtype=np.int64))
        v = x[ids]
        x[ids] = np.where(v < 0, v * penalty, v / penalty)
    if temperature == 0:
        return int(np.argmax(x))
    x = x / temperature
    top = np.argpartition(-x, PAGE["top_k"])[: PAGE["top_k"]]
    top = top[np.lexsort((top, -x[top]))]  # descending logit, lower id first on ties
    p = np.exp(x[top] - x[top[0]])
    p /= p.sum()
    keep, mass = len(top), 0.0
    for k in range(len(top)):
        if mass >= PAGE["top_p"]:
            keep = k
            break
        mass += p[k]
    p = p[:keep] / p[:keep].sum()
    u = rng.random()
    return int(top[min(np.searchsorted(np.cumsum(p), u, side="right"), keep - 1)])


def decode(session, prompt: list[int], mode: str, temperature: float, rng, eos: int) -> list[int]:
    session.reset()
    logits = session.forward(prompt)[-1]
    reply: list[int] = []
    for _ in range(MAX_NEW):
        token = pick(logits, penalised_ids(mode, prompt, reply), PAGE["penalty"], temperature, rng)
        reply.append(token)
        if token == eos or len(reply) == MAX_NEW:
            break
        logits = session.forward([token])[-1]
    return reply


def fidelity(case, text: str) -> float:
    if case.keywords:
        low = text.lower()
        return sum(k in low for k in case.keywords) / len(case.keywords)
    block = re.search(r"```[a-z]*\n(.*?)(```|$)", text, re.S)
    got = (block.group(1) if block else text).split()
    return difflib.SequenceMatcher(None, got, case.reference.split(), autojunk=False).ratio()


def run(args) -> None:
    from model_prep.verify.gguf import LlamaCppSession
    from model_prep.verify.replies import load_tokenizer

    model = ROOT / "models" / "smollm2-135m"
    tok = load_tokenizer(model)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    session = LlamaCppSession(model / "gguf" / "model_q8_0.gguf", n_ctx=1024, threads=args.threads)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if OUT.exists():
        for line in OUT.read_text().splitlines():
            r = json.loads(line)
            done.add((r["mode"], r["decoding"], r["seed"], r["name"], r["turn"]))

    def template(messages):
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)

    with OUT.open("a") as out:
        for spec in args.runs:
            mode, decoding, seed = spec.split(":")
            seed = int(seed)
            temperature = 0.0 if decoding == "greedy" else PAGE["temperature"]
            t0 = time.time()
            jobs = []
            for c, turns in enumerate(open_cases()):
                jobs.append(("open", f"open{c}", turns, None))
            for case in CASES:
                jobs.append((case.kind, case.name, None, case))
            for index, (kind, name, turns, case) in enumerate(jobs):
                rng = np.random.default_rng(seed * 1000 + index)
                if case is None:
                    messages = []
                    for t, user in enumerate(turns):
                        messages.append({"role": "user", "content": user})
                        prompt = template(messages)
                        key = (mode, decoding, seed, name, t)
                        reply = decode(session, prompt, mode, temperature, rng, eos)
                        text = tok.decode([i for i in reply if i != eos], skip_special_tokens=True)
                        messages.append({"role": "assistant", "content": text})
                        if key not in done:
                            out.write(
                                json.dumps(_row(mode, decoding, seed, kind, name, t, prompt, reply, text, eos)) + "\n"
                            )
                    continue
                key = (mode, decoding, seed, name, 0)
                if key in done:
                    continue
                prompt = template([{"role": r, "content": x} for r, x in case.turns])
                reply = decode(session, prompt, mode, temperature, rng, eos)
                text = tok.decode([i for i in reply if i != eos], skip_special_tokens=True)
                row = _row(mode, decoding, seed, kind, name, 0, prompt, reply, text, eos)
                row["fidelity"] = fidelity(case, text)
                out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"{spec}: {time.time() - t0:.0f} s", flush=True)
    session.close()


def _row(mode, decoding, seed, kind, name, turn, prompt, reply, text, eos):
    hit_max = reply[-1] != eos
    return {
        "mode": mode,
        "decoding": decoding,
        "seed": seed,
        "kind": kind,
        "name": name,
        "turn": turn,
        "prompt": prompt,
        "reply": reply,
        "text": text,
        "hit_max": hit_max,
        "loops": check(text).loops(hit_max),
    }


LOOKUPS = {
    "k4 n3": LookupConfig(max_draft=4, min_ngram=3, adaptive=False),
    "k4 n3-1": LookupConfig(max_draft=4, min_ngram=1, adaptive=False),
    "k8 n3-1": LookupConfig(max_draft=8, min_ngram=1, adaptive=False),
    "k4 n3 adaptive": LookupConfig(max_draft=4, min_ngram=3, adaptive=True),
    "k4 n3-1 adaptive": LookupConfig(max_draft=4, min_ngram=1, adaptive=True),
}
# The cost of a pass that feeds m tokens, relative to a 1-token pass (FACTS.md, "The cost of one pass with k new
# tokens", 1 thread, linear between k = 1 and k = 4 / 8): onnxruntime-web WASM and llama.cpp.
COST = {"wasm": (373, 469, 587), "llama.cpp": (23, 46, 70)}


def pass_cost(runtime: str, m: int) -> float:
    c1, c4, c8 = COST[runtime]
    return (c1 + (c4 - c1) * (m - 1) / 3 if m <= 4 else c4 + (c8 - c4) * (m - 4) / 4) / c1


def _mean(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f}" if values else "-"


def report(rows: list[dict]) -> str:
    lines = []
    groups = sorted({(r["mode"], r["decoding"]) for r in rows}, key=lambda g: (g[1], g[0]))
    lines.append(
        "| penalty | decoding | open: loops | open: at max | grounded | rewrite | follow-up | mean new tokens "
        "(open / grounded / rewrite / follow-up) | replies |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for mode, decoding in groups:
        g = [r for r in rows if r["mode"] == mode and r["decoding"] == decoding]
        seeds = sorted({r["seed"] for r in g})
        op = [r for r in g if r["kind"] == "open"]
        fid = {k: _mean([r["fidelity"] for r in g if r["kind"] == k], 2) for k in KINDS[1:]}
        length = " / ".join(_mean([len(r["reply"]) for r in g if r["kind"] == k], 0) for k in KINDS)
        lines.append(
            f"| {mode} | {decoding} (seeds {','.join(map(str, seeds))}) | {sum(r['loops'] for r in op)}/{len(op)} | "
            f"{sum(r['hit_max'] for r in op)}/{len(op)} | {fid['grounded']} | {fid['rewrite']} | "
            f"{fid['followup']} | {length} | {len(g)} |"
        )
    lines.append("")
    lines.append(
        "Forward passes per generated token (plain decoding: 1.00), and the estimated WASM time ratio "
        "lookup/plain from the per-pass cost of k tokens"
    )
    lines.append("")
    lines.append(
        "| penalty | decoding | lookup | open | grounded | rewrite | follow-up | WASM time ratio (open / grounded / "
        "rewrite / follow-up) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for mode, decoding in groups:
        g = [r for r in rows if r["mode"] == mode and r["decoding"] == decoding]
        for name, cfg in LOOKUPS.items():
            cells, ratios = [], []
            for kind in KINDS:
                tokens = passes = 0
                cost = 0.0
                for r in (r for r in g if r["kind"] == kind):
                    c = count_passes(r["prompt"], r["reply"], cfg)
                    tokens += c.tokens
                    passes += c.passes
                    cost += (c.passes > 0) + sum(pass_cost("wasm", m) for m in c.sizes)
                cells.append(f"{passes / tokens:.2f}" if tokens else "-")
                ratios.append(f"{cost / tokens:.2f}" if tokens else "-")
            lines.append(f"| {mode} | {decoding} | {name} | {' | '.join(cells)} | {' / '.join(ratios)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lookup_study", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="mode:decoding:seed, e.g. reply:sampled:0 last64:greedy:0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if args.runs:
        run(args)
    if args.report or not args.runs:
        rows = [json.loads(line) for line in OUT.read_text().splitlines()]
        print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
