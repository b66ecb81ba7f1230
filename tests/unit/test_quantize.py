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


def stock_q4(fp32: Path, out: Path, bs: int) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=bs, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(onnx.load(fp32), algo_config=config)
    quantizer.process()
    onnx.save(quantizer.model.model, out)
    return out


@pytest.mark.parametrize("bs", [32, 16])
def test_q4_recovers_grids_and_keeps_stock_rtn_elsewhere(tmp_path: Path, bs: int) -> None:
    fp32, _ = build(tmp_path, bs)
    x = np.random.default_rng(1).normal(0.3, 1, (1, 5, K)).astype(np.float32)  # non-zero mean: offsets matter
    want = run(fp32, x)
    got = run(quantize.write_variant(fp32, "q4", tmp_path, bs), x)
    rtn = run(stock_q4(fp32, tmp_path / "stock.onnx", bs), x)
    assert rel_err(got["q8"], want["q8"]) < 1e-6  # Q8_0 grid → 8-bit, default zero point 128: exact weights
    for name in ("grid", "grid2"):  # Q4_1 grid → 8-bit d/k steps: offsets within d/(2k)
        assert rel_err(got[name], want[name]) < 1e-2
        assert rel_err(got[name], want[name]) < rel_err(rtn[name], want[name]) / 8
    assert np.array_equal(got["random"], rtn["random"])  # no grid: exactly the stock recipe


@pytest.mark.parametrize(("mode", "tolerance"), [("fold", 1e-3), ("add", 1e-5)])
def test_blocksum_modes_carry_the_block_offsets(tmp_path: Path, mode: str, tolerance: float) -> None:
    fp32, _ = build(tmp_path, 32)
    x = np.random.default_rng(2).normal(0.3, 1, (1, 3, K)).astype(np.float32)
    want = run(fp32, x)
    model, stats = quantize_grid(onnx.load(fp32), 32, mode=mode)
    assert (stats.q4_1, stats.q8_0, stats.skipped) == (2, 1, 1)
    assert stats.exact_blocks == stats.blocks
    onnx.save(model, tmp_path / f"{mode}.onnx")
    got = run(tmp_path / f"{mode}.onnx", x)
    assert rel_err(got["grid"], want["grid"]) < tolerance
    assert rel_err(got["grid2"], want["grid2"]) < tolerance
    assert np.array_equal(got["random"], want["random"])  # left as a float MatMul for the caller
    ops = [n.op_type for n in model.graph.node]
    if mode == "fold":  # one blocksum MatMul + Concat per distinct input of a grid-shaped weight (x and h)
        assert ops.count("Concat") == 2 and "Add" not in ops
    else:
        assert ops.count("Add") == 2


def test_q4_graph_is_webgpu_shaped(tmp_path: Path) -> None:
    """uint8 zero points only (ORT-web's WebGPU MatMulNBits has no kernel for float ones), 4/8 bits, fp32 I/O,
    and no node beyond the stock recipe's: nothing added to the WebGPU dispatch count."""
    fp32, _ = build(tmp_path, 32)
    model = onnx.load(quantize.write_variant(fp32, "q4", tmp_path))
    stock = onnx.load(stock_q4(fp32, tmp_path / "stock.onnx", 32))
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in stock.graph.node]
    inits = {i.name: i for i in model.graph.initializer}
    bits = []
    for node in model.graph.node[1:]:
        assert node.op_type == "MatMulNBits"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["block_size"] == 32
        bits.append(attrs["bits"])
        if len(node.input) > 3:
            assert inits[node.input[3]].data_type == TensorProto.UINT8
    assert sorted(bits) == [4, 8, 8, 8]
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
    assert rel_err(got["grid"], want["grid"]) < 1e-2


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
