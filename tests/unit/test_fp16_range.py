"""fp16 range analysis (model_prep/verify/fp16_range.py): the traced RMSNorm (Pow → ReduceMean in the graph's type)
on a residual of a few thousand overflows fp16 and is caught; the fused SimplifiedLayerNormalization on the same
values passes. The onnxruntime CPU EP runs both fp16 graphs without an inf (it computes the chain in fp32), which is
why this check exists. The real graphs: the pipeline tests (tiny models) and docs/measurements.md (SmolLM2-135M old
vs new)."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_prep.quantize.variants import to_fp16
from model_prep.verify import fp16_range

HIDDEN = 64


def rmsnorm_graph(fused: bool) -> onnx.ModelProto:
    """x → x * 1000 (a residual stream of a few thousand) → RMSNorm → y, traced-style or fused."""
    node = helper.make_node
    nodes = [node("Mul", ["x", "big"], ["residual"], name="residual")]
    if fused:
        nodes.append(
            node("SimplifiedLayerNormalization", ["residual", "gamma"], ["y"], name="norm", axis=-1, epsilon=1e-5)
        )
    else:  # what the TorchScript trace of LlamaRMSNorm computes
        nodes += [
            node("Pow", ["residual", "two"], ["squared"], name="norm/Pow"),
            node("ReduceMean", ["squared", "axes"], ["mean"], name="norm/ReduceMean", keepdims=1),
            node("Add", ["mean", "eps"], ["var"], name="norm/Add"),
            node("Sqrt", ["var"], ["rms"], name="norm/Sqrt"),
            node("Div", ["residual", "rms"], ["normed"], name="norm/Div"),
            node("Mul", ["normed", "gamma"], ["y"], name="norm/Mul"),
        ]
    inits = [
        numpy_helper.from_array(np.array(1000.0, np.float32), "big"),
        numpy_helper.from_array(np.ones(HIDDEN, np.float32), "gamma"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
    ]
    graph = helper.make_graph(
        nodes,
        "norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


@pytest.fixture(params=[False, True], ids=["traced", "fused"])
def graphs(request, tmp_path: Path) -> tuple[bool, Path, Path]:
    fp32 = rmsnorm_graph(fused=request.param)
    shadow, half = tmp_path / "shadow.onnx", tmp_path / "half.onnx"
    onnx.save(fp32, shadow)
    onnx.save(to_fp16(fp32), half)
    return request.param, shadow, half


def feeds():
    x = np.random.default_rng(0).uniform(-5, 5, (1, 8, HIDDEN)).astype(np.float32)  # residual up to 5,000
    return [{"x": x}]


def test_traced_rmsnorm_overflows_and_fused_passes(graphs) -> None:
    fused, shadow, half = graphs
    report = fp16_range.check(half, shadow, feeds())
    if fused:
        assert report.overflows == [] and report.checked >= 1
        assert 4000 < report.absmax < 5000  # the residual itself fits fp16
        fp16_range.require(report, "q4f16")
    else:
        assert [o.op for o in report.overflows] == ["Pow", "ReduceMean", "Add"]
        assert report.overflows[0].absmax > 1.6e7  # 5,000 squared
        with pytest.raises(fp16_range.Fp16RangeExceeded, match=r"squared \(Pow\)"):
            fp16_range.require(report, "q4f16")


def test_the_cpu_ep_alone_would_not_see_it(graphs) -> None:
    """Why the check is static: the CPU EP computes the traced fp16 chain in fp32 and returns finite values."""
    _, _, half = graphs
    y = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, feeds()[0])[0]
    assert np.isfinite(y).all()


def test_only_fp16_tensors_are_checked(tmp_path: Path) -> None:
    model = to_fp16(rmsnorm_graph(fused=False))
    path = tmp_path / "half.onnx"
    onnx.save(model, path)
    tensors = fp16_range.fp16_tensors(path)
    assert "norm/Pow" not in tensors and "squared" in tensors and tensors["squared"] == "Pow"
    assert "y" not in tensors  # the graph output stays fp32 (a Cast inserted by the converter feeds it)
