"""Browser end-to-end tests: the real server (`python -m app`) and a real Chromium driven by Playwright.

Settings (environment):
  EDGE_CHAT_MODELS    models folder (default: <repo>/models)
  EDGE_CHAT_MODEL     model id to chat with (default: smollm2-135m)
  EDGE_CHAT_CHROMIUM  Chromium binary (default: /usr/bin/chromium; `playwright install` is not needed)
  EDGE_CHAT_SCREENSHOTS=1  write the docs' screenshots (docs/*.png) instead of into the test's temporary folder

The page's own files must be vendored first: `cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts
&& npm run vendor`. Tests that need a model skip when it has not been exported.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from edge_contracts import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]
# The reference replies come from model_prep (tests may import it; app/ and web/ never do).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
WEB_DIR = REPO / "web"
# Recorded before any page script runs (init scripts are not subject to the page's CSP).
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def screenshot_path(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`screenshot_path("screenshot.png")`: docs/<name> with EDGE_CHAT_SCREENSHOTS=1, else a temporary file, so a
    test run leaves the checkout as it found it."""
    folder = REPO / "docs" if os.environ.get("EDGE_CHAT_SCREENSHOTS") == "1" else tmp_path_factory.mktemp("screenshots")

    def path(name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return Path(os.environ.get("EDGE_CHAT_MODELS", REPO / "models")).resolve()


@pytest.fixture(scope="session")
def model_id() -> str:
    return os.environ.get("EDGE_CHAT_MODEL", DEFAULT_MODEL)


@pytest.fixture(scope="session")
def model_dir(models_dir: Path, model_id: str) -> Path:
    folder = models_dir / model_id
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"model {model_id} is not exported in {models_dir}: run `python -m model_prep export {model_id}`")
    return folder


@pytest.fixture(scope="session")
def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("EDGE_CHAT_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).is_file():
        pytest.skip(f"no Chromium at {path}: set EDGE_CHAT_CHROMIUM")
    return path


@contextmanager
def serve_app(models_dir: Path, log_dir: Path, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """`python -m app` over `models_dir` on a free port; yields its base URL once /api/models answers."""
    if not (WEB_DIR / "vendor" / "transformers.min.js").is_file():
        pytest.skip(
            "web/vendor is empty: cd web && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts && npm run vendor"
        )
    port = _free_port()
    log_path = log_dir / "server.log"
    cmd = [sys.executable, "-m", "app", "--models", str(models_dir), "--web", str(WEB_DIR), "--port", str(port)]
    cmd += ["--state", str(log_dir / "state"), *extra_args]
    cmd += ["--log-level", "warning"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{base_url}/api/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within 30 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(models_dir, tmp_path_factory.mktemp("server")) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def qwen3_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding tiny-qwen3 (random-weight Qwen3 built by the real pipeline), once per session.
    EDGE_CHAT_QWEN3_MODELS=<folder> reuses a folder that already holds it."""
    given = os.environ.get("EDGE_CHAT_QWEN3_MODELS")
    if given:
        return Path(given).resolve()
    from model_prep.pipeline import run_recipe
    from model_prep.recipes import get_recipe

    models = tmp_path_factory.mktemp("qwen3-models")
    run_recipe(get_recipe("tiny-qwen3"), models)
    return models


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright, chromium_path: str, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """One Chromium per test module; a module adds flags with a module-level CHROMIUM_ARGS list."""
    extra = list(getattr(request.module, "CHROMIUM_ARGS", []))
    browser = playwright_driver.chromium.launch(executable_path=chromium_path, args=["--disable-quic", *extra])
    yield browser
    browser.close()


class ChatPage:
    """The chat page plus everything it did: requests, console messages, CSP violations, page errors."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.requests: list[str] = []
        self.console: list[ConsoleMessage] = []
        self.page_errors: list[str] = []
        page.add_init_script(CSP_RECORDER)
        page.on("request", lambda r: self.requests.append(r.url))
        # Context-level console events include the model worker's messages.
        page.context.on("console", lambda m: self.console.append(m))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    # Playwright's string predicates are eval'd, which the page's CSP forbids: always pass functions.
    def wait_for(self, predicate: str, timeout_s: float, arg: Any = None) -> None:
        self.page.wait_for_function(predicate, arg=arg, timeout=timeout_s * 1000, polling=100)

    def open(self, **query: str | int) -> None:
        self.page.goto(f"{self.base_url}/?{urlencode(query)}")
        self.wait_for("() => document.getElementById('device-status').textContent.startsWith('This browser')", 30)

    @property
    def state(self) -> str:
        return self.page.evaluate("() => document.body.dataset.state")

    def error_text(self) -> str:
        return self.page.evaluate(
            "() => { const e = document.getElementById('error'); return e.hidden ? '' : e.textContent; }"
        )

    def load(self, timeout_s: float = 300) -> None:
        self.page.click("#load-button")
        self.wait_for("() => document.body.dataset.state !== 'loading'", timeout_s)
        assert self.state == "ready", f"loading failed: {self.error_text()}\n{self.console_problems()}"

    def send(self, text: str) -> None:
        self.page.fill("#prompt", text)
        self.page.click("#send-button")

    def wait_reply(self, timeout_s: float = 120) -> dict[str, Any]:
        self.wait_for("() => document.body.dataset.state !== 'generating'", timeout_s)
        assert self.state == "ready", f"generation failed: {self.error_text()}\n{self.console_problems()}"
        reply = self.last_reply()
        assert reply["done"] == "true"
        return reply

    def ask(self, text: str, timeout_s: float = 120) -> dict[str, Any]:
        self.send(text)
        return self.wait_reply(timeout_s)

    def last_reply(self) -> dict[str, Any]:
        return self.page.evaluate(
            """() => {
              const node = [...document.querySelectorAll('[data-role="assistant"]')].at(-1);
              return node ? {...node.dataset, text: node.querySelector('.body').textContent} : null;
            }"""
        )

    def metrics(self) -> dict[str, Any]:
        return json.loads(self.page.get_attribute("#metrics", "data-metrics") or "{}")

    def context(self) -> dict[str, Any]:
        return json.loads(self.page.get_attribute("#metrics", "data-context") or "{}")

    def set_max_new_tokens(self, n: int) -> None:
        self.page.fill("#max-new-tokens", str(n))

    def new_chat(self) -> None:
        self.page.click("#new-chat-button")

    def text_inputs(self) -> dict[str, Any]:
        """The last text turn's {prompt_ids, new_ids} (the page must be opened with expose_inputs=1)."""
        x = self.page.evaluate("() => window.__edgeChatTextInputs ?? null")
        assert x is not None, "the worker reported no token ids (is ?expose_inputs=1 set?)"
        return x

    def console_problems(self) -> str:
        """Console errors and warnings so far (page and worker), one per line: for failure messages."""
        return "\n".join(f"[{m.type}] {m.text}" for m in self.console if m.type in ("error", "warning"))

    def csp_violations(self) -> list[str]:
        recorded = self.page.evaluate("() => window.__cspViolations ?? []")
        logged = [m.text for m in self.console if "Content Security Policy" in m.text]
        return [*recorded, *logged]

    def foreign_requests(self) -> list[str]:
        """Every recorded request whose origin is not the server's (blob: URLs carry their creator's origin)."""
        origin = urlsplit(self.base_url)
        foreign = []
        for url in self.requests:
            inner = url[len("blob:") :] if url.startswith("blob:") else url
            if inner.startswith("data:"):
                continue  # inline, no network
            parts = urlsplit(inner)
            if (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
                foreign.append(url)
        return foreign


def strip_eos(ids: list[int], eos_ids: set[int]) -> list[int]:
    """Generated ids without the final EOS (Transformers.js keeps it; model_prep.verify.onnx_runner.greedy does not)."""
    return ids[:-1] if ids and ids[-1] in eos_ids else ids


@pytest.fixture(scope="module")
def new_chat_page(browser: Browser, server: str) -> Iterator[Any]:
    """Factory: a fresh browser context + ChatPage (viewport as given); all are closed with the module."""
    contexts = []

    def make(viewport: dict[str, int] | None = None) -> ChatPage:
        context = browser.new_context(viewport=viewport or {"width": 1000, "height": 860})
        contexts.append(context)
        return ChatPage(context.new_page(), server)

    yield make
    for context in contexts:
        context.close()
