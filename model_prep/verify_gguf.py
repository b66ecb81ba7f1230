"""A GGUF against torch, run by a real llama.cpp (llama-cpp-python): the same teacher-forced scorer as the ONNX
variants, a tokenizer check, greedy replies for the browser tests, and the recipe's fidelity floor.

(Moves to model_prep/verify/gguf.py with the stage folders.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VerificationFailed
from .verify import NATURAL_TEXT, Fidelity, Reference, score_teacher_forced


class LlamaCppSession:
    """reset() / forward(ids) → logits [len(ids), vocab], over llama.cpp's KV cache (the scorer's session API)."""

    def __init__(self, path: Path, n_ctx: int, threads: int | None = None) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(512, n_ctx),
            n_threads=threads or os.cpu_count() or 1,
            logits_all=True,
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
    return GgufFidelity(**vars(fidelity), tokenizer_agrees=agrees)


# Torch's own perplexity on the natural text above vocab / UNTRAINED_FRACTION: the weights predict no better than
# chance (random-weight stand-ins: the tiny-* recipes, bench.prep_memory's Qwen3 shapes). Such a model has no
# fidelity worth gating; its scores are reported, the floor is not enforced.
UNTRAINED_FRACTION = 10


def gate(result: GgufFidelity, reference_perplexity: float, vocab_size: int, min_top1: float, max_ratio: float) -> dict:
    """The recipe's quality gate on a GGUF: raises VerificationFailed below the floor; returns the report entry."""
    trained = reference_perplexity < vocab_size / UNTRAINED_FRACTION
    entry = {
        "min_top1": min_top1,
        "max_perplexity_ratio": max_ratio,
        "perplexity_ratio": result.perplexity / reference_perplexity,
        "enforced": trained,
    }
    if trained:
        check_floor(result, reference_perplexity, min_top1, max_ratio)
    else:
        entry["why_not"] = f"untrained weights: torch's perplexity {reference_perplexity:.0f} of a {vocab_size} vocab"
        if not result.tokenizer_agrees:  # the tokenizer check needs no trained weights: always enforced
            check_floor(result, reference_perplexity, 0.0, float("inf"))
    return entry


def check_floor(result: GgufFidelity, reference_perplexity: float, min_top1: float, max_ratio: float) -> None:
    """The recipe's quality gate: a GGUF below its floor fails the export (nothing is written)."""
    ratio = result.perplexity / reference_perplexity
    problems = []
    if result.top1_agreement < min_top1:
        problems.append(f"top-1 agreement {result.top1_agreement:.1%} < {min_top1:.0%}")
    if ratio > max_ratio:
        limit = f"{max_ratio - 1:+.0%}"
        problems.append(f"perplexity {result.perplexity:.2f} is {ratio - 1:+.1%} against torch's (limit {limit})")
    if not result.tokenizer_agrees:
        problems.append("llama.cpp tokenizes differently from tokenizer.json (wrong pre-tokenizer or vocab)")
    if problems:
        raise VerificationFailed(f"the GGUF ({result.dtype}) is below the recipe's floor: {'; '.join(problems)}")


def shortfalls_gguf(path: Path, prompt: list[int], chosen: list[int]) -> list[float]:
    """max(logits) − logits[token] at each step of `chosen`, evaluated as llama.cpp's server does (the prompt in one
    batch, then one token at a time): how far each of another runtime's tokens is from native llama.cpp's choice."""
    session = LlamaCppSession(path, n_ctx=-(-(len(prompt) + len(chosen)) // 256) * 256, threads=1)
    try:
        logits = session.forward(prompt)[-1]
        gaps = []
        for token in chosen:
            gaps.append(float(logits.max() - logits[token]))
            logits = session.forward([token])[-1]
        return gaps
    finally:
        session.close()


def greedy_gguf(path: Path, prompt: list[int], max_new_tokens: int, eos_ids: set[int]) -> list[int]:
    """Greedy ids after `prompt` (argmax of each step's logits, EOS not included): the browser's reference."""
    session = LlamaCppSession(path, n_ctx=-(-(len(prompt) + max_new_tokens) // 256) * 256, threads=1)
    try:
        logits = session.forward(prompt)[-1]
        out: list[int] = []
        while len(out) < max_new_tokens:
            token = int(np.argmax(logits))
            if token in eos_ids:
                break
            out.append(token)
            logits = session.forward([token])[-1]
        return out
    finally:
        session.close()
