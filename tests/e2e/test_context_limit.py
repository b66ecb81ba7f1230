"""Context limits with tiny-qwen3 and a small limit (?context_limit): the page counts the conversation's tokens
(the worker templates and tokenizes it), says so near the limit, refuses a turn that would not fit with a clear
message and the typed text back in the box (no crash, nothing cut silently), and either way out works: dropping
the oldest turns (the transcript says how many went, and the next prompt is exactly the messages shown) or a new
chat. On both text runtimes: q4 on ONNX Runtime Web and the GGUF on llama.cpp (the count is Transformers.js's
either way; llama.cpp's own tokenization of each prompt must agree with it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serve_app

from model_prep.recipes import get_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny-qwen3"
DTYPES = ("q4", get_recipe(MODEL).gguf.dtype)
LIMIT = 120
MAX_NEW = 8
QUESTION = "Please tell me about the quick brown fox and the lazy dog."


@pytest.fixture(scope="module")
def server(qwen3_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(qwen3_models, tmp_path_factory.mktemp("context-server")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def tokenizer(qwen3_models: Path) -> Any:
    from model_prep.verify.replies import load_tokenizer

    return load_tokenizer(qwen3_models / MODEL)


@pytest.fixture(scope="module", params=DTYPES)
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def chat(new_chat_page: Any, dtype: str) -> Any:
    page = new_chat_page()
    page.open(
        model=MODEL,
        device="wasm",
        dtype=dtype,
        max_new_tokens=MAX_NEW,
        context_limit=LIMIT,
        temperature=0,
        expose_inputs=1,
    )
    page.load(timeout_s=180)
    return page


def meter(chat: Any) -> tuple[int, int]:
    tokens = chat.page.get_attribute("#context-meter", "data-tokens")
    limit = chat.page.get_attribute("#context-meter", "data-limit")
    return int(tokens), int(limit)


def conversation(chat: Any) -> list[dict[str, str]]:
    return chat.page.evaluate(
        """() => [...document.querySelectorAll('#transcript [data-role]')].map((n) => ({
             role: n.dataset.role,
             content: n.dataset.role === 'user' ? n.querySelector('.body').textContent : n.dataset.raw,
           }))"""
    )


def test_the_page_counts_warns_and_refuses_what_does_not_fit(chat: Any, tokenizer: Any) -> None:
    assert meter(chat) == (0, LIMIT)
    warned_at = None
    for turn in range(12):
        chat.page.fill("#prompt", QUESTION)
        chat.page.click("#send-button")
        chat.wait_for("() => document.body.dataset.state === 'ready'", 120)
        if chat.page.evaluate("() => document.body.dataset.error") == "context-full":
            break
        tokens, limit = meter(chat)
        assert limit == LIMIT
        x = chat.page.evaluate("() => window.__edgeChatTextInputs")
        assert tokens == len(x["prompt_ids"]) + chat.metrics()["new_tokens"]  # the turn's prompt and reply
        if x.get("new_ids_exact", True):
            assert chat.metrics()["new_tokens"] == len(x["new_ids"])
        else:
            assert chat.context()["prompt_ids_match"] is True  # llama.cpp saw the prompt Transformers.js counted
        if warned_at is None and chat.page.is_visible("#context-warning"):
            warned_at = turn
            assert tokens >= 0.75 * LIMIT or tokens + MAX_NEW > LIMIT
    else:
        pytest.fail("the conversation never reached the context limit")
    assert warned_at is not None, "the page never said the conversation was near the limit"
    # Refused before anything was generated: the message is back in the box, the conversation as it was.
    shown = conversation(chat)
    assert shown[-1]["role"] == "assistant"
    assert chat.page.input_value("#prompt") == QUESTION
    assert "context limit" in chat.error_text() and str(LIMIT) in chat.error_text()
    assert chat.page.is_visible("#context-warning")
    prompt = list(
        tokenizer.apply_chat_template([*shown, {"role": "user", "content": QUESTION}], add_generation_prompt=True)
    )
    assert len(prompt) + MAX_NEW > LIMIT  # it really would not have fitted
    assert chat.page_errors == []
    chat.shown_before_drop = shown


def test_dropping_the_oldest_turns_makes_room(chat: Any, tokenizer: Any) -> None:
    before = chat.shown_before_drop
    chat.page.click("#context-drop")
    chat.wait_for("() => !!document.querySelector('.dropped-note')", 30)
    after = conversation(chat)
    dropped = int(chat.page.get_attribute(".dropped-note", "data-dropped"))
    assert dropped > 0 and after == before[dropped:]  # whole turns from the start, the rest untouched
    assert after[0]["role"] == "user"
    tokens, _ = meter(chat)
    assert tokens == len(tokenizer.apply_chat_template(after, add_generation_prompt=True))
    with_question = [*after, {"role": "user", "content": QUESTION}]
    assert len(tokenizer.apply_chat_template(with_question, add_generation_prompt=True)) + MAX_NEW <= LIMIT
    chat.page.click("#send-button")  # the restored message
    reply = chat.wait_reply()
    assert reply["done"] == "true"
    x = chat.page.evaluate("() => window.__edgeChatTextInputs")
    want = list(
        tokenizer.apply_chat_template([*after, {"role": "user", "content": QUESTION}], add_generation_prompt=True)
    )
    assert x["prompt_ids"] == want  # exactly the messages shown, nothing else cut


def test_a_new_chat_starts_empty(chat: Any) -> None:
    for _ in range(8):
        if chat.page.is_visible("#context-warning"):
            break
        chat.ask(QUESTION)
    assert chat.page.is_visible("#context-warning")
    chat.page.click("#context-new-chat")
    chat.wait_for("() => document.querySelectorAll('#transcript [data-role]').length === 0", 10)
    assert meter(chat) == (0, LIMIT)
    assert chat.page.is_hidden("#context-warning")
    assert chat.ask("Hi")["done"] == "true"
    assert chat.page_errors == []
