"""Every variant against the torch model on fixed chat prompts and a fixed natural text."""

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import VerificationFailed
from .onnx_runner import DecoderSession

NATURAL_TEXT = (Path(__file__).parent / "data" / "natural_text.txt").read_text()
CONTINUATION_TOKENS = 32
CHUNK = 32  # perplexity text goes through the KV path in chunks: prefill-with-past and decode both exercised
LM_HEAD_ROWS = 64  # torch's logits are made this many rows at a time
FP32_MIN_COSINE = 0.9999
FP32_MIN_TOP1 = 0.99


@dataclass
class Fidelity:
    dtype: str
    top1_agreement: float
    mean_logit_cosine: float
    perplexity: float
    positions: int


@dataclass(frozen=True)
class LogitStore:
    """torch's logits on disk, one raw float32 [rows, vocab] file per scored sequence, read a chunk at a time.

    Held whole, Qwen3-0.6B's 1000-token text alone is 0.6 GB of logits, and the variant's own as many again: the
    verify stage peaked at 5.4 GB. Plain reads, not a memory map, because touched mapped pages count in RSS.
    """

    folder: Path
    vocab: int

    def write(self, i: int, chunks: Iterable[np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._path(i), "wb") as f:
            for chunk in chunks:
                f.write(np.ascontiguousarray(chunk, np.float32).tobytes())

    def rows(self, i: int, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of sequence i's logits."""
        count = (stop - start) * self.vocab
        data = np.fromfile(self._path(i), np.float32, count=count, offset=start * self.vocab * 4)
        return data.reshape(-1, self.vocab)

    def _path(self, i: int) -> Path:
        return self.folder / f"{i}.f32"


@dataclass
class Reference:
    """torch's logits on the sequences every variant is scored on (teacher-forced)."""

    sequences: list[list[int]]  # chat prompt + torch greedy continuation, then the natural text
    prefix_lengths: list[int]  # positions before this index are context, not scored
    logits: LogitStore  # sequence i: [len - prefix, vocab], the logits predicting tokens prefix … len - 1
    perplexity: float


def torch_reference(source: Path, prompts: tuple[str, ...], logits_dir: Path) -> Reference:
    import torch
    from transformers import AutoTokenizer

    from ..sources.checkpoint import load_causal_lm_fp32

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = load_causal_lm_fp32(source)
    lm_head = model.get_output_embeddings()
    store = LogitStore(logits_dir, lm_head.weight.shape[0])
    sequences, prefixes = [], []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=CONTINUATION_TOKENS, do_sample=False, min_new_tokens=4
            )
            sequences.append(out[0].tolist())
            prefixes.append(len(ids))
        sequences.append(tokenizer(NATURAL_TEXT).input_ids)
        prefixes.append(1)
        for i, (seq, prefix) in enumerate(zip(sequences, prefixes, strict=True)):
            hidden = model.base_model(torch.tensor([seq])).last_hidden_state[0, prefix - 1 : len(seq) - 1]
            store.write(
                i, (lm_head(hidden[s : s + LM_HEAD_ROWS]).float().numpy() for s in range(0, len(hidden), LM_HEAD_ROWS))
            )
    return Reference(sequences, prefixes, store, reference_perplexity(store, sequences, prefixes))


def reference_perplexity(store: LogitStore, sequences: list[list[int]], prefixes: list[int]) -> float:
    """torch's own perplexity on the natural text (the last sequence), read back from the store."""
    i = len(sequences) - 1
    targets = sequences[i][prefixes[i] :]
    nll = sum(
        nll_sum(store.rows(i, s, min(s + LM_HEAD_ROWS, len(targets))), targets[s : s + LM_HEAD_ROWS])
        for s in range(0, len(targets), LM_HEAD_ROWS)
    )
    return math.exp(nll / len(targets))


def score_variant(graph: Path, dtype: str, ref: Reference) -> Fidelity:
    return score_teacher_forced(DecoderSession(graph), dtype, ref)


class _Tally:
    """Running top-1 agreement, logit cosines and the natural text's NLL: no sequence's logits are kept."""

    def __init__(self) -> None:
        self.agree, self.total, self.cosines, self.nll, self.nll_tokens = 0, 0, [], 0.0, 0

    def add(self, store: LogitStore, i: int, row: int, have: np.ndarray, targets: list[int] | None) -> None:
        """Score `have`, sequence i's logits from row `row` on; `targets`: the sequence's, when its NLL counts."""
        want = store.rows(i, row, row + len(have))
        self.agree += int((have.argmax(-1) == want.argmax(-1)).sum())
        self.total += len(want)
        self.cosines.extend(cosine_rows(have, want))
        if targets is not None:
            self.nll += nll_sum(have, targets[row : row + len(have)])
            self.nll_tokens += len(have)


def score_teacher_forced(session, dtype: str, ref, prefill: Callable[[int, list[int]], np.ndarray] | None = None):
    """Feed each reference sequence through `session` (reset()/forward(ids)) and score its logits against torch's.

    `prefill(i, ids)` runs sequence i's context; the VLM passes image features there. Default: session.forward.
    Perplexity is the natural text's, the last sequence.
    """
    prefill = prefill or (lambda _, ids: session.forward(ids))
    tally = _Tally()
    last = len(ref.sequences) - 1
    for i, (seq, prefix) in enumerate(zip(ref.sequences, ref.prefix_lengths, strict=True)):
        targets = seq[prefix:] if i == last else None  # row r of the logits predicts seq[prefix + r]
        session.reset()
        tally.add(ref.logits, i, 0, prefill(i, seq[:prefix])[-1:], targets)
        rest = seq[prefix:-1]
        for start in range(0, len(rest), CHUNK):
            tally.add(ref.logits, i, 1 + start, session.forward(rest[start : start + CHUNK]), targets)
    return Fidelity(
        dtype=dtype,
        top1_agreement=tally.agree / tally.total,
        mean_logit_cosine=float(np.mean(tally.cosines)),
        perplexity=math.exp(tally.nll / tally.nll_tokens),
        positions=tally.total,
    )


def check_fp32(result: Fidelity) -> None:
    if result.mean_logit_cosine < FP32_MIN_COSINE or result.top1_agreement < FP32_MIN_TOP1:
        raise VerificationFailed(
            f"the fp32 ONNX graph does not match torch (top-1 {result.top1_agreement:.4f}, "
            f"cosine {result.mean_logit_cosine:.6f}): the export is wrong, nothing was written"
        )


def nll_sum(logits: np.ndarray, targets: list[int]) -> float:
    """Σ −log p(target) over the rows, in float64 (callers pass a few rows: [1000, 151936] would be 1.2 GB)."""
    rows = logits.astype(np.float64)
    rows -= rows.max(-1, keepdims=True)
    log_norm = np.log(np.exp(rows).sum(-1))
    return float((log_norm - rows[np.arange(len(rows)), targets]).sum())


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
