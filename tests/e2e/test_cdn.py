"""Artifacts from another origin (MODELS_BASE_URL): a second server stands in for a CDN or bucket.

It serves a copy of the models folder with the headers a real bucket needs for a cross-origin-isolated page
(Access-Control-Allow-Origin, Cross-Origin-Resource-Policy: cross-origin). The page downloads every artifact from
it, checks each against the manifest's sha256 from the app, and Transformers.js reads them from the verified cache;
a tampered file there is refused (a clear error, and it is not cached).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import ChatPage, _free_port, serve_app
from playwright.sync_api import Browser
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUCKET_HEADERS = [(b"access-control-allow-origin", b"*"), (b"cross-origin-resource-policy", b"cross-origin")]
DTYPE = "q4"  # an ONNX variant of the default model that WASM loads too (see README, device choice)


class Bucket:
    """Static files with a bucket's CORS/CORP headers, recording every path asked for."""

    def __init__(self, root: Path) -> None:
        self.paths: list[str] = []
        self.files = StaticFiles(directory=root, follow_symlink=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], *BUCKET_HEADERS]
            await send(message)

        await self.files(scope, receive, send_with_headers)


@contextmanager
def serve_bucket(root: Path) -> Iterator[tuple[str, Bucket]]:
    bucket = Bucket(root)
    app: ASGIApp = Starlette(routes=[Mount("/", app=bucket)])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the bucket server did not start"
        time.sleep(0.05)
    try:
        # "localhost", not 127.0.0.1 like the app: another host name as well as another port.
        yield f"http://localhost:{port}/models/", bucket
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def mirror(model_dir: Path, root: Path, tamper: str | None = None) -> None:
    """root/models/<id>/...: symlinks to the real files, except `tamper`, a copy with one byte changed."""
    target = root / "models" / model_dir.name
    for path in model_dir.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(model_dir).as_posix()
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel == tamper:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            dest.write_bytes(bytes(data))
        else:
            dest.symlink_to(path.resolve())


def loaded_files(manifest: dict[str, Any]) -> set[str]:
    """What the page downloads for DTYPE: its ONNX files plus every file of no dtype (verification.json included:
    the model card reads it from the cache)."""
    variants = {p for spec in manifest["dtypes"].values() for p in spec["files"]}
    wanted = set(manifest["dtypes"][DTYPE]["files"])
    return {f["path"] for f in manifest["files"] if f["path"] in wanted or f["path"] not in variants}


def open_chat(browser: Browser, server: str) -> tuple[ChatPage, list[str]]:
    context = browser.new_context()
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))  # workers included
    chat = ChatPage(context.new_page(), server)
    chat.open(device="wasm", dtype=DTYPE, max_new_tokens=4)
    return chat, requests


def cached(chat: ChatPage, url: str) -> bool:
    return chat.page.evaluate("async (url) => Boolean(await caches.match(url))", url)


def test_the_default_model_loads_from_another_origin(
    browser: Browser, models_dir: Path, model_dir: Path, manifest: dict[str, Any], tmp_path: Path
) -> None:
    mirror(model_dir, tmp_path / "bucket")
    with serve_bucket(tmp_path / "bucket") as (bucket_url, bucket):
        with serve_app(models_dir, tmp_path, ("--models-base-url", bucket_url)) as server:
            entry = next(m for m in json.loads(_get(f"{server}/api/models"))["models"] if m["id"] == model_dir.name)
            assert entry["artifacts_url"] == f"{bucket_url}{model_dir.name}/"
            chat, requests = open_chat(browser, server)
            try:
                chat.load(timeout_s=600)
                reply = chat.ask("What is the capital of France?", timeout_s=300)
                assert reply["raw"].strip()
                # Every artifact came from the bucket, none from the app; Transformers.js read the verified cache.
                assert {p.split(f"/{model_dir.name}/", 1)[1] for p in bucket.paths} == loaded_files(manifest)
                assert not [u for u in requests if u.startswith(f"{server}/models/")]
                assert cached(chat, f"{server}{entry['base_url']}config.json")
                assert not chat.csp_violations()
            finally:
                chat.page.context.close()


def test_a_tampered_file_on_the_other_origin_is_refused(
    browser: Browser, models_dir: Path, model_dir: Path, manifest: dict[str, Any], tmp_path: Path
) -> None:
    mirror(model_dir, tmp_path / "bucket", tamper="config.json")
    with serve_bucket(tmp_path / "bucket") as (bucket_url, bucket):
        with serve_app(models_dir, tmp_path, ("--models-base-url", bucket_url)) as server:
            chat, _ = open_chat(browser, server)
            try:
                chat.page.click("#load-button")
                chat.wait_for("() => document.body.dataset.state !== 'loading'", 300)
                assert chat.state == "idle"
                error = chat.error_text()
                assert "config.json" in error and "does not match its manifest" in error, error
                assert (
                    bucket.paths.count(f"/models/{model_dir.name}/config.json") == 2
                )  # fetched once more, then refused
                base = f"{server}/models/{model_dir.name}/{manifest['revision']}/"
                assert not cached(chat, base + "config.json")
                assert not cached(chat, base + "manifest.json")  # the revision is never marked complete
            finally:
                chat.page.context.close()


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()
