"""Qwen3 thinking with tiny-qwen3 carrying Qwen3-0.6B's own chat template (tests/e2e/data): the switch maps to the
template's enable_thinking (checked on the prompt ids), each mode has the card's sampling defaults, `<think>…</think>`
of earlier replies is left out of later turns exactly as the template does, the KV cache is then cut back and the
tokens still equal a full prefill's (Python onnxruntime), and a reply's thinking renders in its own collapsible
block, never in the answer. Random weights never think on their own: the thinking replies are scripted (imported
chats), and a continued unfinished `<think>` streams the model's tokens into the thinking block.

Every test runs on both text runtimes, on the same templating in Transformers.js: q4 on ONNX Runtime Web (ids
against Python onnxruntime) and the GGUF on llama.cpp (text against native llama.cpp, whose own longest-common-prefix
KV reuse must cut back at the same place).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serve_app
from references import Native, cached_ids, common_prefix

from model_prep.recipes import QWEN3_THINKING, QWEN3_WITHOUT_THINKING, get_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny-qwen3"
# q4: exact on WASM against onnxruntime without int8 activations (references.py); the GGUF: llama.cpp's reply, byte
# for byte native llama.cpp's.
DTYPES = ("q4", get_recipe(MODEL).gguf.dtype)
TEMPLATE = Path(__file__).parent / "data" / "qwen3_chat_template.jinja"
FIRST = "What is the capital of France?"
SECOND = "And of Germany?"
MAX_NEW = 8


@pytest.fixture(scope="module")
def thinking_models(qwen3_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-qwen3 with Qwen3-0.6B's chat template in tokenizer_config.json, its manifest rebuilt (new sha256s)."""
    from model_prep import layout

    out = tmp_path_factory.mktemp("thinking-models")
    folder = out / MODEL
    shutil.copytree(qwen3_models / MODEL, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = TEMPLATE.read_text().rstrip("\n")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    old = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").unlink()
    dtype_files = {d: info["files"] for d, info in old["dtypes"].items()}
    runtimes = {
        d: {k: info[k] for k in ("runtime", "kv_cache") if k in info}
        for d, info in old["dtypes"].items()
        if "runtime" in info
    }
    manifest = layout.build_manifest(folder, get_recipe(MODEL), dtype_files, old["source"], runtimes)
    (folder / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2))
    return out


@pytest.fixture(scope="module")
def server(thinking_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(thinking_models, tmp_path_factory.mktemp("thinking-server")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def folder(thinking_models: Path) -> Path:
    return thinking_models / MODEL


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    from model_prep.verify.replies import load_tokenizer

    return load_tokenizer(folder)


@pytest.fixture(scope="module")
def eos(folder: Path) -> set[int]:
    from model_prep.verify.replies import eos_ids

    return eos_ids(folder)


@pytest.fixture(scope="module")
def native(folder: Path, eos: set[int], tmp_path_factory: pytest.TempPathFactory) -> Native:
    manifest = json.loads((folder / "manifest.json").read_text())
    return Native(folder, manifest, eos, tmp_path_factory.mktemp("native"))


@pytest.fixture(scope="module", params=DTYPES)
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def chat(new_chat_page: Any, folder: Path, dtype: str) -> Any:
    page = new_chat_page()
    page.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.open(model=MODEL, device="wasm", dtype=dtype, max_new_tokens=MAX_NEW, expose_inputs=1, temperature=0)
    page.load(timeout_s=180)
    return page


def template_ids(tokenizer: Any, messages: list[dict], **kwargs: Any) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs))


def ask(chat: Any, text: str) -> dict[str, Any]:
    chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
    return chat.ask(text, timeout_s=120)


def set_thinking(chat: Any, on: bool) -> None:
    if not chat.page.evaluate("() => document.getElementById('settings-panel').open"):
        chat.page.click("#settings-panel summary")
    if chat.page.is_checked("#set-thinking") != on:
        chat.page.click("#set-thinking")


def import_chat(chat: Any, messages: list[dict], title: str) -> str:
    """Imports one conversation through the page's import button and opens it; returns its id."""
    export = {
        "format": "edge-chat-conversations",
        "version": 1,
        "conversations": [{"title": title, "messages": messages}],
    }
    chat.page.set_input_files(
        "#import-input",
        files=[{"name": "chat.json", "mimeType": "application/json", "buffer": json.dumps(export).encode()}],
    )
    chat.wait_for("() => document.getElementById('conversation-status').textContent.startsWith('Imported')", 10)
    li = chat.page.locator("#conversation-list li", has_text=title)
    li.locator('[data-action="open"]').click()
    chat.wait_for("(n) => document.querySelectorAll('#transcript [data-role]').length === n", 10, len(messages))
    return li.get_attribute("data-id")


def test_the_switch_maps_to_enable_thinking_with_each_modes_defaults(
    chat: Any, dtype: str, tokenizer: Any, native: Native
) -> None:
    set_thinking(chat, True)
    assert chat.page.is_visible("#thinking-row")
    source = chat.page.text_content("#settings-source")
    t = QWEN3_THINKING
    assert f"temperature {t.temperature}, top-p {t.top_p}, top-k {t.top_k}" in source
    set_thinking(chat, False)
    source = chat.page.text_content("#settings-source")
    t = QWEN3_WITHOUT_THINKING
    assert f"temperature {t.temperature}, top-p {t.top_p}, top-k {t.top_k}" in source
    assert chat.page.get_attribute("#set-temperature", "placeholder") == str(t.temperature)

    chat.new_chat()
    reply = ask(chat, FIRST)
    x = chat.text_inputs()
    messages = [{"role": "user", "content": FIRST}]
    off = template_ids(tokenizer, messages, enable_thinking=False)
    assert x["prompt_ids"] == off
    assert off != template_ids(tokenizer, messages, enable_thinking=True)
    assert tokenizer.decode(off).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    native.check_reply(dtype, "wasm", off, MAX_NEW, x, reply["raw"])
    assert reply["done"] == "true"

    set_thinking(chat, True)
    chat.new_chat()
    ask(chat, FIRST)
    on = template_ids(tokenizer, messages, enable_thinking=True)
    assert chat.text_inputs()["prompt_ids"] == on
    assert tokenizer.decode(on).endswith("<|im_start|>assistant\n")


def test_after_the_template_drops_a_think_block_the_cache_is_cut_back(
    chat: Any, dtype: str, tokenizer: Any, native: Native
) -> None:
    # Thinking off: the prompt ends with an empty <think></think>, which the next turn's template leaves out of the
    # earlier reply. The cached ids then part from the new prompt inside that reply.
    set_thinking(chat, False)
    chat.new_chat()
    chat.set_max_new_tokens(1)
    first = ask(chat, FIRST)
    x = chat.text_inputs()
    replied = native.check_reply(dtype, "wasm", x["prompt_ids"], 1, x, first["raw"])
    cached = cached_ids(x["prompt_ids"], replied, 1)
    chat.set_max_new_tokens(MAX_NEW)
    second = ask(chat, SECOND)
    y = chat.text_inputs()
    messages = [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": first["raw"]},
        {"role": "user", "content": SECOND},
    ]
    full = template_ids(tokenizer, messages, enable_thinking=False)
    assert y["prompt_ids"] == full
    shared = common_prefix(cached, full)
    assert 0 < shared < len(cached), "the test needs a cache that parts from the new prompt"
    context = chat.context()
    assert context["reused_tokens"] == shared  # cut back to what still matches, not dropped, not reused whole
    assert chat.metrics()["prompt_tokens"] == len(full) - shared
    # The cut cache computes what a full prefill computes.
    native.check_reply(dtype, "wasm", full, MAX_NEW, y, second["raw"])


def test_an_earlier_replys_thinking_is_left_out_and_shown_apart(
    chat: Any, dtype: str, tokenizer: Any, native: Native
) -> None:
    set_thinking(chat, True)
    thought = "The user greets me. I should greet back briefly."
    raw = f"<think>\n{thought}\n</think>\n\nHello! How can I help?"
    import_chat(chat, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": raw}], "scripted thinking")
    node = chat.page.locator('#transcript [data-role="assistant"]').last
    assert node.locator(".body").text_content().strip() == "Hello! How can I help?"
    block = node.locator("details.thinking")
    assert block.is_visible() and block.get_attribute("open") is None  # collapsed
    assert thought in block.locator(".thinking-body").text_content()
    assert thought not in node.locator(".body").text_content()
    node.locator('[data-action="copy"]').click()
    chat.wait_for("() => document.querySelector('[data-role=\"assistant\"][data-copied]') !== null", 10)
    assert chat.page.evaluate("() => navigator.clipboard.readText()") == "Hello! How can I help?"

    second = ask(chat, SECOND)
    x = chat.text_inputs()
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": raw},
        {"role": "user", "content": SECOND},
    ]
    want = template_ids(tokenizer, messages, enable_thinking=True)  # Qwen3's template drops the thinking itself
    assert x["prompt_ids"] == want
    assert thought not in tokenizer.decode(x["prompt_ids"])
    native.check_reply(dtype, "wasm", want, MAX_NEW, x, second["raw"])


def test_a_continued_thinking_reply_streams_into_the_thinking_block(
    chat: Any, dtype: str, tokenizer: Any, native: Native
) -> None:
    set_thinking(chat, True)
    partial = "<think>\nLet me think about the capital"
    import_chat(chat, [{"role": "user", "content": FIRST}, {"role": "assistant", "content": partial}], "unfinished")
    chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
    chat.page.locator('#transcript [data-role="assistant"]').last.locator('[data-action="continue"]').click()
    reply = chat.wait_reply(timeout_s=120)
    x = chat.text_inputs()
    before = tokenizer.apply_chat_template(
        [{"role": "user", "content": FIRST}], add_generation_prompt=True, tokenize=False, enable_thinking=True
    )
    want = tokenizer(before + partial, add_special_tokens=False).input_ids
    assert x["prompt_ids"] == want
    assert reply["raw"].startswith(partial)
    continued = reply["raw"][len(partial) :]
    new = native.check_reply(dtype, "wasm", want, MAX_NEW, x, continued)
    if not native.gguf(dtype):
        assert continued == tokenizer.decode(new, skip_special_tokens=True)
    if "</think>" not in reply["raw"]:
        # Still thinking: every streamed token went to the thinking block and none to the answer.
        assert reply["answer"] == "" and reply["text"].strip() == ""
        assert reply["thinking"] == reply["raw"][len("<think>\n") :]
        assert reply["streamed"] == continued
    assert chat.page_errors == []
    assert chat.csp_violations() == []
