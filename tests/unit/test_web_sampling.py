"""web/src/sampling.js keeps the tokens HF transformers' warpers keep (Transformers.js 4.3.1 has no working top_p and
no min_p: sampling.js adds them). The JS runs in Node on the same logits; the reference is PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SAMPLING_JS = Path(__file__).resolve().parents[2] / "web" / "src" / "sampling.js"
FILTER_JS = """
const { filterLogits } = await import(process.argv[1]);
const { rows, settings } = JSON.parse(await new Response(process.stdin).text());
console.log(JSON.stringify(rows.map((row) => {
  const data = Float32Array.from(row);
  filterLogits(data, settings);
  return [...data.keys()].filter((i) => data[i] !== -Infinity);
})));
"""


def js_kept(rows: list[list[float]], settings: dict) -> list[list[int]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: the web build (nox) installs it")
    out = subprocess.run(
        [node, "--input-type=module", "-e", FILTER_JS, SAMPLING_JS.as_uri()],
        input=json.dumps({"rows": rows, "settings": settings}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def hf_kept(rows: list[list[float]], top_k: int, top_p: float, min_p: float) -> list[list[int]]:
    """The tokens HF transformers' warpers keep, applied in its order: top_k → top_p → min_p."""
    import torch
    from transformers.generation.logits_process import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = torch.tensor(rows, dtype=torch.float32)
    ids = torch.zeros((len(rows), 1), dtype=torch.long)
    if top_k:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    if min_p:
        scores = MinPLogitsWarper(min_p)(ids, scores)
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in scores]


@pytest.mark.parametrize(
    ("top_k", "top_p", "min_p"),
    [(0, 0.9, 0.0), (20, 0.95, 0.0), (50, 0.8, 0.0), (0, 1.0, 0.05), (20, 0.95, 0.1), (5, 1.0, 0.0), (0, 0.3, 0.0)],
)
def test_top_p_and_min_p_keep_what_hf_transformers_keeps(top_k: int, top_p: float, min_p: float) -> None:
    # Peaked and flat rows alike.
    rng = np.random.default_rng(0)
    rows = [(rng.standard_normal(2000) * scale).astype(np.float32).tolist() for scale in (0.5, 1.0, 3.0, 8.0)]
    got = js_kept(rows, {"top_k": top_k, "top_p": top_p, "min_p": min_p})
    want = hf_kept(rows, top_k, top_p, min_p)
    assert [len(g) for g in got] == [len(w) for w in want]
    assert got == want
