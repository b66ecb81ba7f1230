"""Prompt lookup on ONNX Runtime (web/src/decode-lookup.js): the same greedy tokens with it on (the default) and off
(the chat setting's checkbox), on a rewrite of pasted text and its follow-up (KV reuse, rejected drafts cut from the
cache), with the page's default repetition penalty; with it on the turn reports tokens per forward pass, above 1,
and the metrics line shows them; with it off neither. The default model's q4 graph on WASM (its `wasm` device runs
the GGUF on llama.cpp, so the dtype is forced), and tiny-qwen3 (random weights: another template, vocabulary and
EOS) on WASM and on WebGPU (SwiftShader; decode-loop.js' static cache).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serve_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM_ARGS = ["--enable-unsafe-webgpu"]  # SwiftShader's WebGPU for the WebGPU case; WASM pages force ?device=wasm

MAX_NEW_TOKENS = 32  # WASM on 2 shared cores: enough for drafts to be tried, accepted and rejected
TINY_NEW_TOKENS = 96  # random weights fall into repeating one token only after a while
REWRITE = (
    "Fix the spelling mistakes in this text. Reply with the corrected text only.\n\nThe quick brown fox jumpd over "
    "the lazy dog. It was a beautifull day and the sun was shinning brightly over the feilds."
)
FOLLOW_UP = "Now write it again in the past tense."


def run_turns(chat: Any, lookup: bool) -> list[dict[str, Any]]:
    """A new chat with prompt lookup on or off (the settings panel's checkbox), two turns; each turn's ids and
    generation."""
    if not chat.page.evaluate("() => document.getElementById('settings-panel').open"):
        chat.page.click("#settings-panel summary")
    box = chat.page.locator("#set-prompt-lookup")
    if box.is_checked() != lookup:
        box.click()
    assert json.loads(chat.page.evaluate("() => document.body.dataset.settings"))["prompt_lookup"] is lookup
    chat.new_chat()
    turns = []
    for text in (REWRITE, FOLLOW_UP):
        chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
        chat.ask(text, timeout_s=300)
        turns.append(
            {
                "ids": chat.text_inputs(),
                "context": chat.context(),
                "metrics": chat.metrics(),
                "line": chat.page.text_content("#metrics"),
            }
        )
    return turns


def check_same_tokens(chat: Any, max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict[str, Any]]:
    chat.set_max_new_tokens(max_new_tokens)
    off = run_turns(chat, lookup=False)  # first: the first replies after a load also warm the runtime up
    on = run_turns(chat, lookup=True)
    for a, b in zip(on, off, strict=True):
        assert a["ids"]["prompt_ids"] == b["ids"]["prompt_ids"]
        assert a["ids"]["new_ids"] == b["ids"]["new_ids"], "prompt lookup changed the greedy tokens"
        assert a["context"]["generation"]["prompt_lookup"] is True
        assert "prompt_lookup" not in b["context"]["generation"] and "tokens_per_pass" not in b["context"]["generation"]
        assert "tokens/pass" in a["line"] and "tokens/pass" not in b["line"]  # the metrics line
        assert a["context"]["reused_tokens"] == b["context"]["reused_tokens"]  # lookup leaves the same cache behind
    per_pass = [t["context"]["generation"]["tokens_per_pass"] for t in on]
    # A report, not a check (2 shared cores): decode speed with lookup on and off, same page, same turns.
    speed = [
        (a["metrics"]["decode_tokens_per_s"], b["metrics"]["decode_tokens_per_s"]) for a, b in zip(on, off, strict=True)
    ]
    print(
        f"\ntokens per pass {per_pass}; new tokens {[len(t['ids']['new_ids']) for t in on]}; "
        f"decode tok/s (on, off) {speed}"
    )
    assert max(per_pass) > 1, f"no drafted token was ever accepted ({per_pass}): lookup did nothing"
    return on


def test_the_default_model_decodes_the_same_tokens_with_and_without_lookup(new_chat_page: Any, model_id: str) -> None:
    chat = new_chat_page()
    chat.open(model=model_id, device="wasm", dtype="q4", max_new_tokens=MAX_NEW_TOKENS, temperature=0, expose_inputs=1)
    chat.load(timeout_s=300)
    assert chat.page.evaluate("() => JSON.parse(document.body.dataset.settings).sampling.repetition_penalty") > 1
    turns = check_same_tokens(chat)
    assert turns[1]["context"]["reused_tokens"] > 0  # the follow-up ran on the cache the first turn left


@pytest.fixture(scope="module")
def qwen3_server(qwen3_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(qwen3_models, tmp_path_factory.mktemp("lookup-qwen3-server")) as base_url:
        yield base_url


@pytest.mark.parametrize("device", ["wasm", "webgpu"])
def test_a_tiny_model_decodes_the_same_tokens_with_and_without_lookup(
    browser: Any, qwen3_server: str, device: str
) -> None:
    """WASM: the DynamicCache, cut back in CPU memory. WebGPU (SwiftShader here): decode-loop.js' static cache, cut
    back by its length; the page picks the manifest's webgpu dtype. Random weights repeat a token after a few steps
    (greedy, a mild penalty): what drafts are accepted on."""
    from conftest import ChatPage

    context = browser.new_context(viewport={"width": 1000, "height": 860})
    try:
        chat = ChatPage(context.new_page(), qwen3_server)
        query = {"model": "tiny-qwen3", "device": device, **({"dtype": "q4"} if device == "wasm" else {})}
        chat.open(
            **query, max_new_tokens=MAX_NEW_TOKENS, temperature=0, repetition_penalty=1.1, thinking=0, expose_inputs=1
        )
        if device == "webgpu" and chat.page.evaluate("() => document.body.dataset.webgpu") != "true":
            pytest.skip("this Chromium offers no WebGPU adapter")
        chat.load(timeout_s=300)
        check_same_tokens(chat, TINY_NEW_TOKENS)
        assert chat.metrics()["device"] == device
    finally:
        context.close()
