"""Chat settings with the real default model on the runtime it uses on WASM (its GGUF on llama.cpp): defaults read
from its generation_config.json, panel values reaching the runtime (the worker echoes the arguments it called it
with, and for llama.cpp the sampler parameters they mapped to), a repetition penalty decoded greedily that equals a
Python reference applying HF's rule to the same file's logits (native llama.cpp over its window of the latest
tokens; onnxruntime over the reply's tokens for an ONNX dtype),
seeded sampling that repeats, the system prompt in the template, settings kept per model across reloads, and an
out-of-range value refused without losing the message. One page and one model load for the module, tests in file
order.

llama.cpp in WASM and natively sum in different orders (test_chat_wasm.py): where the page's penalised reply is not
native's byte for byte, each of its tokens must be native's penalised greedy choice, given the page's prefix, to
within references.LLAMA_CPP_NEAR_TIE, and some token must be clearly off plain greedy's choice, which only the
penalty explains.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from conftest import strip_eos
from references import (
    LLAMA_CPP_NEAR_TIE,
    LLAMA_CPP_PENALTY_LAST_N,
    Native,
    aligned_shortfalls,
    greedy_with_penalty,
    shortfalls_with_penalty,
)

from model_prep.recipes import get_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POEM = "Write a short poem about autumn leaves."
PENALTY = 1.3
PENALTY_TOKENS = 40


@pytest.fixture(scope="module")
def chat(new_chat_page: Any, model_dir: Path, model_id: str) -> Any:
    page = new_chat_page()
    page.open(model=model_id, device="wasm", expose_inputs=1)
    return page


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from model_prep.verify.replies import load_tokenizer

    return load_tokenizer(model_dir)


def settings(chat: Any) -> dict[str, Any]:
    return json.loads(chat.page.evaluate("() => document.body.dataset.settings"))


def open_panel(chat: Any) -> None:
    if not chat.page.evaluate("() => document.getElementById('settings-panel').open"):
        chat.page.click("#settings-panel summary")


def ask(chat: Any, text: str) -> dict[str, Any]:
    chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
    return chat.ask(text, timeout_s=300)


def test_defaults_come_from_the_models_generation_config(chat: Any, model_dir: Path, model_id: str) -> None:
    config = json.loads((model_dir / "generation_config.json").read_text())
    recipe = get_recipe(model_id)
    current = settings(chat)
    if recipe.sampling is not None:
        assert config["do_sample"] is True
        assert current["sampling"] == asdict(recipe.sampling)
        assert current["sampling"]["temperature"] > 0  # the default model samples: greedy loops (FACTS.md)
    open_panel(chat)
    shown = chat.page.input_value("#set-temperature")
    assert float(shown) == current["sampling"]["temperature"]
    assert "generation_config.json" in chat.page.text_content("#settings-source")


def test_the_model_card_shows_source_sizes_context_and_fidelity(
    chat: Any, model_dir: Path, manifest: dict[str, Any]
) -> None:
    verification = json.loads((model_dir / "verification.json").read_text())
    chat.page.click("#model-card summary")
    card = chat.page.locator("#model-card-body")
    card.locator("table").wait_for(timeout=10_000)
    facts = card.locator("dl").text_content()
    assert manifest["source"] in facts and manifest["revision"] in facts
    assert f"{manifest['context_length']:,} tokens" in facts
    rows = chat.page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#model-card-body tr[data-dtype]')]
             .map((tr) => [tr.dataset.dtype, [...tr.querySelectorAll('td')].map((td) => td.textContent)]))"""
    )
    assert set(rows) == set(manifest["dtypes"])
    reference = verification["reference"]["perplexity"]
    for dtype, (name, size, used, top1, perplexity) in rows.items():
        scores = verification["variants"][dtype]
        assert name == dtype
        size_bytes = manifest["dtypes"][dtype]["bytes"]
        assert size == f"{size_bytes / 1e6:.{0 if size_bytes >= 1e8 else 1}f} MB"  # modelcard.js: a decimal below 100
        assert top1 == f"{100 * scores['top1_agreement']:.1f} %"
        delta = 100 * (scores["perplexity"] / reference - 1)
        assert perplexity == f"{scores['perplexity']:.2f} ({'+' if delta >= 0 else ''}{delta:.1f} %)"
        devices = [d for d, v in manifest["devices"].items() if v == dtype]
        assert (used == "–") == (not devices)
    assert f"{reference:.2f}" in card.text_content()


def test_a_repetition_penalty_decoded_greedily_equals_python(
    chat: Any, model_dir: Path, manifest: dict[str, Any], tokenizer: Any, tmp_path: Path
) -> None:
    chat.load(timeout_s=400)
    open_panel(chat)
    chat.page.fill("#set-temperature", "0")
    chat.page.fill("#set-repetition-penalty", str(PENALTY))
    chat.set_max_new_tokens(PENALTY_TOKENS)
    reply = ask(chat, POEM)
    x = chat.text_inputs()
    generation = chat.context()["generation"]
    # What the panel says is what the runtime was called with.
    assert generation["do_sample"] is False
    assert (generation["temperature"], generation["repetition_penalty"]) == (0, PENALTY)
    assert generation["max_new_tokens"] == PENALTY_TOKENS
    dtype = chat.metrics()["dtype"]
    assert dtype == manifest["devices"]["wasm"]  # the runtime the default model really uses on WASM
    want_prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": POEM}], add_generation_prompt=True))
    assert x["prompt_ids"] == want_prompt
    from model_prep.verify.replies import eos_ids

    eos = eos_ids(model_dir)
    native = Native(model_dir, manifest, eos, tmp_path)
    session = native.logits_session(dtype, "wasm")
    gguf = native.gguf(dtype)
    # The penalty counts the reply's tokens on ONNX Runtime and llama.cpp's window of the latest tokens (sampling.js).
    last_n = LLAMA_CPP_PENALTY_LAST_N if gguf else None
    # The window must reach back into the prompt here, or this would not tell it from a reply-only penalty.
    assert last_n is None or len(want_prompt) + PENALTY_TOKENS > last_n
    try:
        penalised = greedy_with_penalty(session, want_prompt, PENALTY_TOKENS, PENALTY, eos, last_n)
        plain = greedy_with_penalty(session, want_prompt, PENALTY_TOKENS, 1.0, eos)
        assert penalised != plain, "the penalty changed nothing on this prompt: the check below proves nothing"
        if gguf is None:
            assert strip_eos(x["new_ids"], eos) == penalised
            return
        # llama.cpp's sampler: HF's rule over its window of the latest tokens, greedy after it (sampling.js).
        assert generation["llama_cpp"]["repeat_penalty"] == PENALTY
        assert generation["llama_cpp"]["repeat_last_n"] == LLAMA_CPP_PENALTY_LAST_N
        from model_prep.verify.gguf import streamed_text

        expected = streamed_text(gguf, penalised)
        if reply["raw"] == expected:
            return
        chosen, gaps = aligned_shortfalls(session, want_prompt, reply["raw"], PENALTY, max_tokens=PENALTY_TOKENS)
        unpenalised = shortfalls_with_penalty(session, want_prompt, chosen, 1.0)
    finally:
        if hasattr(session, "close"):
            session.close()
    print(f"\nWASM llama.cpp {reply['raw']!r} vs native {expected!r}: shortfalls {[round(g, 3) for g in gaps]}")
    assert max(gaps) <= LLAMA_CPP_NEAR_TIE, f"a browser token is {max(gaps):.3f} below native's penalised greedy choice"
    assert max(unpenalised) > LLAMA_CPP_NEAR_TIE, "every token is plain greedy's: the penalty did not reach llama.cpp"


def test_the_context_limit_stops_at_the_runtimes_own(chat: Any, manifest: dict[str, Any]) -> None:
    from model_prep.layout import KV_CONTEXT_FOR_MEMORY

    open_panel(chat)
    chat.page.fill("#set-context-limit", str(manifest["context_length"]))
    limit = settings(chat)["context_limit"]
    if chat.metrics()["runtime"] == "llama.cpp":
        # llama.cpp allocated its KV cache at load, for the page's default limit: no turn may pass it
        assert manifest["context_length"] > KV_CONTEXT_FOR_MEMORY, "the check below proves nothing for this model"
        assert limit == KV_CONTEXT_FOR_MEMORY
    else:
        assert limit == manifest["context_length"]
    chat.page.fill("#set-context-limit", "")
    assert settings(chat)["context_limit"] == min(manifest["context_length"], KV_CONTEXT_FOR_MEMORY)


def test_seeded_sampling_repeats_exactly(chat: Any) -> None:
    open_panel(chat)
    chat.page.fill("#set-temperature", "0.9")
    chat.page.fill("#set-top-p", "0.9")
    chat.page.fill("#set-top-k", "40")
    chat.page.fill("#set-repetition-penalty", "1.1")
    chat.page.fill("#set-seed", "11")
    chat.set_max_new_tokens(16)
    runs = []
    for _ in range(2):
        chat.new_chat()
        ask(chat, "Name a colour.")
        runs.append(chat.text_inputs()["new_ids"])
        generation = chat.context()["generation"]
        assert generation["do_sample"] is True
        assert (generation["temperature"], generation["top_p"], generation["top_k"]) == (0.9, 0.9, 40)
        assert (generation["seed"], generation["repetition_penalty"]) == (11, 1.1)
        if "llama_cpp" in generation:  # the same values, in HF's order, reached llama.cpp's sampler
            assert generation["llama_cpp"] == {
                "temperature": 0.9,
                "top_k": 40,
                "top_p": 0.9,
                "min_p": 0,
                "repeat_penalty": 1.1,
                "repeat_last_n": LLAMA_CPP_PENALTY_LAST_N,
                "samplers": ["penalties", "temperature", "top_k", "top_p", "min_p"],
                "seed": 11,
            }
    assert runs[0] == runs[1]


def test_the_system_prompt_reaches_the_template(chat: Any, tokenizer: Any) -> None:
    open_panel(chat)
    chat.page.fill("#set-system-prompt", "You are a pirate. Answer in one sentence.")
    chat.new_chat()
    ask(chat, "Hello!")
    messages = [
        {"role": "system", "content": "You are a pirate. Answer in one sentence."},
        {"role": "user", "content": "Hello!"},
    ]
    assert chat.text_inputs()["prompt_ids"] == list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def test_settings_are_kept_per_model_and_reset(chat: Any, model_id: str) -> None:
    before = settings(chat)
    chat.page.reload()
    # The start-up check has run (the model is cached, so it may be loading already: the status line races).
    chat.wait_for("() => document.body.dataset.autoload !== undefined", 60)
    chat.wait_for("() => !!document.body.dataset.settings && document.body.dataset.settings !== 'null'", 30)
    after = settings(chat)
    assert after["sampling"] == before["sampling"] and after["sampling"]["seed"] == 11
    assert after["system_prompt"] == "You are a pirate. Answer in one sentence."
    assert after["max_new_tokens"] == 16
    stored = chat.page.evaluate("(id) => JSON.parse(localStorage.getItem('edge-chat-settings:' + id))", model_id)
    assert stored["temperature"] == 0.9 and stored["seed"] == 11
    open_panel(chat)
    chat.page.click("#settings-reset")
    reset = settings(chat)
    recipe = get_recipe(model_id)
    if recipe.sampling is not None:
        assert reset["sampling"] == asdict(recipe.sampling)
    assert reset["system_prompt"] == "" and "seed" not in reset["sampling"]
    assert chat.page.evaluate("(id) => localStorage.getItem('edge-chat-settings:' + id)", model_id) is None


def test_an_out_of_range_setting_is_refused_and_nothing_is_lost(chat: Any) -> None:
    chat.load(timeout_s=400)
    open_panel(chat)
    chat.page.fill("#set-temperature", "5")
    assert chat.page.get_attribute("#set-temperature", "aria-invalid") == "true"
    before = chat.page.evaluate("() => document.querySelectorAll('[data-role]').length")
    chat.send("This must not be sent yet.")
    chat.wait_for("() => document.body.dataset.error === 'bad-setting'", 10)
    assert "temperature" in chat.error_text()
    assert chat.state == "ready"
    assert chat.page.input_value("#prompt") == "This must not be sent yet."
    assert chat.page.evaluate("() => document.querySelectorAll('[data-role]').length") == before
    chat.page.fill("#set-temperature", "0")
    chat.set_max_new_tokens(4)
    reply = ask(chat, "Hi")
    assert reply["done"] == "true"
    assert chat.page_errors == []
    assert chat.csp_violations() == []
