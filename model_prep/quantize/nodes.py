"""The quantized node patterns the variants are made of, each built from one weight's code.

- MatMulNBits (q4, q4f16): y = x @ dequant(B); B [N, nb, blob] uint8, scales [N, nb], optional uint8 zero points.
- Block rows (q4 / q4f16 embedding): rows of a block-quantized [vocab, hidden] table in plain ONNX ops (Gather, Cast,
  Mul, ...), not com.microsoft GatherBlockQuantized: ORT-web's WASM build has no kernel for that one, and the
  variants must load on WASM as well as WebGPU. The rows are gathered from MatMulNBits' own B, scales and zero
  points, so a table tied to lm_head is stored once; a 256-entry lookup table unpacks the bytes into levels.
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
    names: set[str] = field(default_factory=set)  # of the initializers added here

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        self.names.add(name)
        return name

    def init_once(self, name: str, array: np.ndarray) -> str:
        """A constant several nodes (or several gathers of one table) share."""
        return name if name in self.names else self.init(name, array)


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


def levels_table(bits: int, offset: int) -> np.ndarray:
    """Byte → its levels minus `offset`, float32: [256] for 8 bits, [256, 2] (low nibble first) for 4 bits."""
    byte = np.arange(256)
    levels = byte if bits == 8 else np.stack([byte & 15, byte >> 4], -1)
    return (levels - offset).astype(np.float32)


def gather_block_rows(
    emit: Emitted, ids: str, out: str, name: str, code: BlockCode, tensors: BlockTensors, opset: int
) -> None:
    """Rows `ids` of the table, each exactly as GatherBlockQuantized dequantizes it: scale * (level - zero point).

    Reads MatMulNBits' 3-D B ([N, nb, blob]) with a plain Gather. The bytes become levels through a float lookup
    table (Gather with int32 indices) rather than BitShift/BitwiseAnd + Cast: one node for both nibbles, already
    in order, and the symmetric zero point folded in. ORT-web's WebGPU EP has no uint8 kernels, so the byte
    Gather and Cast run on its CPU EP (ORT keeps one CPU copy of B beside the GPU one, made once at session start).
    """
    make = helper.make_node
    nb = code.blocks // code.n
    if nb * code.block_size != code.k:  # a padded last block would need a Slice; no table has one
        raise ValueError(f"{name}: block rows need whole blocks (K {code.k}, block {code.block_size})")
    symmetric = tensors.zero_points is None
    lut = emit.init_once(
        f"block_levels_{code.bits}bit{'_centered' if symmetric else ''}",
        levels_table(code.bits, 2 ** (code.bits - 1) if symmetric else 0),
    )
    # levels come out [*ids, nb, bs] (8-bit) or [*ids, nb, bs/2, 2] (4-bit): per-block values broadcast over the rest
    trailing = [-1] if code.bits == 8 else [-2, -1]
    emit.nodes += [
        make("Gather", [tensors.packed, ids], [f"{out}_bytes"], name=f"{name}_bytes"),
        make("Cast", [f"{out}_bytes"], [f"{out}_bytes_int"], name=f"{name}_bytes_cast", to=TensorProto.INT32),
        make("Gather", [lut, f"{out}_bytes_int"], [f"{out}_levels"], name=f"{name}_levels"),
        make("Shape", [ids], [f"{out}_ids_shape"], name=f"{name}_ids_shape"),
    ]
    levels = f"{out}_levels"
    if not symmetric:
        zp = f"{out}_zero_points"
        emit.nodes += [
            make("Gather", [tensors.zero_points, ids], [f"{zp}_bytes"], name=f"{name}_zp_bytes"),
            make("Cast", [f"{zp}_bytes"], [f"{zp}_bytes_int"], name=f"{name}_zp_cast", to=TensorProto.INT32),
            make("Gather", [lut, f"{zp}_bytes_int"], [f"{zp}_levels"], name=f"{name}_zp_levels"),
        ]
        blocks = f"{zp}_levels"
        if code.bits == 4:  # two blocks a byte, the last one padded when nb is odd: [*ids, zb, 2] → [*ids, nb]
            last = emit.init_once("block_rows_last", np.array([-1], np.int64))
            start = emit.init_once("block_rows_start", np.array([0], np.int64))
            end = emit.init_once(f"{tensors.zero_points}_blocks", np.array([nb], np.int64))
            blocks = f"{zp}_blocks"
            emit.nodes += [
                make("Concat", [f"{out}_ids_shape", last], [f"{zp}_shape"], name=f"{name}_zp_shape", axis=0),
                make("Reshape", [f"{zp}_levels", f"{zp}_shape"], [f"{zp}_padded"], name=f"{name}_zp_reshape"),
                make("Slice", [f"{zp}_padded", start, end, last], [blocks], name=f"{name}_zp_slice"),
            ]
        unsqueeze(emit, blocks, trailing, f"{zp}_wide", f"{name}_zp_unsqueeze", opset)
        emit.nodes.append(make("Sub", [levels, f"{zp}_wide"], [f"{out}_centered"], name=f"{name}_sub"))
        levels = f"{out}_centered"
    k = emit.init_once(f"{tensors.packed}_k", np.array([code.k], np.int64))
    emit.nodes.append(make("Gather", [tensors.scales, ids], [f"{out}_scales"], name=f"{name}_scales"))
    unsqueeze(emit, f"{out}_scales", trailing, f"{out}_scales_wide", f"{name}_scales_unsqueeze", opset)
    emit.nodes += [
        make("Mul", [levels, f"{out}_scales_wide"], [f"{out}_blocks"], name=f"{name}_mul"),
        make("Concat", [f"{out}_ids_shape", k], [f"{out}_shape"], name=f"{name}_shape", axis=0),
        make("Reshape", [f"{out}_blocks", f"{out}_shape"], [out], name=f"{name}_reshape"),
    ]


def unsqueeze(emit: Emitted, x: str, axes: list[int], out: str, name: str, opset: int) -> None:
    """Unsqueeze's axes are an input since opset 13, an attribute before."""
    if opset >= 13:
        axes_name = emit.init_once("unsqueeze_axes_" + "_".join(str(-a) for a in axes), np.array(axes, np.int64))
        emit.nodes.append(helper.make_node("Unsqueeze", [x, axes_name], [out], name=name))
    else:
        emit.nodes.append(helper.make_node("Unsqueeze", [x], [out], name=name, axes=axes))


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
