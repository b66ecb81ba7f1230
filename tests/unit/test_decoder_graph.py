"""The fused decoder graphs (model_prep/decoder_graph.py) on tiny random models of the exact architectures: structure
(fused ops, node count per layer, no shape arithmetic, the I/O Transformers.js feeds) and values against torch."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from model_prep.export.decoder_graph import describe, export_decoder
from model_prep.sources.tiny import build_tiny
from model_prep.verify.onnx_runner import DecoderSession

# Ops that compute shapes or positions at run time: each would run on the CPU EP during a WebGPU decode step.
SHAPE_OPS = {"Shape", "ConstantOfShape", "Range", "NonZero", "Expand", "Tile", "Concat", "Slice", "Unsqueeze", "Where"}
NODES_PER_LAYER = {"llama": 10, "qwen3": 17}


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def built(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    source = build_tiny(request.param, folder / "source")
    return request.param, source, export_decoder(source, folder / "onnx")


def test_layers_are_fused_ops_without_shape_arithmetic(built) -> None:
    arch, _, path = built
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert not SHAPE_OPS & set(ops)
    info = describe(path)
    assert set(info["per_layer"].values()) == {NODES_PER_LAYER[arch]}
    # mask → seqlens_k/total (4), embedding, lm_head (+ the tied table's Transpose, folded at session start)
    assert info["outside_layers"] == 8
    layer0 = [n.op_type for n in graph.node if n.name.startswith("layers.1/")]
    assert layer0.count("GroupQueryAttention") == 1 and layer0.count("SkipSimplifiedLayerNormalization") == 2
    assert layer0.count("MatMul") == 5  # packed QKV, o_proj, gate, up, down
    if arch == "qwen3":
        assert layer0.count("SimplifiedLayerNormalization") == 2  # q and k, per head
    gqa = next(n for n in graph.node if n.op_type == "GroupQueryAttention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gqa.attribute}
    assert attrs["do_rotary"] == 1 and attrs["rotary_interleaved"] == 0
    inits = {t.name for t in graph.initializer}
    assert {"cos_cache", "sin_cache"} <= inits and gqa.input[7:9] == ["cos_cache", "sin_cache"]


def test_io_is_what_transformersjs_feeds(built) -> None:
    _, source, path = built
    import json

    config = json.loads((source / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    graph = onnx.load(path).graph

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inputs = {i.name: i for i in graph.input}
    past = [f"past_key_values.{i}.{k}" for i in range(config["num_hidden_layers"]) for k in ("key", "value")]
    assert list(inputs) == ["input_ids", "attention_mask", *past]  # no position_ids: GQA derives positions
    for name in past:
        assert dims(inputs[name]) == ["batch_size", kv_heads, "past_sequence_length", head_dim]
    outputs = [o.name for o in graph.output]
    assert outputs == ["logits", *(n.replace("past_key_values", "present") for n in past)]


def test_logits_and_cache_match_torch_through_prefill_and_decode(built) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    _, source, path = built
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    ids = list(range(5, 40))
    with torch.inference_mode():
        out = model(torch.tensor([ids]), use_cache=True)
    session = DecoderSession(path)
    # prefill, a chunk after a past, then single-token steps: every GQA path (first prompt, chunk, decode)
    got = np.concatenate(
        [session.forward(ids[:12]), session.forward(ids[12:20])] + [session.forward([t]) for t in ids[20:]]
    )
    want = out.logits[0].numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert (got.argmax(-1) == want.argmax(-1)).all()
    for i, layer in enumerate(out.past_key_values.layers):
        np.testing.assert_allclose(session.past[f"past_key_values.{i}.key"], layer.keys.numpy(), atol=1e-4)
        np.testing.assert_allclose(session.past[f"past_key_values.{i}.value"], layer.values.numpy(), atol=1e-4)
