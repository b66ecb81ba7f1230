"""Chat settings with the real default model: defaults read from its generation_config.json, panel values reaching
generate() (the worker echoes the arguments it called generate with), a repetition penalty decoded greedily that
equals a Python onnxruntime reference applying the same penalty, seeded sampling that repeats, the system prompt
in the template, settings kept per model across reloads, and an out-of-range value refused without losing the
message. One page and one model load for the module, tests in file order.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import strip_eos

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


def greedy_with_penalty(
    model_dir: Path, manifest: dict, dtype: str, prompt_ids: list[int], max_new: int, penalty: float
) -> list[int]:
    """Greedy decoding with HF's repetition penalty (every id of prompt and reply so far: a logit above 0 is divided
    by the penalty, one below multiplied), in float64 rounded to float32 as Transformers.js's Float32Array does."""
    from model_prep.verify.onnx_runner import DecoderSession
    from model_prep.verify.replies import eos_ids

    [graph] = [f for f in manifest["dtypes"][dtype]["files"] if f.endswith(".onnx")]
    session = DecoderSession(model_dir / graph)
    eos = eos_ids(model_dir)
    logits = session.forward(prompt_ids)[-1]
    seen = list(prompt_ids)
    out: list[int] = []
    for _ in range(max_new):
        scores = logits.astype(np.float32).copy()
        for token in set(seen):
            x = float(scores[token])
            scores[token] = np.float32(x * penalty if x < 0 else x / penalty)
        token = int(np.argmax(scores))
        if token in eos:
            break
        out.append(token)
        seen.append(token)
        logits = session.forward([token])[-1]
    return out


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
        assert size == f"{manifest['dtypes'][dtype]['bytes'] / 1e6:.0f} MB"
        assert top1 == f"{100 * scores['top1_agreement']:.1f} %"
        delta = 100 * (scores["perplexity"] / reference - 1)
        assert perplexity == f"{scores['perplexity']:.2f} ({'+' if delta >= 0 else ''}{delta:.1f} %)"
        devices = [d for d, v in manifest["devices"].items() if v == dtype]
        assert (used == "–") == (not devices)
    assert f"{reference:.2f}" in card.text_content()


def test_a_repetition_penalty_decoded_greedily_equals_python(
    chat: Any, model_dir: Path, manifest: dict[str, Any], tokenizer: Any
) -> None:
    chat.load(timeout_s=400)
    open_panel(chat)
    chat.page.fill("#set-temperature", "0")
    chat.page.fill("#set-repetition-penalty", str(PENALTY))
    chat.set_max_new_tokens(PENALTY_TOKENS)
    ask(chat, POEM)
    x = chat.text_inputs()
    generation = chat.context()["generation"]
    # What the panel says is what generate() was called with.
    assert generation["do_sample"] is False
    assert (generation["temperature"], generation["repetition_penalty"]) == (0, PENALTY)
    assert generation["max_new_tokens"] == PENALTY_TOKENS
    dtype = chat.metrics()["dtype"]
    want_prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": POEM}], add_generation_prompt=True))
    assert x["prompt_ids"] == want_prompt
    from model_prep.verify.replies import eos_ids

    got = strip_eos(x["new_ids"], eos_ids(model_dir))
    penalised = greedy_with_penalty(model_dir, manifest, dtype, want_prompt, PENALTY_TOKENS, PENALTY)
    assert got == penalised
    plain = greedy_with_penalty(model_dir, manifest, dtype, want_prompt, PENALTY_TOKENS, 1.0)
    assert penalised != plain, "the penalty changed nothing on this prompt: the check above proves nothing"


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
    chat.wait_for("() => document.getElementById('device-status').textContent.startsWith('This browser')", 30)
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
