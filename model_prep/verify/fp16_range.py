"""Does every tensor an fp16 graph computes stay inside fp16's range? Checked on the CPU, where no fp16 kernel runs.

onnxruntime's CPU EP has no fp16 kernel for most ops: it runs an fp16 graph's chains in fp32 between inserted Casts,
so a tensor that would be inf on a GPU (the traced RMSNorm's Pow of a residual of 24,864: 6.2e8) stays finite
there, and verification on the CPU scored the old q4f16 graph at 98.7 % top-1 while a real GPU returned all-zero
logits. SwiftShader has no shader-f16, so no browser test can run the fp16 path either.

The check: for every tensor the fp16 graph holds in fp16 (types from onnxruntime's own resolution of that graph),
take its values in a "shadow" graph with the same tensor names and fp32 activations (the q4 variant for q4f16:
same quantized weights, same nodes, built before the fp16 conversion) on the verification sequences, and require
|value| * margin <= 65504. The margin (2: one binade) leaves room for the drift of fp16 arithmetic from the fp32
shadow. Kernel internals are not tensors: the fused norms (SimplifiedLayerNormalization, stash_type 1) and
GroupQueryAttention's softmax accumulate in fp32 in onnxruntime's CPU and WebGPU kernels, which is why the fused
graph passes where the traced one fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..errors import PrepError

FP16_MAX = 65504.0
MARGIN = 2.0
MASK_VALUE = 1e30  # |values| from here up are masks (see shadow_absmax)
CHUNK = 64  # tokens a run: every exposed intermediate of a chunk is in memory at once


class Fp16RangeExceeded(PrepError):
    """An fp16 variant computes a tensor that overflows (or nearly overflows) fp16 on a GPU."""


@dataclass(frozen=True)
class Overflow:
    tensor: str
    op: str
    absmax: float  # the shadow's largest |value|: the fp16 graph's value would be about this


@dataclass
class RangeReport:
    graph: str
    checked: int  # fp16 tensors compared
    absmax: float  # largest |value| over them
    worst: str
    overflows: list[Overflow]

    def as_dict(self) -> dict:
        return {
            "graph": self.graph,
            "fp16_tensors_checked": self.checked,
            "largest_abs_value": self.absmax,
            "largest_tensor": self.worst,
            "limit": FP16_MAX / MARGIN,
            "overflow_count": len(self.overflows),
            "overflows": [o.__dict__ for o in self.overflows[:20]],  # the largest
        }


def fp16_tensors(graph: Path) -> dict[str, str]:
    """{tensor: producing op} of every node output `graph` computes in fp16, as onnxruntime types them."""
    import onnxruntime as ort

    model = onnx.load(graph, load_external_data=False)
    ops = {o: n.op_type for n in model.graph.node for o in n.output if o}
    _expose(model, list(ops))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # types only: nothing runs
    options.log_severity_level = 3
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ValueError(f"{graph.name}: fp16 range analysis reads single-file graphs only")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return {o.name: ops[o.name] for o in session.get_outputs() if o.type == "tensor(float16)" and o.name in ops}


def check(fp16_graph: Path, shadow_graph: Path, feeds: Iterable[dict[str, np.ndarray]]) -> RangeReport:
    """The fp16 tensors of `fp16_graph` against the shadow's values on `feeds` (one dict per session run; a
    decoder's `past_key_values.*` may be None: they are then carried from the previous run's `present.*`)."""
    wanted = fp16_tensors(fp16_graph)
    absmax = shadow_absmax(shadow_graph, list(wanted), feeds)
    overflows = [
        Overflow(name, wanted[name], value) for name, value in absmax.items() if not value * MARGIN <= FP16_MAX
    ]  # NaN fails too
    overflows.sort(key=lambda o: -o.absmax if np.isfinite(o.absmax) else -np.inf)
    worst = max(absmax, key=lambda n: absmax[n] if np.isfinite(absmax[n]) else np.inf, default="")
    return RangeReport(fp16_graph.name, len(absmax), float(absmax.get(worst, 0.0)), worst, overflows)


def shadow_absmax(graph: Path, names: list[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, float]:
    """max |value| of each tensor in `names` that `graph` computes, over all runs."""
    import onnxruntime as ort

    model = onnx.load(graph)  # with its weights: the session is made from the proto
    produced = {o for n in model.graph.node for o in n.output}
    names = [n for n in names if n in produced]
    outputs_before = [o.name for o in model.graph.output]
    _expose(model, names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor as the graph says
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del model
    out_names = [o.name for o in session.get_outputs()]
    absmax = dict.fromkeys(names, 0.0)
    past: dict[str, np.ndarray] = {}
    for feed in feeds:
        feed = {k: (past[k] if v is None else v) for k, v in feed.items()}
        values = dict(zip(out_names, session.run(None, feed), strict=True))
        for name in names:
            v = values[name]
            if v.size and v.dtype.kind == "f":
                # ±inf and float32's extremes in the fp32 shadow are additive attention masks (-inf, or
                # torch.finfo(float32).min, which the fp16 converter clamps to -65504): meant, and the softmax after
                # them is built for them. No activation of a working model comes near MASK_VALUE. NaN is never meant.
                mags = np.abs(v)
                real = mags[mags < MASK_VALUE] if not (mags < MASK_VALUE).all() else mags
                absmax[name] = max(absmax[name], float(real.max(initial=0.0)))
                if np.isnan(v).any():
                    absmax[name] = float("nan")
        past = {
            o.replace("present.", "past_key_values."): values[o] for o in outputs_before if o.startswith("present.")
        }
    return absmax


def decoder_feeds(
    session_inputs: dict[str, tuple], sequences: list[list[int]], embed=None, positions: bool = False
) -> Iterator[dict]:
    """Runs that push each sequence through a KV-cached decoder in CHUNK-token pieces.

    `session_inputs`: {name: (kv_heads, head_dim, numpy dtype)} of the past_key_values inputs. `embed(ids)` gives
    inputs_embeds for decoders that take them (SmolVLM's decoder_model_merged); None feeds input_ids.
    `positions`: the graph declares position_ids (traced graphs did).
    """
    for seq in sequences:
        for start in range(0, len(seq), CHUNK):
            ids = seq[start : start + CHUNK]
            feed: dict = {"attention_mask": np.ones((1, start + len(ids)), np.int64)}
            if embed is None:
                feed["input_ids"] = np.array([ids], np.int64)
            else:
                feed["inputs_embeds"] = embed(ids)
            if positions:
                feed["position_ids"] = np.arange(start, start + len(ids), dtype=np.int64)[None]
            for name, (heads, head_dim, dtype) in session_inputs.items():
                feed[name] = np.zeros((1, heads, 0, head_dim), dtype) if start == 0 else None
            yield feed


def past_inputs(graph: Path) -> tuple[dict[str, tuple], bool]:
    """{past input: (kv_heads, head_dim, dtype)} and whether the graph declares position_ids."""
    model = onnx.load(graph, load_external_data=False)
    out = {}
    for i in model.graph.input:
        if i.name.startswith("past_key_values."):
            dims = i.type.tensor_type.shape.dim
            dtype = helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            out[i.name] = (dims[1].dim_value, dims[3].dim_value, dtype)
    return out, any(i.name == "position_ids" for i in model.graph.input)


def check_decoder(fp16_graph: Path, shadow_graph: Path, sequences: list[list[int]], embed=None) -> RangeReport:
    past, positions = past_inputs(shadow_graph)
    return check(fp16_graph, shadow_graph, decoder_feeds(past, sequences, embed, positions))


def check_graphs(fp16: dict[str, Path], shadow: dict[str, Path], reference) -> list[RangeReport]:
    """Every sub-model of an fp16 variant against its shadow, on the sequences `reference` scored: `model` (a text
    decoder) or SmolVLM's three graphs (the vision encoder on the reference's image, the decoder on inputs_embeds
    from the shadow's embed_tokens)."""
    sequences = reference.sequences
    image = None
    if getattr(reference, "pixel_values", None) is not None:  # an image family's reference carries its image
        image = (reference.pixel_values, reference.pixel_attention_mask)
    reports = []
    for name, graph in fp16.items():
        if name == "vision_encoder":
            if image is not None:
                feed = {"pixel_values": image[0], "pixel_attention_mask": image[1]}
                reports.append(check(graph, shadow[name], [feed]))
        elif name == "embed_tokens":
            feeds = ({"input_ids": np.array([seq], np.int64)} for seq in sequences)
            reports.append(check(graph, shadow[name], feeds))
        else:
            embed = _embedder(shadow["embed_tokens"]) if "embed_tokens" in shadow else None
            reports.append(check_decoder(graph, shadow[name], sequences, embed))
    return reports


def _embedder(graph: Path):
    """ids → inputs_embeds [1, len, hidden] from an embed_tokens graph."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return lambda ids: session.run(None, {"input_ids": np.array([ids], np.int64)})[0]


def require(report: RangeReport, dtype: str) -> None:
    """Fp16RangeExceeded with the worst tensors when `report` has any overflow."""
    if report.overflows:
        worst = "; ".join(f"{o.tensor} ({o.op}) reaches {o.absmax:.4g}" for o in report.overflows[:3])
        raise Fp16RangeExceeded(
            f"{dtype} {report.graph}: {len(report.overflows)} of {report.checked} fp16 tensors exceed "
            f"{FP16_MAX / MARGIN:.0f} (fp16's largest value / {MARGIN:g}) on the verification text: {worst}. "
            "It would compute inf/NaN on a GPU with shader-f16; nothing was written"
        )


def _expose(model: onnx.ModelProto, names: list[str]) -> None:
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
            have.add(name)


if __name__ == "__main__":  # python -m model_prep.verify.fp16_range MODEL_DIR: the decoder's q4f16 vs q4 on fixed text
    import json
    import sys

    from transformers import AutoTokenizer

    from .text import NATURAL_TEXT

    folder = Path(sys.argv[1])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = [tokenizer(NATURAL_TEXT).input_ids]
    result = check_decoder(folder / "onnx" / "model_q4f16.onnx", folder / "onnx" / "model_q4.onnx", text)
    print(json.dumps(result.as_dict(), indent=2))
    sys.exit(1 if result.overflows else 0)
