"""The app in Chromium: one fresh browser profile per model × device × dtype × threads, driven through /bench.

The page (web/bench/bench.js) does the measuring with the chat's own worker, so this file only launches
Chromium, hands the page the prompt set, waits, and turns whatever went wrong into a categorised row:
out-of-memory (renderer crash / OOM), wasm-abort, timeout, download, error. A failure never ends the run.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import BrowserContext, Playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from .prompts import NEW_TOKENS

# ForceEagerMeasureMemory: performance.measureUserAgentSpecificMemory() answers at once instead of at the
# next garbage collection (up to ~20 s later), so the page can sample memory after each stage.
BASE_ARGS = ["--disable-quic", "--enable-blink-features=ForceEagerMeasureMemory"]
FINISHED = "() => ['done', 'failed'].includes(document.body.dataset.state)"
GATED = "() => typeof window.__benchStart === 'function'"
SETTLE_S = 1.0  # after the page is up, before the idle browser's private memory is taken as the baseline


@dataclass(frozen=True)
class Target:
    model: str
    device: str
    dtype: str
    threads: int


class MemorySampler:
    """Samples a Chromium process tree (browser + renderers + GPU process): the peak of its resident memory, and
    its private memory (USS: pages no other process maps, what freeing the tab gives back) over time."""

    def __init__(self, profile_dir: str, interval_s: float = 0.25) -> None:
        self.profile_dir = profile_dir
        self.interval_s = interval_s
        self.peak = 0
        self.private: list[tuple[float, int]] = []  # (time.time(), bytes)
        self._root_proc = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _root(self):
        import psutil

        for proc in psutil.process_iter(["cmdline"]):
            if any(self.profile_dir in part for part in proc.info["cmdline"] or []):
                parent = proc.parent()
                if parent is None or not any(self.profile_dir in p for p in (parent.cmdline() or [])):
                    return proc
        return None

    def sample(self) -> int | None:
        """Takes one sample now; returns the tree's private bytes (None before Chromium runs or without psutil)."""
        try:
            import psutil
        except ImportError:
            return None
        try:
            root = self._root_proc
            if root is None or not root.is_running():
                root = self._root_proc = self._root()
            if root is None:
                return None
            rss = private = 0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                private += info.uss
        except psutil.Error:
            self._root_proc = None
            return None
        self.peak = max(self.peak, rss)
        self.private.append((time.time(), private))
        return private

    def private_peak(self, start_s: float, end_s: float) -> int | None:
        """The largest private-memory sample from `start_s` to one interval past `end_s` (epoch seconds)."""
        inside = self._between(start_s, end_s + self.interval_s)
        return max(inside) if inside else None

    def private_last(self, start_s: float, end_s: float) -> int | None:
        """The last private-memory sample before `end_s`: what the run still holds once the load's transient memory
        (V8's optimizing compile of the runtime's WASM, the load's garbage) is given back, before the page lets go of
        the model."""
        inside = self._between(start_s, end_s)
        return inside[-1] if inside else None

    def _between(self, start_s: float, end_s: float) -> list[int]:
        return [b for t, b in self.private if start_s <= t <= end_s]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


def _failure(base: dict[str, Any], stage: str, category: str, message: str) -> dict[str, Any]:
    return {**base, "prompt": stage, "error": f"{category}: {message}"[:390]}


def _open_and_wait(
    playwright: Playwright,
    chromium: str,
    url: str,
    prompts: dict[str, str],
    base: dict[str, Any],
    timeout_s: float,
    extra_args: list[str],
    revisit_url: str | None = None,
) -> list[dict[str, Any]]:
    """Opens `url` in a fresh profile, takes the idle browser's private memory, starts the page's run, waits for
    body[data-state] done|failed, returns body[data-results], each row with the private memory its cold run added
    at its peak (model_memory_bytes: sampled, so a spike shorter than the interval can slip past) and at its end
    (model_memory_settled_bytes).

    With `revisit_url`, a returning visit follows: the page is closed and `revisit_url` opens in a new page of the
    same profile (the browser's caches and the model cache kept, nothing of the first page's memory), its run
    measured the same way: revisit_load_s, revisit_memory_bytes, revisit_memory_settled_bytes,
    revisit_hashed_bytes (what its load read through sha256)."""
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edge-chat-bench-") as profile, MemorySampler(profile) as memory:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, args=[*BASE_ARGS, *extra_args], viewport={"width": 1000, "height": 800}
        )
        try:
            stage = "run"
            rows, baseline = _run_page(context, url, prompts, memory, timeout_s, crashed)
            revisit: list[dict[str, Any]] = []
            if revisit_url and rows and not any("error" in row for row in rows):
                stage = "revisit"
                time.sleep(SETTLE_S)  # the first page is closed: its worker and memory go
                revisit, revisit_baseline = _run_page(context, revisit_url, prompts, memory, timeout_s, crashed)
        except PlaywrightTimeout:
            return [_failure(base, stage, "timeout", f"no result within {timeout_s:.0f} s")]
        except PlaywrightError as err:
            if crashed or "crash" in str(err).lower():
                # A renderer that dies mid-run is, for a model benchmark, nearly always memory.
                return [_failure(base, stage, "out-of-memory", f"the renderer crashed ({str(err)[:120]})")]
            return [_failure(base, stage, "error", str(err)[:300])]
        finally:
            try:
                context.close()
            except PlaywrightError:
                pass
    for row in rows:
        row.update({k: v for k, v in base.items() if k not in row})
        if memory.peak:
            row["peak_rss_bytes"] = memory.peak
        row.update(_memory_added(memory, row.pop("memory_window_ms", None), baseline, "model_memory"))
    if revisit and "error" in revisit[0]:
        rows.append({**base, "prompt": "revisit", "error": revisit[0]["error"]})
    elif revisit:
        again = revisit[0]
        figures = {
            "revisit_load_s": again.get("load_s"),
            "revisit_hashed_bytes": again.get("load_hashed_bytes"),
            **_memory_added(memory, again.get("memory_window_ms"), revisit_baseline, "revisit_memory"),
        }
        for row in rows:
            row.update(figures)
    return rows


def _run_page(
    context: BrowserContext,
    url: str,
    prompts: dict[str, str],
    memory: MemorySampler,
    timeout_s: float,
    crashed: list[str],
) -> tuple[list[dict[str, Any]], int | None]:
    """One run of a gated bench page in a new page of `context`: its rows, and the private memory the browser held
    idle, the page up, just before the run started. The page is closed once its rows are read; a renderer crash is
    noted in `crashed`."""
    page = context.new_page()
    page.on("crash", lambda _page: crashed.append("renderer crashed"))
    page.add_init_script(f"window.__benchConfig = {json.dumps({'prompts': prompts, 'gated': True})};")
    page.goto(url)
    page.wait_for_function(GATED, timeout=60_000, polling=100)
    time.sleep(SETTLE_S)
    baseline = memory.sample()
    page.evaluate("() => { window.__benchStart(); }")
    page.wait_for_function(FINISHED, timeout=timeout_s * 1000, polling=500)
    rows = json.loads(page.evaluate("() => document.body.dataset.results || '[]'"))
    page.close()
    return rows, baseline


def _memory_added(
    memory: MemorySampler, window_ms: list[float] | None, baseline: int | None, prefix: str
) -> dict[str, int]:
    """The private memory a run added over `baseline` in its window: `{prefix}_bytes` at the peak and
    `{prefix}_settled_bytes` at the window's end; nothing when either is unknown."""
    if not window_ms or baseline is None:
        return {}
    start, end = window_ms[0] / 1000, window_ms[1] / 1000
    peak, last = memory.private_peak(start, end), memory.private_last(start, end)
    if peak is None or last is None:
        return {}
    return {f"{prefix}_bytes": peak - baseline, f"{prefix}_settled_bytes": last - baseline}


KV_MODES = ("static", "dynamic")  # WebGPU's KV caches (web/src/runtime-ort.js KV_MODES): both run, side by side


def measure(
    playwright: Playwright,
    chromium: str,
    base_url: str,
    target: Target,
    prompts: dict[str, str],
    new_tokens: int = NEW_TOKENS,
    timeout_s: float = 900,
    session_options: dict | None = None,
    revisit: bool = True,
    kv: str | None = None,
) -> list[dict[str, Any]]:
    """Edge Chat on `target`: rows in the metrics schema (plus warm load, turn 2, memory, and with `revisit` a
    returning visit on the first prompt), one per prompt. On WebGPU each KV cache mode runs (`kv` picks one), its rows
    marked `kv` and carrying `gpu`: the WebGPU calls per decode step (web/src/gpu-counters.js)."""
    if target.device == "webgpu" and kv is None:
        return [
            row
            for mode in KV_MODES
            for row in measure(
                playwright, chromium, base_url, target, prompts, new_tokens, timeout_s, session_options, revisit, mode
            )
        ]
    query = {
        "model": target.model,
        "device": target.device,
        "dtype": target.dtype,
        "threads": target.threads,
        "new_tokens": new_tokens,
        "prompts": ",".join(prompts),
        "post": 0,
        "autorun": 1,  # gated: _open_and_wait starts it
        **({"session_options": json.dumps(session_options)} if session_options else {}),
        **({"kv": kv} if kv else {}),
    }
    base = {"runner": "edge-chat", **target.__dict__, **({"kv": kv} if kv else {})}
    extra = ["--enable-unsafe-webgpu"] if target.device == "webgpu" else []
    start = time.monotonic()
    again = {**query, "prompts": next(iter(prompts)), "warm": 0, "turn2": 0}
    rows = _open_and_wait(
        playwright,
        chromium,
        f"{base_url}/bench?{urlencode(query)}",
        prompts,
        base,
        timeout_s,
        extra,
        f"{base_url}/bench?{urlencode(again)}" if revisit else None,
    )
    for row in rows:
        row["runner"] = "edge-chat"
        row["wall_s"] = round(time.monotonic() - start, 1)
    return rows


def measure_wllama(
    playwright: Playwright,
    chromium: str,
    base_url: str,
    gguf_path: str,
    model: str,
    threads: int,
    prompts: dict[str, str],
    new_tokens: int = NEW_TOKENS,
    timeout_s: float = 900,
    revisit: bool = True,
) -> list[dict[str, Any]]:
    """The peer, wllama, on the GGUF the model was exported from, in the same Chromium, same prompts (and with
    `revisit` a returning visit on the first prompt, from wllama's own cache)."""
    query = {
        "gguf": gguf_path,
        "model": model,
        "threads": threads,
        "new_tokens": new_tokens,
        "prompts": ",".join(prompts),
    }
    base = {"runner": "wllama", "model": model, "device": "wasm", "dtype": "gguf", "threads": threads}
    page = f"{base_url}/static/bench/bench-wllama.html"
    again = {**query, "prompts": next(iter(prompts))}
    revisit_url = f"{page}?{urlencode(again)}" if revisit else None
    return _open_and_wait(playwright, chromium, f"{page}?{urlencode(query)}", prompts, base, timeout_s, [], revisit_url)
