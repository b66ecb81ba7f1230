"""The offline default as built by `nox -s serve`/`nox -s tests`: tokenizer fixes and a real greedy answer."""

import json
import os
from pathlib import Path

import pytest

from edge_contracts import DEFAULT_MODEL
from model_prep.verify.replies import greedy_chat

MODEL = Path(os.environ.get("EDGE_CHAT_MODELS", Path(__file__).resolve().parents[2] / "models")) / DEFAULT_MODEL
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="default model not built (nox -s tests builds it)")


def test_tokenizer_has_no_bos_and_stops_on_im_end() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    assert tokenizer("Hello world").input_ids == [19556, 905]
    assert tokenizer.eos_token == "<|im_end|>"
    assert json.loads((MODEL / "generation_config.json").read_text())["eos_token_id"] == 2
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_fp32_graph_answers_the_capital_of_france() -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert greedy_chat(MODEL, "fp32", messages, max_new_tokens=24) == "The capital of France is Paris."


def test_fp32_variant_matches_torch_in_the_verification_report() -> None:
    report = json.loads((MODEL / "verification.json").read_text())
    assert report["variants"]["fp32"]["top1_agreement"] == 1.0
