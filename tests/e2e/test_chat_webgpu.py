"""Chat on WebGPU. Headless Chromium with --enable-unsafe-webgpu offers SwiftShader (a CPU "GPU" without
shader-f16), so the page must choose the manifest's plain `webgpu` dtype (q4) and say why. SwiftShader
decodes at roughly 20 s per token on 2 cores, so the reply is kept to two tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM_ARGS = ["--enable-unsafe-webgpu"]
MAX_NEW_TOKENS = 2


@pytest.fixture(scope="module")
def chat(new_chat_page: Any, model_dir: Path, model_id: str) -> Any:
    page = new_chat_page()
    page.open(model=model_id, max_new_tokens=MAX_NEW_TOKENS)
    if page.page.evaluate("() => document.body.dataset.webgpu") != "true":
        pytest.skip(f"this Chromium offers no WebGPU adapter: {page.page.text_content('#device-status')}")
    return page


def test_swiftshader_without_f16_picks_q4_and_says_why(chat: Any, manifest: dict[str, Any]) -> None:
    chat.load(timeout_s=400)
    body = chat.page.evaluate("() => ({...document.body.dataset})")
    assert body["device"] == "webgpu"
    assert body["dtype"] == manifest["devices"]["webgpu"] == "q4"
    reason = chat.page.get_attribute("#device-status", "data-reason")
    assert "WebGPU is available" in reason
    assert "lacks shader-f16" in reason
    assert "picks q4 for webgpu" in reason


def test_webgpu_generates_a_reply(chat: Any, model_id: str) -> None:
    reply = chat.ask("What is the capital of France?", timeout_s=400)
    assert reply["raw"].strip()
    metrics = chat.metrics()
    assert (metrics["device"], metrics["dtype"], metrics["model"]) == ("webgpu", "q4", model_id)
    assert 1 <= metrics["new_tokens"] <= MAX_NEW_TOKENS


def test_webgpu_stayed_on_this_origin(chat: Any) -> None:
    assert chat.foreign_requests() == []
    assert chat.csp_violations() == []
    assert chat.page_errors == []
