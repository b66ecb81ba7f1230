"""q4/q4f16 variants of a small synthetic MatMul graph: grid-shaped weights come back (near) exactly, others as RTN.

The graph holds the three kinds of weight the recipe tells apart: a GGUF Q4_1-shaped block grid (d*q + m), a
Q8_0-shaped symmetric 8-bit grid (d*q) and plain random weights (a bf16/fp32 source).
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_prep import quantize
from model_prep.q4_grid import fit_affine_grid, quantize_grid

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


@pytest.mark.parametrize("bs", [32, 16])
def test_q4_is_exact_on_grids_and_rtn_elsewhere(tmp_path: Path, bs: int) -> None:
    fp32, _ = build(tmp_path, bs)
    x = np.random.default_rng(1).normal(0.3, 1, (1, 5, K)).astype(np.float32)  # non-zero mean: offsets matter
    want = run(fp32, x)
    got = run(quantize.write_variant(fp32, "q4", tmp_path, bs), x)
    assert rel_err(got["q8"], want["q8"]) < 1e-6  # 8-bit, default zero point 128: bit-exact weights
    assert rel_err(got["grid"], want["grid"]) < 2e-3  # 4-bit grid + residual rows: near-exact
    assert rel_err(got["grid2"], want["grid2"]) < 2e-3
    assert 5e-3 < rel_err(got["random"], want["random"]) < 0.2  # stock RTN: the error 4 bits cost

    stock = tmp_path / "stock"
    stock.mkdir()
    model, _ = quantize_grid(onnx.load(fp32), bs, grid4=False, grid8=False)
    onnx.save(model, stock / "model.onnx")
    rtn = run(stock / "model.onnx", x)
    assert np.array_equal(rtn["random"], got["random"])  # non-grid tensors: the stock recipe, unchanged
    assert rel_err(got["grid"], want["grid"]) < rel_err(rtn["grid"], want["grid"]) / 20


def test_exact_variant_adds_the_block_offsets_in_float(tmp_path: Path) -> None:
    fp32, _ = build(tmp_path, 32)
    x = np.random.default_rng(2).normal(0.3, 1, (1, 3, K)).astype(np.float32)
    want = run(fp32, x)
    model, stats = quantize_grid(onnx.load(fp32), 32, accuracy_level=0, fold="add")
    onnx.save(model, tmp_path / "add.onnx")
    got = run(tmp_path / "add.onnx", x)
    assert (stats.grid4, stats.grid8, stats.rtn) == (2, 1, 1)
    assert rel_err(got["grid"], want["grid"]) < 1e-5
    assert rel_err(got["grid2"], want["grid2"]) < 1e-5


def test_q4_graph_is_webgpu_shaped(tmp_path: Path) -> None:
    """uint8 zero points only (ORT-web's WebGPU MatMulNBits rejects float ones), 4/8 bits, fp32 I/O."""
    fp32, _ = build(tmp_path, 32)
    model = onnx.load(quantize.write_variant(fp32, "q4", tmp_path))
    inits = {i.name: i for i in model.graph.initializer}
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 4 and not [n for n in model.graph.node if n.op_type == "Add"]
    for node in nbits:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["bits"] in (4, 8) and attrs["block_size"] == 32
        if len(node.input) > 3:
            assert inits[node.input[3]].data_type == TensorProto.UINT8
    # one blocksum per distinct input (x for grid/random... only grid-shaped consumers need one, h for grid2)
    assert sum(n.op_type == "Concat" for n in model.graph.node) == 2
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {TensorProto.FLOAT}


def test_q4f16_keeps_fp32_io_and_tracks_q4(tmp_path: Path) -> None:
    fp32, _ = build(tmp_path, 32)
    x = np.random.default_rng(3).normal(0.3, 1, (1, 4, K)).astype(np.float32)
    want = run(fp32, x)
    path = quantize.write_variant(fp32, "q4f16", tmp_path)
    assert path.name == "model_q4f16.onnx"
    model = onnx.load(path)
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}
    got = run(path, x)
    assert rel_err(got["q8"], want["q8"]) < 2e-3  # fp16 activations
    assert rel_err(got["grid"], want["grid"]) < 5e-3


def test_fit_affine_grid_finds_partial_and_coarse_grids() -> None:
    rng = np.random.default_rng(4)
    d, m = np.float32(0.01), np.float32(-0.07)
    full = d * rng.integers(0, 16, 32) + m
    full[:2] = [m, m + 15 * d]
    partial = d * rng.integers(2, 12, 32) + m  # levels 2..11 only
    coarse = 2 * d * rng.integers(0, 8, 32) + m  # every other level
    noise = rng.normal(0, 0.02, 32)
    grid = fit_affine_grid(np.stack([full, partial, coarse, noise]).astype(np.float32)[None])
    assert grid.exact[0].tolist() == [True, True, True, False]
    recon = grid.scale[..., None] * grid.q + grid.offset[..., None]
    assert np.abs(recon[0, :3] - np.stack([full, partial, coarse])).max() < 1e-6
