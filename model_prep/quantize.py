"""Variants of an fp32 graph, named the way Transformers.js looks them up (`model_q4.onnx`, `model_q4f16.onnx`).

I/O stays fp32 in every variant so each Transformers.js path (WebGPU and WASM) feeds them the same tensors.
"""

from pathlib import Path

import onnx

# Grid re-encoding (model_prep/q4_grid.py), measured on SmolLM2-135M (Q4_1 source) by tests/bench/fidelity.py:
# 99.5 % top-1 and +0.2 % perplexity vs 61 % / +24 % for stock RTN, with the stock graph's node count.
# accuracy_level 0: fp activations (int8 ones cost 4 points of top-1 on exact weights).
GRID_RECIPE = {"mode": "regrid8", "accuracy_level": 0}

SUFFIX = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}


def variant_path(fp32_path: Path, dtype: str, out_dir: Path) -> Path:
    return out_dir / f"{fp32_path.stem}{SUFFIX[dtype]}.onnx"


def write_variant(fp32_path: Path, dtype: str, out_dir: Path, block_size: int = 32) -> Path:
    out = variant_path(fp32_path, dtype, out_dir)
    if dtype == "fp32":
        if out != fp32_path:
            onnx.save(onnx.load(fp32_path), out)
        return out
    if dtype == "q4":
        model = quantize_q4(onnx.load(fp32_path), block_size)
    elif dtype == "q4f16":
        model = to_fp16(quantize_q4(onnx.load(fp32_path), block_size))
    elif dtype == "fp16":
        model = to_fp16(onnx.load(fp32_path))
    elif dtype == "q8":
        return quantize_q8(fp32_path, out)
    else:
        raise ValueError(f"unknown dtype {dtype!r}")
    onnx.save(model, out)
    return out


def quantize_q4(model: onnx.ModelProto, block_size: int) -> onnx.ModelProto:
    """Weights in MatMulNBits with uint8 zero points only (ORT-web's WebGPU kernel rejects float ones).

    Grid-shaped weights (GGUF Q4_1 / Q8_0 sources) are re-encoded near-exactly by q4_grid: a 4-bit grid with an
    fp16 offset per block as 8-bit levels, Q8_0 as exact 8-bit. Everything else gets the stock recipe,
    symmetric 4-bit RTN. tests/bench/fidelity.py holds the measurements behind the choice.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    from .q4_grid import quantize_grid

    model, stats = quantize_grid(model, block_size, **GRID_RECIPE)
    # accuracy_level 4 lets native CPU use int8 compute (3× faster decode) and WebGPU its DP4A kernels; int8
    # activations cost little next to RTN's weight error, but 4 points of top-1 on exact grid weights.
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=stats.helper_nodes)
    quantizer.process()
    return quantizer.model.model


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)


def quantize_q8(fp32_path: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32_path, out, weight_type=QuantType.QInt8, per_channel=True)
    return out
