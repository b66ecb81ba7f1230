"""The page's modules that need a real browser: the markdown sanitizer (markdown.js, DOMPurify on the page's DOM),
the transcript's thinking block, the model cache (Cache Storage: streaming, no cache for a model only shown) and the
worker's thread count (one real load of the default model; the others load nothing). The pure modules (device.js,
errors.js, protocol.js, sampling.js, settings.js, thinking.js, manifest.js) are tested in Node: web/test/*.test.js
(`nox -s lint`, `nox -s tests`)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_contracts import MODEL_CACHE_PREFIX

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chat(new_chat_page: Any) -> Any:
    page = new_chat_page()
    page.open()
    return page


def test_thinking_renders_through_the_sanitizer(chat: Any) -> None:
    result = chat.page.evaluate(
        """async (reply) => {
          window.__xss = 0;
          const { paintReply } = await import('/static/src/transcript.js');
          const node = document.createElement('article');
          node.innerHTML = '<details class="thinking"><summary></summary><div class="thinking-body"></div></details>'
            + '<div class="body"></div>';
          document.body.append(node);
          paintReply(node, reply);
          await new Promise((r) => setTimeout(r, 200));
          const out = {
            xss: window.__xss,
            thinking: node.querySelector('.thinking-body').innerHTML,
            body: node.querySelector('.body').innerHTML,
            hidden: node.querySelector('.thinking').hidden,
          };
          node.remove();
          return out;
        }""",
        '<think>\n<img src=x onerror="window.__xss=1">**plan**\n</think>\n\n<script>window.__xss=2</script>ok',
    )
    assert result["xss"] == 0 and result["hidden"] is False
    assert "<strong>plan</strong>" in result["thinking"] and "<img" not in result["thinking"]
    assert "&lt;script&gt;" in result["body"] and "plan" not in result["body"]


MALICIOUS = [
    '<img src=x onerror="window.__xss = 1">',
    "<script>window.__xss = 2</script>",
    "[click me](javascript:window.__xss=3)",
    '<a href="javascript:window.__xss=4">raw link</a>',
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '<svg onload="window.__xss = 5"><circle r="1"/></svg>',
    '<iframe src="https://example.com/"></iframe>',
    "![tracker](https://tracker.example/pixel.png)",
    '<p style="color:red" onclick="window.__xss = 6">styled</p>',
    '<details open ontoggle="window.__xss = 7">x</details>',
]


def test_markdown_output_is_sanitized(chat: Any) -> None:
    result = chat.page.evaluate(
        """async (inputs) => {
          window.__xss = 0;
          const { setMarkdown } = await import('/static/src/markdown.js');
          const host = document.createElement('div');
          document.body.append(host);
          const html = inputs.map((text) => {
            const div = document.createElement('div');
            host.append(div);
            setMarkdown(div, text);
            return div.innerHTML;
          });
          // Links that lost their href must not run anything when clicked.
          host.querySelectorAll('a:not([href])').forEach((a) => a.click());
          await new Promise((resolve) => setTimeout(resolve, 300));
          const elements = [...host.querySelectorAll('*')];
          const result = {
            xss: window.__xss,
            html,
            tags: [...new Set(elements.map((e) => e.localName))],
            attributes: elements.flatMap((e) => [...e.attributes].map((a) => `${a.name}=${a.value}`)),
            links: [...host.querySelectorAll('a')].map((a) => ({ href: a.getAttribute('href'), rel: a.rel })),
          };
          host.remove();
          return result;
        }""",
        MALICIOUS,
    )
    assert result["xss"] == 0
    assert not {"script", "img", "svg", "iframe", "details", "style"} & set(result["tags"]), result["tags"]
    for attribute in result["attributes"]:
        name, _, value = attribute.partition("=")
        assert not name.startswith("on"), attribute
        assert name != "style", attribute
        assert not value.strip().lower().startswith(("javascript:", "data:")), attribute
    assert result["links"], "the markdown links should still render as (inert) links"
    for link in result["links"]:
        assert link["href"] is None
        assert "noopener" in link["rel"]
    # Raw HTML is shown as text, not dropped silently.
    assert "&lt;script&gt;" in result["html"][1]
    # No CSP report: the sanitizer, not the CSP, stopped every attempt.
    assert chat.csp_violations() == []
    assert chat.foreign_requests() == []


def test_markdown_keeps_ordinary_formatting(chat: Any) -> None:
    result = chat.page.evaluate(
        """async (text) => {
          const { renderMarkdown } = await import('/static/src/markdown.js');
          const div = document.createElement('div');
          div.append(renderMarkdown(text));
          const a = div.querySelector('a');
          return { html: div.innerHTML, href: a.getAttribute('href'), rel: a.rel, target: a.target };
        }""",
        "# Title\n\n**bold** and `code`\n\n- one\n- two\n\n```py\nprint(1 < 2)\n```\n\n[docs](https://example.com/a?b=1)",
    )
    for fragment in ("<h1>Title</h1>", "<strong>bold</strong>", "<code>code</code>", "<li>one</li>", "print(1 &lt; 2)"):
        assert fragment in result["html"]
    assert result["href"] == "https://example.com/a?b=1"
    assert set(result["rel"].split()) >= {"noopener", "noreferrer"}
    assert result["target"] == "_blank"


def test_page_fits_a_narrow_phone(new_chat_page: Any) -> None:
    chat = new_chat_page(viewport={"width": 360, "height": 740})
    chat.open()
    overflow = chat.page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert chat.page.is_visible("#load-button") and chat.page.is_visible("#prompt")
    assert chat.csp_violations() == []
    assert chat.page_errors == []


def test_showing_a_model_creates_no_cache(new_chat_page: Any, model_id: str) -> None:
    # The picker reads a model's verification.json and what of it is cached: reading must not create its model cache
    # (an empty one per model shown, which the storage panel then lists). A fresh profile, so nothing was there.
    chat = new_chat_page()
    chat.open(model=model_id, device="wasm")
    chat.wait_for("() => document.getElementById('load-button').dataset.download !== undefined", 60)
    assert any(url.endswith("/verification.json") for url in chat.requests), "the card read no verification.json"
    caches = chat.page.evaluate("() => caches.keys()")
    assert [name for name in caches if name.startswith(MODEL_CACHE_PREFIX)] == [], caches


THREADS_JS = """async ([modelId, dtype]) => {
  const { WorkerClient } = await import('/static/src/protocol.js');
  const { fetchManifest, loadRequest, readCatalog } = await import('/static/src/manifest.js');
  const model = readCatalog(document.getElementById('catalog').textContent).find((m) => m.id === modelId);
  const manifest = await fetchManifest(model);
  const worker = new Worker('/static/src/worker.js', { type: 'module' });
  const client = new WorkerClient(worker);
  const load = async (threads) => {
    try {
      const ready = await client.request(loadRequest(model, { device: 'wasm', dtype }, manifest, { threads })).done;
      return { threads: ready.runtime.threads };
    } catch (err) {
      return { code: err.code };
    }
  };
  try {
    return { isolated: crossOriginIsolated, loads: [await load(1), await load(2), await load(undefined)] };
  } finally {
    worker.terminate();
  }
}"""


@pytest.mark.slow
def test_reported_threads_are_the_ones_onnx_runtime_runs(
    new_chat_page: Any, model_id: str, manifest: dict[str, Any]
) -> None:
    # ONNX Runtime Web sizes its WASM thread pool at its first session and never again: a later load that asks for
    # another count is refused (it used to be reported as if it ran), and one that asks for none reports the pool's.
    dtype = next(d for d, entry in manifest["dtypes"].items() if entry.get("runtime", "onnxruntime-web") != "llama.cpp")
    chat = new_chat_page()
    chat.open(model=model_id, device="wasm")
    result = chat.page.evaluate(THREADS_JS, [model_id, dtype])
    assert result["isolated"] is True
    assert result["loads"] == [{"threads": 1}, {"code": "bad-request"}, {"threads": 1}]


def test_a_download_is_held_to_the_caches_pace(chat: Any) -> None:
    """A model file streams into the cache and through sha256 without piling up in memory: the server's bytes
    are read no faster than the cache takes them. (Two branches of a tee() let the hash read the whole file ahead
    of a slower cache, holding everything in between in memory.)"""
    result = chat.page.evaluate(
        """async () => {
          const { ensureModelCached, deleteModelCache, modelCacheName } = await import('/static/src/cache.js');
          const CHUNK = 1 << 20, CHUNKS = 24;
          const body = new Uint8Array(CHUNK * CHUNKS).map((_, i) => i % 251);
          const sha256 = [...new Uint8Array(await crypto.subtle.digest('SHA-256', body))]
            .map((b) => b.toString(16).padStart(2, '0')).join('');
          let served = 0, stored = 0, ahead = 0;
          const realFetch = globalThis.fetch, realPut = Cache.prototype.put;
          globalThis.fetch = async () => new Response(new ReadableStream({
            pull(controller) {
              if (served >= body.length) return controller.close();
              controller.enqueue(body.slice(served, served + CHUNK));
              served += CHUNK;
              ahead = Math.max(ahead, served - stored);
            },
          }, { highWaterMark: 0 }));
          Cache.prototype.put = async function (url, response) {  // a cache slower than the network
            const parts = [];
            const reader = response.body.getReader();
            for (;;) {
              const { done, value } = await reader.read();
              if (done) break;
              parts.push(value);
              stored += value.byteLength;
              await new Promise((r) => setTimeout(r, 5));
            }
            return realPut.call(this, url, new Response(new Blob(parts), { headers: response.headers }));
          };
          try {
            const report = await ensureModelCached({
              id: 'pace-test', revision: '0123456789ab', files: [{ path: 'blob.bin', bytes: body.length, sha256 }],
            });
            return { downloaded: report.downloaded, ahead, total: body.length, chunk: CHUNK };
          } finally {
            globalThis.fetch = realFetch;
            Cache.prototype.put = realPut;
            await deleteModelCache(modelCacheName('pace-test', '0123456789ab'));
          }
        }"""
    )
    assert result["downloaded"] == ["blob.bin"]
    assert result["ahead"] <= 4 * result["chunk"], result  # a few chunks in flight, not the file
