"""bench/quant_research.py: the research modes still carry the block offsets they were designed to."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from quant_graphs import K, build, rel_err, run

from bench.quant_research import quantize_grid


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
