"""Verification's pieces: the streamed fp32 reference model and the on-disk reference logits."""

from pathlib import Path

import numpy as np
import pytest

from model_prep.errors import SourceCorrupt
from model_prep.sources.checkpoint import load_causal_lm_fp32
from model_prep.sources.tiny import build_tiny
from model_prep.verify.text import LogitStore, nll_sum

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_streamed_fp32_model_equals_from_pretrained(arch: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    source = build_tiny(arch, tmp_path / arch)
    expected = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    model = load_causal_lm_fp32(source)
    ids = torch.tensor([[1, 5, 9, 30, 2, 7]])
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, expected(ids).logits)
        want = expected.generate(ids, max_new_tokens=8, do_sample=False)
        assert torch.equal(model.generate(ids, max_new_tokens=8, do_sample=False), want)
    assert model.generation_config.eos_token_id == expected.generation_config.eos_token_id
    tied = model.config.tie_word_embeddings
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied


def test_streamed_model_names_a_tensor_of_the_wrong_shape(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    source = build_tiny("qwen3", tmp_path / "qwen3")
    tensors = load_file(source / "model.safetensors")
    name = next(n for n in tensors if n.endswith("mlp.down_proj.weight"))
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SourceCorrupt, match="down_proj"):
        load_causal_lm_fp32(source)


def test_logit_store_reads_back_the_rows_it_wrote(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((10, 7)).astype(np.float32)
    store = LogitStore(tmp_path / "logits", vocab=7)
    store.write(0, [whole[:4], whole[4:]])
    store.write(1, [whole[:1]])
    assert np.array_equal(store.rows(0, 3, 9), whole[3:9])
    assert np.array_equal(store.rows(1, 0, 1), whole[:1])


def test_nll_sum_is_the_log_softmax_of_the_targets() -> None:
    logits = np.array([[0.0, 0.0], [2.0, 0.0]], np.float32)
    expected = np.log(2) + (np.log(np.exp(2) + 1) - 2)
    assert nll_sum(logits, [1, 0]) == pytest.approx(expected, rel=1e-12)
