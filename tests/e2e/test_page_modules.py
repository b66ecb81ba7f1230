"""The page's pure modules, run in the real page: device choice (device.js) and the markdown sanitizer
(markdown.js). No model is loaded, so these run even before an export."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e

FULL = {
    "dtypes": {"fp32": 652_000_000, "q4": 198_000_000, "q4f16": 133_000_000},
    "devices": {"webgpu-f16": "q4f16", "webgpu": "q4", "wasm": "fp32"},
}
GPU_F16 = {"webgpu": True, "f16": True, "adapter": {"vendor": "acme", "architecture": "rdna3"}}
SWIFTSHADER = {"vendor": "google", "architecture": "swiftshader", "isFallbackAdapter": True}
GPU = {"webgpu": True, "f16": False, "adapter": SWIFTSHADER}
NO_GPU = {"webgpu": False, "f16": False, "error": "navigator.gpu is missing"}


@pytest.fixture(scope="module")
def chat(new_chat_page: Any) -> Any:
    page = new_chat_page()
    page.open()
    return page


def choose(chat: Any, caps: dict, manifest: dict, forced: dict | None = None) -> dict[str, Any]:
    return chat.page.evaluate(
        """async ([caps, manifest, forced]) => {
          const { chooseDevice } = await import('/static/src/device.js');
          try {
            return chooseDevice(caps, manifest, forced ?? undefined);
          } catch (err) {
            return { error: err.code, message: err.message, name: err.name };
          }
        }""",
        [caps, manifest, forced],
    )


def test_webgpu_with_f16_picks_the_f16_variant(chat: Any) -> None:
    choice = choose(chat, GPU_F16, FULL)
    assert (choice["device"], choice["dtype"]) == ("webgpu", "q4f16")
    assert "shader-f16" in choice["reason"] and "q4f16" in choice["reason"]


def test_webgpu_without_f16_picks_q4(chat: Any) -> None:
    choice = choose(chat, GPU, FULL)
    assert (choice["device"], choice["dtype"]) == ("webgpu", "q4")
    assert "lacks shader-f16" in choice["reason"]
    assert "swiftshader" in choice["reason"] and "fallback" in choice["reason"]


def test_no_webgpu_picks_wasm(chat: Any) -> None:
    choice = choose(chat, NO_GPU, FULL)
    assert (choice["device"], choice["dtype"]) == ("wasm", "fp32")
    assert "WebGPU is not available" in choice["reason"] and "navigator.gpu is missing" in choice["reason"]


def test_missing_capabilities_mean_wasm(chat: Any) -> None:
    assert choose(chat, None, FULL)["device"] == "wasm"


@pytest.mark.parametrize(
    ("caps", "manifest", "expected"),
    [
        # no webgpu-f16 entry: an f16 GPU uses the plain webgpu variant
        (GPU_F16, {"dtypes": FULL["dtypes"], "devices": {"webgpu": "q4", "wasm": "fp32"}}, ("webgpu", "q4")),
        # no webgpu entry, GPU without f16: never an fp16 graph, the best non-f16 dtype instead
        (
            GPU,
            {"dtypes": {"q4f16": 1, "fp32": 1}, "devices": {"webgpu-f16": "q4f16", "wasm": "fp32"}},
            ("webgpu", "fp32"),
        ),
        # a manifest that maps the no-f16 class to an f16 dtype is not trusted blindly
        (GPU, {"dtypes": {"q4f16": 1, "q4": 1}, "devices": {"webgpu": "q4f16"}}, ("webgpu", "q4")),
        # the mapped dtype is not among the manifest's dtypes
        (GPU_F16, {"dtypes": {"q4": 1, "fp32": 1}, "devices": {"webgpu-f16": "q4f16"}}, ("webgpu", "q4")),
        # no devices map at all
        (NO_GPU, {"dtypes": {"q8": 1, "q4": 1}}, ("wasm", "q8")),
        (GPU_F16, {"dtypes": {"fp32": 1, "q4f16": 1}}, ("webgpu", "q4f16")),
    ],
)
def test_missing_manifest_entries_fall_back(chat: Any, caps: dict, manifest: dict, expected: tuple) -> None:
    choice = choose(chat, caps, manifest)
    assert (choice.get("device"), choice.get("dtype")) == expected, choice
    assert "manifest" in choice["reason"]


def test_no_usable_variant_is_a_typed_error(chat: Any) -> None:
    assert choose(chat, NO_GPU, {"dtypes": {}, "devices": {}})["error"] == "no-variant"
    assert choose(chat, GPU, {"dtypes": {"q4f16": 1}, "devices": {"webgpu": "q4f16"}})["error"] == "no-variant"


def test_forced_device_and_dtype(chat: Any) -> None:
    choice = choose(chat, GPU_F16, FULL, {"device": "wasm"})
    assert (choice["device"], choice["dtype"]) == ("wasm", "fp32")
    assert "forced" in choice["reason"]
    choice = choose(chat, GPU_F16, FULL, {"device": "webgpu", "dtype": "q4"})
    assert (choice["device"], choice["dtype"]) == ("webgpu", "q4")
    assert choose(chat, NO_GPU, FULL, {"device": "webgpu"})["error"] == "no-webgpu"
    assert choose(chat, GPU, FULL, {"dtype": "q4f16"})["error"] == "no-f16"
    assert choose(chat, NO_GPU, FULL, {"dtype": "q8"})["error"] == "no-variant"
    assert choose(chat, NO_GPU, FULL, {"device": "cuda"})["error"] == "no-variant"


WITH_GGUF = {
    "dtypes": {**FULL["dtypes"], "gguf-q4_1": 98_000_000},
    "devices": {"webgpu-f16": "q4f16", "webgpu": "q4", "wasm": "gguf-q4_1"},
}


def test_wasm_runs_the_gguf_on_llama_cpp(chat: Any) -> None:
    choice = choose(chat, NO_GPU, WITH_GGUF)
    assert (choice["device"], choice["dtype"], choice["runtime"]) == ("wasm", "gguf-q4_1", "llama.cpp")
    assert "llama.cpp" in choice["reason"] and "wllama" in choice["reason"]
    # GPUs keep the ONNX graphs, and their reason names ONNX Runtime Web
    choice = choose(chat, GPU_F16, WITH_GGUF)
    assert (choice["device"], choice["dtype"], choice["runtime"]) == ("webgpu", "q4f16", "onnxruntime-web")
    assert "llama.cpp" not in choice["reason"]
    # ?dtype=fp32 on the CPU: the ONNX graph on ONNX Runtime Web (what the benchmark compares)
    choice = choose(chat, NO_GPU, WITH_GGUF, {"dtype": "fp32"})
    assert (choice["device"], choice["runtime"]) == ("wasm", "onnxruntime-web")


def test_a_forced_gguf_runs_on_the_cpu(chat: Any) -> None:
    choice = choose(chat, GPU_F16, WITH_GGUF, {"dtype": "gguf-q4_1"})
    assert (choice["device"], choice["dtype"], choice["runtime"]) == ("wasm", "gguf-q4_1", "llama.cpp")
    assert choose(chat, GPU_F16, WITH_GGUF, {"device": "webgpu", "dtype": "gguf-q4_1"})["error"] == "no-variant"
    # a manifest entry may name its runtime instead of the gguf- prefix
    named = {"dtypes": {"cpu4": {"bytes": 1, "runtime": "llama.cpp"}}, "devices": {"wasm": "cpu4"}}
    assert choose(chat, NO_GPU, named)["runtime"] == "llama.cpp"


def test_raw_errors_map_to_typed_messages(chat: Any) -> None:
    result = chat.page.evaluate(
        """async () => {
          const { describeError, EdgeChatError } = await import('/static/src/device.js');
          const quota = new Error('The quota has been exceeded.');
          quota.name = 'QuotaExceededError';
          const cases = {
            quota,
            f16: new Error('The device (webgpu) does not support fp16.'),
            lost: new Error('WebGPU device lost: destroyed'),
            oom: new RangeError('Array buffer allocation failed'),
            oom2: new Error('failed to allocate a buffer of size 123'),
            nogpu: new Error('no available backend found. ERR: [webgpu] WebGPU is not supported'),
            missing: new Error('Could not locate file: "/models/x/onnx/model.onnx".'),
            typed: new EdgeChatError('device-lost'),
            other: new Error('strange things'),
          };
          return Object.fromEntries(Object.entries(cases).map(([k, e]) => [k, describeError(e)]));
        }"""
    )
    codes = {key: value["code"] for key, value in result.items()}
    assert codes == {
        "quota": "quota-exceeded",
        "f16": "no-f16",
        "lost": "device-lost",
        "oom": "out-of-memory",
        "oom2": "out-of-memory",
        "nogpu": "no-webgpu",
        "missing": "model-missing",
        "typed": "device-lost",
        "other": "unknown",
    }
    assert "site data" in result["quota"]["message"]
    assert "strange things" in result["other"]["message"]
    assert all(value["message"] for value in result.values())


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


def test_sampling_options_map_to_llama_cpp(chat: Any) -> None:
    mapped = chat.page.evaluate(
        """async () => {
          const { samplingParams } = await import('/static/src/runtime-wllama.js');
          return [
            samplingParams({}),
            samplingParams({ temperature: 0, top_p: 0.9, repetition_penalty: 1 }),
            samplingParams({ temperature: 0.7, top_p: 0.9, top_k: 40, min_p: 0.05, repetition_penalty: 1.1, seed: 7 }),
          ];
        }"""
    )
    assert mapped[0] == {"temperature": 0}  # absent: greedy, as the exactness tests need
    assert mapped[1] == {"temperature": 0}  # greedy ignores the truncation settings
    assert mapped[2] == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
    }
