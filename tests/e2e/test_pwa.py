"""The offline PWA: installability, the service worker's app-shell precache, the verified model cache
(offline reload, a damaged entry repaired; after the first load the model loads on open), the storage panel, and
the phone layout.

One browser context carries the main flow in file order (first visit → offline reload → damaged cache →
delete), so the WASM model is compiled three times in all; the phone checks use their own small context.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ChatPage

from edge_contracts import DEFAULT_MODEL, model_cache_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_NEW_TOKENS = 24
QUESTION = "What is the capital of France?"


def sw_controls(page: Any) -> bool:
    return page.evaluate("() => navigator.serviceWorker.controller !== null")


def cache_report(chat: Any) -> dict[str, Any]:
    return json.loads(chat.page.evaluate("() => document.body.dataset.cache || '{}'"))


def wait_controlled(chat: Any) -> None:
    chat.wait_for("() => navigator.serviceWorker.controller !== null", 60)


def wait_autoloaded(chat: Any) -> None:
    """After a reload: the model is in the verified cache, so the page loads it on open (no click)."""
    chat.wait_for("() => document.body.dataset.autoload !== undefined", 60)
    assert chat.page.evaluate("() => document.body.dataset.autoload") == "cached"
    chat.wait_for("() => document.body.dataset.state === 'ready' || !!document.body.dataset.error", 300)
    assert chat.state == "ready", f"loading failed: {chat.error_text()}\n{chat.console_problems()}"


@pytest.fixture(scope="module")
def pwa(
    playwright_driver: Any, chromium_path: str, server: str, model_dir: Path, model_id: str, tmp_path_factory: Any
) -> Iterator[Any]:
    # A persistent profile, as a user's browser has: off-the-record contexts keep Cache Storage in memory
    # and refuse entries as large as the fp32 model (the page then loads without the offline cache).
    context = playwright_driver.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("profile")),
        executable_path=chromium_path,
        args=["--disable-quic"],
        viewport={"width": 1000, "height": 860},
    )
    chat = ChatPage(context.new_page(), server)
    chat.open(model=model_id, device="wasm", max_new_tokens=MAX_NEW_TOKENS, temperature=0)  # deterministic
    wait_controlled(chat)  # first visit: the SW installs (precaching the shell) and claims the page
    chat.load(timeout_s=300)
    chat.first_reply = chat.ask(QUESTION)["raw"]
    yield chat
    context.close()


def test_phone_layout_and_memory_warning(
    new_chat_page: Any, model_dir: Path, model_id: str, screenshot_path: Any
) -> None:
    chat = new_chat_page(viewport={"width": 390, "height": 844})
    # A phone that reports 256 MB: the WASM variant's working memory (weights and a 4096-token KV cache) is above it.
    chat.page.add_init_script("Object.defineProperty(Navigator.prototype, 'deviceMemory', {get: () => 0.25})")
    chat.open(model=model_id, device="wasm")
    sizes = chat.page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth})"
    )
    assert sizes["scroll"] <= sizes["client"], sizes
    chat.page.click("#storage-panel summary")
    assert chat.page.is_visible("#prompt") and chat.page.is_visible("#load-button")
    shot = screenshot_path("screenshot-phone-first-visit.png")  # docs/screenshot-phone.png: test_phone_layout.py
    chat.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    chat.page.click("#load-button")
    chat.wait_for("() => document.body.dataset.memoryWarning === 'true'", 30)
    warning = chat.page.text_content("#memory-warning")
    assert "0.25 GB" in warning and "memory" in warning
    assert chat.page.is_visible("#memory-warning")
    chat.page.close()  # stops the load it started


def test_installable(pwa: Any) -> None:
    page = pwa.page
    manifest_url = page.evaluate("() => document.querySelector('link[rel=manifest]').href")
    response = page.context.request.get(manifest_url)
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/manifest+json")
    manifest = response.json()
    assert manifest["display"] == "standalone" and manifest["start_url"] == "/" and manifest["scope"] == "/"
    assert manifest["name"] and manifest["short_name"] and manifest["theme_color"] and manifest["background_color"]
    sizes = {(icon["sizes"], icon["purpose"]) for icon in manifest["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("192x192", "maskable"), ("512x512", "maskable")} <= sizes
    for icon in manifest["icons"]:
        got = page.context.request.get(pwa.base_url + icon["src"])
        assert got.status == 200 and got.headers["content-type"] == "image/png", icon
    sw = page.context.request.get(pwa.base_url + "/sw.js")
    assert sw.headers["service-worker-allowed"] == "/" and sw.headers["cache-control"] == "no-cache"
    assert "cross-origin-embedder-policy" in sw.headers
    assert sw_controls(page)
    page.reload()
    wait_controlled(pwa)
    assert page.evaluate("() => navigator.serviceWorker.controller.scriptURL").endswith("/sw.js")
    assert page.evaluate("() => document.body.dataset.sw") == "controlled"


def test_first_load_filled_the_model_cache(pwa: Any, model_id: str, manifest: dict[str, Any]) -> None:
    assert "Paris" in pwa.first_reply or model_id != DEFAULT_MODEL
    names = pwa.page.evaluate("() => caches.keys()")
    assert model_cache_name(model_id, manifest["revision"]) in names
    assert "transformers-cache" not in names  # nothing stored twice
    assert any(name.startswith("workbox-precache") for name in names)


def wasm_files(manifest: dict[str, Any]) -> list[str]:
    return manifest["dtypes"][manifest["devices"]["wasm"]]["files"]


def test_offline_reload_chats_from_the_cache(pwa: Any, manifest: dict[str, Any]) -> None:
    page = pwa.page
    page.context.set_offline(True)
    try:
        started = time.monotonic()
        page.reload()
        wait_controlled(pwa)
        wait_autoloaded(pwa)
        pwa.new_chat()  # the reload reopened the saved chat; the same question in a new one has the same reply
        pwa.send(QUESTION)
        pwa.wait_for(
            "() => ([...document.querySelectorAll('[data-role=\"assistant\"]')].at(-1)?.dataset.raw ?? '') !== ''", 120
        )
        first_token_s = time.monotonic() - started
        reply = pwa.wait_reply()
        report = cache_report(pwa)
        assert report["downloaded"] == [] and report["repaired"] == []
        assert set(wasm_files(manifest)) <= set(report["verified"])
        # Warm start: every entry still is the one that hashed right, so nothing is read through sha256 again.
        assert report["trusted"] == report["verified"] and report["hashed_bytes"] == 0
        assert reply["raw"] == pwa.first_reply  # the same greedy reply, from cached bytes
        print(
            f"\nwarm offline start: page load → first token {first_token_s:.1f} s "
            f"(cache verify {report['seconds']:.1f} s of {report['bytes'] / 1e6:.0f} MB, "
            f"model load {pwa.metrics()['load_s']:.1f} s)"
        )
    finally:
        page.context.set_offline(False)


def test_a_damaged_cache_entry_is_detected_and_fetched_again(pwa: Any, model_id: str, manifest: dict[str, Any]) -> None:
    page = pwa.page
    base = f"/models/{model_id}/{manifest['revision']}/"
    tampered = page.evaluate(
        """async ([name, base]) => {
          const cache = await caches.open(name);
          const bodies = {"tokenizer.json": new TextEncoder().encode("not the tokenizer")};
          const config = await (await cache.match(base + "config.json")).arrayBuffer();
          bodies["config.json"] = new Uint8Array(config.slice(0, 10));  // truncated
          // Same length, other bytes, the original's headers copied: only the stamp's identity tells.
          const gen = await cache.match(base + "generation_config.json");
          const flipped = new Uint8Array(await gen.clone().arrayBuffer()).map((b) => b ^ 1);
          bodies["generation_config.json"] = flipped;
          const headers = new Headers(gen.headers);
          headers.delete("x-edge-chat-put");
          for (const [path, body] of Object.entries(bodies)) {
            const h = path === "generation_config.json" ? headers : {};
            await cache.put(base + path, new Response(body, { headers: h }));
          }
          return Object.fromEntries(Object.entries(bodies).map(([k, v]) => [k, v.byteLength]));
        }""",
        [model_cache_name(model_id, manifest["revision"]), base],
    )
    page.reload()
    wait_autoloaded(pwa)  # the start-up check sees every file present; verifying them finds the damage
    report = cache_report(pwa)
    damaged = ["config.json", "generation_config.json", "tokenizer.json"]
    assert sorted(report["repaired"]) == damaged
    assert sorted(report["downloaded"]) == damaged
    # Only the changed entries were read: the damaged copies, then the fresh downloads as they streamed in.
    sizes = {f["path"]: f["bytes"] for f in manifest["files"]}
    assert report["hashed_bytes"] == sum(tampered.values()) + sum(sizes[p] for p in damaged)
    assert set(report["trusted"]) == set(report["verified"]) - set(damaged)
    pwa.new_chat()
    assert pwa.ask(QUESTION)["raw"] == pwa.first_reply


def test_verify_now_hashes_every_stored_byte(pwa: Any, model_id: str, manifest: dict[str, Any]) -> None:
    page = pwa.page
    name = f"edge-chat-model-{model_id}-{manifest['revision']}"
    page.click("#storage-panel summary")
    row = page.locator(f'#storage-list li[data-cache-name="{name}"]')
    row.locator("button.storage-verify").click()
    pwa.wait_for("(name) => document.querySelector(`li[data-cache-name='${name}']`)?.dataset.verified", 120, name)
    result = json.loads(row.get_attribute("data-verified"))
    assert result["damaged"] == []
    sizes = {f["path"]: f["bytes"] for f in manifest["files"]}
    assert set(wasm_files(manifest)) <= set(result["verified"])
    assert result["hashed_bytes"] == sum(sizes[p] for p in result["verified"])
    assert "intact" in row.text_content()
    page.click("#storage-panel summary")  # closed again, as the next test expects


def test_storage_panel_deletes_a_model(pwa: Any, model_id: str, manifest: dict[str, Any]) -> None:
    page = pwa.page
    name = model_cache_name(model_id, manifest["revision"])
    page.click("#storage-panel summary")
    row = page.locator(f'#storage-list li[data-cache-name="{name}"]')
    row.wait_for(timeout=10_000)
    text = row.text_content()
    assert manifest["revision"] in text and "MB" in text
    size = int(row.get_attribute("data-bytes"))
    dtype_bytes = manifest["dtypes"][manifest["devices"]["wasm"]]["bytes"]
    assert dtype_bytes <= size <= dtype_bytes + 5_000_000
    print(f"\nmodel cache {name}: {size / 1e6:.1f} MB")
    before = float(page.get_attribute("#storage-summary", "data-usage"))
    row.locator("button.storage-delete").click()
    row.wait_for(state="detached", timeout=10_000)
    assert name not in page.evaluate("() => caches.keys()")
    # Chromium updates its usage figure lazily after a cache is deleted: refresh until it shows.
    deadline = time.monotonic() + 60
    after = before
    while time.monotonic() < deadline:
        page.click("#storage-refresh")
        time.sleep(1)
        after = float(page.get_attribute("#storage-summary", "data-usage") or before)
        if after < before - 0.8 * dtype_bytes:
            break
    assert after < before - 0.8 * dtype_bytes, (before, after)
    print(f"storage usage {before / 1e6:.0f} MB → {after / 1e6:.0f} MB")
    assert pwa.page_errors == []
    assert pwa.csp_violations() == []
    assert pwa.foreign_requests() == []
