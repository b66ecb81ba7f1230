"""The benchmark in Chromium: bench/browser.py's measurement on the default model (short: one prompt, 8 new
tokens) yields the metrics schema with positive, finite figures; the /bench page runs from its button,
posts its result, and the stored result shows up in its table; the wllama peer's page times random weights too.
No timing thresholds: CI has 2 cores.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from bench import browser
from bench.prompts import SHORT
from bench.server import GGUF_ROUTE, serving
from edge_contracts import BENCH_NUMBERS, METRIC_NUMBERS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEMA = set(METRIC_NUMBERS)
EXTRA = set(BENCH_NUMBERS) - {"threads"}  # threads: only when the run asks for a count
NEW_TOKENS = 8


def test_browser_run_reports_the_schema(
    playwright_driver: Any, chromium_path: str, server: str, model_dir: Path, model_id: str, manifest: dict[str, Any]
) -> None:
    dtype = manifest["devices"]["wasm"]
    target = browser.Target(model_id, "wasm", dtype, 1)
    rows = browser.measure(playwright_driver, chromium_path, server, target, {"short": SHORT}, NEW_TOKENS, 600)
    assert len(rows) == 1, rows
    row = rows[0]
    assert "error" not in row, row["error"]
    assert (row["model"], row["revision"], row["device"], row["dtype"], row["prompt"]) == (
        model_id,
        manifest["revision"],
        "wasm",
        dtype,
        "short",
    )
    assert row["new_tokens"] == NEW_TOKENS  # EOS held off: a benchmark decodes a fixed count
    for key in sorted(SCHEMA | EXTRA):
        value = row[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert row["turn2_reused_tokens"] > 0  # turn 2 really reused the KV cache
    # The private memory the cold run added to the browser holds at least the model's weights.
    assert row["model_memory_bytes"] >= 0.5 * row["download_bytes"], (row["model_memory_bytes"], row["download_bytes"])
    # At the run's end it still holds them, and no more than at its peak.
    assert 0.5 * row["download_bytes"] <= row["model_memory_settled_bytes"] <= row["model_memory_bytes"], row
    # The cold load downloaded and hashed the model; the returning visit (a new page, same profile) trusted the
    # stamps of what the first one cached: it read nothing through sha256, and still loaded the weights.
    assert row["load_hashed_bytes"] >= row["download_bytes"], row
    assert row["revisit_hashed_bytes"] == 0, row
    assert row["revisit_load_s"] > 0, row
    assert 0.5 * row["download_bytes"] <= row["revisit_memory_settled_bytes"] <= row["revisit_memory_bytes"], row


def test_bench_page_posts_and_lists_its_result(new_chat_page: Any, server: str, model_dir: Path, model_id: str) -> None:
    chat = new_chat_page()
    page = chat.page
    label = f"e2e <b>{model_id}</b>"  # user input: must come back as text, not markup
    query = {"model": model_id, "device": "wasm", "new_tokens": 4, "prompts": "short", "warm": 0, "turn2": 0}
    page.goto(f"{server}/bench?{urlencode(query)}")
    page.fill("#client-label", label)
    page.click("#run-button")
    chat.wait_for("() => ['done', 'failed'].includes(document.body.dataset.state)", 600)
    status = page.text_content("#bench-status")
    assert page.evaluate("() => document.body.dataset.state") == "done", status
    assert "Posted" in status
    chat.wait_for(
        "(label) => [...document.querySelectorAll('#results-table tbody tr')].some((r) => r.dataset.client === label)",
        30,
        label,
    )
    first = page.locator("#results-table tbody tr", has_text=label).first
    assert first.locator("td").first.text_content() == label
    assert first.locator("td b").count() == 0
    assert page.locator("#results-chart svg").count() >= 1
    assert not chat.csp_violations()
    assert not chat.foreign_requests()


def test_the_peer_page_times_random_weights(
    playwright_driver: Any, chromium_path: str, qwen3_models: Path, tmp_path: Path
) -> None:
    """Random weights stream byte pieces that are not valid UTF-8 alone, and llama.cpp's server holds their text
    back: the peer's TTFT is its first token's chunk and its count llama.cpp's, as on Edge Chat's own llama.cpp path
    (web/src/runtime-wllama.js), or a random-weight model could not be compared with the peer at all."""
    gguf = next((qwen3_models / "tiny-qwen3" / "gguf").glob("*.gguf"))
    with serving(qwen3_models, Path(__file__).resolve().parents[2] / "web", tmp_path, gguf) as base_url:
        rows = browser.measure_wllama(
            playwright_driver,
            chromium_path,
            base_url,
            GGUF_ROUTE,
            "tiny-qwen3",
            1,
            {"short": SHORT},
            NEW_TOKENS,
            600,
            revisit=False,  # the peer's timing is under test here, not a returning visit
        )
    assert len(rows) == 1, rows
    row = rows[0]
    assert "error" not in row, row["error"]
    assert row["new_tokens"] == NEW_TOKENS
    for key in ("ttft_s", "prefill_tokens_per_s", "decode_tokens_per_s", "turn2_ttft_s", "turn2_ttft_no_reuse_s"):
        value = row[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value, row)
