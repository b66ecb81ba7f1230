"""Headers on every response, JSON errors, wrong methods, and the static mounts."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from app_helpers import EXPECTED_SECURITY_HEADERS, MODEL_ID, SECRET, Site, build_site, local_client, raw_request

from app.catalog import Catalog
from app.server import create_app


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path)


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in EXPECTED_SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value], name


def _requests(site: Site) -> list[tuple[str, str, dict[str, str], int]]:
    """(method, url, headers, expected status) covering every kind of response the app produces."""
    onnx = site.base + "onnx/model.onnx"
    etag = site.client.get(onnx).headers["etag"]
    js_etag = site.client.get("/static/src/main.js").headers["etag"]
    return [
        ("GET", "/", {}, 200),
        ("GET", "/api/models", {}, 200),
        ("GET", f"/api/models/{MODEL_ID}", {}, 200),
        ("GET", "/api/models/nope", {}, 404),
        ("GET", onnx, {}, 200),
        ("HEAD", onnx, {}, 200),
        ("GET", onnx, {"Range": "bytes=0-9"}, 206),
        ("GET", onnx, {"Range": "bytes=9-0"}, 400),
        ("GET", onnx, {"Range": "bytes=99999-"}, 416),
        ("GET", onnx, {"If-None-Match": etag}, 304),
        ("GET", site.base + "notes.txt", {}, 404),
        ("GET", "/static/src/main.js", {}, 200),
        ("GET", "/static/src/main.js", {"If-None-Match": js_etag}, 304),
        ("GET", "/static/vendor/ort-wasm-simd-threaded.asyncify.wasm", {}, 200),
        ("GET", "/static/src/missing.js", {}, 404),
        ("GET", "/nowhere", {}, 404),
        ("POST", "/", {}, 405),
        ("DELETE", "/static/src/main.js", {}, 405),
    ]


def test_security_headers_on_every_kind_of_response(site: Site) -> None:
    for method, url, headers, status in _requests(site):
        response = site.client.request(method, url, headers=headers)
        assert response.status_code == status, (method, url)
        _assert_security_headers(response)


def test_security_headers_on_500(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Catalog) -> list[object]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Catalog, "models", boom)
    client = local_client(site.app, raise_server_exceptions=False)
    response = client.get("/api/models")
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert b"disk on fire" not in response.content
    _assert_security_headers(response)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/api/models",
        f"/api/models/{MODEL_ID}",
        "ARTIFACT",
        "/static/src/main.js",
        "/static/vendor/ort-wasm-simd-threaded.asyncify.mjs",
    ],
)
def test_wrong_method_is_405_json(site: Site, method: str, url: str) -> None:
    url = site.base + "config.json" if url == "ARTIFACT" else url
    response = site.client.request(method, url)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Method Not Allowed"}
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    _assert_security_headers(response)


def test_unknown_route_is_404_json(site: Site) -> None:
    response = site.client.get("/etc/passwd")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not Found"}


# --- static files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "content_type"),
    [
        ("/static/src/main.js", "text/javascript; charset=utf-8"),
        ("/static/src/style.css", "text/css; charset=utf-8"),
        ("/static/vendor/ort-wasm-simd-threaded.asyncify.wasm", "application/wasm"),
        ("/static/vendor/ort-wasm-simd-threaded.asyncify.mjs", "text/javascript; charset=utf-8"),
    ],
)
def test_static_types_and_revalidation(site: Site, url: str, content_type: str) -> None:
    response = site.client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = site.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["cache-control"] == "no-cache"


def test_static_serves_exact_bytes(site: Site) -> None:
    assert site.client.get("/static/src/main.js").content == b"export const ok = 1;\n"


def test_missing_vendor_folder_is_404_not_a_crash(site: Site) -> None:
    shutil.rmtree(site.web / "vendor")
    response = site.client.get("/static/vendor/transformers.min.js")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}
    # Once the vendor build lands, the same app serves it.
    (site.web / "vendor").mkdir()
    (site.web / "vendor" / "transformers.min.js").write_text("export {};\n")
    assert site.client.get("/static/vendor/transformers.min.js").status_code == 200


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/static/src/../../secret.txt",
        b"/static/src/%2e%2e/%2e%2e/secret.txt",
        b"/static/src/..%2f..%2fsecret.txt",
        b"/static/vendor/../../secret.txt",
        b"/static/src//etc/passwd",
        b"/static/src/main.js%00",
        b"/static/src/",
        b"/static/src",
    ],
)
def test_static_traversal_is_404(site: Site, raw_path: bytes) -> None:
    response = raw_request(site.app, raw_path)
    assert response.status == 404
    assert response.headers["content-type"] == "application/json"
    assert SECRET not in response.body


def test_static_symlink_out_of_web_is_404(site: Site) -> None:
    (site.web / "src" / "leak.js").symlink_to(site.root / "secret.txt")
    response = site.client.get("/static/src/leak.js")
    assert response.status_code == 404
    assert SECRET not in response.content


def test_a_models_base_url_is_the_one_other_origin_the_page_may_fetch(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    app = create_app(
        site.models, site.web, tmp_path / "state", artifacts_base_url="https://cdn.example:8443/edge/models"
    )
    client = local_client(app)
    csp = client.get("/").headers["content-security-policy"]
    assert "connect-src 'self' https://cdn.example:8443 blob: data:;" in csp
    assert csp.count("cdn.example") == 1  # connect-src only: scripts and workers stay same-origin
    listed = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    assert listed[MODEL_ID]["artifacts_url"] == f"https://cdn.example:8443/edge/models/{MODEL_ID}/"
    assert listed[MODEL_ID]["base_url"] == site.base  # the cache keys and Transformers.js stay on this origin


@pytest.mark.parametrize(
    "url",
    [
        "ftp://cdn.example/models",
        "cdn.example/models",
        "https:///models",
        "https://cdn.example/m?sig=1",
        "https://user:pw@cdn.example/m",
        "javascript:alert(1)",
        "https://cdn.example/m#x",
    ],
)
def test_a_bad_models_base_url_is_refused(tmp_path: Path, url: str) -> None:
    site = build_site(tmp_path)
    with pytest.raises(ValueError, match="MODELS_BASE_URL"):
        create_app(site.models, site.web, tmp_path / "state", artifacts_base_url=url)
