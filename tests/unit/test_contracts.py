"""Python (edge_contracts.py) and the browser (web/src/contracts.js) agree on every shared contract.

The JS module runs in Node (installed for the web build) on the same sample input; a known-answer vector pins the
revision formula itself, so the two cannot drift together either.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import edge_contracts as contracts
from model_prep import layout

REPO = Path(__file__).resolve().parents[2]
CONTRACTS_JS = REPO / "web" / "src" / "contracts.js"
# Unsorted, with paths whose UTF-16 order differs from their code point order (U+FF21 vs an astral emoji).
SAMPLES = [
    [("onnx/model.onnx", "a" * 64), ("config.json", "b" * 64)],
    [("\U0001f600.json", "c" * 64), ("\uff21.json", "d" * 64), ("onnx/model.onnx_data", "e" * 64)],
    [("tokenizer.json", "0123456789abcdef" * 4)],
]
NODE_SCRIPT = """
const c = await import(process.argv[1]);
const samples = JSON.parse(process.argv[2]);
const revisions = [];
for (const files of samples) revisions.push(await c.revisionOf(files.map(([path, sha256]) => ({path, sha256}))));
console.log(JSON.stringify({
  DEFAULT_MODEL: c.DEFAULT_MODEL,
  MODEL_CACHE_PREFIX: c.MODEL_CACHE_PREFIX,
  REVISION_HEX_DIGITS: c.REVISION_HEX_DIGITS,
  RUNTIMES: c.RUNTIMES,
  METRIC_NUMBERS: c.METRIC_NUMBERS,
  METRIC_TEXTS: c.METRIC_TEXTS,
  METRICS: c.METRICS,
  BENCH_NUMBERS: c.BENCH_NUMBERS,
  BENCH_TEXTS: c.BENCH_TEXTS,
  cache_name: c.modelCacheName("tiny-llm", "0123456789ab"),
  parsed: c.parseModelCacheName(c.modelCacheName("a-b-c", "0123456789ab")),
  not_a_model_cache: c.parseModelCacheName("edge-chat-pages"),
  KV_BUDGET_TOKENS: c.KV_BUDGET_TOKENS,
  context_caps: [512, 4095, 4096, 40960, 0, null].map((n) => c.contextCap(n)),
  revisions,
}));
"""


def test_python_and_js_agree() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: the web build (nox) installs it")
    out = subprocess.run(
        [node, "--input-type=module", "-e", NODE_SCRIPT, CONTRACTS_JS.as_uri(), json.dumps(SAMPLES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    js = json.loads(out.stdout)
    assert js == {
        "DEFAULT_MODEL": contracts.DEFAULT_MODEL,
        "MODEL_CACHE_PREFIX": contracts.MODEL_CACHE_PREFIX,
        "REVISION_HEX_DIGITS": contracts.REVISION_HEX_DIGITS,
        "RUNTIMES": list(contracts.RUNTIMES),
        "METRIC_NUMBERS": list(contracts.METRIC_NUMBERS),
        "METRIC_TEXTS": list(contracts.METRIC_TEXTS),
        "METRICS": list(contracts.METRICS),
        "BENCH_NUMBERS": list(contracts.BENCH_NUMBERS),
        "BENCH_TEXTS": list(contracts.BENCH_TEXTS),
        "cache_name": contracts.model_cache_name("tiny-llm", "0123456789ab"),
        "parsed": {"id": "a-b-c", "revision": "0123456789ab"},
        "not_a_model_cache": None,
        # manifest.json's memory_bytes counts KV cache for KV_CONTEXT_FOR_MEMORY tokens; the page's default context
        # limit (and llama.cpp's allocation) stops there, so the memory warning stays true.
        "KV_BUDGET_TOKENS": layout.KV_CONTEXT_FOR_MEMORY,
        "context_caps": [512, 4095, *[layout.KV_CONTEXT_FOR_MEMORY] * 4],
        "revisions": [contracts.revision_of(files) for files in SAMPLES],
    }


def test_revision_known_vector() -> None:
    # sha256("config.json\0bbb…\nonnx/model.onnx\0aaa…\n")[:12]; input order must not matter.
    assert contracts.revision_of(SAMPLES[0]) == "fb31606f3bca"
    assert contracts.revision_of(reversed(SAMPLES[0])) == "fb31606f3bca"


MANIFEST_FIELDS_SCRIPT = """
const { MANIFEST_FIELDS } = await import(process.argv[1]);
console.log(JSON.stringify(Object.fromEntries(Object.entries(MANIFEST_FIELDS).map(([k, v]) => [k, Object.keys(v)]))));
"""


def test_the_manifest_record_and_its_jsdoc_typedef_name_the_same_fields() -> None:
    """contracts.js's MANIFEST_FIELDS lists each typedef's keys (tsc fails `nox -s lint` where they differ); here they
    must equal edge_contracts.Manifest's dataclass fields, record by record."""
    from dataclasses import fields

    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: the web build (nox) installs it")
    out = subprocess.run(
        [node, "--input-type=module", "-e", MANIFEST_FIELDS_SCRIPT, CONTRACTS_JS.as_uri()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    js = {record: sorted(names) for record, names in json.loads(out.stdout).items()}
    records = {
        "manifest": contracts.Manifest,
        "capabilities": contracts.Capabilities,
        "dtype": contracts.DtypeEntry,
        "file": contracts.ManifestFile,
    }
    assert js == {name: sorted(f.name for f in fields(record)) for name, record in records.items()}
