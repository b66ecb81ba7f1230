"""A GGUF against torch, run by a real llama.cpp (llama-cpp-python): the same teacher-forced scorer as the ONNX
variants (the floor is verify/quality.py's), a tokenizer check, and greedy replies for the browser tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_contracts import LLAMA_CPP_KV_CACHE

from ..errors import VerificationFailed
from ..llama_cpp_isa import require_portable_llama_cpp
from .onnx_runner import greedy
from .text import NATURAL_TEXT, Fidelity, Reference, score_teacher_forced


def kv_cache_type(path: Path) -> str:
    """The KV cache type llama.cpp runs `path` with, in the browser (the manifest's kv_cache) and here:
    edge_contracts.LLAMA_CPP_KV_CACHE where every attention head splits into its blocks, else llama.cpp's f16."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    fields = GGUFReader(path).fields
    arch = fields["general.architecture"].contents()
    width = fields[f"{arch}.embedding_length"].contents() // fields[f"{arch}.attention.head_count"].contents()
    heads = [
        fields[f"{arch}.attention.{k}_length"].contents() if f"{arch}.attention.{k}_length" in fields else width
        for k in ("key", "value")
    ]
    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType[LLAMA_CPP_KV_CACHE.upper()]]
    return LLAMA_CPP_KV_CACHE if all(h % block == 0 for h in heads) else "f16"


class LlamaCppSession:
    """reset() / forward(ids) → logits [len(ids), vocab], over llama.cpp's KV cache (the scorer's session API), of
    type `kv_cache` (default: the browser's, kv_cache_type)."""

    def __init__(self, path: Path, n_ctx: int, threads: int | None = None, kv_cache: str | None = None) -> None:
        require_portable_llama_cpp()
        import llama_cpp
        from llama_cpp import Llama

        self.kv_cache = kv_cache or kv_cache_type(path)
        kv_type = getattr(llama_cpp, f"GGML_TYPE_{self.kv_cache.upper()}")
        self.llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(512, n_ctx),
            n_threads=threads or os.cpu_count() or 1,
            logits_all=True,
            flash_attn=True,
            type_k=kv_type,
            type_v=kv_type,
            verbose=False,
        )
        self.n_ctx = n_ctx

    def reset(self) -> None:
        self.llm.reset()

    def forward(self, ids: list[int]) -> np.ndarray:
        start = self.llm.n_tokens
        if start + len(ids) > self.n_ctx:
            raise ValueError(f"{start + len(ids)} tokens exceed the context of {self.n_ctx}")
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[start : start + len(ids)], dtype=np.float32)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def close(self) -> None:
        self.llm.close()


@dataclass
class GgufFidelity(Fidelity):
    tokenizer_agrees: bool = True  # llama.cpp tokenizes the check texts to the same ids as tokenizer.json
    kv_cache: str = "f16"  # the KV cache type it was scored with, the browser's (kv_cache_type)


def context_for(ref: Reference) -> int:
    """The context the longest scored sequence needs (scores are n_ctx × vocab floats: no larger than that)."""
    longest = max(len(s) for s in ref.sequences)
    return -(-longest // 256) * 256


def score_gguf(path: Path, dtype: str, ref: Reference, tokenizer_dir: Path) -> GgufFidelity:
    from transformers import AutoTokenizer

    session = LlamaCppSession(path, context_for(ref))
    try:
        fidelity = score_teacher_forced(session, dtype, ref)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        texts = [NATURAL_TEXT, "Numbers 1234567 and 3.14, émigré café, 日本語, <|im_start|>user\nHi<|im_end|>\n"]
        agrees = all(session.tokenize(t) == tokenizer(t, add_special_tokens=False).input_ids for t in texts)
    finally:
        session.close()
    return GgufFidelity(**vars(fidelity), tokenizer_agrees=agrees, kv_cache=session.kv_cache)


def require_tokenizer(result: GgufFidelity) -> None:
    """llama.cpp must tokenize as tokenizer.json does: the browser sends it text, and llama.cpp tokenizes it."""
    if not result.tokenizer_agrees:
        raise VerificationFailed(
            f"the GGUF ({result.dtype}): llama.cpp tokenizes differently from tokenizer.json (wrong pre-tokenizer or "
            "vocab); nothing was written"
        )


def complete_utf8(data: bytes) -> int:
    """Length of `data` without a multi-byte UTF-8 character cut off at its end (llama.cpp's validate_utf8)."""
    for i in range(1, min(4, len(data)) + 1):
        c = data[-i]
        if (c & 0xE0) == 0xC0 and i < 2 or (c & 0xF0) == 0xE0 and i < 3 or (c & 0xF8) == 0xF0 and i < 4:
            return len(data) - i
    return len(data)


def streamed_text(path: Path, ids: list[int]) -> str:
    """The text llama.cpp's server streams for generated `ids`: their bytes, a character cut off at the end dropped,
    invalid bytes as U+FFFD (what wllama's chat endpoint delivers)."""
    session = LlamaCppSession(path, n_ctx=256, threads=1)
    try:
        data = b"".join(session.llm.detokenize([t]) for t in ids)
    finally:
        session.close()
    return data[: complete_utf8(data)].decode("utf-8", errors="replace")


def greedy_gguf(path: Path, prompt: list[int], max_new_tokens: int, eos_ids: set[int]) -> list[int]:
    """Greedy ids after `prompt` (argmax of each step's logits, EOS not included): the browser's reference."""
    session = LlamaCppSession(path, n_ctx=-(-(len(prompt) + max_new_tokens) // 256) * 256, threads=1)
    try:
        return greedy(session, prompt, max_new_tokens, eos_ids)
    finally:
        session.close()
