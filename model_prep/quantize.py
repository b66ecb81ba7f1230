"""Variants of an fp32 graph, named the way Transformers.js looks them up (`model_q4.onnx`, `model_q4f16.onnx`).

I/O stays fp32 in every variant so each Transformers.js path (WebGPU and WASM) feeds them the same tensors.
"""

from pathlib import Path

import onnx

# The measured winner (tests/bench/fidelity.py): 4-bit layers at accuracy_level 0 (fp activations: int8 ones
# cost 4 points of top-1 on SmolLM2), the 8-bit lm_head at 4 (int8 compute; native CPU is 5× slower without it).
Q4_RECIPE = {"fold": "concat", "stages": 2, "accuracy_level": 0, "accuracy_level8": 4}

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
    """4-bit weights in MatMulNBits (uint8 zero points only: what ORT-web's WebGPU kernel accepts).

    Weights already on a per-block 4-bit grid (a GGUF Q4_1 source) are re-encoded exactly, the block offsets
    riding along as extra K rows fed by per-block input sums; a Q8_0 grid (SmolLM2's tied lm_head) stays 8-bit,
    exactly; anything else gets the stock symmetric RTN. See model_prep/q4_grid.py and tests/bench/fidelity.py.
    """
    from .q4_grid import quantize_grid

    model, _ = quantize_grid(model, block_size, **Q4_RECIPE)
    return model


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)


def quantize_q8(fp32_path: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32_path, out, weight_type=QuantType.QInt8, per_channel=True)
    return out
