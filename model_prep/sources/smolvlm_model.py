"""The SmolVLM (Idefics3) torch model as the exporter and the verifier both need it."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UpstreamChanged, expect_parameters

WHERE = "model_prep/sources/smolvlm_model.py"
EMBEDDING_ATTRIBUTES = ("patch_embedding", "patch_size", "num_patches_per_side", "position_embedding")


def load_model(source: Path):
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval()


@contextmanager
def fixed_vision_positions(model) -> Iterator[None]:
    """Run HF's vision embeddings with the upstream fix of transformers#41190 (the per-image loop as released
    after #41374), so torch computes the positions SmolVLM was trained with. No-op once transformers has it:
    the installed forward and the fixed one are compared on a probe image first."""
    embeddings = model.model.vision_model.embeddings
    cls = type(embeddings)
    original = expect_parameters(cls, "forward", ("self", "pixel_values", "patch_attention_mask"), WHERE)
    for attr in EMBEDDING_ATTRIBUTES:
        if not hasattr(embeddings, attr):
            raise UpstreamChanged(f"{cls.__module__}.{cls.__qualname__}.{attr}", "does not exist", WHERE)
    if has_upstream_fix(embeddings):
        yield
        return
    cls.forward = fixed_forward
    try:
        yield
    finally:
        cls.forward = original


def has_upstream_fix(embeddings) -> bool:
    """Whether the installed forward already gives every patch of a full image its own position (0, 1, …, n-1).

    A zero image makes the output the patch bias plus the position embeddings, so any position that differs from
    the fixed loop's shows."""
    import torch

    side = embeddings.num_patches_per_side
    weight = embeddings.patch_embedding.weight
    pixels = torch.zeros(1, weight.shape[1], side * embeddings.patch_size, side * embeddings.patch_size)
    mask = torch.ones(1, side, side, dtype=torch.bool)
    with torch.no_grad():
        return torch.equal(type(embeddings).forward(embeddings, pixels, mask), fixed_forward(embeddings, pixels, mask))


def fixed_forward(self, pixel_values, patch_attention_mask):
    """Idefics3VisionEmbeddings.forward as released after transformers#41374."""
    import torch

    batch_size, _, max_im_h, max_im_w = pixel_values.shape
    embeddings = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
    max_h, max_w = max_im_h // self.patch_size, max_im_w // self.patch_size
    boundaries = torch.arange(1 / self.num_patches_per_side, 1.0, 1 / self.num_patches_per_side)
    position_ids = torch.full(size=(batch_size, max_h * max_w), fill_value=0)
    for batch_idx, p_attn_mask in enumerate(patch_attention_mask):
        nb_patches_h = p_attn_mask[:, 0].sum()
        nb_patches_w = p_attn_mask[0].sum()
        step_h, step_w = 1.0 / nb_patches_h, 1.0 / nb_patches_w
        h_indices = torch.arange(nb_patches_h, dtype=torch.float32)
        w_indices = torch.arange(nb_patches_w, dtype=torch.float32)
        fractional_h = torch.clamp(h_indices * step_h, max=(1.0 - 1e-6)).to(pixel_values.dtype)
        fractional_w = torch.clamp(w_indices * step_w, max=(1.0 - 1e-6)).to(pixel_values.dtype)
        bucket_h = torch.bucketize(fractional_h, boundaries, right=True)
        bucket_w = torch.bucketize(fractional_w, boundaries, right=True)
        pos_ids = (bucket_h[:, None] * self.num_patches_per_side + bucket_w).flatten()
        position_ids[batch_idx][p_attn_mask.view(-1)] = pos_ids
    return embeddings + self.position_embedding(position_ids)
