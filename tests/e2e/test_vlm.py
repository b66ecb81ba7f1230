"""Image chat on WASM with tiny-smolvlm (random weights, 128 px tiles): attach by file picker, paste and drop;
greedy tokens equal to Python onnxruntime (model_prep.verify.vlm.VLMSession) on the very pixels the page fed;
a text follow-up; refusals (not an image, text-only model); the docs screenshot.

Identical pixels: the page runs with ?expose_inputs=1, so the worker reports the exact pixel_values /
pixel_attention_mask it gave the vision encoder (and the prompt ids and generated ids); Python runs the same
three ONNX graphs on those pixels. The prompt ids are rebuilt independently in Python and must match.

A module-level `server` overrides conftest's: it serves a temporary models folder holding tiny-smolvlm (exported
here, ~25 s) and a text-only model (a symlink to smollm2-135m when exported, else a tiny-llama export).
EDGE_CHAT_VLM_MODELS=<folder> reuses a folder that already holds both.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import serve_app, strip_eos

from edge_contracts import DEFAULT_MODEL, METRICS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VLM = "tiny-smolvlm"
MAX_NEW_TOKENS = 8
QUESTION = "What is in this picture?"
FOLLOW_UP = "And what colour is it?"
METRIC_KEYS = set(METRICS)


# ---------------------------------------------------------------------------------------------------- images


def png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG (no image library): a gradient with a disc, different per seed."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = ((x / width - 0.6) ** 2 + (y / height - 0.4) ** 2 < 0.06).astype(np.float64)
    r = 255 * x / max(1, width - 1)
    g = 255 * (0.2 + 0.7 * disc) * ((seed % 2) or 1)
    b = 255 * (np.floor(x / 16 + y / 9 + seed) % 2) * (1 - y / height)
    rgb = np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vlm_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("EDGE_CHAT_VLM_MODELS")
    if given:
        return Path(given).resolve()
    from model_prep.__main__ import main

    models = tmp_path_factory.mktemp("vlm-models")
    assert main(["export", VLM, "--out", str(models)]) == 0
    default = Path(os.environ.get("EDGE_CHAT_MODELS", REPO / "models")) / DEFAULT_MODEL
    if (default / "manifest.json").is_file():
        (models / DEFAULT_MODEL).symlink_to(default.resolve(), target_is_directory=True)
    else:
        assert main(["export", "tiny-llama", "--out", str(models)]) == 0
    return models


@pytest.fixture(scope="module")
def text_model(vlm_models: Path) -> str:
    return DEFAULT_MODEL if (vlm_models / DEFAULT_MODEL / "manifest.json").is_file() else "tiny-llama"


@pytest.fixture(scope="module")
def server(vlm_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app` over the VLM models folder (overrides conftest's session server for this module)."""
    with serve_app(vlm_models, tmp_path_factory.mktemp("vlm-server")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def vlm_dir(vlm_models: Path) -> Path:
    return vlm_models / VLM


@pytest.fixture(scope="module")
def chat(new_chat_page: Any) -> Any:
    page = new_chat_page()
    page.open(model=VLM, device="wasm", max_new_tokens=MAX_NEW_TOKENS, expose_inputs=1)
    return page


@pytest.fixture(scope="module")
def reference(vlm_dir: Path) -> Any:
    """Greedy ids from Python onnxruntime for (prompt ids, pixels) — the way Transformers.js runs the graphs."""
    from model_prep.verify.vlm import VLMSession, graph_paths, greedy

    config = json.loads((vlm_dir / "config.json").read_text())
    eos = json.loads((vlm_dir / "generation_config.json").read_text())["eos_token_id"]
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    session = VLMSession(graph_paths(vlm_dir / "onnx", "fp32"), config["image_token_id"])

    def run(prompt_ids: list[int], pixels: tuple[np.ndarray, np.ndarray]) -> tuple[list[int], set[int]]:
        features = session.image_features(*pixels)
        return greedy(session, prompt_ids, features, MAX_NEW_TOKENS, eos_ids), eos_ids

    return run


@pytest.fixture(scope="module")
def tokenizer(vlm_dir: Path) -> Any:
    from model_prep.verify.vlm import load_tokenizer

    return load_tokenizer(vlm_dir)


# ---------------------------------------------------------------------------------------------------- helpers

DATA_TRANSFER_JS = """([kind, b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type }));
  const target = document.getElementById('prompt');
  const event = kind === 'paste'
    ? new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true })
    : new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true });
  target.dispatchEvent(event);
}"""

EXPOSED_JS = """() => {
  const x = window.__edgeChatVLMInputs;
  if (!x) return null;
  const b64 = (t) => {
    if (!t) return null;
    const u8 = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
    return { dims: t.dims, type: t.type, b64: btoa(s) };
  };
  return { ...x, pixel_values: b64(x.pixel_values), pixel_attention_mask: b64(x.pixel_attention_mask) };
}"""


def attachment_count(chat: Any) -> int:
    return int(chat.page.get_attribute("#attachments", "data-count") or 0)


def wait_attachments(chat: Any, n: int) -> None:
    chat.wait_for("(n) => document.getElementById('attachments').dataset.count === String(n)", 10, n)


def transfer(chat: Any, kind: str, data: bytes, name: str, mime: str = "image/png") -> None:
    chat.page.evaluate(DATA_TRANSFER_JS, [kind, base64.b64encode(data).decode(), name, mime])


def exposed(chat: Any) -> dict[str, Any]:
    x = chat.page.evaluate(EXPOSED_JS)
    assert x is not None, "the worker reported no inputs (is ?expose_inputs=1 set?)"
    for key, dtype in (("pixel_values", np.float32), ("pixel_attention_mask", np.uint8)):
        t = x[key]
        if t is not None:
            x[key] = np.frombuffer(base64.b64decode(t["b64"]), dtype=dtype).reshape(t["dims"])
    if x["pixel_attention_mask"] is not None:
        x["pixel_attention_mask"] = x["pixel_attention_mask"].astype(bool)
    return x


def ask(chat: Any, text: str) -> dict[str, Any]:
    chat.page.evaluate("() => { window.__edgeChatVLMInputs = null; }")
    return chat.ask(text, timeout_s=120)


def python_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]], rows: int, cols: int, vlm_dir: Path) -> list:
    from model_prep.verify.vlm import expand_image_tokens

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    seq_len = json.loads((vlm_dir / "processor_config.json").read_text())["image_seq_len"]
    return tokenizer(expand_image_tokens(text, rows, cols, seq_len)).input_ids


def check_image_turn(chat: Any, reply: dict, tokenizer: Any, vlm_dir: Path, reference: Any) -> dict[str, Any]:
    """The reply equals Python onnxruntime's greedy ids on the page's own pixels; returns the exposed inputs."""
    x = exposed(chat)
    assert x["encoded_images"] == 1 and len(x["images"]) == 1
    image = x["images"][0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    want_prompt = python_prompt_ids(tokenizer, messages, image["rows"], image["cols"], vlm_dir)
    assert x["prompt_ids"] == want_prompt
    tiles = (image["rows"] * image["cols"] + 1) if image["rows"] else 1
    size = json.loads((vlm_dir / "preprocessor_config.json").read_text())["max_image_size"]["longest_edge"]
    assert x["pixel_values"].shape == (1, tiles, 3, size, size)
    want, eos_ids = reference(want_prompt, (x["pixel_values"], x["pixel_attention_mask"]))
    assert strip_eos(x["new_ids"], eos_ids) == want
    assert reply["raw"] == tokenizer.decode(want, skip_special_tokens=True).strip() or reply["raw"] == tokenizer.decode(
        want, skip_special_tokens=True
    )
    metrics = chat.metrics()
    assert set(metrics) == METRIC_KEYS
    assert (metrics["device"], metrics["dtype"], metrics["model"]) == ("wasm", "fp32", VLM)
    assert metrics["prompt_tokens"] == len(want_prompt) and metrics["new_tokens"] >= 1
    return x


# ---------------------------------------------------------------------------------------------------- tests


def test_picker_tags_models_that_take_images(chat: Any, text_model: str) -> None:
    options = chat.page.evaluate(
        """() => [...document.querySelectorAll('#model-select option')]
                 .map((o) => [o.value, o.textContent, o.dataset.image])"""
    )
    tags = {value: (text, image) for value, text, image in options}
    assert "[image]" in tags[VLM][0] and tags[VLM][1] == "true"
    assert "[image]" not in tags[text_model][0] and tags[text_model][1] == "false"


def test_a_file_that_is_not_an_image_is_refused(chat: Any) -> None:
    chat.page.set_input_files(
        "#attach-input", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not a picture"}]
    )
    chat.wait_for("() => document.body.dataset.error === 'not-an-image'", 10)
    assert "notes.png" in chat.error_text() and "not an image" in chat.error_text()
    assert attachment_count(chat) == 0
    transfer(chat, "drop", b"%PDF-1.4 nope", "paper.pdf", "application/pdf")
    chat.wait_for("() => document.getElementById('error').textContent.includes('paper.pdf')", 10)
    assert attachment_count(chat) == 0
    assert chat.page.evaluate("() => document.querySelectorAll('[data-role]').length") == 0


def test_a_text_only_model_explains_and_sends_nothing(chat: Any, text_model: str) -> None:
    chat.page.select_option("#model-select", text_model)
    chat.load(timeout_s=300)
    chat.page.set_input_files(
        "#attach-input", files=[{"name": "a.png", "mimeType": "image/png", "buffer": png(64, 48)}]
    )
    wait_attachments(chat, 1)
    chat.send("What is this?")
    chat.wait_for("() => document.body.dataset.error === 'text-only-model'", 10)
    assert "reads text only" in chat.error_text()
    assert chat.state == "ready"
    assert chat.page.evaluate("() => document.querySelectorAll('[data-role]').length") == 0
    assert chat.page.input_value("#prompt") == "What is this?"  # nothing was consumed
    chat.page.click(".attachment-remove")
    wait_attachments(chat, 0)
    chat.page.fill("#prompt", "")


def test_image_turn_by_file_picker_equals_onnxruntime(
    chat: Any, tokenizer: Any, vlm_dir: Path, reference: Any, request: pytest.FixtureRequest
) -> None:
    chat.page.select_option("#model-select", VLM)
    chat.load(timeout_s=300)
    chat.page.set_input_files(
        "#attach-input", files=[{"name": "picture.png", "mimeType": "image/png", "buffer": png(200, 150)}]
    )
    wait_attachments(chat, 1)
    reply = ask(chat, QUESTION)
    x = check_image_turn(chat, reply, tokenizer, vlm_dir, reference)
    assert (x["images"][0]["width"], x["images"][0]["height"]) == (200, 150)  # small enough: not resized
    print("image turn metrics", json.dumps(chat.metrics()))
    assert chat.page.evaluate("() => document.querySelectorAll('.message.user .message-images img').length") == 1
    chat.first_turn = (x, reply["raw"])


def test_text_follow_up_after_an_image_turn(chat: Any, tokenizer: Any, vlm_dir: Path, reference: Any) -> None:
    first, answer = chat.first_turn
    ask(chat, FOLLOW_UP)
    x = exposed(chat)
    context = chat.context()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer.lstrip()}]},
        {"role": "user", "content": [{"type": "text", "text": FOLLOW_UP}]},
    ]
    image = first["images"][0]
    want_prompt = python_prompt_ids(tokenizer, messages, image["rows"], image["cols"], vlm_dir)
    assert x["prompt_ids"] == want_prompt
    assert context["context_tokens"] == len(want_prompt)
    # Whether the cache was reused or not, the tokens are those of a full prefill of the conversation.
    want, eos_ids = reference(want_prompt, (first["pixel_values"], first["pixel_attention_mask"]))
    assert strip_eos(x["new_ids"], eos_ids) == want
    if context["reused_tokens"]:
        assert x["encoded_images"] == 0  # the image stayed in the KV cache
        assert chat.metrics()["prompt_tokens"] == len(want_prompt) - context["reused_tokens"]
    print("follow-up reused", context["reused_tokens"], "of", context["context_tokens"], "tokens")


def test_screenshot_for_the_docs(chat: Any, screenshot_path: Any) -> None:
    shot = screenshot_path("screenshot-vlm.png")
    chat.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_pasted_oversized_image_is_downscaled(chat: Any, tokenizer: Any, vlm_dir: Path, reference: Any) -> None:
    chat.new_chat()
    transfer(chat, "paste", png(600, 300, seed=1), "pasted.png")
    wait_attachments(chat, 1)
    reply = ask(chat, QUESTION)
    x = check_image_turn(chat, reply, tokenizer, vlm_dir, reference)
    limit = json.loads((vlm_dir / "preprocessor_config.json").read_text())["size"]["longest_edge"]
    assert (x["images"][0]["width"], x["images"][0]["height"]) == (limit, limit // 2)
    assert chat.context()["reused_tokens"] == 0


def test_dropped_image(chat: Any, tokenizer: Any, vlm_dir: Path, reference: Any) -> None:
    chat.new_chat()
    transfer(chat, "drop", png(96, 160, seed=2), "dropped.png")
    wait_attachments(chat, 1)
    reply = ask(chat, QUESTION)
    check_image_turn(chat, reply, tokenizer, vlm_dir, reference)


def test_image_models_load_through_the_verified_cache(chat: Any, tokenizer: Any, vlm_dir: Path, reference: Any) -> None:
    """The same load path as text models: every file checked against the manifest's sha256 into the revision's cache,
    a damaged entry fetched again, other revisions deleted (before, vlm.load skipped all of it)."""
    manifest = json.loads((vlm_dir / "manifest.json").read_text())
    name = f"edge-chat-model-{VLM}-{manifest['revision']}"
    dtype = chat.page.evaluate("() => document.body.dataset.dtype")
    graphs = manifest["dtypes"][dtype]["files"]
    report = json.loads(chat.page.evaluate("() => document.body.dataset.cache || '{}'"))
    assert set(graphs) <= set(report["verified"]) | set(report["downloaded"]), report
    assert "preprocessor_config.json" in set(report["verified"]) | set(report["downloaded"])
    assert name in chat.page.evaluate("() => caches.keys()")
    decoder = next(f for f in graphs if "decoder" in f)
    stale = f"edge-chat-model-{VLM}-000000000000"
    chat.page.evaluate(
        """async ([name, stale, base, staleBase, decoder]) => {
          const cache = await caches.open(name);
          const graph = await (await cache.match(base + decoder)).arrayBuffer();
          await cache.put(base + decoder, new Response(graph.slice(0, graph.byteLength - 8)));  // truncated
          await cache.put(base + 'preprocessor_config.json', new Response('{"not": "the processor"}'));
          await (await caches.open(stale)).put(staleBase + 'config.json', new Response('{}'));
        }""",
        [name, stale, f"/models/{VLM}/{manifest['revision']}/", f"/models/{VLM}/000000000000/", decoder],
    )
    chat.page.reload()
    chat.wait_for("() => document.body.dataset.autoload !== undefined", 60)
    assert chat.page.evaluate("() => document.body.dataset.autoload") == "cached"  # the last model, loading on open
    chat.wait_for("() => document.body.dataset.state === 'ready' || !!document.body.dataset.error", 300)
    assert chat.state == "ready", chat.error_text()
    report = json.loads(chat.page.evaluate("() => document.body.dataset.cache"))
    assert sorted(report["repaired"]) == sorted([decoder, "preprocessor_config.json"])
    assert sorted(report["downloaded"]) == sorted([decoder, "preprocessor_config.json"])
    assert stale not in chat.page.evaluate("() => caches.keys()")
    # The repaired files compute what onnxruntime computes.
    chat.new_chat()
    chat.page.set_input_files(
        "#attach-input", files=[{"name": "again.png", "mimeType": "image/png", "buffer": png(120, 90, seed=3)}]
    )
    wait_attachments(chat, 1)
    check_image_turn(chat, ask(chat, QUESTION), tokenizer, vlm_dir, reference)


def test_everything_stayed_on_this_origin(chat: Any) -> None:
    assert chat.foreign_requests() == []
    assert chat.csp_violations() == []
    assert chat.page_errors == []


def test_bench_loads_and_measures_the_image_model(new_chat_page: Any, server: str) -> None:
    # /bench builds its load request with the chat's manifest.js (task, capabilities): the image model loads in vlm.js
    # and decodes exactly the tokens asked for. (Its own copy of the request lacked both: the image model's files went
    # to the text runtime.)
    bench = new_chat_page()
    query = {"model": VLM, "device": "wasm", "new_tokens": 4, "prompts": "short", "warm": 0, "turn2": 0, "post": 0}
    bench.page.goto(f"{server}/bench?{'&'.join(f'{k}={v}' for k, v in query.items())}")
    bench.page.click("#run-button")
    bench.wait_for("() => ['done', 'failed'].includes(document.body.dataset.state)", 600)
    rows = json.loads(bench.page.evaluate("() => document.body.dataset.results"))
    assert bench.page.evaluate("() => document.body.dataset.state") == "done", rows
    assert [(r["model"], r["device"], r["prompt"], r.get("error")) for r in rows] == [(VLM, "wasm", "short", None)]
    assert rows[0]["new_tokens"] == 4 and rows[0]["decode_tokens_per_s"] > 0
    assert bench.page_errors == []
