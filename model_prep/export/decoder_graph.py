"""Fused fp32 ONNX decoders built directly from config.json and the safetensors, one weight at a time.

The graph is written node by node from the config, the way onnxruntime-genai's model builder does, with the
Transformers.js I/O and weights left as plain MatMuls for our quantizer (model_prep/quantize/variants.py). Per layer:

    [Skip]SimplifiedLayerNormalization ─ MatMul(packed QKV) ─ [Qwen3: q/k RMSNorm per head] ─ GroupQueryAttention
    ─ MatMul(o_proj) ─ SkipSimplifiedLayerNormalization ─ MatMul(gate), MatMul(up) ─ QuickGelu ─ Mul ─ MatMul(down)

- GroupQueryAttention (com.microsoft) with `do_rotary=1`: rotary embedding from cos/sin caches (initializers
  [max_positions, head_dim/2]) at positions the op derives from `seqlens_k`, so the graph has no position_ids
  input (Transformers.js feeds only the inputs a session declares); softmax accumulates in fp32 in its kernels.
- RMSNorm is SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization (stash_type 1: the sum of squares is
  accumulated in fp32 whatever the tensor type; ORT's WebGPU kernel does the same), the residual adds folded in.
  The traced graph computed it as Pow → ReduceMean in the graph's own type: in fp16 a residual of 24,864 squared
  is inf (docs/decoder-graphs.md).
- QuickGelu(alpha=1) is x·sigmoid(x), SiLU in one node.
- `seqlens_k` and `total_sequence_length` come from the attention mask with no Shape op:
  Cast(int32) → ReduceSum(axis 1) → {Sub 1; ReduceMax} (onnxruntime-genai's `enable_webgpu_graph` form). These
  four nodes read the CPU-resident mask once per step; no other node computes a shape.

I/O (what Transformers.js 4.3.1 feeds a `*ForCausalLM` / idefics3 decoder): `input_ids` int64 (or `inputs_embeds`
float) [batch_size, sequence_length], `attention_mask` int64 [batch_size, total_sequence_length],
`past_key_values.{i}.key|value` [batch_size, kv_heads, past_sequence_length, head_dim] → `logits`
[batch_size, sequence_length, vocab], `present.{i}.key|value` [batch_size, kv_heads, total_sequence_length,
head_dim]. The batch axis must be named `batch_size` and kv_heads / head_dim be numbers: the runtime builds the
empty first cache from this metadata.

A tied embedding stays one tensor: Gather reads it and lm_head multiplies by Transpose(table), the pattern the
quantizer stores once. The weights go through the one ONNX writer (onnx_io/writer.py) as streamed tensors, each
read from the checkpoint when its turn comes; graphs over its INLINE_LIMIT keep them in `<name>.onnx_data`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import PrepError, SourceCorrupt
from ..onnx_io import writer
from ..sources.checkpoint import SafetensorsReader

OPSET = 18
MS = "com.microsoft"
FLOAT = TensorProto.FLOAT


class UnsupportedDecoder(PrepError):
    """The checkpoint is a decoder this builder does not know how to lay out."""


@dataclass(frozen=True)
class DecoderSpec:
    """What the graph is built from: the text model's shape and where its weights are in the checkpoint."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    eps: float
    max_positions: int
    inv_freq: tuple[float, ...]  # rotary frequencies, head_dim/2 of them
    rope_scale: float  # attention_factor of scaled rope types (1 for the default)
    qk_norm: bool  # Qwen3: RMSNorm over each head of q and k before rotary
    attention_bias: bool
    tied: bool
    prefix: str  # checkpoint name of the text model: "model." or "model.text_model."
    first_input: str  # "input_ids" or "inputs_embeds"

    @property
    def qkv_width(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim


def decoder_spec(source: Path) -> DecoderSpec:
    """The spec of `source`'s text decoder: a Llama/Qwen3 causal LM, or the text model of Idefics3/SmolVLM."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    if config.model_type == "idefics3":
        text, prefix, first_input = config.text_config, "model.text_model.", "inputs_embeds"
        tied = bool(getattr(config, "tie_word_embeddings", False))
    else:
        text, prefix, first_input = config, "model.", "input_ids"
        tied = bool(getattr(config, "tie_word_embeddings", False))
    if text.model_type not in ("llama", "qwen3"):
        raise UnsupportedDecoder(f"no fused decoder graph for model_type {text.model_type!r} (llama and qwen3 only)")
    if getattr(text, "hidden_act", "silu") != "silu":
        raise UnsupportedDecoder(f"{text.model_type}: activation {text.hidden_act!r} is not SiLU")
    if getattr(text, "mlp_bias", False):
        raise UnsupportedDecoder(f"{text.model_type}: MLP biases are not supported")
    if getattr(text, "use_sliding_window", False):
        raise UnsupportedDecoder(f"{text.model_type}: sliding-window attention is not supported")
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    inv_freq, scale = _rope(text)
    return DecoderSpec(
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        heads=heads,
        kv_heads=text.num_key_value_heads or heads,
        head_dim=head_dim,
        intermediate=text.intermediate_size,
        vocab=text.vocab_size,
        eps=float(text.rms_norm_eps),
        max_positions=text.max_position_embeddings,
        inv_freq=tuple(float(f) for f in inv_freq),
        rope_scale=float(scale),
        qk_norm=text.model_type == "qwen3",
        attention_bias=bool(getattr(text, "attention_bias", False)),
        tied=tied,
        prefix=prefix,
        first_input=first_input,
    )


def _rope(text_config) -> tuple[np.ndarray, float]:
    """(inv_freq, attention scaling) the way transformers computes them for this config."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = getattr(text_config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type in ("dynamic", "longrope"):  # position-dependent: one static cos/sin cache cannot hold them
        raise UnsupportedDecoder(f"rope type {rope_type!r} is not supported")
    inv_freq, factor = ROPE_INIT_FUNCTIONS[rope_type](text_config, "cpu")
    return inv_freq.double().numpy(), factor


def export_decoder(source: Path, out_dir: Path, name: str = "model") -> Path:
    """Write `out_dir/<name>.onnx` (fused fp32 decoder) from `source` (an HF folder with safetensors)."""
    spec = decoder_spec(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    reader = SafetensorsReader(source)
    builder = _Builder(spec, reader)
    model = builder.build()
    writer.save(model, path, builder.streamed())
    return path


# ---------------------------------------------------------------------------------------------------- graph


class _Builder:
    """Nodes first (each weight is only a name and a way to load it), then the weights in the nodes' order."""

    def __init__(self, spec: DecoderSpec, reader: SafetensorsReader) -> None:
        self.spec = spec
        self.reader = reader
        self.nodes: list[onnx.NodeProto] = []
        self.loaders: dict[str, writer.Streamed] = {}  # initializer name → its shape and a loader of its value

    # -- helpers
    def node(self, op: str, inputs: list[str], name: str, outputs: int | list[str] = 1, **attrs) -> list[str]:
        outs = [f"{name}/output_{i}" for i in range(outputs)] if isinstance(outputs, int) else outputs
        domain = MS if op in ("GroupQueryAttention", "SkipSimplifiedLayerNormalization", "QuickGelu") else ""
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def weight(self, name: str, load: Callable[[], np.ndarray], shape: tuple[int, ...], dtype=np.float32) -> str:
        if name not in self.loaders:
            self.loaders[name] = writer.Streamed(name, tuple(shape), _finite(name, load), np.dtype(dtype))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        return self.weight(name, lambda: value, value.shape, value.dtype)

    def ckpt(self, *names: str, transpose: bool = False) -> Callable[[], np.ndarray]:
        """A loader of one checkpoint tensor (the first of `names` the checkpoint has), as MatMul's B if asked."""

        def load() -> np.ndarray:
            array = self.reader.read([self.spec.prefix + n if not n.startswith("lm_head") else n for n in names])
            return np.ascontiguousarray(array.T if transpose else array, np.float32)

        return load

    # -- the graph
    def build(self) -> onnx.ModelProto:
        s = self.spec
        seqlens_k, total = self.mask()
        if s.first_input == "input_ids":
            table = self.weight("model.embed_tokens.weight", self.ckpt("embed_tokens.weight"), (s.vocab, s.hidden))
            hidden = self.node("Gather", [table, "input_ids"], "embed_tokens")[0]
        else:
            hidden = "inputs_embeds"
        pending = None  # the last sub-layer's output, not yet added to the residual stream
        for i in range(s.layers):
            normed, hidden = self.norm(f"layers.{i}/input_layernorm", hidden, pending, f"layers.{i}.input_layernorm")
            attn = self.attention(i, normed, seqlens_k, total)
            normed, hidden = self.norm(
                f"layers.{i}/post_attention_layernorm", hidden, attn, f"layers.{i}.post_attention_layernorm"
            )
            pending = self.mlp(i, normed)
        normed, _ = self.norm("final_norm", hidden, pending, "norm", residual_out=False)
        if s.first_input == "input_ids" and s.tied:
            head = self.node("Transpose", ["model.embed_tokens.weight"], "lm_head/transpose", perm=[1, 0])[0]
        else:
            load = self.ckpt("lm_head.weight", "embed_tokens.weight", transpose=True)
            head = self.weight("lm_head.weight", load, (s.hidden, s.vocab))
        self.node("MatMul", [normed, head], "lm_head", outputs=["logits"])
        return self.model()

    def mask(self) -> tuple[str, str]:
        """seqlens_k [batch] (tokens seen - 1) and total_sequence_length (scalar) from the 2-D mask, int32."""
        mask = self.node("Cast", ["attention_mask"], "attn_mask/cast", to=TensorProto.INT32)[0]
        axis = self.const("attn_mask/axis_1", np.array([1], np.int64))
        lengths = self.node("ReduceSum", [mask, axis], "attn_mask/sum", keepdims=0)[0]
        one = self.const("attn_mask/one", np.array([1], np.int32))
        seqlens_k = self.node("Sub", [lengths, one], "attn_mask/seqlens_k")[0]
        total = self.node("ReduceMax", [lengths], "attn_mask/total_length", keepdims=0)[0]
        return seqlens_k, total

    def norm(
        self, name: str, hidden: str, pending: str | None, weight: str, residual_out: bool = True
    ) -> tuple[str, str]:
        """RMSNorm of hidden (+ pending, added into the residual stream first). Returns (normed, residual)."""
        gamma = self.weight(f"model.{weight}.weight", self.ckpt(f"{weight}.weight"), (self.spec.hidden,))
        attrs = {"epsilon": self.spec.eps}
        if pending is None:
            out = self.node("SimplifiedLayerNormalization", [hidden, gamma], name, axis=-1, stash_type=1, **attrs)
            return out[0], hidden
        outs = [f"{name}/output_0", "", "", f"{name}/output_3"] if residual_out else [f"{name}/output_0"]
        out = self.node("SkipSimplifiedLayerNormalization", [pending, hidden, gamma], name, outputs=outs, **attrs)
        return out[0], out[-1]

    def attention(self, i: int, x: str, seqlens_k: str, total: str) -> str:
        s = self.spec
        p, name = f"layers.{i}.self_attn", f"layers.{i}/attn"
        qkv_w = self.weight(f"model.{p}.qkv_proj.weight", lambda: self.packed(p, "weight"), (s.hidden, s.qkv_width))
        qkv = self.node("MatMul", [x, qkv_w], f"{name}/qkv_proj")[0]
        if s.attention_bias:
            bias = self.weight(f"model.{p}.qkv_proj.bias", lambda: self.packed(p, "bias"), (s.qkv_width,))
            qkv = self.node("Add", [qkv, bias], f"{name}/qkv_bias")[0]
        qkv_inputs = [qkv, "", ""]
        if s.qk_norm:
            qkv_inputs = self.qk_norm(i, qkv)
        past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        present = [f"present.{i}.key", f"present.{i}.value"]
        cos, sin = self.rotary_caches()
        out = self.node(
            "GroupQueryAttention",
            [*qkv_inputs, *past, seqlens_k, total, cos, sin],
            f"{name}/GroupQueryAttention",
            outputs=[f"{name}/GroupQueryAttention/output_0", *present],
            num_heads=s.heads,
            kv_num_heads=s.kv_heads,
            scale=float(s.head_dim**-0.5),
            do_rotary=1,
            rotary_interleaved=0,
            local_window_size=-1,
        )[0]
        load = self.ckpt(f"{p}.o_proj.weight", transpose=True)
        o_w = self.weight(f"model.{p}.o_proj.weight", load, (s.heads * s.head_dim, s.hidden))
        return self.node("MatMul", [out, o_w], f"{name}/o_proj")[0]

    def qk_norm(self, i: int, qkv: str) -> list[str]:
        """Qwen3's per-head RMSNorm of q and k: GroupQueryAttention takes 3-D q/k/v, the norm works on the last
        axis, so the packed projection is viewed as heads, split, normalized and viewed back (Reshapes are free
        views on every EP; the two norms and the Split are the only extra kernels)."""
        s = self.spec
        p, name = f"layers.{i}.self_attn", f"layers.{i}/attn"
        heads = self.const("qk_norm/heads_shape", np.array([0, 0, s.heads + 2 * s.kv_heads, s.head_dim], np.int64))
        split = self.const("qk_norm/split", np.array([s.heads, s.kv_heads, s.kv_heads], np.int64))
        q_flat = self.const("qk_norm/q_shape", np.array([0, 0, s.heads * s.head_dim], np.int64))
        kv_flat = self.const("qk_norm/kv_shape", np.array([0, 0, s.kv_heads * s.head_dim], np.int64))
        per_head = self.node("Reshape", [qkv, heads], f"{name}/qkv_heads")[0]
        q, k, v = self.node("Split", [per_head, split], f"{name}/qkv_split", outputs=3, axis=2)
        out = []
        for x, which, flat in ((q, "q", q_flat), (k, "k", kv_flat), (v, "v", kv_flat)):
            if which != "v":
                load = self.ckpt(f"{p}.{which}_norm.weight")
                gamma = self.weight(f"model.{p}.{which}_norm.weight", load, (s.head_dim,))
                x = self.node(
                    "SimplifiedLayerNormalization",
                    [x, gamma],
                    f"{name}/{which}_norm",
                    axis=-1,
                    epsilon=s.eps,
                    stash_type=1,
                )[0]
            out.append(self.node("Reshape", [x, flat], f"{name}/{which}_flat")[0])
        return out

    def mlp(self, i: int, x: str) -> str:
        p, name = f"layers.{i}.mlp", f"layers.{i}/mlp"
        s = self.spec
        shapes = {"gate_proj": (s.hidden, s.intermediate), "up_proj": (s.hidden, s.intermediate)}
        shapes["down_proj"] = (s.intermediate, s.hidden)
        w = {
            k: self.weight(f"model.{p}.{k}.weight", self.ckpt(f"{p}.{k}.weight", transpose=True), shape)
            for k, shape in shapes.items()
        }
        gate = self.node("MatMul", [x, w["gate_proj"]], f"{name}/gate_proj")[0]
        up = self.node("MatMul", [x, w["up_proj"]], f"{name}/up_proj")[0]
        act = self.node("QuickGelu", [gate], f"{name}/act", alpha=1.0)[0]
        prod = self.node("Mul", [act, up], f"{name}/mul")[0]
        return self.node("MatMul", [prod, w["down_proj"]], f"{name}/down_proj")[0]

    def packed(self, prefix: str, kind: str) -> np.ndarray:
        """q, k and v projections side by side: MatMul B [hidden, (heads + 2 kv_heads) * head_dim], or the bias."""
        parts = [self.ckpt(f"{prefix}.{x}_proj.{kind}", transpose=kind == "weight")() for x in "qkv"]
        return np.ascontiguousarray(np.concatenate(parts, axis=-1), np.float32)

    def rotary_caches(self) -> tuple[str, str]:
        s = self.spec
        shape = (s.max_positions, len(s.inv_freq))

        def cache(fn) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                angles = np.arange(s.max_positions, dtype=np.float64)[:, None] * np.asarray(s.inv_freq)[None, :]
                return (fn(angles) * s.rope_scale).astype(np.float32)

            return load

        return self.weight("cos_cache", cache(np.cos), shape), self.weight("sin_cache", cache(np.sin), shape)

    def model(self) -> onnx.ModelProto:
        s = self.spec
        inputs = []
        if s.first_input == "input_ids":
            inputs.append(
                helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])
            )
        else:
            inputs.append(
                helper.make_tensor_value_info("inputs_embeds", FLOAT, ["batch_size", "sequence_length", s.hidden])
            )
        inputs.append(
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])
        )
        outputs = [helper.make_tensor_value_info("logits", FLOAT, ["batch_size", "sequence_length", s.vocab])]
        for i in range(s.layers):
            for kind in ("key", "value"):
                past = ["batch_size", s.kv_heads, "past_sequence_length", s.head_dim]
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", FLOAT, past))
                present = ["batch_size", s.kv_heads, "total_sequence_length", s.head_dim]
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", FLOAT, present))
        graph = helper.make_graph(self.nodes, "decoder", inputs, outputs)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
            producer_name="edge-chat model_prep.decoder_graph",
        )
        model.ir_version = 9
        return model

    def streamed(self) -> list[writer.Streamed]:
        """Every initializer in the order the nodes read it, each loaded only when the writer gets to it."""
        return list(self.loaders.values())


def _finite(name: str, load: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        array = load()
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SourceCorrupt(f"{name} holds NaN or inf values in the checkpoint")
        return array

    return read


def layer_of(node_name: str) -> int | None:
    """The decoder layer a node belongs to (`layers.{i}/…`), None for the nodes outside the layers."""
    if node_name.startswith("layers."):
        return int(node_name.split("/", 1)[0].split(".")[1].split("_")[0])
    return None


def describe(path: Path) -> dict:
    """Node counts of a built graph: in all, per layer, and outside the layers (for tests and the bench)."""
    model = onnx.load(path, load_external_data=False)
    per_layer: dict[int, int] = {}
    outside = 0
    for node in model.graph.node:
        layer = layer_of(node.name)
        if layer is None:
            outside += 1
        else:
            per_layer[layer] = per_layer.get(layer, 0) + 1
    return {"nodes": len(model.graph.node), "per_layer": per_layer, "outside_layers": outside}


if __name__ == "__main__":  # python -m model_prep.export.decoder_graph SOURCE OUT_DIR
    import sys

    built = export_decoder(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(describe(built)))
