"""The TorchScript export of SmolVLM's vision encoder and embed_tokens graphs: traceable masks, the export call.

Text decoders are not traced: model_prep/export/decoder_graph.py builds them from the config (fused ops, no shape
arithmetic).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UpstreamChanged, expect_parameters

OPSET = 18
WHERE = "model_prep/export/tracing.py"


@contextmanager
def traceable_masks() -> Iterator[None]:
    """transformers 4.57 builds causal masks with torch.vmap, which TorchScript cannot trace: register a
    broadcasting version for "sdpa" while exporting (the idea optimum-onnx's model patcher uses).

    What it replaces and calls is private to transformers: each symbol's signature is checked first."""
    import torch
    from transformers import masking_utils as mu

    expect_parameters(
        mu,
        "sdpa_mask",  # what our function stands in for: transformers calls it with these keywords
        (
            "batch_size",
            "cache_position",
            "kv_length",
            "kv_offset",
            "mask_function",
            "attention_mask",
            "local_size",
            "allow_is_causal_skip",
            "kwargs",
        ),
        WHERE,
    )
    causal = expect_parameters(mu, "causal_mask_function", ("batch_idx", "head_idx", "q_idx", "kv_idx"), WHERE)
    padding_mask = expect_parameters(
        mu, "prepare_padding_mask", ("attention_mask", "kv_length", "kv_offset", "_slice"), WHERE
    )
    and_masks = expect_parameters(mu, "and_masks", ("mask_functions",), WHERE)
    padding_function = expect_parameters(mu, "padding_mask_function", ("padding_mask",), WHERE)
    registry = getattr(mu, "ALL_MASK_ATTENTION_FUNCTIONS", None)
    if "sdpa" not in getattr(registry, "_global_mapping", {}):
        raise UpstreamChanged("transformers.masking_utils.ALL_MASK_ATTENTION_FUNCTIONS", "has no 'sdpa' mask", WHERE)
    expect_parameters(registry, "register", ("key", "value"), WHERE)

    def sdpa_mask(
        batch_size,
        cache_position,
        kv_length,
        kv_offset=0,
        mask_function=causal,
        attention_mask=None,
        **kwargs,
    ):
        padding = padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
        if padding is not None:
            mask_function = and_masks(mask_function, padding_function(padding))
        q_length = cache_position.shape[0]
        batch = torch.arange(batch_size)[:, None, None, None]
        head = torch.arange(1)[None, :, None, None]
        kv = torch.arange(kv_length)[None, None, None, :] + kv_offset
        mask = mask_function(batch, head, cache_position[None, None, :, None], kv)
        return mask.expand(batch_size, -1, q_length, kv_length)

    saved = registry._global_mapping.get("sdpa")
    registry.register("sdpa", sdpa_mask)
    try:
        yield
    finally:
        registry.register("sdpa", saved)


def kv_shape(text_config) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a text model config."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return text_config.num_hidden_layers, text_config.num_key_value_heads or heads, head_dim


def past_names(layers: int, prefix: str = "past_key_values") -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def export(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    """TorchScript export at OPSET, weights inline, constants folded."""
    import torch

    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
