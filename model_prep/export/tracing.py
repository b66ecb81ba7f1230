"""What both torch.onnx exporters share: traceable masks, the KV cache as flat named tensors, the export call.

The decoder I/O follows what Transformers.js feeds a `*ForCausalLM` graph: `input_ids` (or `inputs_embeds`),
`attention_mask` [batch, past+seq], `position_ids` [batch, seq], `past_key_values.{i}.key|value`
[batch_size, kv_heads, past_sequence_length, head_dim] → `logits`, `present.{i}.key|value`. The runtime builds the
empty cache from the graph's input metadata: the batch axis must be named `batch_size` (any other symbolic axis
becomes 0) and kv_heads / head_dim must be concrete numbers.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
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


def flat_cache(text_config, past: Sequence, like):
    """A DynamicCache holding `past` (key, value, key, value, …) as given, for tracing."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=text_config)
    for i, layer in enumerate(cache.layers):
        # Filled directly: DynamicLayer.update would concatenate onto an empty 1-D tensor first.
        layer.keys, layer.values = past[2 * i], past[2 * i + 1]
        layer.dtype, layer.device, layer.is_initialized = like.dtype, like.device, True
    return cache


def present_tensors(cache) -> list:
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


def decoder_io(layers: int, first_input: str) -> tuple[list[str], list[str], dict]:
    """Input names, output names and dynamic axes of a merged decoder graph."""
    inputs = [first_input, "attention_mask", "position_ids", *past_names(layers)]
    outputs = ["logits", *past_names(layers, "present")]
    axes = {
        first_input: {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
        **{name: {0: "batch_size", 2: "past_sequence_length"} for name in past_names(layers)},
        **{name: {0: "batch_size", 2: "total_sequence_length"} for name in past_names(layers, "present")},
    }
    return inputs, outputs, axes


def export(
    module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict, with_weights: bool = True
) -> None:
    """TorchScript export at OPSET. Without weights, parameters stay graph inputs named as in the module and no
    constant folding runs (folding would rename transposed weights to `onnx::MatMul_*`)."""
    import torch

    with nullcontext() if with_weights else _shape_inference_without_values():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=with_weights,
            export_params=with_weights,
            dynamo=False,
        )


@contextmanager
def _shape_inference_without_values() -> Iterator[None]:
    """Hide the parameters' values from the exporter's graph-wide ONNX shape inference.

    It copies every parameter it is handed into the model it infers on: on Qwen3-0.6B's weightless trace that took
    the export from 1.1 to 3.9 GB peak RSS for nothing, since a parameter's shape is on its graph input already
    (the skeleton written is byte-identical with or without the values). torch's exporter calls the pass as
    `_C._jit_pass_onnx_graph_shape_type_inference(graph, params_dict, opset)`; its signature is checked first.
    """
    import torch

    infer = expect_parameters(
        torch._C, "_jit_pass_onnx_graph_shape_type_inference", ("graph", "params_dict", "opset_version"), WHERE
    )
    torch._C._jit_pass_onnx_graph_shape_type_inference = lambda graph, _params, opset: infer(graph, {}, opset)
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_graph_shape_type_inference = infer
