"""The contracts Python and the browser share, written once per language: here and in web/src/contracts.js.

A neutral top-level module because both app/ and model_prep/ need it and neither may import the other; it imports
nothing of the project. tests/unit/test_contracts.py runs the JS module in Node and checks that the two agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# The model the page selects first, the pipeline builds offline, and the tests and the benchmark use.
DEFAULT_MODEL = "smollm2-135m"

# One Cache Storage cache per model revision: MODEL_CACHE_PREFIX + "<id>-<revision>" (web/src/cache.js).
MODEL_CACHE_PREFIX = "edge-chat-model-"

REVISION_HEX_DIGITS = 12

# The runtimes a dtype can run on (the manifest's dtypes[d].runtime, absent for ONNX; the metrics' `runtime`):
# ONNX Runtime Web (Transformers.js) for ONNX graphs, llama.cpp (wllama) for a GGUF.
ONNX_RUNTIME = "onnxruntime-web"
LLAMA_CPP = "llama.cpp"
RUNTIMES = (ONNX_RUNTIME, LLAMA_CPP)
# llama.cpp's KV cache type (K and V; a quantized V needs flash attention) where a GGUF's attention heads split into
# its blocks (model_prep/verify/gguf.kv_cache_type; else llama.cpp's f16). The manifest's dtypes[d].kv_cache tells the
# browser, and the Python references and verification run the same. q8_0 rather than f16: WASM has no f16 conversion
# instruction, so at long contexts reading an f16 cache dominated decode; q8_0 is also half the memory.
LLAMA_CPP_KV_CACHE = "q8_0"
# The tensor types the pipeline's GGUF writer makes (model_prep/export/gguf.py); a GGUF dtype is "gguf-<type>".
GGUF_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q6_k", "f16", "f32")

# The one metrics schema of every generation (docs/architecture.md): the UI, the tests and the benchmark.
METRIC_NUMBERS = (
    "load_s",
    "ttft_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "prompt_tokens",
    "new_tokens",
)
METRIC_TEXTS = ("device", "dtype", "runtime", "model", "revision")
METRICS = METRIC_NUMBERS + METRIC_TEXTS
# What a benchmark run adds per row, beyond the metrics (posted by /bench, stored by app/bench_results.py).
BENCH_NUMBERS = ("warm_load_s", "turn2_ttft_s", "turn2_ttft_no_reuse_s", "peak_memory_bytes", "threads")
BENCH_TEXTS = ("prompt", "error")


def revision_of(files: Iterable[tuple[str, str]]) -> str:
    """The first 12 hex digits of sha256 over the sorted `path\\0sha256\\n` lines of a manifest's (path, sha256)s.

    Sorted by code point (= UTF-8 byte order), so the order the files come in does not matter.
    """
    lines = sorted(f"{path}\0{sha256}\n" for path, sha256 in files)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()[:REVISION_HEX_DIGITS]


def model_cache_name(model_id: str, revision: str) -> str:
    return f"{MODEL_CACHE_PREFIX}{model_id}-{revision}"
