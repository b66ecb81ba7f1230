"""A decoder graph with KV cache, driven one call at a time from Python onnxruntime."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort


class DecoderSession:
    """Feeds `input_ids`/`attention_mask`/`position_ids`/`past_key_values.*` and keeps `present.*`."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.input_names = set(inputs)
        first = inputs[self.past_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.past_dtype = np.float16 if "float16" in first.type else np.float32
        self.reset()

    def reset(self) -> None:
        self.past = {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.past_dtype) for n in self.past_names}
        self.length = 0

    def forward(self, ids: list[int]) -> np.ndarray:
        """Run `ids` after what came before; returns fp32 logits [len(ids), vocab]."""
        n = len(ids)
        feed = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, self.length + n), dtype=np.int64),
            **self.past,
        }
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(self.length, self.length + n, dtype=np.int64)[None]
        outputs = self.session.run(None, feed)
        names = [o.name for o in self.session.get_outputs()]
        for name, value in zip(names[1:], outputs[1:], strict=True):
            self.past[name.replace("present.", "past_key_values.")] = value
        self.length += n
        return outputs[0][0].astype(np.float32)


def greedy(
    session,
    prompt_ids: list[int],
    max_new_tokens: int,
    eos_ids: set[int],
    prefill: Callable[[list[int]], np.ndarray] | None = None,
) -> list[int]:
    """Greedy tokens after `prompt_ids`; `prefill` runs the prompt (a VLM passes image features there)."""
    session.reset()
    logits = (prefill or session.forward)(prompt_ids)[-1]
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(np.argmax(logits))
        if token in eos_ids:
            break
        out.append(token)
        logits = session.forward([token])[-1]
    return out
