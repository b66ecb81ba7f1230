"""Shared builders for the app tests: a fake models folder with contract-true manifests; a raw ASGI caller.

Not a test module (pytest collects none of it); the test_app_* modules import it as a sibling (pytest's default
rootdir-relative import puts tests/unit on sys.path).
The revision comes from edge_contracts, the formula's one Python source (pinned by tests/unit/test_contracts.py).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
from starlette.applications import Starlette
from starlette.testclient import TestClient

import edge_contracts as contracts
from app.server import create_app

MODEL_ID = "tiny-llm"
XSS_NAME = "</script><img src=x onerror=alert(1)>"
XSS_ID = "tiny-xss"
SECRET = b"top secret: never served\n"
PRIVATE_SOURCE = "/home/alice/private checkpoints/tiny-llm"

# Large enough to span several chunks of a shrunken CHUNK_SIZE; a byte pattern makes any offset error visible.
MODEL_ONNX = bytes((i * 31 + i // 256) % 256 for i in range(10_000))
MODEL_Q4 = bytes((i * 7 + 3) % 251 for i in range(3_000))
CONFIG = b'{"model_type": "llama", "hidden_size": 64}\n'
TOKENIZER = b'{"version": "1.0", "model": {"type": "BPE"}}\n'

EXPECTED_SECURITY_HEADERS = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "content-security-policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' blob:; worker-src 'self' blob:; "
        "img-src 'self' blob: data:; connect-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def revision_of(entries: list[dict[str, Any]]) -> str:
    return contracts.revision_of((e["path"], e["sha256"]) for e in entries)


def default_files() -> dict[str, bytes]:
    return {
        "config.json": CONFIG,
        "tokenizer.json": TOKENIZER,
        "onnx/model.onnx": MODEL_ONNX,
        "onnx/model_q4.onnx": MODEL_Q4,
    }


def build_manifest(model_id: str, files: dict[str, bytes], name: str = "Tiny LLM") -> dict[str, Any]:
    entries = [{"path": p, "bytes": len(d), "sha256": sha256(d)} for p, d in sorted(files.items())]
    onnx = {p: len(d) for p, d in files.items() if p.endswith(".onnx")}
    dtypes = {
        "fp32": {"files": ["onnx/model.onnx"], "bytes": onnx.get("onnx/model.onnx", 0)},
        "q4": {"files": ["onnx/model_q4.onnx"], "bytes": onnx.get("onnx/model_q4.onnx", 0)},
    }
    dtypes = {k: v for k, v in dtypes.items() if v["files"][0] in files}
    return {
        "schema": 1,
        "id": model_id,
        "name": name,
        "revision": revision_of(entries),
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "task": "text-generation",
        "capabilities": {"text": True, "image": False},
        "context_length": 2048,
        "source": PRIVATE_SOURCE,  # what an old export wrote for `--source PATH`: must never be served
        "created": "2026-11-22T17:00:00Z",
        "dtypes": dtypes,
        "devices": {k: v for k, v in {"webgpu": "q4", "wasm": "fp32"}.items() if v in dtypes},
        "memory_bytes": {"fp32": 40_000, "q4": 12_000},
        "files": entries,
    }


def write_model(
    models_dir: Path,
    model_id: str,
    files: dict[str, bytes] | None = None,
    *,
    name: str = "Tiny LLM",
    folder: str | None = None,
) -> dict[str, Any]:
    """Write a model folder the way the pipeline does (files, then manifest.json) and return the manifest."""
    files = default_files() if files is None else files
    root = models_dir / (folder or model_id)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    manifest = build_manifest(model_id, files, name)
    write_manifest(root, manifest)
    return manifest


def write_manifest(root: Path, manifest: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@dataclass
class Site:
    root: Path
    models: Path
    web: Path
    manifest: dict[str, Any]
    app: Starlette
    client: TestClient

    @property
    def base(self) -> str:
        return f"/models/{MODEL_ID}/{self.manifest['revision']}/"


def build_site(tmp_path: Path) -> Site:
    """A models folder with one good model plus an XSS-named one, a web folder with src and vendor files."""
    models = tmp_path / "models"
    models.mkdir()
    manifest = write_model(models, MODEL_ID)
    # Present in the folder, absent from the manifest: must never be served.
    (models / MODEL_ID / "notes.txt").write_bytes(b"not listed\n")
    write_model(models, XSS_ID, name=XSS_NAME)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    web = tmp_path / "web"
    (web / "src").mkdir(parents=True)
    (web / "src" / "main.js").write_text("export const ok = 1;\n")
    (web / "src" / "style.css").write_text("body { margin: 0; }\n")
    (web / "vendor").mkdir()
    (web / "vendor" / "ort-wasm-simd-threaded.asyncify.wasm").write_bytes(b"\0asm\1\0\0\0")
    (web / "vendor" / "ort-wasm-simd-threaded.asyncify.mjs").write_text("export default 1;\n")
    app = create_app(models, web, tmp_path / "state")
    return Site(tmp_path, models, web, manifest, app, local_client(app))


def local_client(app: Starlette, **kwargs: Any) -> TestClient:
    """A TestClient that names the app the way a browser on this machine does (Host: localhost)."""
    return TestClient(app, base_url="http://localhost", **kwargs)


def _with_host(headers: dict[str, str] | None) -> dict[str, str]:
    return {"host": "localhost", **{k.lower(): v for k, v in (headers or {}).items()}}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    body_messages: int


def raw_request(
    app: Starlette,
    raw_path: bytes,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 5000),
    body: bytes = b"",
) -> RawResponse:
    """Call the ASGI app with a path exactly as a server would decode it: no client-side '..' folding."""
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        done = anyio.Event()
        request_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("ascii")),  # what uvicorn does
            "raw_path": raw_path,
            "root_path": "",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in _with_host(headers).items()],
            "client": client,
            "server": ("localhost", 80),
        }
        await app(scope, receive, send)

    # In a thread of its own: Playwright's sync API (the e2e tests) can leave an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(anyio.run, run).result()
    start = sent[0]
    bodies = [m for m in sent[1:] if m["type"] == "http.response.body"]
    return RawResponse(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in bodies),
        body_messages=len(bodies),
    )


BENCH_RESULTS_URL = "/api/bench/results"


def bench_result(**overrides: Any) -> dict[str, Any]:
    """One benchmark row the results endpoint accepts, with `overrides` applied."""
    base = {
        "model": MODEL_ID,
        "revision": "abc123abc123",
        "device": "wasm",
        "dtype": "fp32",
        "runtime": "onnxruntime-web",
        "load_s": 3.5,
        "ttft_s": 0.4,
        "prefill_tokens_per_s": 120.0,
        "decode_tokens_per_s": 14.2,
        "prompt_tokens": 37,
        "new_tokens": 128,
    }
    return {**base, **overrides}
