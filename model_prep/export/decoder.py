"""fp32 ONNX for text decoders with KV cache, weights streamed from the checkpoint one tensor at a time.

One merged graph, `model.onnx`, serves prefill and decode. Memory is what made this an exporter of its own: optimum's
export of Qwen3-0.6B peaks at 6.5 GB (16.7 GB with its tied-weight pass) because the torch model, the traced graph
and the serialized proto each hold every weight. Here:

1. the graph is traced from a weightless model: parameters are zero-stride placeholders (one float each) and stay
   graph inputs named like the checkpoint's tensors (`export_params=False`);
2. each weight is then read from the safetensors, cast to fp32, transposed where the graph only uses it as a
   MatMul operand, and written out before the next is read.

A tied embedding stays one tensor: the Gather reads it and lm_head multiplies by `Transpose(table)`. The file is
written by model_prep/onnx_io/writer.py: big graphs keep their weights in `model.onnx_data`.
"""

from functools import partial
from pathlib import Path

import numpy as np
import onnx

from ..errors import SourceCorrupt
from ..onnx_io import writer
from ..sources.checkpoint import SafetensorsReader, parameter_aliases
from .tracing import decoder_io, export, flat_cache, kv_shape, present_tensors, traceable_masks

WRAPPER_PREFIX = "model."  # the traced wrapper holds the HF model as `self.model`


def export_decoder(source: Path, out_dir: Path) -> Path:
    """Export `source` (an HF folder with safetensors) to `out_dir/model.onnx`; returns the graph's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    aliases = trace_skeleton(source, path)
    attach_weights(path, SafetensorsReader(source), aliases)
    return path


def trace_skeleton(source: Path, path: Path) -> dict[str, list[str]]:
    """Write the graph without weights; returns {graph input name: checkpoint names of that parameter}."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    with init_empty_weights():  # parameters on the meta device; buffers (rotary inv_freq) stay real
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    model.tie_weights()
    aliases = parameter_aliases(model)
    names: dict[str, list[str]] = {}
    owners = list(_parameter_owners(model))
    # Placeholders are overlapping views of one buffer: contiguous, so tracing a Linear copies nothing (the tracer
    # keeps every intermediate alive: zero-stride placeholders cost 3.5 GB on Qwen3-0.6B), and each starts at its
    # own offset so no two compare equal (the exporter merges initializers that do).
    largest = max(p.numel() for _, m in owners for p in m._parameters.values() if p is not None)
    buffer = torch.arange(largest + len(aliases), dtype=torch.float32).mul_(1e-9)
    count = 0
    for module_name, module in owners:
        for attr, param in list(module._parameters.items()):
            if param is None:
                continue
            count += 1
            placeholder = buffer[count : count + param.numel()].view(param.shape)
            module._parameters[attr] = torch.nn.Parameter(placeholder, requires_grad=False)
            names[WRAPPER_PREFIX + (f"{module_name}.{attr}" if module_name else attr)] = aliases[id(param)]
    model.tie_weights()

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = flat_cache(config, past, past[0])
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            return (out.logits, *present_tensors(out.past_key_values))

    layers, kv_heads, head_dim = kv_shape(config)
    past_len, seq = 3, 2  # a non-empty past so the traced graph concatenates and offsets positions
    ids = torch.tensor([[1, 2]])
    mask = torch.ones(1, past_len + seq, dtype=torch.int64)
    positions = torch.arange(past_len, past_len + seq)[None]
    past = [torch.zeros(1, kv_heads, past_len, head_dim) for _ in range(2 * layers)]
    inputs, outputs, axes = decoder_io(layers, "input_ids")
    with torch.no_grad(), traceable_masks():
        export(Decoder().eval(), (ids, mask, positions, *past), path, inputs, outputs, axes, with_weights=False)
    fold_constants(path)
    return names


def fold_constants(path: Path) -> None:
    """Fold what the weightless trace left unfolded: half the nodes are shape arithmetic on constants, and SDPA's
    scale is a float64 `Sqrt(Constant)` that onnxruntime-web has no kernel for (the session fails to load).
    Weights are graph inputs here, so nothing but constants is folded."""
    from onnxscript import optimizer

    writer.save(optimizer.optimize(onnx.load(path)), path)


def _parameter_owners(model):
    """(qualified name, module) of every module owning a parameter, each shared parameter once."""
    seen: set[int] = set()
    for name, module in model.named_modules():
        own = [p for p in module._parameters.values() if p is not None and id(p) not in seen]
        if own:
            seen.update(id(p) for p in own)
            yield name, module


def attach_weights(path: Path, reader: SafetensorsReader, aliases: dict[str, list[str]]) -> None:
    """Turn the skeleton's parameter inputs into initializers, streamed from `reader` one tensor at a time.

    The graph is rewired first (parameter inputs become initializer names, weight Transposes go), then written
    with each weight read from the checkpoint only when the writer gets to it: no more than one is ever in memory.
    """
    model = onnx.load(path)
    graph = model.graph
    params = [i for i in graph.input if i.name in aliases]
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    plan: list[tuple[str, list[str], tuple[int, ...], bool]] = []  # initializer, checkpoint names, shape, transpose
    dropped: set[int] = set()
    for param in params:
        name = param.name.removeprefix(WRAPPER_PREFIX)
        shape = tuple(d.dim_value for d in param.type.tensor_type.shape.dim)
        consumers = users.get(param.name, [])
        # Only ever a MatMul operand: store it as MatMul's B ([in, out]) and drop the Transposes.
        transpose = bool(consumers) and all(_is_transpose_2d(n) for n in consumers)
        if transpose:
            for node in consumers:
                for user in users.get(node.output[0], []):
                    user.input[:] = [name if x == node.output[0] else x for x in user.input]
                dropped.add(id(node))
        for node in consumers:
            node.input[:] = [name if x == param.name else x for x in node.input]
        plan.append((name, aliases[param.name], shape, transpose))
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    for param in params:
        graph.input.remove(param)

    weights = [
        writer.Streamed(name, shape[::-1] if flip else shape, partial(_read, reader, name, names, shape, flip))
        for name, names, shape, flip in plan
    ]
    writer.save(model, path, weights)


def _read(
    reader: SafetensorsReader, name: str, candidates: list[str], shape: tuple[int, ...], transpose: bool
) -> np.ndarray:
    array = reader.read(candidates)
    if array.shape != shape:
        raise SourceCorrupt(f"{name} has shape {array.shape} in the checkpoint, config.json says {shape}")
    return np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)


def _is_transpose_2d(node: onnx.NodeProto) -> bool:
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return node.op_type == "Transpose" and perm == [1, 0]
