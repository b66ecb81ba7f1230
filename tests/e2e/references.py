"""Python onnxruntime references for the browser tests: the ids a page must produce, computed on the very graph
files it loads (tiny-qwen3 and the other tiny text models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def without_int8_activations(graph: Path, out: Path) -> Path:
    """`graph` with every MatMulNBits' accuracy_level at 0: what ORT-web's WASM build computes.

    Native x86 onnxruntime honours accuracy_level 4 (RTN weights) with int8 activations; ORT-web's WASM MatMulNBits
    has no such path and stays in fp32 (tiny-qwen3 q4: browser logits within 6e-6 of native at level 0, 0.12 off at
    level 4), which flips near-tie tokens (q4f16: 339 vs 258, margin 0.01).
    """
    import onnx

    model = onnx.load(graph)
    for node in model.graph.node:
        for a in node.attribute:
            if node.op_type == "MatMulNBits" and a.name == "accuracy_level":
                a.i = 0
    onnx.save(model, out)
    return out


class Native:
    """Python onnxruntime on a variant's graph file (read from the manifest), as that device's ORT-web computes it:
    greedy ids when called, and each chosen token's distance from the greedy choice."""

    def __init__(self, folder: Path, manifest: dict[str, Any], eos: set[int], scratch: Path) -> None:
        self.folder, self.manifest, self.eos, self.scratch = folder, manifest, eos, scratch
        self.sessions: dict[tuple[str, str], Any] = {}

    def session(self, dtype: str, device: str) -> Any:
        from model_prep.verify.onnx_runner import DecoderSession

        if (dtype, device) not in self.sessions:
            [graph] = [f for f in self.manifest["dtypes"][dtype]["files"] if f.endswith(".onnx")]
            path = self.folder / graph
            if device == "wasm":
                path = without_int8_activations(path, self.scratch / f"{device}-{path.name}")
            self.sessions[dtype, device] = DecoderSession(path)
        return self.sessions[dtype, device]

    def __call__(self, dtype: str, device: str, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        from model_prep.verify.onnx_runner import greedy

        return greedy(self.session(dtype, device), prompt_ids, max_new_tokens, self.eos)

    def shortfalls(self, dtype: str, device: str, prompt_ids: list[int], chosen: list[int]) -> list[float]:
        """max(logits) − logits[chosen[k]] at each step k, token by token as the browser ran them (one call a
        token: dynamic int8 activations are quantized per call, so a one-shot prefill would compute otherwise)."""
        session = self.session(dtype, device)
        session.reset()
        logits = session.forward(prompt_ids)[-1]
        gaps = []
        for token in chosen:
            gaps.append(float(logits.max() - logits[token]))
            logits = session.forward([token])[-1]
        return gaps


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
