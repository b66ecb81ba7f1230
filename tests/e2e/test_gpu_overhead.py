"""What a WebGPU decode step asks of the GPU API, counted on Chromium's SwiftShader adapter (web/src/gpu-counters.js):
the metrics' `gpu` object, per decode step (the prefill pass left out). Buffers created and readbacks per step are
exact on any adapter, so they are asserted; submits, dispatches and writes are printed for the report.

tiny-llama (random weights, 2 layers, built by the real pipeline) runs q4 on SwiftShader (no shader-f16). The page's
worker is driven directly over its protocol (web/src/protocol.js) from the chat page's origin, so each decode path
(load option `kv`: "static", the default on WebGPU, or "dynamic", Transformers.js' DynamicCache) runs in the same
browser, and greedy tokens are compared between them.

A module-level `server` overrides conftest's: it serves a temporary models folder holding tiny-llama
(EDGE_CHAT_TINY_MODELS=<folder> reuses a folder that already holds it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny-llama"
CHROMIUM_ARGS = ["--enable-unsafe-webgpu"]
NEW_TOKENS = 12
SHORT_TOKENS = 6
PROMPT = "What is the capital of France?"

# Drives a fresh worker: check, load (q4 on WebGPU, `kv` as given), then one greedy turn per entry of `turns`
# (each {messages, n, options?}, or {follow, n, options?}: the previous turn's conversation, its reply and `follow`
# as the next user message); returns each turn's done reply and the exposed ids.
DRIVE = """
async ({model, kv, turns, extra}) => {
  const { artifactsFor } = await import('/static/src/manifest.js');
  const manifest = await (await fetch(`/api/models/${model.id}`)).json();
  const worker = new Worker('/static/src/worker.js', { type: 'module' });
  let next = 0;
  const request = (message, until, onReply) => new Promise((resolve, reject) => {
    const id = `t${++next}`;
    const listen = (event) => {
      const m = event.data ?? {};
      if (m.id !== id) return;
      onReply?.(m);
      if (m.type !== 'error' && m.type !== until) return;
      worker.removeEventListener('message', listen);
      if (m.type === 'error') reject(new Error(`${m.code}: ${m.message} ${m.detail ?? ''}`));
      else resolve(m);
    };
    worker.addEventListener('message', listen);
    worker.postMessage({ ...message, id });
  });
  try {
    const caps = await request({ type: 'check' }, 'capabilities');
    if (!caps.webgpu) return { skip: `no WebGPU adapter: ${caps.error}` };
    const dtype = manifest.devices.webgpu;
    const ready = await request({
      type: 'load', model: { id: model.id, revision: model.revision }, dtype, device: 'webgpu',
      files: manifest.dtypes[dtype].files, artifacts: artifactsFor(manifest, dtype), manifest,
      ...(kv ? { kv } : {}), ...extra,
    }, 'ready');
    const out = [];
    for (const turn of turns) {
      let ids = null;
      const last = out.at(-1);
      const messages = turn.follow
        ? [...last.messages, { role: 'assistant', content: last.text }, { role: 'user', content: turn.follow }]
        : turn.messages;
      const done = await request({ type: 'generate', messages, options: {
        max_new_tokens: turn.n, min_new_tokens: turn.n, sampling: { temperature: 0 }, expose_inputs: true,
        ...(turn.options ?? {}),
      } }, 'done', (m) => { if (m.type === 'text-inputs') ids = m; });
      out.push({ metrics: done.metrics, context: done.context, text: done.text, ids, messages });
    }
    return { ready, turns: out };
  } finally {
    worker.terminate();
  }
}
"""


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("EDGE_CHAT_TINY_MODELS")
    if given:
        return Path(given).resolve()
    from model_prep.__main__ import main

    models = tmp_path_factory.mktemp("tiny-models")
    assert main(["export", MODEL, "--out", str(models)]) == 0
    return models


@pytest.fixture(scope="module")
def server(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(tiny_models, tmp_path_factory.mktemp("gpu-overhead-server")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def model(tiny_models: Path) -> dict[str, str]:
    manifest = json.loads((tiny_models / MODEL / "manifest.json").read_text())
    return {"id": MODEL, "revision": manifest["revision"]}


@pytest.fixture(scope="module")
def drive(new_chat_page: Any, model: dict[str, str]) -> Any:
    page = new_chat_page()
    page.page.goto(f"{page.base_url}/?autoload=0")

    def run(kv: str | None, turns: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        result = page.page.evaluate(DRIVE, {"model": model, "kv": kv, "turns": turns, "extra": extra or {}})
        if "skip" in result:
            pytest.skip(result["skip"])
        return result

    run.page = page
    return run


def one_turn(n: int = NEW_TOKENS, content: str = PROMPT) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": content}], "n": n}]


def steady(long: dict[str, Any], short: dict[str, Any], key: str) -> float:
    """Per decode step of `key` once the step's shapes have been seen: the difference of two turns' totals (the
    first decode step also builds the kernels and buffers of the 1-token shapes), per step of the difference."""
    a, b = long["turns"][0]["metrics"]["gpu"], short["turns"][0]["metrics"]["gpu"]
    total = lambda g: g[key] * g["steps"]  # noqa: E731
    return round((total(a) - total(b)) / (a["steps"] - b["steps"]), 2)


def counts(kv: str, drive: Any) -> dict[str, float]:
    long, short = drive(kv, one_turn(NEW_TOKENS)), drive(kv, one_turn(SHORT_TOKENS))
    keys = ("buffers", "submits", "dispatches", "readbacks", "readback_bytes", "writes", "write_bytes")
    out = {key: steady(long, short, f"{key}_per_step") for key in keys}
    out["encode_ms"] = long["turns"][0]["metrics"]["gpu"]["encode_ms_per_step"]
    out["new_ids"] = long["turns"][0]["ids"]["new_ids"]
    out["kv"] = long["ready"]["runtime"]["kv"]
    return out


def test_dynamic_cache_counts(drive: Any) -> None:
    """Today's path (Transformers.js generate with its DynamicCache): the counts this work starts from."""
    result = drive("dynamic", one_turn())
    gpu = result["turns"][0]["metrics"]["gpu"]
    assert result["ready"]["runtime"]["kv"] == "dynamic"
    assert gpu["steps"] == NEW_TOKENS - 1
    c = counts("dynamic", drive)
    print(f"dynamic: {json.dumps(c)}")
    # the logits and the total length GroupQueryAttention reads on the CPU
    assert c["readbacks"] == 2
    # ORT writes each step's present.* into new buffers (2 × layers of them), some from its bucket cache
    assert c["buffers"] > 2


def test_static_cache_counts_and_tokens(drive: Any) -> None:
    """The static KV cache (decode-loop.js, the default on WebGPU): one readback (the logits) per decode step, no KV
    buffer created, the same greedy tokens as the DynamicCache. The buffers ORT still creates per step are its
    mapped staging buffers: one per CPU input it uploads (input_ids; seqlens_k, computed on the CPU so that no length
    is read back) and one for the logits' download."""
    static, dynamic = counts("static", drive), counts("dynamic", drive)
    print(f"static: {json.dumps(static)}")
    assert static["kv"] == "static"
    assert static["readbacks"] == 1
    assert static["buffers"] == 3
    assert static["new_ids"] == dynamic["new_ids"]
    assert drive(None, one_turn(2))["ready"]["runtime"]["kv"] == "static"  # the default


def test_static_cache_second_turn_after_a_cut_back(drive: Any) -> None:
    """A turn whose conversation parts from the cached ids (random weights: the reply does not survive decode →
    template → encode, as Qwen3's dropped thinking does not) is prefilled whole, as the DynamicCache's is on WebGPU,
    and decodes the same tokens as a fresh prefill and as the DynamicCache. (Keeping the common prefix and prefilling
    the rest runs other kernels than a whole prefill: float differences turned near-tie tokens here.)"""
    turns = [*one_turn(8), {"follow": "And of Germany?", "n": 8}]
    fresh = [*one_turn(8), {"follow": "And of Germany?", "n": 8, "options": {"reuse_cache": False}}]
    static, scratch, dynamic = drive("static", turns), drive("static", fresh), drive("dynamic", turns)
    second = [r["turns"][1] for r in (static, scratch, dynamic)]
    cached = static["turns"][0]["ids"]["prompt_ids"] + static["turns"][0]["ids"]["new_ids"][:-1]
    prompt = second[0]["ids"]["prompt_ids"]
    assert prompt[: len(cached)] != cached  # the conversation parted from the cache: a cut-back turn
    assert [t["context"]["reused_tokens"] for t in second] == [0, 0, 0]
    reused, fresh_ids, dynamic_ids = (t["ids"]["new_ids"] for t in second)
    assert reused == fresh_ids == dynamic_ids


def test_static_cache_second_turn_extends_the_cache(drive: Any) -> None:
    """A one-token first turn leaves the cache holding exactly its prompt, which the second turn's ids start with: both
    caches keep it and prefill only the rest, with the same tokens. (A whole prefill runs other kernels: its float
    differences may turn a near-tie greedy token of a random-weight model, so it is not the reference here.)"""
    turns = [*one_turn(1), {"follow": "And of Germany?", "n": 8}]
    fresh = [*one_turn(1), {"follow": "And of Germany?", "n": 8, "options": {"reuse_cache": False}}]
    static, scratch, dynamic = drive("static", turns), drive("static", fresh), drive("dynamic", turns)
    second = [r["turns"][1] for r in (static, scratch, dynamic)]
    first_prompt = static["turns"][0]["ids"]["prompt_ids"]
    assert [t["context"]["reused_tokens"] for t in second] == [len(first_prompt), 0, len(first_prompt)]
    reused, fresh_ids, dynamic_ids = (t["ids"]["new_ids"] for t in second)
    print(f"turn 2 reused (static) {reused}\nreused (dynamic) {dynamic_ids}\nwhole prefill (static) {fresh_ids}")
    assert reused == dynamic_ids
    assert reused[0] == fresh_ids[0]


@pytest.mark.parametrize("context", [64, 2100])
def test_static_cache_counts_at_a_long_context(drive: Any, tiny_models: Path, context: int) -> None:
    """At 64 and at 2,100 tokens of context the static cache still creates no KV buffer and reads back the logits
    only; the DynamicCache's new present.* buffers grow with the context (ORT's bucket cache holds few of each size)."""
    from model_prep.verify.replies import load_tokenizer

    tokenizer = load_tokenizer(tiny_models / MODEL)

    def length(text: str) -> int:
        return len(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))

    words: list[str] = []
    while length(" ".join(words)) < context:
        words += [f"w{(len(words) + i) % 89}" for i in range(8)]
    words_text = " ".join(words)
    rows = {}
    for kv in ("static", "dynamic"):
        long, short = drive(kv, one_turn(NEW_TOKENS, words_text)), drive(kv, one_turn(SHORT_TOKENS, words_text))
        keys = ("buffers", "readbacks", "readback_bytes", "submits", "dispatches")
        rows[kv] = {key: steady(long, short, f"{key}_per_step") for key in keys}
        rows[kv]["prompt_tokens"] = long["turns"][0]["metrics"]["prompt_tokens"]
        rows[kv]["encode_ms"] = long["turns"][0]["metrics"]["gpu"]["encode_ms_per_step"]
        rows[kv]["new_ids"] = long["turns"][0]["ids"]["new_ids"]
    print(f"context {context}: {json.dumps(rows)}")
    assert rows["static"]["prompt_tokens"] >= context
    assert (rows["static"]["buffers"], rows["static"]["readbacks"]) == (3, 1)
    assert rows["static"]["new_ids"] == rows["dynamic"]["new_ids"]
