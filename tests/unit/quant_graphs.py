"""Small synthetic graphs for the quantizer tests (test_quantize, test_bench_quant_research): MatMuls over the three
kinds of weight the recipe tells apart (a GGUF Q4_1-shaped block grid, a Q8_0-shaped symmetric grid, plain random
weights), and onnxruntime to run them. Not a test module."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

K, N = 128, 48


def q4_1_weight(rng: np.random.Generator, k: int, n: int, bs: int) -> np.ndarray:
    """[K, N] fp32 as a Q4_1 dequantization: per output column and block of `bs` inputs, d*q + m."""
    d = rng.uniform(0.004, 0.02, (n, k // bs)).astype(np.float16).astype(np.float32)
    m = (-d * rng.uniform(5, 10, d.shape)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (n, k // bs, bs))
    return (d[..., None] * q + m[..., None]).reshape(n, k).T.astype(np.float32).copy()


def q8_0_weight(rng: np.random.Generator, k: int, n: int, bs: int) -> np.ndarray:
    d = rng.uniform(1e-3, 3e-3, (n, k // bs)).astype(np.float16).astype(np.float32)
    q = rng.integers(-127, 128, (n, k // bs, bs))
    q[..., 0] = 127
    return (d[..., None] * q).reshape(n, k).T.astype(np.float32).copy()


WEIGHTS = {"grid": q4_1_weight, "q8": q8_0_weight, "random": lambda rng, k, n, bs: rng.normal(0, 0.02, (k, n))}


def build(tmp_path: Path, bs: int) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(bs)
    weights = {name: make(rng, K, N, bs).astype(np.float32) for name, make in WEIGHTS.items()}
    # q/k/v-like: three MatMuls share the input; a fourth consumes a different one (its own blocksum)
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="/relu")]
    inits = [numpy_helper.from_array(w, f"W_{name}") for name, w in weights.items()]
    for name in weights:
        nodes.append(helper.make_node("MatMul", ["x", f"W_{name}"], [f"y_{name}"], name=f"/{name}/MatMul"))
    inits.append(numpy_helper.from_array(weights["grid"][:, ::-1].copy(), "W_grid2"))
    nodes.append(helper.make_node("MatMul", ["h", "W_grid2"], ["y_grid2"], name="/grid2/MatMul"))
    outputs = [*weights, "grid2"]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info(f"y_{o}", TensorProto.FLOAT, ["batch", "seq", N]) for o in outputs],
        inits,
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path, weights


def run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name[2:] for o in session.get_outputs()], session.run(None, {"x": x}), strict=True))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())
