"""fp32 ONNX for SmolVLM / Idefics3: three graphs in the layout Transformers.js loads for idefics3 and smolvlm.

Transformers.js 4.3.1 (`MODEL_TYPES.ImageTextToText`, `image_text_to_text_forward`) opens
`onnx/vision_encoder{suffix}.onnx`, `onnx/embed_tokens{suffix}.onnx` and `onnx/decoder_model_merged{suffix}.onnx`:

- vision_encoder: `pixel_values` float32 [batch, num_images, 3, H, W] + `pixel_attention_mask` bool
  [batch, num_images, H, W] → `image_features` float32 [real_images, image_seq_len, text_hidden]; the runtime views it
  as [-1, text_hidden] and writes row k over the k-th `<image>` token (`config.image_token_id`).
- embed_tokens: `input_ids` int64 [batch, seq] → `inputs_embeds` float32 [batch, seq, text_hidden].
- decoder_model_merged: `inputs_embeds`, `attention_mask` int64 [batch, past+seq],
  `past_key_values.{i}.key|value` float32 [batch_size, kv_heads, past_sequence_length, head_dim] → `logits`
  [batch, seq, vocab], `present.{i}.key|value`: the fused text decoder of model_prep/decoder_graph.py (positions
  come from the attention mask inside GroupQueryAttention, so there is no position_ids input).

Vision positions follow the upstream fix of transformers#41190 (merged in #41374): transformers 4.55–4.57 compute
`i / n * (1 - 1e-6)`, which shifts every patch but the first one position to the left (0, 0, 1, …, n-2 instead of
0, 1, …, n-1) — not what SmolVLM was trained with. The exported graph uses `i * (1 / n)` clamped below 1, and the
torch reference runs under `fixed_vision_positions` (sources/smolvlm_model.py), the upstream per-image loop, so the
comparison still checks the tensor-op rewrite against HF's loop.
"""

from pathlib import Path

import numpy as np

from ..errors import VerificationFailed, expect_parameters
from ..folder import SMOLVLM_GRAPHS
from ..sources.smolvlm_model import fixed_vision_positions, load_model
from .decoder_graph import export_decoder
from .tracing import export, kv_shape, past_names, traceable_masks

# fp32 ONNX vs torch: largest |difference| allowed, relative to the largest |value| of the torch output.
MAX_REL_DIFF = 1e-4
WHERE = "model_prep/export/smolvlm.py"


def export_smolvlm(source: Path, out_dir: Path) -> dict[str, Path]:
    """Export `source` (an HF Idefics3/SmolVLM folder) into `out_dir`; returns {graph name: path}.

    Every graph is run with onnxruntime against the torch model before returning; VerificationFailed otherwise.
    """
    import torch

    model = load_model(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.onnx" for name in SMOLVLM_GRAPHS}
    with torch.no_grad(), traceable_masks():
        _export_vision(model, paths["vision_encoder"])
        _export_embed(model, paths["embed_tokens"])
    # the decoder is built, not traced: fused attention and norms, no shape arithmetic (model_prep/decoder_graph.py)
    export_decoder(source, out_dir, "decoder_model_merged")
    with torch.no_grad(), fixed_vision_positions(model):
        check_graphs(model, paths)
    return paths


# ---------------------------------------------------------------------------------------------------- wrappers


def _wrappers():
    """torch modules for the three graphs (built lazily so importing this module does not import torch)."""
    import torch
    from torch import nn
    from transformers import modeling_attn_mask_utils

    # private to transformers: checked, like every patched symbol (errors.expect_parameters)
    _prepare_4d_attention_mask = expect_parameters(
        modeling_attn_mask_utils, "_prepare_4d_attention_mask", ("mask", "dtype", "tgt_len"), WHERE
    )

    class VisionEncoder(nn.Module):
        """HF's get_image_features without Python loops or data-dependent Python control flow."""

        def __init__(self, model) -> None:
            super().__init__()
            inner = model.model
            self.vision = inner.vision_model
            self.connector = inner.connector
            self.patch = self.vision.config.patch_size
            self.scale = inner.connector.scale_factor
            self.per_side = self.vision.embeddings.num_patches_per_side
            step = 1 / self.per_side
            self.register_buffer("boundaries", torch.arange(step, 1.0, step), persistent=False)

        def forward(self, pixel_values, pixel_attention_mask):
            channels, height, width = pixel_values.shape[2], pixel_values.shape[3], pixel_values.shape[4]
            pixels = pixel_values.reshape(-1, channels, height, width)
            masks = pixel_attention_mask.reshape(-1, height, width)
            # Padding images are all zeros: keep the others (HF: `(pixels == 0).sum() != numel`).
            real = torch.nonzero((pixels != 0).flatten(1).sum(-1) > 0).squeeze(1)
            pixels = pixels.index_select(0, real)
            masks = masks.index_select(0, real)
            # A patch takes part if any of its pixels does (HF: unfold + sum > 0).
            patch_mask = torch.nn.functional.max_pool2d(masks[:, None].float(), self.patch, self.patch)[:, 0] > 0
            embeddings = self.vision.embeddings
            patches = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
            positions = self._position_ids(patch_mask)
            hidden = patches + embeddings.position_embedding(positions)
            flat_mask = patch_mask.flatten(1)
            attention = _prepare_4d_attention_mask(flat_mask, hidden.dtype)
            hidden = self.vision.encoder(inputs_embeds=hidden, attention_mask=attention).last_hidden_state
            hidden = self.vision.post_layernorm(hidden)
            hidden = self._pixel_shuffle(hidden, patch_mask.shape[1], patch_mask.shape[2])
            return self.connector.modality_projection(hidden)

        def _position_ids(self, patch_mask):
            """HF's per-image loop as tensor ops: each patch of the top-left valid rectangle (rows × cols)
            gets the position bucket of its fractional coordinate; padding patches get 0."""
            rows = patch_mask[:, :, 0].sum(-1).clamp(min=1).float()
            cols = patch_mask[:, 0, :].sum(-1).clamp(min=1).float()
            limit = 1.0 - 1e-6
            frac_h = (torch.arange(patch_mask.shape[1]).float()[None, :] * (1.0 / rows)[:, None]).clamp(max=limit)
            frac_w = (torch.arange(patch_mask.shape[2]).float()[None, :] * (1.0 / cols)[:, None]).clamp(max=limit)
            # bucketize(x, boundaries, right=True) == number of boundaries <= x
            bucket_h = (frac_h[..., None] >= self.boundaries).sum(-1)
            bucket_w = (frac_w[..., None] >= self.boundaries).sum(-1)
            ids = bucket_h[:, :, None] * self.per_side + bucket_w[:, None, :]
            return torch.where(patch_mask, ids, torch.zeros_like(ids)).flatten(1)

        def _pixel_shuffle(self, x, grid_h, grid_w):
            """Idefics3Connector.pixel_shuffle with the grid taken from the input shape instead of sqrt(seq)."""
            s, dim = self.scale, x.shape[-1]
            x = x.reshape(x.shape[0], grid_h, grid_w // s, dim * s)
            x = x.permute(0, 2, 1, 3)
            x = x.reshape(x.shape[0], grid_w // s, grid_h // s, dim * s * s)
            x = x.permute(0, 2, 1, 3)
            return x.reshape(x.shape[0], -1, dim * s * s)

    class EmbedTokens(nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.embed = model.get_input_embeddings()

        def forward(self, input_ids):
            return self.embed(input_ids)

    return VisionEncoder, EmbedTokens


# ---------------------------------------------------------------------------------------------------- export


def sample_pixels(model, batch: int = 1, images: int = 2) -> tuple:
    """Random pixels of the vision tower's own tile size, every pixel valid."""
    import torch

    size = model.config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, images, 3, size, size, generator=generator)
    return pixels, torch.ones(batch, images, size, size, dtype=torch.bool)


def _export_vision(model, path: Path) -> None:
    vision_encoder = _wrappers()[0](model).eval()
    axes = {
        "pixel_values": {0: "batch_size", 1: "num_images", 3: "height", 4: "width"},
        "pixel_attention_mask": {0: "batch_size", 1: "num_images", 2: "height", 3: "width"},
        "image_features": {0: "num_real_images", 1: "image_seq_len"},
    }
    export(
        vision_encoder, sample_pixels(model), path, ["pixel_values", "pixel_attention_mask"], ["image_features"], axes
    )


def _export_embed(model, path: Path) -> None:
    import torch

    embed = _wrappers()[1](model).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
    }
    export(embed, (ids,), path, ["input_ids"], ["inputs_embeds"], axes)


# ---------------------------------------------------------------------------------------------------- checks


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.shape != want.shape:
        raise VerificationFailed(f"{name}: ONNX shape {got.shape} != torch shape {want.shape}: the export is wrong")
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    diff = float(np.abs(got.astype(np.float64) - want).max(initial=0.0))
    if not diff <= MAX_REL_DIFF * scale:
        raise VerificationFailed(
            f"{name}: the fp32 ONNX graph differs from torch by {diff:.3g} (largest value {scale:.3g}): "
            "the export is wrong, nothing was written"
        )


def check_graphs(model, paths: dict[str, Path]) -> None:
    """Each graph against the torch model: images (with a padding image and a partly masked one), token
    embeddings, and the decoder both without and with a past."""
    import torch

    inner = model.model
    # Vision: batch of 2 × 3 slots; sample 0 has a tile whose valid region is the top-left 3/4 × 1/2, sample 1
    # a padding image (all zeros, mask off) in its last slot.
    pixels, mask = sample_pixels(model, batch=2, images=3)
    size = pixels.shape[-1]
    patch = model.config.vision_config.patch_size
    h, w = (size * 3 // 4) // patch * patch, (size // 2) // patch * patch
    mask[0, 1] = False
    mask[0, 1, :h, :w] = True
    pixels[0, 1] *= mask[0, 1]
    pixels[1, 2], mask[1, 2] = 0.0, False
    want = inner.get_image_features(pixels, mask).numpy()
    got = _session(paths["vision_encoder"]).run(
        None, {"pixel_values": pixels.numpy(), "pixel_attention_mask": mask.numpy()}
    )
    _compare("vision_encoder", got[0], want)

    ids = torch.tensor([[5, 9, 2, 17, 3, 11], [1, 2, 3, 4, 5, 6]])
    want = model.get_input_embeddings()(ids).numpy()
    got = _session(paths["embed_tokens"]).run(None, {"input_ids": ids.numpy()})
    _compare("embed_tokens", got[0], want)

    layers, kv_heads, head_dim = kv_shape(model.config.get_text_config(decoder=True))
    embeds = torch.from_numpy(got[0])
    session = _session(paths["decoder_model_merged"])
    out = model(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), use_cache=True)
    split = 4
    # One sequence at a time, as Transformers.js runs it: onnxruntime's GroupQueryAttention takes a batch above 1
    # only for single-token steps once a past is given.
    for b in range(ids.shape[0]):
        row = embeds[b : b + 1].numpy()
        empty = {n: np.zeros((1, kv_heads, 0, head_dim), np.float32) for n in past_names(layers)}
        first = session.run(
            None, {"inputs_embeds": row[:, :split], "attention_mask": np.ones((1, split), np.int64), **empty}
        )
        past = dict(zip(past_names(layers), first[1:], strict=True))
        mask = np.ones((1, ids.shape[1]), np.int64)
        second = session.run(None, {"inputs_embeds": row[:, split:], "attention_mask": mask, **past})
        logits = np.concatenate([first[0], second[0]], axis=1)
        _compare("decoder_model_merged logits", logits, out.logits[b : b + 1].numpy())
        for i, layer in enumerate(out.past_key_values.layers):
            _compare(f"decoder_model_merged present.{i}.key", second[1 + 2 * i], layer.keys[b : b + 1].numpy())
            _compare(f"decoder_model_merged present.{i}.value", second[2 + 2 * i], layer.values[b : b + 1].numpy())
