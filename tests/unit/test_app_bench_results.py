"""POST/GET /api/bench/results: valid results are stored and listed; junk is refused with a clear 4xx."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from app_helpers import BENCH_RESULTS_URL, Site, bench_result, build_site, local_client

from app.bench_results import MAX_BODY_BYTES, MAX_RESULTS_PER_POST


def post(site: Site, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return site.client.post(BENCH_RESULTS_URL, content=data, headers={"content-type": "application/json", **headers})


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path)


def test_a_valid_post_is_stored_and_listed(site: Site) -> None:
    doc = {
        "client": "Pixel 8 · Chrome",
        "user_agent": "Mozilla/5.0",
        "results": [bench_result(), bench_result(dtype="q4"), bench_result(dtype="gguf-q4_1", runtime="llama.cpp")],
    }
    response = post(site, doc)
    assert response.status_code == 201 and response.json() == {"stored": 3}
    listed = site.client.get(BENCH_RESULTS_URL).json()["results"]
    assert [r["dtype"] for r in listed] == ["gguf-q4_1", "q4", "fp32"]  # newest first
    assert listed[1]["client"] == "Pixel 8 · Chrome" and listed[1]["decode_tokens_per_s"] == 14.2


def test_results_survive_a_new_app_on_the_same_database(site: Site) -> None:
    post(site, {"client": "a", "results": [bench_result()]})

    from app.server import create_app

    again = local_client(create_app(site.models, site.web, site.root / "state"))
    assert len(again.get(BENCH_RESULTS_URL).json()["results"]) == 1


def test_a_failed_run_may_omit_figures_but_names_its_error(site: Site) -> None:
    failed = {k: v for k, v in bench_result().items() if k not in ("ttft_s", "decode_tokens_per_s")}
    response = post(site, {"client": "a", "results": [{**failed, "error": "out of memory"}]})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "body must be a JSON object"),
        ({"results": [bench_result()]}, "body.client must be a non-empty string"),
        ({"client": "a", "results": []}, "results must be a non-empty list"),
        ({"client": "a", "results": [5]}, "results[0] must be an object"),
        ({"client": "a", "results": [bench_result(model="nope")]}, "results[0].model 'nope' is not in the catalog"),
        ({"client": "a", "results": [bench_result(device="tpu")]}, "results[0].device must be one of"),
        ({"client": "a", "results": [bench_result(dtype="int3")]}, "results[0].dtype must be one of"),
        ({"client": "a", "results": [bench_result(dtype="gguf-<b>")]}, "results[0].dtype must be one of"),
        ({"client": "a", "results": [bench_result(runtime="tflite")]}, "results[0].runtime must be one of"),
        (
            {"client": "a", "results": [{**bench_result(), "runtime": None}]},
            "results[0].runtime must be a non-empty string",
        ),
        ({"client": "a", "results": [bench_result(load_s=-1)]}, "results[0].load_s must be a finite number"),
        ({"client": "a", "results": [bench_result(load_s="3")]}, "results[0].load_s must be a finite number"),
        ({"client": "a", "results": [bench_result(load_s=True)]}, "results[0].load_s must be a finite number"),
        ({"client": "a", "results": [bench_result(ttft_s=None)]}, "results[0].ttft_s must be a finite number"),
        ({"client": "a", "results": [bench_result(extra=1)]}, "results[0] has unknown fields: extra"),
        ({"client": "x" * 201, "results": [bench_result()]}, "body.client is too long"),
        ({"client": "a", "results": [bench_result()] * (MAX_RESULTS_PER_POST + 1)}, "at most 50 results"),
    ],
)
def test_junk_is_a_400_with_the_reason_and_nothing_is_stored(site: Site, body: Any, message: str) -> None:
    response = post(site, body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert site.client.get(BENCH_RESULTS_URL).json() == {"results": []}


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"", b"NaN"])
def test_unparseable_bodies_are_a_400(site: Site, raw: bytes) -> None:
    response = post(site, raw)
    assert response.status_code == 400 and "error" in response.json()


def test_non_finite_numbers_are_refused(site: Site) -> None:
    body = json.dumps({"client": "a", "results": [bench_result(decode_tokens_per_s=math.inf)]}).encode()
    assert b"Infinity" in body
    assert post(site, body).status_code == 400


def test_oversized_bodies_are_a_413(site: Site) -> None:
    big = {"client": "a", "results": [bench_result()], "pad": "x" * MAX_BODY_BYTES}
    response = post(site, big)
    assert response.status_code == 413 and "bytes" in response.json()["error"]


def test_oversized_chunked_bodies_are_a_413_too(site: Site) -> None:
    def chunks():
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    response = site.client.post(BENCH_RESULTS_URL, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_only_json_is_accepted(site: Site, content_type: str) -> None:
    response = site.client.post(BENCH_RESULTS_URL, content=b"{}", headers={"content-type": content_type})
    assert response.status_code == 415


def test_the_bench_page_renders_with_its_script(site: Site) -> None:
    response = site.client.get("/bench")
    assert response.status_code == 200
    assert '<script type="module" src="/static/bench/bench.js"></script>' in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'self'")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(site: Site, method: str) -> None:
    assert site.client.request(method, BENCH_RESULTS_URL).status_code == 405
