"""Images kept with saved chats, on tiny-smolvlm (random weights) at temperature 0: a reopened image chat continues
with the same reply as without the reload (the model is fed the same stored bytes both times), the kept image is
downscaled to the processor's longest edge and stored once per content hash, the storage panel counts the images,
a thumbnail opens in a full view, export/import carries the images (an oversized or damaged image is refused by
name and the rest of the file imports), and deleting chats frees their images. Tests share one browser context
(one IndexedDB) and run in file order.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ChatPage
from test_vlm import FOLLOW_UP, QUESTION, VLM, exposed, png, server, vlm_models  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUERY = {"model": VLM, "device": "wasm", "max_new_tokens": 8, "expose_inputs": 1, "temperature": 0}
PICTURE = png(200, 150, seed=4)
MAX_IMAGE_BYTES = 8 * 1024 * 1024  # image-codec.js

IDB_JS = """(name) => new Promise((resolve, reject) => {
  const open = indexedDB.open('edge-chat');
  open.onsuccess = () => {
    const req = open.result.transaction(name).objectStore(name).getAll();
    req.onsuccess = () => {
      open.result.close();
      resolve(req.result.map((r) => r.blob ? {...r, blob: undefined, size: r.blob.size, blobType: r.blob.type} : r));
    };
    req.onerror = () => reject(req.error);
  };
  open.onerror = () => reject(open.error);
})"""


@pytest.fixture(scope="module")
def limit(vlm_models: Path) -> int:  # noqa: F811
    return json.loads((vlm_models / VLM / "preprocessor_config.json").read_text())["size"]["longest_edge"]


@pytest.fixture(scope="module")
def chat(browser: Any, server: str) -> Iterator[ChatPage]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = ChatPage(context.new_page(), server)
    page.open(**QUERY)
    page.load(timeout_s=300)
    yield page
    context.close()


def stored_images(chat: ChatPage) -> list[dict[str, Any]]:
    return chat.page.evaluate(IDB_JS, "images")


def stored_chats(chat: ChatPage) -> list[dict[str, Any]]:
    return chat.page.evaluate(IDB_JS, "conversations")


def attach(chat: ChatPage, data: bytes, name: str = "picture.png") -> None:
    chat.page.set_input_files("#attach-input", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    chat.wait_for("() => document.getElementById('attachments').dataset.count === '1'", 10)


def ask(chat: ChatPage, text: str) -> dict[str, Any]:
    chat.page.evaluate("() => { window.__edgeChatVLMInputs = null; }")
    return chat.ask(text, timeout_s=120)


def current(chat: ChatPage) -> str:
    return chat.page.evaluate("() => document.body.dataset.conversation")


def panel_numbers(chat: ChatPage) -> tuple[str, str]:
    chat.page.evaluate("() => { delete document.body.dataset.storageRefreshed; }")
    chat.page.evaluate("() => document.getElementById('storage-refresh').click()")  # inside a closed <details>
    chat.wait_for("() => document.body.dataset.storageRefreshed !== undefined", 10)
    summary = chat.page.locator("#storage-summary")
    return summary.get_attribute("data-images"), summary.get_attribute("data-image-bytes")


def thumbnails_loaded(chat: ChatPage) -> list[int]:
    """naturalWidth of every thumbnail in the transcript, once each has loaded (0: it did not)."""
    chat.wait_for(
        "() => [...document.querySelectorAll('#transcript .message-image img')].every((i) => i.complete && i.src)", 10
    )
    return chat.page.evaluate(
        "() => [...document.querySelectorAll('#transcript .message-image img')].map((i) => i.naturalWidth)"
    )


def delete_chat(chat: ChatPage, conversation: str) -> None:
    button = chat.page.locator(f'#conversation-list li[data-id="{conversation}"] [data-action="delete"]')
    button.click()  # arms it
    button.click()
    chat.wait_for("(id) => !document.querySelector(`#conversation-list li[data-id='${id}']`)", 10, conversation)


def test_a_reopened_image_chat_continues_with_the_same_reply(chat: ChatPage) -> None:
    # Without a reload: a question about the picture, then a follow-up.
    attach(chat, PICTURE)
    answer = ask(chat, QUESTION)["raw"]
    first_pixels = exposed(chat)["pixel_values"]
    follow_up = ask(chat, FOLLOW_UP)["raw"]
    follow_up_ids = exposed(chat)["new_ids"]
    # The same picture and question in a new chat; the page reloads before the follow-up.
    chat.new_chat()
    attach(chat, PICTURE)
    assert ask(chat, QUESTION)["raw"] == answer
    conversation = current(chat)
    chat.page.reload()
    chat.wait_for("() => document.body.dataset.autoload !== undefined", 30)
    chat.wait_for("() => document.body.dataset.state === 'ready' || !!document.body.dataset.error", 300)
    assert chat.state == "ready", chat.error_text()
    assert current(chat) == conversation  # the chat that was open is open again, with its picture
    assert thumbnails_loaded(chat) == [200]
    reply = ask(chat, FOLLOW_UP)
    x = exposed(chat)
    assert reply["raw"] == follow_up
    assert x["new_ids"] == follow_up_ids
    # The worker had lost the picture with the reload: the page sent the stored bytes, which decode to exactly the
    # pixels the model read the first time.
    assert x["encoded_images"] == 1 and chat.context()["reused_tokens"] == 0
    assert x["pixel_values"].shape == first_pixels.shape
    assert np.array_equal(x["pixel_values"], first_pixels)
    assert chat.page_errors == []


def test_an_edited_image_turn_keeps_its_image(chat: ChatPage) -> None:
    chat.page.locator('#transcript [data-role="user"]').first.locator('[data-action="edit"]').click()
    chat.page.locator("#transcript .edit-area").fill("Describe the picture.")
    chat.page.evaluate("() => { window.__edgeChatVLMInputs = null; }")
    chat.page.locator('#transcript [data-action="edit-send"]').click()
    chat.wait_reply()
    x = exposed(chat)
    assert len(x["images"]) == 1 and (x["images"][0]["width"], x["images"][0]["height"]) == (200, 150)
    saved = next(c for c in stored_chats(chat) if c["id"] == current(chat))
    assert [m["content"] for m in saved["messages"]][0] == "Describe the picture." and len(saved["messages"]) == 2
    assert saved["messages"][0]["images"][0]["id"] == saved["imageIds"][0]
    assert thumbnails_loaded(chat) == [200]


def test_the_kept_image_is_downscaled_stored_once_and_counted(chat: ChatPage, limit: int) -> None:
    images = stored_images(chat)
    assert len(images) == 1  # the same picture in two chats is stored once
    (image,) = images
    assert (image["width"], image["height"], image["type"], image["blobType"]) == (200, 150, "image/webp", "image/webp")
    assert image["size"] == image["bytes"]
    chat.new_chat()
    attach(chat, png(3 * limit, int(1.5 * limit), seed=5), "wide.png")
    ask(chat, QUESTION)
    big = next(i for i in stored_images(chat) if i["id"] != image["id"])
    assert (big["width"], big["height"]) == (limit, limit // 2)  # what the processor reads at most, not more
    assert big["size"] < limit * (limit // 2) * 4  # encoded, not raw pixels
    assert sorted(c["imageIds"][0] for c in stored_chats(chat)) == sorted([image["id"], image["id"], big["id"]])
    count, size = panel_numbers(chat)
    assert (int(count), int(size)) == (2, image["size"] + big["size"])
    assert "saved chats keep 2 images" in chat.page.text_content("#storage-summary")


def test_a_thumbnail_opens_the_whole_image(chat: ChatPage, limit: int) -> None:
    chat.page.locator("#transcript .message-image").first.click()
    chat.wait_for("() => document.querySelector('dialog.image-viewer')?.open === true", 10)
    chat.wait_for("() => document.querySelector('dialog.image-viewer img').naturalWidth > 0", 10)
    assert chat.page.evaluate("() => document.querySelector('dialog.image-viewer img').naturalWidth") == limit
    chat.page.keyboard.press("Escape")
    chat.wait_for("() => document.querySelector('dialog.image-viewer').open === false", 10)


def export(chat: ChatPage, tmp_path: Path) -> dict[str, Any]:
    with chat.page.expect_download() as download:
        chat.page.click("#export-button")
    path = tmp_path / "export.json"
    download.value.save_as(path)
    return json.loads(path.read_text())


def import_json(chat: ChatPage, data: dict[str, Any], name: str = "import.json") -> None:
    chat.page.evaluate("() => { document.getElementById('conversation-status').textContent = ''; }")
    body = json.dumps(data).encode()
    chat.page.set_input_files("#import-input", files=[{"name": name, "mimeType": "application/json", "buffer": body}])
    chat.wait_for("() => document.getElementById('conversation-status').textContent.startsWith('Imported')", 30)


def test_export_and_import_carry_the_images(chat: ChatPage, tmp_path: Path) -> None:
    before = stored_chats(chat)
    images = {i["id"]: i for i in stored_images(chat)}
    data = export(chat, tmp_path)
    assert data["version"] == 2
    exported = [i for c in data["conversations"] for m in c["messages"] for i in m.get("images", [])]
    assert len(exported) == 3
    for entry in exported:
        raw = base64.b64decode(entry["data"])
        assert entry["id"] == "sha256-" + hashlib.sha256(raw).hexdigest()
        assert raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
        assert (entry["width"], entry["height"], len(raw)) == (
            images[entry["id"]]["width"],
            images[entry["id"]]["height"],
            images[entry["id"]]["size"],
        )
    import_json(chat, data)
    assert chat.page.text_content("#conversation-status") == f"Imported {len(before)} chats."
    after = stored_chats(chat)
    assert len(after) == 2 * len(before)
    assert {i["id"] for i in stored_images(chat)} == set(images)  # the same bytes: stored once
    copy = next(c for c in after if c["id"] not in {b["id"] for b in before} and c["imageIds"] == [max(images)])
    chat.page.locator(f'#conversation-list li[data-id="{copy["id"]}"] [data-action="open"]').click()
    chat.wait_for("(id) => document.body.dataset.conversation === id", 10, copy["id"])
    assert thumbnails_loaded(chat) == [images[max(images)]["width"]]


def test_an_oversized_or_damaged_image_is_refused_and_the_rest_imports(chat: ChatPage, tmp_path: Path) -> None:
    good = next(i for c in export(chat, tmp_path)["conversations"] for m in c["messages"] for i in m.get("images", []))
    damaged = b"RIFF\x00\x00\x00\x00WEBPVP8 this is not a picture"
    oversized = bytes(MAX_IMAGE_BYTES + 1)

    def entry(raw: bytes, width: int = 200, height: int = 150) -> dict[str, Any]:
        data = base64.b64encode(raw).decode()
        return {
            "id": "sha256-" + hashlib.sha256(raw).hexdigest(),
            "type": "image/webp",
            "width": width,
            "height": height,
            "data": data,
        }

    file = {
        "format": "edge-chat-conversations",
        "version": 2,
        "conversations": [
            {
                "title": "Holiday",
                "messages": [
                    {"role": "user", "content": "Look at this.", "images": [entry(damaged)]},
                    {"role": "assistant", "content": "Nice."},
                    {"role": "user", "content": "And this one?", "images": [good]},
                    {"role": "assistant", "content": "Also nice."},
                ],
            },
            {"title": "Big", "messages": [{"role": "user", "content": "Huge photo", "images": [entry(oversized)]}]},
        ],
    }
    before = stored_chats(chat)
    import_json(chat, file)
    assert chat.page.text_content("#conversation-status") == "Imported 2 chats; 2 images were refused."
    assert chat.page.evaluate("() => document.body.dataset.error") == "bad-import"
    error = chat.error_text()
    assert "chat “Holiday”, message 1, image 1: it does not decode as an image (damaged)" in error
    assert "chat “Big”, message 1, image 1: it is 8.0 MB, over the cap of 8.0 MB per image" in error
    assert "each image at most 8.0 MB and 4096 px on its longest edge" in error and "at most 100 MB" in error
    new = [c for c in stored_chats(chat) if c["id"] not in {b["id"] for b in before}]
    holiday = next(c for c in new if c["title"] == "Holiday")
    big = next(c for c in new if c["title"] == "Big")
    assert [m["content"] for m in holiday["messages"]] == ["Look at this.", "Nice.", "And this one?", "Also nice."]
    assert holiday["messages"][0]["imagesLost"] == 1 and "images" not in holiday["messages"][0]
    assert [i["id"] for i in holiday["messages"][2]["images"]] == [good["id"]] == holiday["imageIds"]
    assert big["messages"] == [{"role": "user", "content": "Huge photo", "imagesLost": 1}] and big["imageIds"] == []
    assert good["id"] in {i["id"] for i in stored_images(chat)}
    chat.page.locator(f'#conversation-list li[data-id="{holiday["id"]}"] [data-action="open"]').click()
    chat.wait_for("(id) => document.body.dataset.conversation === id", 10, holiday["id"])
    note = chat.page.locator("#transcript .image-note")
    assert note.count() == 1 and note.text_content() == "1 image attached here is not kept with this chat"
    assert thumbnails_loaded(chat) == [good["width"]]


def test_deleting_chats_frees_their_images(chat: ChatPage) -> None:
    for conversation in stored_chats(chat):
        delete_chat(chat, conversation["id"])
        # An image stays exactly while a stored chat still keeps it (one picture is shared by several chats).
        kept = {i for c in stored_chats(chat) for i in c["imageIds"]}
        assert {i["id"] for i in stored_images(chat)} == kept
    assert stored_chats(chat) == [] and stored_images(chat) == []
    assert panel_numbers(chat) == ("0", "0")
    assert chat.page_errors == []
    assert chat.csp_violations() == []


V1_JS = """() => new Promise((resolve, reject) => {
  // The database as the page before kept images left it: version 1, one store, a user turn's images as a count.
  const open = indexedDB.open('edge-chat', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('conversations', { keyPath: 'id' });
  open.onsuccess = () => {
    const tx = open.result.transaction('conversations', 'readwrite');
    tx.objectStore('conversations').put({
      id: 'old-chat', title: 'Old chat', created: '2026-01-01T00:00:00Z', updated: '2026-01-01T00:00:00Z',
      model: null, dropped: 0,
      messages: [{ role: 'user', content: 'What is this?', images: 1 }, { role: 'assistant', content: 'A cat.' }],
    });
    tx.oncomplete = () => {
      open.result.close();
      localStorage.setItem('edge-chat-current-conversation', 'old-chat');
      resolve();
    };
    tx.onerror = () => reject(tx.error);
  };
  open.onerror = () => reject(open.error);
})"""


def test_chats_saved_before_images_were_kept_still_open(browser: Any, server: str) -> None:  # noqa: F811
    context = browser.new_context()
    try:
        page = ChatPage(context.new_page(), server)
        page.page.goto(f"{server}/api/models")  # the origin, before the app opens its database
        page.page.evaluate(V1_JS)
        page.open(model=VLM, autoload=0)
        page.wait_for("() => document.body.dataset.conversation === 'old-chat'", 10)
        note = page.page.locator("#transcript .image-note")
        note.wait_for(timeout=10_000)
        assert note.text_content() == "1 image attached here is not kept with this chat"
        (old,) = stored_chats(page)
        assert old["messages"][0]["images"] == 1  # read as it was: nothing rewritten until the chat changes
        assert stored_images(page) == []
        delete_chat(page, "old-chat")
        assert stored_chats(page) == []
        assert page.page_errors == []
    finally:
        context.close()


HOLD_V1_JS = """() => new Promise((resolve, reject) => {
  // An older page in another tab: it holds the version 1 database open and does not let go on a version change.
  const open = indexedDB.open('edge-chat', 1);
  open.onupgradeneeded = () => open.result.createObjectStore('conversations', { keyPath: 'id' });
  open.onsuccess = () => { window.__held = open.result; resolve(); };
  open.onerror = () => reject(open.error);
})"""


def test_an_older_tab_holding_the_database_is_named(browser: Any, server: str) -> None:  # noqa: F811
    context = browser.new_context()
    try:
        old = context.new_page()
        old.goto(f"{server}/api/models")
        old.evaluate(HOLD_V1_JS)
        page = ChatPage(context.new_page(), server)
        page.open(model=VLM, autoload=0)
        page.wait_for("() => document.body.dataset.error === 'storage-unavailable'", 10)
        assert "another tab of Edge Chat running an older version" in page.error_text()
        assert page.page_errors == []
    finally:
        context.close()
