"""The PWA surface of the app: /sw.js with its injected, revisioned precache list; the web manifest and icons."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from app_helpers import EXPECTED_SECURITY_HEADERS, build_site, local_client

from app.pwa import PLACEHOLDER, PrecacheManifest
from app.server import create_app

REPO = Path(__file__).resolve().parents[2]
SW_SOURCE = f"importScripts('/static/vendor/workbox/workbox-sw.js');\nconst entries = {PLACEHOLDER};\n"


def _site_with_sw(tmp_path: Path):
    site = build_site(tmp_path)
    (site.web / "src" / "sw.js").write_text(SW_SOURCE)
    (site.web / "vendor" / "transformers.min.js").write_text("export const env = {};\n")
    (site.web / "vendor" / "transformers.js").write_text("// unminified: not precached\n")
    return site


def _injected(text: str) -> list[dict[str, str]]:
    match = re.search(r"const entries = (\[.*\]);", text)
    assert match, text
    return json.loads(match.group(1))


def test_sw_is_served_at_the_root_with_headers(tmp_path: Path) -> None:
    site = _site_with_sw(tmp_path)
    response = site.client.get("/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["service-worker-allowed"] == "/"
    for name, value in EXPECTED_SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert PLACEHOLDER not in response.text


def test_precache_lists_the_shell_with_content_revisions(tmp_path: Path) -> None:
    site = _site_with_sw(tmp_path)
    entries = _injected(site.client.get("/sw.js").text)
    urls = [e["url"] for e in entries]
    assert "/static/src/main.js" in urls and "/static/src/style.css" in urls
    assert "/static/vendor/transformers.min.js" in urls
    assert "/static/vendor/ort-wasm-simd-threaded.asyncify.wasm" in urls
    assert "/static/vendor/ort-wasm-simd-threaded.asyncify.mjs" in urls
    assert "/static/src/sw.js" not in urls  # the SW never precaches itself
    assert "/static/vendor/transformers.js" not in urls
    assert all(re.fullmatch(r"[0-9a-f]{16}", e["revision"]) for e in entries)
    # Every precached URL is actually served.
    for url in urls:
        assert site.client.get(url).status_code == 200, url


def test_only_the_chat_ships_in_the_real_precache(tmp_path: Path) -> None:
    # The real web folder: the benchmark's pages and prompt set are served at /bench but never precached into
    # every user's app shell, and vendored files nothing loads are not vendored at all.
    entries = PrecacheManifest(REPO / "web").entries()
    urls = [e["url"] for e in entries]
    assert "/static/src/main.js" in urls and "/static/src/worker.js" in urls
    assert not [u for u in urls if "bench" in u], urls
    assert not [u for u in urls if "jsep" in u or u.endswith("/transformers.js")], urls
    vendor = REPO / "web" / "vendor"
    if vendor.is_dir():
        assert not (vendor / "transformers.js").exists() and not list(vendor.glob("*jsep*"))
    client = local_client(create_app(tmp_path / "models", REPO / "web", tmp_path / "state"))
    page = client.get("/bench")
    assert page.status_code == 200
    scripts = re.findall(r'<script type="module" src="([^"]+)">', page.text)
    assert scripts == ["/static/bench/bench.js"]
    for url in [*scripts, "/static/bench/bench-prompts.js", "/static/bench/bench-wllama.html"]:
        response = client.get(url)
        assert response.status_code == 200, url
    imports = re.findall(r'from "([^"]+)"', client.get(scripts[0]).text)
    for url in imports:  # every module the bench page imports resolves on this server
        resolved = url if url.startswith("/") else "/static/bench/" + url.removeprefix("./")
        assert client.get(resolved).status_code == 200, resolved


def test_a_changed_shell_file_changes_the_sw_bytes(tmp_path: Path) -> None:
    site = _site_with_sw(tmp_path)
    before = site.client.get("/sw.js").text
    assert site.client.get("/sw.js").text == before  # stable while nothing changes
    main = site.web / "src" / "main.js"
    main.write_text("export const ok = 2;\n")
    after = site.client.get("/sw.js").text
    assert after != before
    old = {e["url"]: e["revision"] for e in _injected(before)}
    new = {e["url"]: e["revision"] for e in _injected(after)}
    assert old["/static/src/main.js"] != new["/static/src/main.js"]
    assert old["/static/src/style.css"] == new["/static/src/style.css"]


def test_hashes_are_reused_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = _site_with_sw(tmp_path)
    manifest = PrecacheManifest(site.web)
    manifest.entries()
    calls: list[Path] = []
    import app.pwa as pwa

    real = pwa._file_hash
    monkeypatch.setattr(pwa, "_file_hash", lambda p: calls.append(p) or real(p))
    manifest.entries()
    assert calls == []


def test_no_sw_source_is_a_404(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    response = site.client.get("/sw.js")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_sw_without_placeholder_is_a_500_not_a_silent_empty_precache(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    (site.web / "src" / "sw.js").write_text("// no manifest here\n")
    client = local_client(create_app(site.models, site.web, site.root / "state"), raise_server_exceptions=False)
    assert client.get("/sw.js").status_code == 500


def test_the_real_sw_has_the_placeholder_once() -> None:
    assert (REPO / "web" / "src" / "sw.js").read_text().count(PLACEHOLDER) == 1


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_web_manifest_is_installable_and_its_icons_exist() -> None:
    manifest = json.loads((REPO / "web" / "src" / "manifest.webmanifest").read_text())
    assert manifest["name"] and manifest["short_name"]
    assert manifest["display"] == "standalone"
    assert manifest["start_url"] == "/" and manifest["scope"] == "/"
    assert manifest["theme_color"].startswith("#") and manifest["background_color"].startswith("#")
    purposes = {(i["sizes"], i["purpose"]) for i in manifest["icons"]}
    assert {("192x192", "any"), ("512x512", "any"), ("192x192", "maskable"), ("512x512", "maskable")} <= purposes
    for icon in manifest["icons"]:
        path = REPO / "web" / "src" / icon["src"].removeprefix("/static/src/")
        width, height = _png_size(path.read_bytes())
        assert f"{width}x{height}" == icon["sizes"]


def test_webmanifest_and_png_media_types(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    (site.web / "src" / "manifest.webmanifest").write_text("{}")
    (site.web / "src" / "icons").mkdir()
    (site.web / "src" / "icons" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert (
        site.client.get("/static/src/manifest.webmanifest")
        .headers["content-type"]
        .startswith("application/manifest+json")
    )
    assert site.client.get("/static/src/icons/a.png").headers["content-type"] == "image/png"
