"""Patches of torch and transformers internals check what they patch: a changed symbol is a clear error naming the
pinned versions, not a silently wrong export. Each guard is fed the mismatch it exists for."""

from types import SimpleNamespace

import pytest
import torch
from transformers import Idefics3VisionConfig, modeling_attn_mask_utils
from transformers import masking_utils as mu
from transformers.models.idefics3.modeling_idefics3 import Idefics3VisionEmbeddings

from model_prep.errors import UpstreamChanged
from model_prep.export.smolvlm import _wrappers
from model_prep.export.tracing import traceable_masks
from model_prep.sources.smolvlm_model import fixed_forward, fixed_vision_positions, has_upstream_fix

PINNED = r"was written for torch 2\.13\.0 / transformers 4\.57\.6"


@pytest.mark.parametrize(
    "name", ["sdpa_mask", "causal_mask_function", "prepare_padding_mask", "and_masks", "padding_mask_function"]
)
def test_traceable_masks_refuses_a_changed_masking_api(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(mu, name, lambda mask, *, use_vmap=False: None)
    expected = rf"transformers\.masking_utils\.{name} takes \(mask, use_vmap\).*{PINNED}"
    with pytest.raises(UpstreamChanged, match=expected):
        with traceable_masks():
            pass


def test_traceable_masks_refuses_a_registry_without_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mu.ALL_MASK_ATTENTION_FUNCTIONS, "_global_mapping", {"eager": mu.eager_mask})
    with pytest.raises(UpstreamChanged, match=rf"ALL_MASK_ATTENTION_FUNCTIONS has no 'sdpa' mask.*{PINNED}"):
        with traceable_masks():
            pass


def test_traceable_masks_registers_and_restores_on_the_pinned_transformers() -> None:
    saved = mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"]
    with traceable_masks():
        assert mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"] is not saved
    assert mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"] is saved


def test_the_smolvlm_wrappers_refuse_a_changed_mask_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling_attn_mask_utils, "_prepare_4d_attention_mask", lambda mask, dtype: mask)
    with pytest.raises(UpstreamChanged, match=rf"_prepare_4d_attention_mask takes \(mask, dtype\).*{PINNED}"):
        _wrappers()


def vision_model() -> SimpleNamespace:
    """What fixed_vision_positions reads of a SmolVLM model: model.model.vision_model.embeddings."""
    torch.manual_seed(0)
    embeddings = Idefics3VisionEmbeddings(Idefics3VisionConfig(hidden_size=32, image_size=64, patch_size=16)).eval()
    return SimpleNamespace(model=SimpleNamespace(vision_model=SimpleNamespace(embeddings=embeddings)))


def test_vision_positions_are_fixed_while_the_pinned_transformers_has_the_bug() -> None:
    model = vision_model()
    original = Idefics3VisionEmbeddings.forward
    assert not has_upstream_fix(model.model.vision_model.embeddings), "4.57.6 shifts positions: the fix applies"
    with fixed_vision_positions(model):
        assert Idefics3VisionEmbeddings.forward is fixed_forward
    assert Idefics3VisionEmbeddings.forward is original


def test_vision_positions_are_left_alone_once_upstream_has_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def upstream(self, pixel_values, patch_attention_mask):  # as transformers releases it after #41374
        return fixed_forward(self, pixel_values, patch_attention_mask)

    monkeypatch.setattr(Idefics3VisionEmbeddings, "forward", upstream)
    with fixed_vision_positions(vision_model()):
        assert Idefics3VisionEmbeddings.forward is upstream


def test_vision_positions_refuse_a_changed_embeddings_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Idefics3VisionEmbeddings, "forward", lambda self, pixel_values, patch_attention_mask, s: 0)
    with pytest.raises(UpstreamChanged, match=rf"Idefics3VisionEmbeddings\.forward takes .*smolvlm_model\.py {PINNED}"):
        with fixed_vision_positions(vision_model()):
            pass


def test_vision_positions_refuse_embeddings_without_an_attribute_they_use() -> None:
    model = vision_model()
    del model.model.vision_model.embeddings.num_patches_per_side
    expected = rf"Idefics3VisionEmbeddings\.num_patches_per_side does not exist.*{PINNED}"
    with pytest.raises(UpstreamChanged, match=expected):
        with fixed_vision_positions(model):
            pass
