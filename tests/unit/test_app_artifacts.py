"""Artifacts under /models/{id}/{revision}/{path}: whitelist, ranges, conditional requests, streaming."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from app_helpers import (
    CONFIG,
    MODEL_ID,
    MODEL_ONNX,
    SECRET,
    Site,
    build_site,
    default_files,
    raw_request,
    sha256,
    write_model,
)

from app.artifacts import ArtifactResponse, ArtifactUnavailable, etag_matches, locate_artifact
from app.catalog import load_model

ONNX_ETAG = f'"{sha256(MODEL_ONNX)}"'
SIZE = len(MODEL_ONNX)  # 10_000


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path)


# --- Range headers of every shape: Starlette's FileResponse parses them; none is a 500 or a wrong byte --------


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=0-99", 0, 100),
        ("bytes=100-199", 100, 200),
        ("bytes=9999-9999", 9999, 10_000),
        ("bytes=9000-", 9000, 10_000),
        ("bytes=-1", 9999, 10_000),
        ("bytes=-500", 9500, 10_000),
        ("bytes=-20000", 0, 10_000),
        ("bytes=5-999999999", 5, 10_000),
        (" Bytes=1-2 ", 1, 3),
        # Lenient parsing (Python's int()): still only bytes of the named file, exactly the ones named.
        ("bytes=+1-2", 1, 3),
    ],
)
def test_range_forms_serve_exactly_those_bytes(site: Site, header: str, start: int, stop: int) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == MODEL_ONNX[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/10000"


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("", 400),
        ("bytes", 400),
        ("bytes=", 400),
        ("bytes=-", 400),
        ("bytes=abc", 400),
        ("bytes=5-2", 400),
        ("bytes=1-2-3", 400),
        ("bytes=0x10-20", 400),
        ("bytes=10000-", 416),
        ("bytes=10000-10005", 416),
        ("bytes=-0", 416),
        ("bytes=" + "9" * 30 + "-", 416),
        ("bytes=" + "9" * 5000 + "-", 400),  # past int()'s digit limit: ignored, so no range is left
    ],
)
def test_malformed_or_unsatisfiable_range_is_refused(site: Site, header: str, status: int) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": header})
    assert response.status_code == status
    assert MODEL_ONNX[:64] not in response.content
    if status == 416:
        assert response.headers["content-range"] == "bytes */10000"


def test_range_on_empty_file_is_unsatisfiable(site: Site) -> None:
    manifest = write_model(site.models, "empty-file", {**default_files(), "tokenizer.json": b""})
    url = f"/models/empty-file/{manifest['revision']}/tokenizer.json"
    for header in ("bytes=0-", "bytes=-1", "bytes=0-0"):
        response = site.client.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        (' "x" ,W/"abc" ', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
        ('"x", "y"', False),
        ("", False),
    ],
)
def test_etag_matches(header: str, expected: bool) -> None:
    assert etag_matches(header, '"abc"') is expected


# --- full responses ------------------------------------------------------------------------------------


def test_get_full_artifact(site: Site) -> None:
    response = site.client.get(site.base + "onnx/model.onnx")
    assert response.status_code == 200
    assert response.content == MODEL_ONNX
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == "10000"
    assert response.headers["etag"] == ONNX_ETAG
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["accept-ranges"] == "bytes"
    assert "content-range" not in response.headers


def test_json_artifact_content_type(site: Site) -> None:
    response = site.client.get(site.base + "config.json")
    assert response.status_code == 200
    assert response.content == CONFIG
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == f'"{sha256(CONFIG)}"'


def test_head_has_headers_and_no_body(site: Site) -> None:
    response = site.client.head(site.base + "onnx/model.onnx")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "10000"
    assert response.headers["etag"] == ONNX_ETAG


def test_head_with_range(site: Site) -> None:
    response = site.client.head(site.base + "onnx/model.onnx", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == b""
    assert response.headers["content-range"] == "bytes 10-19/10000"
    assert response.headers["content-length"] == "10"


# RFC 9110 §14.2: a server MUST ignore a Range header whose unit it does not understand: the whole body, 200.
@pytest.mark.parametrize("header", ["items=0-1", "lines=1-2", "none=", "x-custom=5-2,9-"])
def test_range_in_another_unit_is_ignored(site: Site, header: str) -> None:
    for extra in ({}, {"If-Range": f'"{sha256(MODEL_ONNX)}"'}):
        response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": header, **extra})
        assert response.status_code == 200
        assert response.content == MODEL_ONNX
        assert "content-range" not in response.headers


def test_range_unit_is_case_insensitive(site: Site) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": "BYTES=10-19"})
    assert response.status_code == 206
    assert response.content == MODEL_ONNX[10:20]


def test_static_files_ignore_another_unit_too(site: Site) -> None:
    whole = site.client.get("/static/src/main.js")
    response = site.client.get("/static/src/main.js", headers={"Range": "items=0-1"})
    assert (whole.status_code, response.status_code) == (200, 200)
    assert response.content == whole.content


# --- ranges --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),  # first byte
        ("bytes=0-1023", 0, 1024),  # first block
        ("bytes=4000-4999", 4000, 5000),  # middle
        ("bytes=-100", 9900, 10_000),  # suffix
        ("bytes=9990-", 9990, 10_000),  # open-ended
        ("bytes=9000-123456789", 9000, 10_000),  # end beyond size clamps
        ("bytes=-99999", 0, 10_000),  # suffix longer than the file
    ],
)
def test_valid_range_is_206_with_exact_bytes(site: Site, header: str, start: int, stop: int) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == MODEL_ONNX[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/10000"
    assert response.headers["content-length"] == str(stop - start)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["etag"] == ONNX_ETAG


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_range_is_416(site: Site, header: str) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */10000"
    assert response.content == b""


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-2", "=", "bytes", "it ems=0-1"])
def test_malformed_range_is_400(site: Site, header: str) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": header})
    assert response.status_code == 400
    assert response.content in (b"Malformed range header.", b"Only support bytes range") or response.text.startswith(
        "Range header:"
    )


def test_multi_range_is_multipart(site: Site) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"Range": "bytes=0-1, 4-5"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert response.headers["etag"] == ONNX_ETAG
    body = response.content
    assert int(response.headers["content-length"]) == len(body)
    for start, stop in ((0, 2), (4, 6)):
        part = f"Content-Range: bytes {start}-{stop - 1}/10000\r\n\r\n".encode() + MODEL_ONNX[start:stop] + b"\r\n"
        assert part in body


def test_non_ascii_digits_are_malformed(site: Site) -> None:
    # Sent raw as UTF-8 (HTTP clients refuse non-Latin-1 headers); ASGI headers are Latin-1, so int() never
    # sees Arabic-Indic digits, only mojibake.
    response = raw_request(site.app, (site.base + "onnx/model.onnx").encode(), headers={"Range": "bytes=١-٢"})
    assert response.status == 400
    assert MODEL_ONNX[1:3] not in response.body


def test_if_range_matching_etag_gives_range(site: Site) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": ONNX_ETAG}
    response = site.client.get(site.base + "onnx/model.onnx", headers=headers)
    assert response.status_code == 206
    assert response.content == MODEL_ONNX[:10]


@pytest.mark.parametrize("if_range", ['"other"', f"W/{ONNX_ETAG}", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_if_range_mismatch_gives_whole_file(site: Site, if_range: str) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": if_range}
    response = site.client.get(site.base + "onnx/model.onnx", headers=headers)
    assert response.status_code == 200
    assert response.content == MODEL_ONNX


# --- conditional requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [ONNX_ETAG, f"W/{ONNX_ETAG}", f'"nope", {ONNX_ETAG}', "*"])
def test_if_none_match_is_304_without_body(site: Site, value: str) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"If-None-Match": value})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == ONNX_ETAG
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "content-length" not in response.headers


def test_if_none_match_beats_range(site: Site) -> None:
    headers = {"If-None-Match": ONNX_ETAG, "Range": "bytes=0-9"}
    response = site.client.get(site.base + "onnx/model.onnx", headers=headers)
    assert response.status_code == 304
    assert response.content == b""


def test_if_none_match_other_etag_is_200(site: Site) -> None:
    response = site.client.get(site.base + "onnx/model.onnx", headers={"If-None-Match": f'"{"0" * 64}"'})
    assert response.status_code == 200
    assert response.content == MODEL_ONNX


# --- what is not served ----------------------------------------------------------------------------------


def _assert_404_json(status: int, content_type: str, body: bytes) -> None:
    assert status == 404
    assert content_type == "application/json"
    assert body.startswith(b'{"error":')
    assert SECRET not in body


def test_unknown_model_is_404(site: Site) -> None:
    response = site.client.get(f"/models/nope/{site.manifest['revision']}/config.json")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown model"}


@pytest.mark.parametrize("revision", ["000000000000", "latest", "main", "", "%2e%2e"])
def test_wrong_revision_is_404(site: Site, revision: str) -> None:
    response = site.client.get(f"/models/{MODEL_ID}/{revision}/config.json")
    _assert_404_json(response.status_code, response.headers["content-type"], response.content)


@pytest.mark.parametrize("path", ["notes.txt", "manifest.json", "", "onnx", "onnx/", "Config.json", "config.json/"])
def test_unlisted_paths_are_404(site: Site, path: str) -> None:
    assert (site.models / MODEL_ID / "notes.txt").is_file()
    response = site.client.get(site.base + path)
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


@pytest.mark.parametrize(
    "suffix",
    [
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
        "..%2f..%2f..%2fsecret.txt",
        "%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "%252e%252e%252f%252e%252e%252f%252e%252e%252fsecret.txt",
        "onnx%2f..%2fconfig.json",
        "..%5c..%5c..%5csecret.txt",
        "onnx%5cmodel.onnx",
        "%2fetc%2fpasswd",
        "/etc/passwd",
        "config.json%00",
        "config.json%00.png",
        "%00",
        "onnx//model.onnx",
    ],
)
def test_encoded_traversal_is_404(site: Site, suffix: str) -> None:
    response = site.client.get(site.base + suffix)
    _assert_404_json(response.status_code, response.headers["content-type"], response.content)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/models/tiny-llm/{rev}/../../../secret.txt",
        "/models/tiny-llm/{rev}/onnx/../config.json",
        "/models/tiny-llm/{rev}/..\\..\\..\\secret.txt",
        "/models/tiny-llm/../../secret.txt",
        "/models/../secret.txt",
        "/models/tiny-llm/{rev}/" + "%2e%2e/" * 3 + "secret.txt",
        "/models/tiny-llm/{rev}/./config.json",
        "/models/tiny-llm/{rev}/onnx/./model.onnx",
    ],
)
def test_literal_traversal_is_404(site: Site, raw_path: str) -> None:
    # Sent raw: an HTTP client would fold '..' before the server ever saw it.
    path = raw_path.format(rev=site.manifest["revision"]).encode()
    response = raw_request(site.app, path)
    _assert_404_json(response.status, response.headers["content-type"], response.body)


def test_symlink_out_of_the_model_folder_is_404(site: Site) -> None:
    # A manifest that lists a symlink to a file outside the folder, with the secret's own size and hash.
    files = {**default_files(), "config.json": SECRET}
    manifest = write_model(site.models, "linked", files)
    config = site.models / "linked" / "config.json"
    config.unlink()
    os.symlink(site.root / "secret.txt", config)
    response = site.client.get(f"/models/linked/{manifest['revision']}/config.json")
    _assert_404_json(response.status_code, response.headers["content-type"], response.content)


def test_symlink_inside_the_model_folder_is_served(site: Site) -> None:
    files = default_files()
    manifest = write_model(site.models, "aliased", files)
    (site.models / "aliased" / "config.json").unlink()
    (site.models / "aliased" / "real-config.json").write_bytes(files["config.json"])
    os.symlink("real-config.json", site.models / "aliased" / "config.json")
    response = site.client.get(f"/models/aliased/{manifest['revision']}/config.json")
    assert response.status_code == 200
    assert response.content == CONFIG


def test_listed_but_missing_file_is_404(site: Site) -> None:
    (site.models / MODEL_ID / "onnx" / "model_q4.onnx").unlink()
    response = site.client.get(site.base + "onnx/model_q4.onnx")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_listed_file_with_wrong_size_is_404(site: Site) -> None:
    (site.models / MODEL_ID / "onnx" / "model.onnx").write_bytes(MODEL_ONNX + b"!")
    response = site.client.get(site.base + "onnx/model.onnx")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_reexport_moves_the_revision(site: Site) -> None:
    old = site.manifest["revision"]
    files = {**default_files(), "config.json": b'{"model_type": "llama", "hidden_size": 128}\n'}
    new = write_model(site.models, MODEL_ID, files)["revision"]
    manifest_path = site.models / MODEL_ID / "manifest.json"
    st = manifest_path.stat()
    os.utime(manifest_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert new != old
    assert site.client.get(f"/models/{MODEL_ID}/{old}/config.json").status_code == 404
    response = site.client.get(f"/models/{MODEL_ID}/{new}/config.json")
    assert response.status_code == 200
    assert response.content == files["config.json"]


# --- streaming -----------------------------------------------------------------------------------------


def test_body_is_streamed_in_chunks(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ArtifactResponse, "chunk_size", 1024)
    response = raw_request(site.app, (site.base + "onnx/model.onnx").encode())
    assert response.status == 200
    assert response.body == MODEL_ONNX
    assert response.body_messages == 10  # ceil(10_000 / 1024): never one whole-file read


def test_range_across_chunk_boundaries(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ArtifactResponse, "chunk_size", 1000)
    headers = {"Range": "bytes=999-3000"}
    response = raw_request(site.app, (site.base + "onnx/model.onnx").encode(), headers=headers)
    assert response.status == 206
    assert response.body == MODEL_ONNX[999:3001]
    assert response.body_messages == 3
    assert response.headers["content-range"] == "bytes 999-3000/10000"


def test_empty_artifact(site: Site) -> None:
    manifest = write_model(site.models, "empty-file", {**default_files(), "tokenizer.json": b""})
    url = f"/models/empty-file/{manifest['revision']}/tokenizer.json"
    response = site.client.get(url)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    ranged = site.client.get(url, headers={"Range": "bytes=0-"})
    assert ranged.status_code == 416
    assert ranged.headers["content-range"] == "bytes */0"


def test_a_file_swapped_after_locating_is_never_served(site: Site) -> None:
    # A new export renames a folder into place between the route's check and FileResponse's open: same path, same
    # size, other bytes. The response must abort rather than send them under the old revision's immutable URL.
    folder = site.models / MODEL_ID
    entry = load_model(folder).files["onnx/model.onnx"]
    path, located = locate_artifact(folder, entry)
    swapped = folder / "onnx" / "swapped.onnx"
    swapped.write_bytes(bytes(reversed(MODEL_ONNX)))
    os.replace(swapped, path)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [], "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ArtifactUnavailable, match="changed between locating and opening"):
        anyio.run(ArtifactResponse(path, entry, located), scope, receive, send)
    assert not any(m.get("body") for m in sent)
