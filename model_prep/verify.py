"""Every variant against the torch model on fixed chat prompts and a fixed natural text."""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import VerificationFailed
from .onnx_runner import DecoderSession

NATURAL_TEXT = (Path(__file__).parent / "data" / "natural_text.txt").read_text()
CONTINUATION_TOKENS = 32
CHUNK = 32  # perplexity text goes through the KV path in chunks: prefill-with-past and decode both exercised
FP32_MIN_COSINE = 0.9999
FP32_MIN_TOP1 = 0.99


@dataclass
class Fidelity:
    dtype: str
    top1_agreement: float
    mean_logit_cosine: float
    perplexity: float
    positions: int


@dataclass
class Reference:
    """torch's logits on the sequences every variant is scored on (teacher-forced)."""

    sequences: list[list[int]]  # chat prompt + torch greedy continuation, then the natural text
    prefix_lengths: list[int]  # positions before this index are context, not scored
    logits: list[np.ndarray]  # [len - prefix, vocab] each: logits predicting tokens prefix+1 …
    perplexity: float


def torch_reference(source: Path, prompts: tuple[str, ...]) -> Reference:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    sequences, prefixes, logits = [], [], []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=CONTINUATION_TOKENS, do_sample=False, min_new_tokens=4
            )
            sequences.append(out[0].tolist())
            prefixes.append(len(ids))
        text_ids = tokenizer(NATURAL_TEXT).input_ids
        sequences.append(text_ids)
        prefixes.append(1)
        for seq, prefix in zip(sequences, prefixes, strict=True):
            full = model(torch.tensor([seq])).logits[0, prefix - 1 : len(seq) - 1]
            logits.append(full.float().numpy().copy())  # a copy: a view would keep the whole output alive
            del full
    return Reference(sequences, prefixes, logits, perplexity(logits[-1], sequences[-1][1:]))


def score_variant(graph: Path, dtype: str, ref: Reference) -> Fidelity:
    return score_teacher_forced(DecoderSession(graph), dtype, ref)


def score_teacher_forced(session, dtype: str, ref, prefill: Callable[[int, list[int]], np.ndarray] | None = None):
    """Feed each reference sequence through `session` (reset()/forward(ids)) and score its logits against torch's.

    `prefill(i, ids)` runs sequence i's context; the VLM passes image features there. Default: session.forward.
    """
    prefill = prefill or (lambda _, ids: session.forward(ids))
    agree, total, cosines = 0, 0, []
    text_logits = None
    for i, (seq, prefix, want) in enumerate(zip(ref.sequences, ref.prefix_lengths, ref.logits, strict=True)):
        session.reset()
        got = [prefill(i, seq[:prefix])[-1:]]
        rest = seq[prefix:-1]
        for start in range(0, len(rest), CHUNK):
            got.append(session.forward(rest[start : start + CHUNK]))
        have = np.concatenate(got)
        agree += int((have.argmax(-1) == want.argmax(-1)).sum())
        total += len(want)
        cosines.extend(cosine_rows(have, want))
        text_logits = have
    return Fidelity(
        dtype=dtype,
        top1_agreement=agree / total,
        mean_logit_cosine=float(np.mean(cosines)),
        perplexity=perplexity(text_logits, ref.sequences[-1][1:]),
        positions=total,
    )


def check_fp32(result: Fidelity) -> None:
    if result.mean_logit_cosine < FP32_MIN_COSINE or result.top1_agreement < FP32_MIN_TOP1:
        raise VerificationFailed(
            f"the fp32 ONNX graph does not match torch (top-1 {result.top1_agreement:.4f}, "
            f"cosine {result.mean_logit_cosine:.6f}): the export is wrong, nothing was written"
        )


def perplexity(logits: np.ndarray, targets: list[int], rows: int = 64) -> float:
    """exp(mean NLL), in float64 a few rows at a time: whole-array temporaries of [1000, 151936] cost 3.4 GB."""
    nll = 0.0
    for start in range(0, len(targets), rows):
        chunk = logits[start : start + rows].astype(np.float64)
        chunk -= chunk.max(-1, keepdims=True)
        log_norm = np.log(np.exp(chunk).sum(-1))
        picked = chunk[np.arange(len(chunk)), targets[start : start + rows]]
        nll += float((log_norm - picked).sum())
    return float(math.exp(nll / len(targets)))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> list[float]:
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
    return (num / den).tolist()


def as_report(reference: Reference, results: list[Fidelity]) -> dict:
    return {
        "reference": {"framework": "torch fp32", "perplexity": reference.perplexity},
        "prompts": len(reference.sequences) - 1,
        "variants": {r.dtype: asdict(r) for r in results},
    }
