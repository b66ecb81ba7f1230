"""Which nodes of a graph onnxruntime would run on its CPU EP during a WebGPU decode step: a static model of ORT's
placement, for machines without a GPU (the GPU gate, bench/gpu_gate.py, measures the real thing with a profile).

Modelled from onnxruntime's sources (1.2x):
- kernels: the WebGPU EP's registrations (core/providers/webgpu/webgpu_execution_provider.cc and
  contrib_ops/webgpu/webgpu_contrib_kernels.cc). Their element types are float/float16/int32/uint32 (plus bool
  for the comparisons and Where); only the view ops (Reshape, Squeeze, Unsqueeze, Flatten, Identity), Shape and
  Cast take int64, and no kernel takes uint8/int8 data. A node without a kernel for its op and types falls back to
  the CPU EP.
- CPU-preferred nodes (core/framework/fallback_cpu_capability.cc, GetCpuPreferredNodes): walking back from every
  input a WebGPU kernel wants in CPU memory (Reshape's shape, Unsqueeze's axes, Slice's bounds, a Reduce's axes,
  GroupQueryAttention's total_sequence_length, ...), a non-float node goes to the CPU when every input is a graph
  input, an initializer or a CPU tensor (Shape's output, a CPU node's output).
- Constant subgraphs (every input an initializer) are folded at session creation and never run.

A CPU node reading a tensor that a WebGPU node computed is a readback: the step waits for the GPU there. CPU nodes
fed only by graph inputs (the attention mask, the token ids) and initializers cost a CPU launch but no wait.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto

WEBGPU_OPS = {
    # core (onnx domain)
    *"Abs Neg Floor Ceil Reciprocal Sqrt Exp Erf Sigmoid HardSigmoid Log Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh"
    " Acosh Atanh Tanh Not Cast Clip Elu Relu LeakyRelu ThresholdedRelu Gelu ReduceMax ReduceMean ReduceMin"
    " ReduceProd ReduceSum ReduceL1 ReduceL2 ReduceLogSum ReduceSumSquare ReduceLogSumExp Add Sub Mul Div Pow Equal"
    " Greater GreaterOrEqual Less LessOrEqual Shape Reshape Squeeze Unsqueeze Identity Flatten Transpose Concat"
    " Split Gather GatherElements GatherND Slice Expand Tile Where Softmax MatMul Gemm Conv ConvTranspose"
    " LayerNormalization InstanceNormalization BatchNormalization Resize Pad Range CumSum DepthToSpace ScatterND"
    " Einsum ArgMax ArgMin Trilu Max Min SimplifiedLayerNormalization".split(),
    # com.microsoft
    *"Attention BiasAdd BiasGelu BiasSplitGelu FastGelu FusedConv GatherBlockQuantized Gelu GroupQueryAttention"
    " MatMulNBits MultiHeadAttention QuickGelu RotaryEmbedding SkipLayerNormalization"
    " SkipSimplifiedLayerNormalization".split(),
}
VIEW_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}
GPU_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.UINT32, TensorProto.BOOL}
FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16}
# (op, input index) the WebGPU kernel reads from CPU memory
CPU_INPUTS = {
    "Reshape": {1},
    "Unsqueeze": {1},
    "Squeeze": {1},
    "Slice": {1, 2, 3, 4},
    "Expand": {1},
    "Tile": {1},
    "Split": {1},
    "Pad": {1, 2, 3},
    "Resize": {1, 2, 3},
    "Range": {0, 1, 2},
    "ConstantOfShape": {0},
    "GroupQueryAttention": {6},
    **{op: {1} for op in WEBGPU_OPS if op.startswith("Reduce")},
}
INDEX_INPUTS = {"Gather": {1}, "GatherElements": {1}, "GatherND": {1}, "GroupQueryAttention": {5, 6}}
# packed weights a kernel reads as raw words (uint8 is fine there)
WEIGHT_INPUTS = {"MatMulNBits": {1, 2, 3, 4, 5}, "GatherBlockQuantized": {0, 2, 3}}


@dataclass
class Placement:
    nodes: int
    folded: int  # constant subgraphs: computed once at session creation
    cpu: list[str] = field(default_factory=list)  # "op name" of each CPU-EP node per step
    readbacks: list[str] = field(default_factory=list)  # CPU nodes reading a GPU-computed tensor
    cpu_ops: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "nodes": self.nodes,
            "folded_at_load": self.folded,
            "cpu_ep_nodes_per_step": len(self.cpu),
            "cpu_ep_ops": dict(self.cpu_ops.most_common()),
            "gpu_readbacks_per_step": len(self.readbacks),
            "readback_nodes": self.readbacks[:8],
        }


def placement(path: Path) -> Placement:
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    types = _types(model)
    consts = {t.name for t in graph.initializer} | {""}
    graph_inputs = {i.name for i in graph.input}
    folded: set[str] = set()
    for node in graph.node:
        if node.op_type != "Shape" and all(i in consts for i in node.input):
            consts.update(node.output)
            folded.add(node.name)
    live = [n for n in graph.node if n.name not in folded]

    # kernels: op and element types
    on_cpu: set[str] = set()
    for node in live:
        if not _has_webgpu_kernel(node, types):
            on_cpu.add(node.name)
    # CPU-preferred: nodes upstream of CPU inputs whose inputs are all CPU-side
    producer = {o: n for n in live for o in n.output}
    candidates: set[str] = set()
    stack = [node.input[i] for node in live for i in CPU_INPUTS.get(node.op_type, ()) if i < len(node.input)]
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or node.name in candidates:
            continue
        candidates.add(node.name)
        stack.extend(node.input)
    cpu_tensors = set(graph_inputs) | consts
    for node in live:  # topological order
        if node.name in on_cpu:
            cpu_tensors.update(node.output)
            continue
        if node.op_type == "Shape":  # a WebGPU kernel whose output lives in CPU memory
            cpu_tensors.update(node.output)
            if node.name in candidates and node.input[0] in graph_inputs:
                on_cpu.add(node.name)
            continue
        if node.name not in candidates or any(types.get(o) in FLOATS for o in node.output):
            continue
        cpu_in = CPU_INPUTS.get(node.op_type, set())
        fed = [
            i in consts or i in graph_inputs or (i in cpu_tensors and k not in cpu_in) for k, i in enumerate(node.input)
        ]
        if all(fed):
            on_cpu.add(node.name)
            cpu_tensors.update(node.output)
    result = Placement(len(graph.node), len(folded))
    for node in live:
        if node.name not in on_cpu:
            continue
        result.cpu.append(f"{node.op_type} {node.name}")
        result.cpu_ops[node.op_type] += 1
        gpu_inputs = [i for i in node.input if i and i not in cpu_tensors and i not in _shape_outputs(live)]
        if gpu_inputs:
            result.readbacks.append(f"{node.op_type} {node.name}")
    return result


def _has_webgpu_kernel(node: onnx.NodeProto, types: dict[str, int]) -> bool:
    if node.op_type not in WEBGPU_OPS:
        return False
    if node.op_type in VIEW_OPS or node.op_type == "Shape":
        return True
    skip = INDEX_INPUTS.get(node.op_type, set()) | CPU_INPUTS.get(node.op_type, set())
    skip |= WEIGHT_INPUTS.get(node.op_type, set())
    data = [types.get(x) for k, x in enumerate(node.input) if x and k not in skip]
    if node.op_type == "Cast":  # int64 in or out is converted; 8-bit types are not
        data = [t for t in data if t != TensorProto.INT64]
        data += [t for t in (types.get(o) for o in node.output) if t != TensorProto.INT64]
    else:
        data += [types.get(o) for o in node.output if o]
    return all(t is None or t in GPU_TYPES for t in data)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor: onnx shape inference, com.microsoft outputs typed like their first input."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:  # contrib ops onnx does not know: outputs typed like the first input (true for these)
        for o in node.output:
            if o and not types.get(o) and node.input and types.get(node.input[0]):
                types[o] = types[node.input[0]]
    return {k: v for k, v in types.items() if v}


def _shape_outputs(nodes) -> set[str]:
    return {o for n in nodes if n.op_type == "Shape" for o in n.output}


if __name__ == "__main__":  # python -m bench.cpu_placement GRAPH.onnx
    import json
    import sys

    print(json.dumps(placement(Path(sys.argv[1])).as_dict(), indent=2))
