"""Fidelity and native decode speed of the 4-bit recipes tried for SmolLM2-135M (not collected by pytest).

    python -m bench.fidelity [--recipes rtn_sym,regrid8,regrid8:f16] [--keep]

Scores each recipe with model_prep.verify.text against torch fp32 (reference cached in --work) and times greedy decode
on native onnxruntime CPU (2 threads, 32-token prompt, 64 new tokens). Prints a Markdown table. Quantizes the
fp32 graph the way the pipeline does (lm_head as its own constant: the tie is undone first).

Measured 2026-11-22 (2 shared cores; tok/s is native CPU, swings with load and says nothing about WebGPU).
Reference perplexity 40.69. accN = MatMulNBits accuracy_level N (4: int8 activations on CPU and WebGPU DP4A).
| recipe | MB | top-1 | cosine | ppl | CPU tok/s |
|---|---|---|---|---|---|
| fp32 | 539 | 100.0% | 1.0000 | 40.69 | 14.1 |
| rtn_sym (1, old default, acc4) | 199 | 61.4% | 0.8944 | 50.26 | 34.1 |
| rtn_sym:f16 | 134 | 60.9% | 0.8948 | 49.85 | 24.1 |
| rtn_asym (2, uint8 zp) | 201 | 61.9% | 0.8176 | 51.27 | 29.5 |
| hqq (3, float zp: no WebGPU kernel) | 216 | 76.6% | 0.9940 | 44.34 | 2.2 |
| add (4, exact, +18 nodes/layer) | 228 | 100.0% | 1.0000 | 40.69 | 4.9 |
| add_lm4 (lm_head 4-bit RTN) | 214 | 76.6% | 0.9912 | 41.37 | 25.8 |
| fold (4', +8 nodes/layer, 2 stages) | 223 | 99.7% | 1.0000 | 40.69 | 5.4 |
| fold:f16 | 156 | 99.0% | 1.0000 | 40.71 | 7.2 |
| fold_s1 (1 stage) | 219 | 98.2% | 0.9997 | 40.80 | 7.6 |
| fold_acc4 | 223 | 95.3% | 0.9995 | 40.96 | 62.5 |
| rtn_lm8 (RTN + lm_head 8-bit) | 213 | 64.8% | 0.9012 | 49.09 | 7.3 |
| q8_asym (stock 8-bit) | 270 | 97.6% | 0.9998 | 40.51 | 4.1 |
| regrid8 (5, the default) | 269 | 99.5% | 1.0000 | 40.78 | 4.5 |
| regrid8:f16 | 204 | 98.7% | 1.0000 | 40.76 | 8.3 |
| regrid8_acc4 | 269 | 95.3% | 0.9994 | 40.63 | 76.8 |
Native CPU is slow at acc0 because MLAS has no fp32-compute 8-bit kernel (lm_head alone: add 4.9 vs add_lm4 25.8).
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from model_prep.quantize.variants import to_fp16
from model_prep.recipes import get_recipe
from model_prep.verify import text
from model_prep.verify.onnx_runner import DecoderSession

from .quant_research import quantize_grid

ROOT = Path(__file__).resolve().parents[1]


def _ort(config_factory: Callable[[], object]) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    def run(model: onnx.ModelProto) -> onnx.ModelProto:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(model, algo_config=config_factory())
        quantizer.process()
        return quantizer.model.model

    return run


def _default(**kw) -> Callable[[], object]:
    def make():
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig

        return DefaultWeightOnlyQuantConfig(block_size=32, **kw)

    return make


def _hqq() -> object:
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

    return HQQWeightOnlyQuantConfig(block_size=32, bits=4)


def _grid(**kw) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    """quant_research.quantize_grid on grid-shaped weights; stock RTN (acc4) on the rest, as model_prep does."""

    def run(model: onnx.ModelProto) -> onnx.ModelProto:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model, stats = quantize_grid(model, 32, **kw)
        config = _default(is_symmetric=True, accuracy_level=4)()
        quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=stats.helper_nodes)
        quantizer.process()
        return quantizer.model.model

    return run


# name → (description, fp32 graph → quantized graph). accN = MatMulNBits accuracy_level (4: int8 activations).
RECIPES: dict[str, tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]]] = {
    "rtn_sym": ("(1) stock RTN symmetric b32, acc4 (old default)", _ort(_default(is_symmetric=True, accuracy_level=4))),
    "rtn_asym": ("(2) RTN asymmetric, uint8 zp, acc4", _ort(_default(accuracy_level=4))),
    "hqq": ("(3) HQQ b32, float zp (no WebGPU kernel)", _ort(_hqq)),
    "add": ("(4) Q4_1-exact 4-bit + blocksum MatMul/Add, lm_head Q8_0 8-bit, acc0", _grid(mode="add")),
    "add_lm4": ("(4) as above, lm_head stock 4-bit RTN", _grid(mode="add", q8_0=False)),
    "fold": ("(4') 4-bit + offsets as 2x32 extra K rows (blocksum Concat), acc0", _grid(mode="fold")),
    "fold_s1": ("(4') as above, 1x32 extra K rows", _grid(mode="fold", stages=1)),
    "fold_acc4": ("(4') as fold, acc4", _grid(mode="fold", accuracy_level=4)),
    "rtn_lm8": ("(5) stock RTN + lm_head Q8_0 8-bit exact", _grid(q4_1=False)),
    "q8_asym": ("(5) stock 8-bit asymmetric everywhere, acc0", _ort(_default(bits=8))),
    "regrid8": ("(5) Q4_1 grid as 8-bit d/k steps + lm_head Q8_0, acc0 (default)", _grid(mode="regrid8")),
    "regrid8_acc4": ("(5) as above, acc4", _grid(mode="regrid8", accuracy_level=4)),
}
DEFAULT = (
    "fp32,rtn_sym,rtn_sym:f16,rtn_asym,hqq,add,add_lm4,fold,fold:f16,fold_s1,fold_acc4,"
    "rtn_lm8,q8_asym,regrid8,regrid8:f16,regrid8_acc4"
)


def untie(model: onnx.ModelProto) -> onnx.ModelProto:
    """The exporter stores a tied lm_head as Transpose(embedding); the stock quantizers want a constant: undo that."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for node in list(model.graph.node):
        if node.op_type == "Transpose" and node.input[0] in inits:
            table = numpy_helper.to_array(inits[node.input[0]])
            model.graph.initializer.append(numpy_helper.from_array(table.T.copy(), node.output[0]))
            model.graph.node.remove(node)
    return model


def decode_speed(path: Path, prompt: list[int], new_tokens: int = 64, threads: int = 2) -> float:
    session = DecoderSession(path, threads=threads)
    session.forward(prompt)  # warm-up
    session.reset()
    logits = session.forward(prompt)[-1]
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits = session.forward([int(np.argmax(logits))])[-1]
    return new_tokens / (time.perf_counter() - start)


def reference(work: Path, source: Path) -> text.Reference:
    cache = work / "reference.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    ref = text.torch_reference(source, get_recipe("smollm2-135m").verify_prompts, work / "reference-logits")
    cache.write_bytes(pickle.dumps(ref))
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", type=Path, default=ROOT / "models/smollm2-135m/onnx/model.onnx")
    parser.add_argument("--source", type=Path, default=ROOT / "models/.cache/sources/smollm2-135m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-chat-fidelity"))
    parser.add_argument("--recipes", default=DEFAULT, help="comma-separated names; 'fp32'; NAME:f16 = q4f16")
    parser.add_argument("--keep", action="store_true", help="keep the quantized graphs in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ref = reference(args.work, args.source)
    prompt = ref.sequences[-1][:32]
    print(f"reference perplexity (torch fp32): {ref.perplexity:.2f}", flush=True)
    print("| recipe | what | MB | top-1 | cosine | ppl | decode tok/s |\n|---|---|---|---|---|---|---|", flush=True)
    for name in args.recipes.split(","):
        base, _, f16 = name.partition(":")
        if base == "fp32":
            path, what = args.fp32, "fp32 export"
        else:
            what, fn = RECIPES[base]
            path = args.work / f"{base}{'_f16' if f16 else ''}.onnx"
            model = fn(untie(onnx.load(args.fp32)))
            if f16:
                model, what = to_fp16(model), what + ", then fp16 (q4f16)"
            onnx.save(model, path)
            del model
        fid = text.score_variant(path, name, ref)
        speed = decode_speed(path, prompt)
        size = path.stat().st_size / 1e6
        print(
            f"| {name} | {what} | {size:.0f} | {fid.top1_agreement:.1%} | {fid.mean_logit_cosine:.4f} "
            f"| {fid.perplexity:.2f} | {speed:.1f} |",
            flush=True,
        )
        if base != "fp32" and not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
