"""Saved chats and per-message actions, with tiny-qwen3 (the page's wiring, checked against Python onnxruntime where
tokens are involved): chats survive a reload and work offline (IndexedDB + the verified model cache, which also
makes the last used model load on open), switch / rename / delete, export and import (a bad file is refused with a
clear message and changes nothing), and per message: regenerate the last reply, edit and resend (what followed is
dropped), continue. Tests share one page and run in file order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ChatPage, serve_app, strip_eos
from references import Native

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny-qwen3"
DTYPE = "q4"
MAX_NEW = 8
FIRST = "What is the capital of France?"
SECOND = "And of Germany?"
QUERY = {
    "model": MODEL,
    "device": "wasm",
    "dtype": DTYPE,
    "max_new_tokens": MAX_NEW,
    "expose_inputs": 1,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def server(qwen3_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(qwen3_models, tmp_path_factory.mktemp("conversations-server")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def folder(qwen3_models: Path) -> Path:
    return qwen3_models / MODEL


@pytest.fixture(scope="module")
def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    from model_prep.verify.replies import load_tokenizer

    return load_tokenizer(folder)


@pytest.fixture(scope="module")
def native(folder: Path, manifest: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Native:
    from model_prep.verify.replies import eos_ids

    return Native(folder, manifest, eos_ids(folder), tmp_path_factory.mktemp("native"))


@pytest.fixture(scope="module")
def chat(browser: Any, server: str) -> Iterator[ChatPage]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = ChatPage(context.new_page(), server)
    page.open(**QUERY)
    page.wait_for("() => navigator.serviceWorker.controller !== null", 60)  # offline later needs the app shell
    yield page
    context.close()


def reopen(chat: ChatPage) -> None:
    chat.page.reload()
    chat.wait_for("() => document.body.dataset.autoload !== undefined", 30)  # what the start-up check found


def ask(chat: ChatPage, text: str) -> dict[str, Any]:
    chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
    return chat.ask(text, timeout_s=120)


def titles(chat: ChatPage) -> list[str]:
    return chat.page.evaluate(
        "() => [...document.querySelectorAll('#conversation-list li[data-id] .conversation-title')]"
        ".map((b) => b.textContent)"
    )


def transcript(chat: ChatPage) -> list[tuple[str, str]]:
    return chat.page.evaluate(
        """() => [...document.querySelectorAll('#transcript [data-role]')]
                 .map((n) => [n.dataset.role, n.dataset.role === 'user' ? n.querySelector('.body').textContent
                                                                         : n.dataset.raw])"""
    )


def stored(chat: ChatPage) -> list[dict]:
    return chat.page.evaluate(
        """() => new Promise((resolve, reject) => {
             const open = indexedDB.open('edge-chat');
             open.onsuccess = () => {
               const req = open.result.transaction('conversations').objectStore('conversations').getAll();
               req.onsuccess = () => resolve(req.result);
               req.onerror = () => reject(req.error);
             };
             open.onerror = () => reject(open.error);
           })"""
    )


def action(chat: ChatPage, role: str, name: str, index: int = -1) -> None:
    nodes = chat.page.locator(f'#transcript [data-role="{role}"]')
    node = nodes.nth(index) if index >= 0 else nodes.last
    node.locator(f'[data-action="{name}"]').click()


def test_a_model_not_cached_waits_for_a_click_that_says_its_size(chat: ChatPage, manifest: dict[str, Any]) -> None:
    assert chat.page.evaluate("() => document.body.dataset.autoload") == "not-cached"
    assert chat.state == "idle"
    files = set(manifest["dtypes"][DTYPE]["files"])
    other = {f for d in manifest["dtypes"].values() for f in d["files"]} - files
    size = sum(f["bytes"] for f in manifest["files"] if f["path"] not in other)
    assert int(chat.page.get_attribute("#load-button", "data-download")) == size
    assert "download" in chat.page.text_content("#load-button")
    chat.load(timeout_s=180)


def test_chats_are_saved_and_survive_a_reload(chat: ChatPage) -> None:
    ask(chat, FIRST)
    ask(chat, SECOND)
    first_id = chat.page.evaluate("() => document.body.dataset.conversation")
    chat.new_chat()
    ask(chat, "Tell me a story.")
    before = transcript(chat)
    assert titles(chat) == ["Tell me a story.", FIRST]
    reopen(chat)
    # The model is in the verified cache now: it loads on open, no click.
    assert chat.page.evaluate("() => document.body.dataset.autoload") == "cached"
    chat.wait_for("() => document.body.dataset.state === 'ready'", 180)
    assert titles(chat) == ["Tell me a story.", FIRST]
    assert transcript(chat) == before  # the chat that was open is open again
    chat.page.locator("#conversation-list li", has_text=FIRST).locator('[data-action="open"]').click()
    chat.wait_for("(id) => document.body.dataset.conversation === id", 10, first_id)
    assert [r for r, _ in transcript(chat)] == ["user", "assistant", "user", "assistant"]


def test_regenerate_writes_the_last_reply_again(chat: ChatPage, tokenizer: Any, native: Native) -> None:
    old = transcript(chat)
    action(chat, "assistant", "regenerate")
    chat.wait_reply()
    x = chat.text_inputs()
    messages = [{"role": r, "content": t} for r, t in old[:-1]]
    want = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    assert x["prompt_ids"] == want
    assert strip_eos(x["new_ids"], native.eos) == native(DTYPE, "wasm", want, MAX_NEW)
    now = transcript(chat)
    assert len(now) == len(old) and now[:-1] == old[:-1]
    assert now[-1][1] == tokenizer.decode(strip_eos(x["new_ids"], native.eos), skip_special_tokens=True)


def test_edit_and_resend_drops_what_followed(chat: ChatPage, tokenizer: Any, native: Native) -> None:
    action(chat, "user", "edit", index=0)
    area = chat.page.locator("#transcript .edit-area")
    area.fill("What is the capital of Italy?")
    chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
    chat.page.locator('#transcript [data-action="edit-send"]').click()
    chat.wait_reply()
    now = transcript(chat)
    assert [r for r, _ in now] == ["user", "assistant"]
    assert now[0][1] == "What is the capital of Italy?"
    want = list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is the capital of Italy?"}], add_generation_prompt=True
        )
    )
    x = chat.text_inputs()
    assert x["prompt_ids"] == want
    assert strip_eos(x["new_ids"], native.eos) == native(DTYPE, "wasm", want, MAX_NEW)
    saved = next(c for c in stored(chat) if c["id"] == chat.page.evaluate("() => document.body.dataset.conversation"))
    assert [m["content"] for m in saved["messages"]] == [t for _, t in now]


def test_continue_goes_on_from_where_the_reply_stopped(chat: ChatPage, tokenizer: Any, native: Native) -> None:
    chat.set_max_new_tokens(3)
    chat.new_chat()
    first = ask(chat, FIRST)["raw"]
    chat.page.evaluate("() => { window.__edgeChatTextInputs = null; }")
    action(chat, "assistant", "continue")
    reply = chat.wait_reply()
    x = chat.text_inputs()
    before = tokenizer.apply_chat_template(
        [{"role": "user", "content": FIRST}], add_generation_prompt=True, tokenize=False
    )
    want = tokenizer(before + first, add_special_tokens=False).input_ids
    assert x["prompt_ids"] == want
    new = strip_eos(x["new_ids"], native.eos)
    assert new == native(DTYPE, "wasm", want, 3)
    assert reply["raw"] == first + tokenizer.decode(new, skip_special_tokens=True)
    assert len(transcript(chat)) == 2  # the same reply, longer
    chat.set_max_new_tokens(MAX_NEW)


def test_rename_and_delete(chat: ChatPage) -> None:
    li = chat.page.locator("#conversation-list li", has_text="Tell me a story.")
    li.locator('[data-action="rename"]').click()
    field = chat.page.locator('#conversation-list input[data-action="rename-field"]')
    field.fill("Bedtime story")
    field.press("Enter")
    chat.wait_for(
        "() => [...document.querySelectorAll('.conversation-title')].some((b) => b.textContent === 'Bedtime story')", 10
    )
    assert any(c["title"] == "Bedtime story" for c in stored(chat))
    count = len(stored(chat))
    current = chat.page.evaluate("() => document.body.dataset.conversation")
    row = chat.page.locator(f'#conversation-list li[data-id="{current}"]')
    row.locator('[data-action="delete"]').click()
    assert len(stored(chat)) == count  # the first click only arms the button
    row.locator('[data-action="delete"]').click()
    chat.wait_for("(id) => !document.querySelector(`#conversation-list li[data-id='${id}']`)", 10, current)
    assert len(stored(chat)) == count - 1
    assert chat.page.evaluate("() => document.body.dataset.conversation") != current
    assert chat.page.evaluate("() => document.querySelectorAll('#transcript [data-role]').length") == 0


def test_export_and_import(chat: ChatPage, tmp_path: Path) -> None:
    before = stored(chat)
    with chat.page.expect_download() as download:
        chat.page.click("#export-button")
    path = tmp_path / "export.json"
    download.value.save_as(path)
    data = json.loads(path.read_text())
    assert data["format"] == "edge-chat-conversations" and data["version"] == 2
    assert sorted(c["id"] for c in data["conversations"]) == sorted(c["id"] for c in before)
    chat.page.set_input_files("#import-input", str(path))
    chat.wait_for("() => document.getElementById('conversation-status').textContent.startsWith('Imported')", 10)
    after = stored(chat)
    # Importing what is already here adds copies under new ids: nothing is replaced.
    assert len(after) == 2 * len(before)
    assert {c["id"] for c in before} <= {c["id"] for c in after}
    key = lambda c: (c["title"], json.dumps(c["messages"]))  # noqa: E731
    assert sorted(map(key, after)) == sorted(map(key, before + before))


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("notes.json", b"this is not json {", "not JSON"),
        ("other.json", json.dumps({"format": "something-else", "conversations": []}).encode(), '"format"'),
        (
            "badrole.json",
            json.dumps(
                {
                    "format": "edge-chat-conversations",
                    "version": 1,
                    "conversations": [
                        {"messages": [{"role": "user", "content": "ok"}]},
                        {"messages": [{"role": "root", "content": "x"}]},
                    ],
                }
            ).encode(),
            'role "root"',
        ),
        ("list.json", b"[1, 2, 3]", "not a JSON object"),
    ],
)
def test_a_bad_import_is_refused_and_nothing_is_lost(chat: ChatPage, name: str, content: bytes, why: str) -> None:
    before = stored(chat)
    chat.page.set_input_files(
        "#import-input", files=[{"name": name, "mimeType": "application/json", "buffer": content}]
    )
    chat.wait_for("() => document.body.dataset.error === 'bad-import'", 10)
    assert why in chat.error_text() and "nothing was imported" in chat.error_text()
    assert chat.page.text_content("#conversation-status") == "Nothing was imported."
    assert stored(chat) == before  # not even the first, valid conversation of the file
    chat.page.evaluate("() => { document.getElementById('error').hidden = true; delete document.body.dataset.error; }")


def test_chats_and_the_model_work_offline(chat: ChatPage, native: Native, tokenizer: Any) -> None:
    chat.new_chat()
    ask(chat, FIRST)
    conversation = chat.page.evaluate("() => document.body.dataset.conversation")
    listed = titles(chat)
    chat.page.context.set_offline(True)
    try:
        reopen(chat)
        assert chat.page.evaluate("() => document.body.dataset.autoload") == "cached"
        chat.wait_for("() => document.body.dataset.state === 'ready'", 180)
        assert titles(chat) == listed
        assert chat.page.evaluate("() => document.body.dataset.conversation") == conversation
        ask(chat, SECOND)
        x = chat.text_inputs()
        assert strip_eos(x["new_ids"], native.eos) == native(DTYPE, "wasm", x["prompt_ids"], MAX_NEW)
        assert len(next(c for c in stored(chat) if c["id"] == conversation)["messages"]) == 4
    finally:
        chat.page.context.set_offline(False)
    assert chat.page_errors == []
    assert chat.csp_violations() == []
    assert chat.foreign_requests() == []
