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


def test_the_webgpu_graph_answers_the_capital_of_france() -> None:
    # fp32 is built and checked against torch but not shipped: WASM runs the GGUF, WebGPU the q4 graph.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert greedy_chat(MODEL, "q4", messages, max_new_tokens=24) == "The capital of France is Paris."


def test_the_gguf_keeps_the_source_bytes_it_can_and_passes_the_floor() -> None:
    from model_prep.recipes import get_recipe

    plan = get_recipe("smollm2-135m").gguf
    report = json.loads((MODEL / "verification.json").read_text())
    gguf = report["variants"][plan.dtype]
    # the Q8_0 embedding re-encoded byte for byte from the dequantized source; the 210 Q4_1 layers become Q8_0
    assert gguf["source_grid"] == {"same": 1, "compared": 211}
    assert gguf["tokenizer_agrees"] is True and gguf["floor"] == {"min_top1": 0.93, "max_perplexity_ratio": 1.02}
    assert gguf["kv_cache"] == "q8_0"  # scored with the 8-bit KV cache the browser runs
    ratio = gguf["perplexity"] / report["reference"]["perplexity"]
    assert gguf["top1_agreement"] >= gguf["floor"]["min_top1"] and ratio <= gguf["floor"]["max_perplexity_ratio"]
    manifest = json.loads((MODEL / "manifest.json").read_text())
    assert manifest["devices"]["wasm"] == plan.dtype == "gguf-q8_0"
    assert manifest["dtypes"][plan.dtype]["runtime"] == "llama.cpp"
    assert manifest["dtypes"][plan.dtype]["kv_cache"] == "q8_0"


def test_fp32_variant_matches_torch_in_the_verification_report() -> None:
    report = json.loads((MODEL / "verification.json").read_text())
    assert report["variants"]["fp32"]["top1_agreement"] == 1.0


def test_shipped_variants_meet_the_gguf_floor_and_fp16_range() -> None:
    from model_prep.recipes import GGUF_FLOOR

    report = json.loads((MODEL / "verification.json").read_text())
    reference = report["reference"]["perplexity"]
    for dtype in ("q4", "q4f16"):
        variant = report["variants"][dtype]
        assert variant["top1_agreement"] >= GGUF_FLOOR.min_top1, dtype
        assert variant["perplexity"] <= GGUF_FLOOR.max_perplexity_ratio * reference, dtype
    (q4f16,) = report["fp16_range"]["q4f16"]
    assert q4f16["overflow_count"] == 0 and q4f16["largest_abs_value"] <= q4f16["limit"]


@pytest.mark.parametrize("prompt", ["What is the capital of France?", "Write a haiku about the sea."])
def test_q4f16_greedy_reply_equals_q4(prompt: str) -> None:
    """On the CPU EP (which computes fp16 chains in fp32); bench/gpu_gate.py checks the same on the WebGPU EP. Against
    q4, the same nodes with fp32 activations: fp32 itself is built and checked against torch but no longer shipped
    (WASM runs the GGUF)."""
    messages = [{"role": "user", "content": prompt}]
    assert greedy_chat(MODEL, "q4f16", messages, 32) == greedy_chat(MODEL, "q4", messages, 32)
