"""Greedy chat replies from Python onnxruntime: the ground truth the browser must reproduce token for token."""

import json
from pathlib import Path

from ..layout import SUFFIX
from .onnx_runner import DecoderSession, greedy


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def eos_ids(model_dir: Path) -> set[int]:
    config = json.loads((model_dir / "generation_config.json").read_text())
    eos = config.get("eos_token_id")
    return set(eos if isinstance(eos, list) else [eos])


def greedy_chat(model_dir: Path, dtype: str, messages: list[dict], max_new_tokens: int) -> str:
    tokenizer = load_tokenizer(model_dir)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    session = DecoderSession(model_dir / "onnx" / f"model{SUFFIX[dtype]}.onnx")
    tokens = greedy(session, list(prompt), max_new_tokens, eos_ids(model_dir))
    return tokenizer.decode(tokens, skip_special_tokens=True)
