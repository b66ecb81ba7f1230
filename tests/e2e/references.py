"""Python references for the browser tests, computed on the very files a page loads (tiny-qwen3 and the other tiny
text models): onnxruntime for an ONNX dtype, native llama.cpp (llama-cpp-python) for a GGUF dtype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# llama.cpp in WASM (SIMD128) and native llama.cpp (AVX2) on the same GGUF sum in different orders, and both quantize
# activations to 8 bits for their Q4_1/Q8_0 dot products, so a float-level difference can move an activation across a
# rounding step: their logits differ by up to a few tenths (measured: 0.20 on tiny-qwen3's random weights, 0.26 on
# SmolLM2-135M after 28 tokens). A browser token is accepted when it is native's choice given the browser's own
# prefix to within this; a wrong prompt, template or sampler setting misses by whole logits.
LLAMA_CPP_NEAR_TIE = 0.5


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
    """Python onnxruntime on a variant's graph file (read from the manifest), as that device's ORT-web computes it, or
    native llama.cpp on its GGUF: greedy ids when called, and each chosen token's distance from the greedy choice."""

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

    def gguf(self, dtype: str) -> Path | None:
        """The dtype's GGUF file (llama.cpp runs it), or None for an ONNX dtype."""
        files = self.manifest["dtypes"][dtype]["files"]
        return next((self.folder / f for f in files if f.endswith(".gguf")), None)

    def __call__(self, dtype: str, device: str, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        from model_prep.verify.gguf import greedy_gguf
        from model_prep.verify.onnx_runner import greedy

        if gguf := self.gguf(dtype):
            return greedy_gguf(gguf, prompt_ids, max_new_tokens, self.eos)
        return greedy(self.session(dtype, device), prompt_ids, max_new_tokens, self.eos)

    def logits_session(self, dtype: str, device: str) -> Any:
        """reset() / forward(ids) → logits over the dtype's file: onnxruntime's graph or llama.cpp's GGUF (the caller
        closes a llama.cpp session)."""
        from model_prep.verify.gguf import LlamaCppSession

        if gguf := self.gguf(dtype):
            return LlamaCppSession(gguf, n_ctx=1024, threads=1)
        return self.session(dtype, device)

    def check_reply(
        self, dtype: str, device: str, prompt_ids: list[int], max_new: int, x: dict, text: str
    ) -> list[int]:
        """The page's turn (`x`: its exposed ids, `text`: the streamed reply) is the greedy reply of the same file;
        returns the ids the page's runtime generated (EOS left out). ONNX: the ids, token for token, onnxruntime's.
        llama.cpp reports text only: the reply is native llama.cpp's byte for byte as its server streams it (a
        character cut off at the end held back, U+FFFD for invalid bytes), or else each of its tokens is native's
        greedy choice given the browser's prefix to within LLAMA_CPP_NEAR_TIE (the ids are then the browser's,
        recovered from its text)."""
        from model_prep.verify.gguf import LlamaCppSession, streamed_text

        want = self(dtype, device, prompt_ids, max_new)
        if gguf := self.gguf(dtype):
            assert x.get("new_ids_exact") is False  # the ids are the reply tokenized again: not comparable
            want_text = streamed_text(gguf, want)
            if text == want_text:
                return want
            session = LlamaCppSession(gguf, n_ctx=-(-(len(prompt_ids) + max_new) // 256) * 256, threads=1)
            try:
                ids, gaps = aligned_shortfalls(session, prompt_ids, text, max_tokens=max_new)
            finally:
                session.close()
            print(f"\nWASM llama.cpp {text!r} vs native {want_text!r}: shortfalls {[round(g, 3) for g in gaps]}")
            assert max(gaps) <= LLAMA_CPP_NEAR_TIE, f"{dtype}: a browser token is {max(gaps):.3f} below native's choice"
            return ids
        got = [t for t in x["new_ids"] if t not in self.eos]
        assert got == want, f"{dtype} on {device}: browser {got} != onnxruntime {want}"
        return want

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


def cached_ids(prompt_ids: list[int], new_ids: list[int], max_new: int) -> list[int]:
    """The ids either runtime's KV cache covers after a turn that generated `new_ids` (EOS left out): the prompt and
    every token fed back, which is all of them when EOS ended the reply (the EOS itself never is) and all but the
    last when max_new_tokens did. runtime-ort.js keeps prompt + reply minus its last token; llama.cpp's slot the
    same."""
    return prompt_ids + (new_ids if len(new_ids) < max_new else new_ids[:-1])


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# The page's repetition penalty counts the reply's own tokens on ONNX Runtime (web/src/sampling.js penalizedIds), and
# the latest LLAMA_CPP_PENALTY_LAST_N tokens of prompt + reply on llama.cpp (its repeat_last_n: llama.cpp's server
# feeds the prompt to the sampler too, so a window is the nearest it has). Keep in step with sampling.js.
LLAMA_CPP_PENALTY_LAST_N = 64


def penalty_ids(prompt: list[int], reply: list[int], last_n: int | None) -> list[int]:
    """The ids the penalty counts: the reply's (`last_n` None: ONNX Runtime), or the latest `last_n` of prompt +
    reply (llama.cpp)."""
    return list(reply) if last_n is None else (list(prompt) + list(reply))[-last_n:]


def penalised(logits: Any, seen: list[int], penalty: float) -> Any:
    """HF's repetition penalty on one row of logits: every id in `seen` (penalty_ids), a logit above 0 divided by the
    penalty, one below multiplied; in float64 rounded to float32 as Transformers.js's Float32Array does (llama.cpp's
    penalties sampler applies the same rule)."""
    import numpy as np

    scores = logits.astype(np.float32).copy()
    for token in set(seen):
        x = float(scores[token])
        scores[token] = np.float32(x * penalty if x < 0 else x / penalty)
    return scores


def greedy_with_penalty(
    session: Any, prompt_ids: list[int], max_new: int, penalty: float, eos: set[int], last_n: int | None = None
) -> list[int]:
    """Greedy decoding under HF's repetition penalty over penalty_ids(…, last_n), EOS left out. `session`:
    Native.logits_session's (onnxruntime or llama.cpp logits)."""
    import numpy as np

    session.reset()
    logits = session.forward(prompt_ids)[-1]
    out: list[int] = []
    for _ in range(max_new):
        token = int(np.argmax(penalised(logits, penalty_ids(prompt_ids, out, last_n), penalty)))
        if token in eos:
            break
        out.append(token)
        logits = session.forward([token])[-1]
    return out


def shortfalls_with_penalty(
    session: Any, prompt_ids: list[int], chosen: list[int], penalty: float, last_n: int | None = None
) -> list[float]:
    """max − score[chosen[k]] at each step k of `chosen` under HF's repetition penalty (1: none) over
    penalty_ids(…, last_n), given the chosen prefix: how far each of another runtime's tokens is from this runtime's
    penalised greedy choice."""
    session.reset()
    logits = session.forward(prompt_ids)[-1]
    gaps = []
    for k, token in enumerate(chosen):
        scores = penalised(logits, penalty_ids(prompt_ids, chosen[:k], last_n), penalty)
        gaps.append(float(scores.max() - scores[token]))
        logits = session.forward([token])[-1]
    return gaps


def aligned_shortfalls(
    session: Any,
    prompt_ids: list[int],
    text: str,
    penalty: float = 1.0,
    candidates: int = 64,
    max_tokens: int | None = None,
    last_n: int | None = LLAMA_CPP_PENALTY_LAST_N,
) -> tuple[list[int], list[float]]:
    """Follows a reply that llama.cpp reported as text only (no ids): at each step, of this runtime's `candidates` best
    tokens (under HF's repetition penalty over penalty_ids(…, last_n), llama.cpp's window) those whose bytes continue
    the text as llama.cpp's server shows it (a character cut off at the end held back, invalid bytes as U+FFFD), the
    best; returns those ids and each one's shortfall (max − its score). Tokenizing the text again would not do: a
    reply's tokens are not always the text's canonical tokenization, and a different segmentation feeds the model other
    ids. When no candidate continues the text, or `max_tokens` run out before it is covered, the last shortfall is
    infinity. `session` must be a LlamaCppSession (its llm detokenizes)."""
    import numpy as np

    from model_prep.verify.gguf import complete_utf8

    def shown(data: bytes) -> str:
        return data[: complete_utf8(data)].decode("utf-8", errors="replace")

    pieces: dict[int, bytes] = {}
    session.reset()
    logits = session.forward(prompt_ids)[-1]
    data = b""
    ids: list[int] = []
    gaps: list[float] = []
    while shown(data) != text:
        if max_tokens is not None and len(ids) >= max_tokens:
            gaps.append(float("inf"))
            break
        scores = penalised(logits, penalty_ids(prompt_ids, ids, last_n), penalty)
        best = None
        for token in np.argsort(-scores)[:candidates]:
            token = int(token)
            piece = pieces.setdefault(token, session.llm.detokenize([token]))
            if piece and text.startswith(shown(data + piece)):
                best = token
                break
        if best is None:
            gaps.append(float("inf"))
            break
        gaps.append(float(scores.max() - scores[best]))
        ids.append(best)
        data += pieces[best]
        logits = session.forward([best])[-1]
    return ids, gaps
