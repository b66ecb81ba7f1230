"""Greedy chat replies from Python onnxruntime (ONNX dtypes) or native llama.cpp (GGUF dtypes) on the same file:
the ground truth the browser must reproduce token for token."""

import json
from pathlib import Path

from ..folder import SUFFIX
from .onnx_runner import DecoderSession, greedy


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def eos_ids(model_dir: Path) -> set[int]:
    config = json.loads((model_dir / "generation_config.json").read_text())
    eos = config.get("eos_token_id")
    return set(eos if isinstance(eos, list) else [eos])


def greedy_ids(model_dir: Path, dtype: str, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy ids after `prompt` on the file `dtype` loads (manifest.json says which), EOS not included."""
    files = json.loads((model_dir / "manifest.json").read_text())["dtypes"][dtype]["files"]
    gguf = next((f for f in files if f.endswith(".gguf")), None)
    if gguf:
        from .gguf import greedy_gguf

        return greedy_gguf(model_dir / gguf, prompt, max_new_tokens, eos_ids(model_dir))
    session = DecoderSession(model_dir / "onnx" / f"model{SUFFIX[dtype]}.onnx")
    return greedy(session, prompt, max_new_tokens, eos_ids(model_dir))


def greedy_chat(model_dir: Path, dtype: str, messages: list[dict], max_new_tokens: int) -> str:
    tokenizer = load_tokenizer(model_dir)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    tokens = greedy_ids(model_dir, dtype, list(prompt), max_new_tokens)
    return tokenizer.decode(tokens, skip_special_tokens=True)
