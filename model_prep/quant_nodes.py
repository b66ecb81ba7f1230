"""The quantized node patterns the variants are made of, each built from one weight's code.

- MatMulNBits (q4, q4f16): y = x @ dequant(B); B [N, nb, blob] uint8, scales [N, nb], optional uint8 zero points.
- GatherBlockQuantized (q4 / q4f16 embedding, WebGPU): rows of a block-quantized [vocab, hidden] table. A table tied
  to lm_head is stored once: GatherBlockQuantized reads MatMulNBits' B through Reshape(B, [vocab, -1]) and the same
  scales / zero points (the packing is the same; onnxruntime requires MatMulNBits' B to be 3-D).
- MatMulInteger (q8): quantize_dynamic's pattern, x quantized per call by DynamicQuantizeLinear, the weight int8
  per output column, y = float(x_q·W_q) * (x_scale * w_scale).
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass, field

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from .blockwise import BlockCode

MS = "com.microsoft"


@dataclass
class Emitted:
    """Nodes and initializers a rewrite adds to the variant.

    `initializers` may be the variant graph's own repeated field: each tensor is then copied into the proto as it
    is made, instead of the whole variant existing twice (a list of protos, then the graph).
    """

    nodes: list[NodeProto] = field(default_factory=list)
    initializers: MutableSequence[TensorProto] = field(default_factory=list)

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


@dataclass(frozen=True)
class BlockTensors:
    """Initializer names of a BlockCode in the graph."""

    packed: str
    scales: str
    zero_points: str | None


def add_block_code(emit: Emitted, prefix: str, code: BlockCode) -> BlockTensors:
    """`{prefix}_Q{bits}`, `{prefix}_scales`, `{prefix}_zero_points`: the names onnxruntime's quantizer gives."""
    zp = None if code.zero_points is None else emit.init(f"{prefix}_zero_points", code.zero_points)
    return BlockTensors(
        emit.init(f"{prefix}_Q{code.bits}", code.packed), emit.init(f"{prefix}_scales", code.scales), zp
    )


def matmul_nbits(emit: Emitted, x: str, out: str, name: str, code: BlockCode, tensors: BlockTensors) -> None:
    inputs = [x, tensors.packed, tensors.scales] + ([tensors.zero_points] if tensors.zero_points else [])
    attrs = {"K": code.k, "N": code.n, "bits": code.bits, "block_size": code.block_size}
    if code.accuracy_level:  # left out when 0, as onnxruntime's quantizer does (not every EP knows it)
        attrs["accuracy_level"] = code.accuracy_level
    emit.nodes.append(helper.make_node("MatMulNBits", inputs, [out], name=name, domain=MS, **attrs))


def gather_block_quantized(
    emit: Emitted, ids: str, out: str, name: str, code: BlockCode, tensors: BlockTensors, shared: bool
) -> None:
    """Rows `ids` of the table. `shared`: `tensors.packed` is MatMulNBits' 3-D B, read through a Reshape."""
    data = tensors.packed
    if shared:
        shape = emit.init(f"{tensors.packed}_rows_shape", np.array([code.n, -1], np.int64))
        data = f"{tensors.packed}_rows"
        emit.nodes.append(helper.make_node("Reshape", [tensors.packed, shape], [data], name=f"{name}_reshape"))
    inputs = [data, ids, tensors.scales] + ([tensors.zero_points] if tensors.zero_points else [])
    emit.nodes.append(
        helper.make_node(
            "GatherBlockQuantized",
            inputs,
            [out],
            name=name,
            domain=MS,
            bits=code.bits,
            block_size=code.block_size,
            gather_axis=0,
            quantize_axis=1,
        )
    )


def dynamic_quantize(emit: Emitted, x: str) -> tuple[str, str, str]:
    """DynamicQuantizeLinear of activation `x` (uint8, per tensor): one per distinct input, as quantize_dynamic."""
    outs = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
    emit.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(outs), name=f"{x}_QuantizeLinear"))
    return outs


def matmul_integer(
    emit: Emitted, quantized_x: tuple[str, str, str], w_q: str, w_zp: str, w_scale: str, out: str, name: str
) -> None:
    """quantize_dynamic's MatMulInteger → Cast → Mul(x_scale * w_scale) for one MatMul (same names)."""
    x_q, x_scale, x_zp = quantized_x
    integer = f"{out}_output_quantized"
    emit.nodes += [
        helper.make_node("MatMulInteger", [x_q, w_q, x_zp, w_zp], [integer], name=f"{name}_quant"),
        helper.make_node("Cast", [integer], [f"{integer}_cast_output"], name=f"{integer}_cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [x_scale, w_scale], [f"{name}_quant_scales_mul:0"], name=f"{name}_quant_scales_mul"),
        helper.make_node(
            "Mul",
            [f"{integer}_cast_output", f"{name}_quant_scales_mul:0"],
            [out],
            name=f"{name}_quant_output_scale_mul",
        ),
    ]
