"""model_prep/onnx_io/writer.py: the one ONNX writer, inline and with external data, in memory and streamed."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from model_prep.onnx_io import writer

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(16, 32)).astype(np.float32)  # 2 KB: external when the graph is big
W2 = RNG.normal(size=(32, 24)).astype(np.float32)
BIAS = RNG.normal(size=(32,)).astype(np.float32)  # 128 bytes: always inline
X = RNG.normal(size=(3, 16)).astype(np.float32)


def skeleton(*initializers: str) -> onnx.ModelProto:
    """y = (x @ W1 + bias) @ W2 with only `initializers` inside the graph (the rest come streamed)."""
    arrays = {"W1": W1, "bias": BIAS, "W2": W2}
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "bias"], ["hb"], name="add"),
        helper.make_node("MatMul", ["hb", "W2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 24])],
        [numpy_helper.from_array(arrays[n], n) for n in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def streamed_w2(read=lambda: W2) -> writer.Streamed:
    return writer.Streamed("W2", W2.shape, read)


def run(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


def test_streamed_weights_give_the_same_model_as_in_memory_ones(tmp_path: Path) -> None:
    size = writer.save(skeleton("W1", "bias"), tmp_path / "m.onnx", [streamed_w2()])
    assert size == (tmp_path / "m.onnx").stat().st_size
    assert onnx.load(tmp_path / "m.onnx") == skeleton("W1", "bias", "W2")
    assert not (tmp_path / "m.onnx_data").exists()
    np.testing.assert_allclose(run(tmp_path / "m.onnx"), (X @ W1 + BIAS) @ W2, rtol=1e-5, atol=1e-5)


def test_a_big_graph_keeps_its_weights_in_aligned_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "INLINE_LIMIT", 0)
    writer.save(skeleton("W1", "bias"), tmp_path / "m.onnx", [streamed_w2()])
    graph = onnx.load(tmp_path / "m.onnx", load_external_data=False).graph
    external = {t.name: ExternalDataInfo(t) for t in graph.initializer if uses_external_data(t)}
    assert sorted(external) == ["W1", "W2"], "tensors under 1 KB stay inline"
    assert all(info.location == "m.onnx_data" and info.offset % writer.ALIGN == 0 for info in external.values())
    loaded = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "m.onnx").graph.initializer}
    assert all(np.array_equal(loaded[n], a) for n, a in (("W1", W1), ("W2", W2), ("bias", BIAS)))
    np.testing.assert_allclose(run(tmp_path / "m.onnx"), (X @ W1 + BIAS) @ W2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inline_limit", [writer.INLINE_LIMIT, 0])
def test_a_failed_read_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline_limit: int) -> None:
    monkeypatch.setattr(writer, "INLINE_LIMIT", inline_limit)

    def broken() -> np.ndarray:
        raise OSError("checkpoint truncated")

    with pytest.raises(OSError, match="truncated"):
        writer.save(skeleton("W1", "bias"), tmp_path / "m.onnx", [streamed_w2(broken)])
    assert list(tmp_path.iterdir()) == []


def test_a_read_of_another_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"W2: read a float32 \(24, 32\) array, expected float32 \(32, 24\)"):
        writer.save(skeleton("W1", "bias"), tmp_path / "m.onnx", [streamed_w2(lambda: W2.T.copy())])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_exporter_writes_big_graphs_with_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder exporter's path for graphs over INLINE_LIMIT (Qwen3-0.6B), on a tiny model: same model."""
    from model_prep.export.decoder_graph import export_decoder
    from model_prep.sources.tiny import build_tiny
    from model_prep.verify.onnx_runner import DecoderSession

    source = build_tiny("qwen3", tmp_path / "source")
    inline = export_decoder(source, tmp_path / "inline")
    monkeypatch.setattr(writer, "INLINE_LIMIT", 0)
    external = export_decoder(source, tmp_path / "external")
    assert (tmp_path / "external" / "model.onnx_data").is_file()
    assert not (tmp_path / "inline" / "model.onnx_data").exists()
    loaded = onnx.load(external)  # external data read back into raw_data, marked DEFAULT
    for t in loaded.graph.initializer:
        t.ClearField("data_location")
    assert loaded == onnx.load(inline)
    ids = [3, 17, 42, 5, 9]
    np.testing.assert_array_equal(DecoderSession(external).forward(ids), DecoderSession(inline).forward(ids))
