"""Chat sampling defaults are recipe data that layout writes into generation_config.json, where the page reads them."""

import json
from dataclasses import replace
from pathlib import Path

from model_prep import layout
from model_prep.recipes import QWEN3_THINKING, QWEN3_WITHOUT_THINKING, RECIPES, get_recipe


def test_models_people_chat_with_sample_by_default() -> None:
    # Greedy decoding loops on everyday prompts (docs/sampling.md); Qwen3's card forbids it.
    for name in ("smollm2-135m", "qwen3-0.6b"):
        sampling = get_recipe(name).sampling
        assert sampling is not None and sampling.temperature > 0, name
    assert get_recipe("qwen3-0.6b").sampling == QWEN3_THINKING
    assert (QWEN3_THINKING.temperature, QWEN3_THINKING.top_p, QWEN3_THINKING.top_k) == (0.6, 0.95, 20)
    assert get_recipe("qwen3-0.6b").sampling_without_thinking == QWEN3_WITHOUT_THINKING
    assert (QWEN3_WITHOUT_THINKING.temperature, QWEN3_WITHOUT_THINKING.top_p) == (0.7, 0.8)
    # Only models whose template takes enable_thinking have a second mode.
    assert {r.id for r in RECIPES.values() if r.sampling_without_thinking} == {"qwen3-0.6b", "tiny-qwen3"}


def test_layout_merges_the_defaults_into_generation_config(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "do_sample": False}))
    layout.write_sampling_defaults(tmp_path, get_recipe("qwen3-0.6b"))
    config = json.loads((tmp_path / "generation_config.json").read_text())
    assert config["eos_token_id"] == 2  # what the source had stays
    assert config["do_sample"] is True
    assert (config["temperature"], config["top_p"], config["top_k"], config["min_p"]) == (0.6, 0.95, 20, 0.0)
    assert config["repetition_penalty"] == 1.0
    assert config["sampling_without_thinking"] == {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
    }


def test_a_recipe_without_defaults_leaves_the_file_alone(tmp_path: Path) -> None:
    original = json.dumps({"eos_token_id": 2, "do_sample": False})
    (tmp_path / "generation_config.json").write_text(original)
    layout.write_sampling_defaults(tmp_path, replace(get_recipe("tiny-llama"), sampling=None))
    assert (tmp_path / "generation_config.json").read_text() == original


def test_the_defaults_load_as_a_transformers_generation_config(tmp_path: Path) -> None:
    from transformers import GenerationConfig

    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    layout.write_sampling_defaults(tmp_path, get_recipe("smollm2-135m"))
    config = GenerationConfig.from_pretrained(tmp_path)
    sampling = get_recipe("smollm2-135m").sampling
    assert config.do_sample and config.temperature == sampling.temperature
    assert config.repetition_penalty == sampling.repetition_penalty
