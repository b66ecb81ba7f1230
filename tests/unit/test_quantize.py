"""Variants of small synthetic graphs: grid-shaped weights come back (near) exactly, others as RTN / int8.

The graphs hold the three kinds of weight the recipe tells apart: a GGUF Q4_1-shaped block grid (d*q + m), a
Q8_0-shaped symmetric 8-bit grid (d*q) and plain random weights (a bf16/fp32 source). The language-model-shaped
one adds a tied embedding (Gather + Transpose → lm_head), an untied one and a table gathered with computed
indices; every quantized node is checked against numpy on the variant's own dequantized initializers, and the q4
embedding's plain-op rows against onnxruntime's GatherBlockQuantized.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import uses_external_data
from quant_graphs import WEIGHTS, K, build, q4_1_weight, q8_0_weight, rel_err, run

from bench.quant_research import pack
from model_prep.quantize import nodes as qn
from model_prep.quantize import variants
from model_prep.quantize.blockwise import BlockCode
from model_prep.quantize.grid import fit_affine_grid


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
    got = run(variants.write_variant(fp32, "q4", tmp_path, bs), x)
    rtn = run(stock_q4(fp32, tmp_path / "stock.onnx", bs), x)
    assert rel_err(got["q8"], want["q8"]) < 1e-6  # Q8_0 grid → 8-bit, default zero point 128: exact weights
    for name in ("grid", "grid2"):  # Q4_1 grid → 8-bit d/k steps: offsets within d/(2k)
        assert rel_err(got[name], want[name]) < 1e-2
        assert rel_err(got[name], want[name]) < rel_err(rtn[name], want[name]) / 8
    assert np.array_equal(got["random"], rtn["random"])  # no grid: exactly the stock recipe


def test_q4_graph_is_webgpu_shaped(tmp_path: Path) -> None:
    """uint8 zero points only (ORT-web's WebGPU MatMulNBits has no kernel for float ones), 4/8 bits, fp32 I/O,
    and no node beyond the stock recipe's: nothing added to the WebGPU dispatch count."""
    fp32, _ = build(tmp_path, 32)
    model = onnx.load(variants.write_variant(fp32, "q4", tmp_path))
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
    path = variants.write_variant(fp32, "q4f16", tmp_path)
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


# --- Streaming variants of a small language-model-shaped graph --------------------------------------------------
#
# input_ids → Gather(T) ─┐                                   T: the tied embedding, lm_head = MatMul(c, Transpose(T))
# type_ids  → Gather(U) ─┼─ h → MatMul W1 → Relu → W2 → W3 → lm_head        U: an untied embedding
# pos_ids → Identity → Gather(P) ─┘                          P: gathered with computed indices, stays float
# Every intermediate is a graph output, so each quantized node is checked on its own input.

V, H, F, VU, VP = 48, 64, 96, 24, 16
LM_OUTPUTS = ("e", "e2", "p", "h", "a", "b", "c", "logits")


def lm_weights(kind: str, bs: int) -> dict[str, np.ndarray]:
    """kind: what the tied table is ("random", or a GGUF grid: "q8" Q8_0, "grid" Q4_1)."""
    rng = np.random.default_rng(7)
    table = WEIGHTS[kind](rng, H, V, bs).T.copy() if kind != "random" else rng.normal(0, 0.5, (V, H))
    return {
        "T": table,
        "U": rng.normal(0, 0.5, (VU, H)),
        "P": rng.normal(0, 0.5, (VP, H)),
        "W1": rng.normal(0, 0.1, (H, F)),  # bf16-like: stock RTN
        "W2": q4_1_weight(rng, F, H, bs),  # Q4_1 grid: regrid8
        "W3": q8_0_weight(rng, H, H, bs),  # Q8_0 grid: exact 8-bit
    }


def build_lm(path: Path, kind: str = "random", bs: int = 32, external: bool = False) -> dict[str, np.ndarray]:
    weights = {k: v.astype(np.float32) for k, v in lm_weights(kind, bs).items()}
    node = helper.make_node
    nodes = [
        node("Gather", ["T", "input_ids"], ["e"], name="/embed/Gather"),
        node("Gather", ["U", "type_ids"], ["e2"], name="/type_embed/Gather"),
        node("Identity", ["pos_ids"], ["pos"], name="/pos/Identity"),
        node("Gather", ["P", "pos"], ["p"], name="/pos/Gather"),
        node("Add", ["e", "e2"], ["e12"], name="/add1"),
        node("Add", ["e12", "p"], ["h"], name="/add2"),
        node("MatMul", ["h", "W1"], ["a"], name="/up/MatMul"),
        node("Relu", ["a"], ["ar"], name="/relu"),
        node("MatMul", ["ar", "W2"], ["b"], name="/down/MatMul"),
        node("MatMul", ["b", "W3"], ["c"], name="/proj/MatMul"),
        node("Transpose", ["T"], ["T_t"], name="/lm_head/Transpose", perm=[1, 0]),
        node("MatMul", ["c", "T_t"], ["logits"], name="/lm_head/MatMul"),
    ]
    ids = [
        helper.make_tensor_value_info(n, TensorProto.INT64, [1, "seq"]) for n in ("input_ids", "type_ids", "pos_ids")
    ]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in LM_OUTPUTS]
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()]
    # the exporter declares intermediate types; a rewritten node's may change (q8: T_t becomes uint8)
    value_info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("T_t", "e12", "ar")]
    graph = helper.make_graph(nodes, "lm", ids, outputs, inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0)
    else:
        onnx.save(model, path)
    return weights


LM_FEEDS = {
    "input_ids": np.array([[0, 5, 47, 5, 31]]),
    "type_ids": np.array([[1, 23, 0, 7, 7]]),
    "pos_ids": np.array([[0, 1, 2, 3, 15]]),
}


def run_lm(path: Path, model: onnx.ModelProto | None = None) -> dict[str, np.ndarray]:
    source = model.SerializeToString() if model is not None else str(path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return dict(zip(LM_OUTPUTS, session.run(list(LM_OUTPUTS), LM_FEEDS), strict=True))


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """[..., bytes] → [..., count] levels (4 bits: element 2j in the low nibble of byte j)."""
    if bits == 8:
        return packed[..., :count].astype(np.float32)
    nibbles = np.stack([packed & 15, packed >> 4], -1).reshape(*packed.shape[:-1], -1)
    return nibbles[..., :count].astype(np.float32)


def dequantize_blocks(inits: dict, data: str, scales: str, zp: str | None, bits: int, bs: int, k: int) -> np.ndarray:
    """MatMulNBits / GatherBlockQuantized weights → [N, K] float32, straight from the variant's initializers."""
    s = numpy_helper.to_array(inits[scales]).astype(np.float32)
    n, nb = s.shape[0], s.shape[-1]
    q = unpack(numpy_helper.to_array(inits[data]).reshape(n, nb, -1), bits, bs)
    z = (
        np.full((n, nb), 2.0 ** (bits - 1), np.float32)
        if zp is None
        else unpack(numpy_helper.to_array(inits[zp]), bits, nb)
    )
    return ((q - z[..., None]) * s.reshape(n, nb, 1)).reshape(n, nb * bs)[:, :k]


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def nbits_weights(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, np.ndarray]]:
    """Output name → (node, dequantized [N, K]) for every MatMulNBits and block-rows embedding.

    An embedding's node is the Gather of its bytes; its inputs are renamed to MatMulNBits' order ([ids, B, scales,
    zero points]) and its code's bits / block size read off the initializers' shapes.
    """
    inits = {i.name: i for i in model.graph.initializer}
    # fp16 graphs reach their fp32 outputs through Casts (keep_io_types): name the node by the graph output
    renamed = {n.input[0]: n.output[0] for n in model.graph.node if n.name.startswith("graph_output_cast")}
    gathers = {(n.input[0], n.input[1]) for n in model.graph.node if n.op_type == "Gather"}  # (data, ids)
    found = {}
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            a = attrs(n)
            out, data, scales, zp = n.output[0], n.input[1], n.input[2], n.input[3] if len(n.input) > 3 else None
            bits, bs, k = a["bits"], a["block_size"], a["K"]
        elif n.op_type == "Gather" and n.name.endswith("_bytes") and not n.name.endswith("_zp_bytes"):
            out, ids, data = n.output[0].removesuffix("_bytes"), n.input[1], n.input[0]
            [scales] = [s for s, i in gathers if i == ids and s.endswith("_scales")]
            zps = [z for z, i in gathers if i == ids and z.endswith("_zero_points")]
            zp = zps[0] if zps else None
            bits = int(data.rsplit("_Q", 1)[1])
            shape = inits[data].dims
            bs, k = shape[2] * 8 // bits, H
            n = helper.make_node("Gather", [ids, data, scales] + ([zp] if zp else []), [out], name=n.name)
        else:
            continue
        found[renamed.get(out, out)] = (n, dequantize_blocks(inits, data, scales, zp, bits, bs, k))
    return found


@pytest.mark.parametrize(("kind", "bs"), [("random", 32), ("random", 16), ("q8", 32), ("grid", 32)])
def test_q4_matches_its_dequantized_weights(tmp_path: Path, kind: str, bs: int) -> None:
    weights = build_lm(tmp_path / "model.onnx", kind, bs)
    path = variants.write_variant(tmp_path / "model.onnx", "q4", tmp_path, bs)
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 4 and "Transpose" not in ops  # lm_head reads T's code directly
    # ORT-web's WASM build has kernels for the embedding's ops: nothing but MatMulNBits outside the ONNX domain
    assert {n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")} == {"MatMulNBits"}
    deq = nbits_weights(model)
    rows, head = deq["e"][0], deq["logits"][0]
    assert rows.input[1:] == head.input[1:]  # T's bytes, scales and zero points: read by lm_head and the rows
    assert "P" in {n.input[0] for n in model.graph.node if n.op_type == "Gather"}  # P stays float
    assert {i.name for i in model.graph.initializer} >= {"P"} and not {"T", "U", "W1", "W2", "W3"} & {
        i.name for i in model.graph.initializer
    }
    table_bits = {"random": 4, "q8": 8, "grid": 8}[kind]
    assert attrs(head)["bits"] == table_bits and rows.input[1].endswith(f"_Q{table_bits}")
    assert attrs(head).get("accuracy_level", 0) == (4 if kind == "random" else 0)
    # quantization error: grids come back (near) exactly, RTN within a step (levels -8..7: +absmax clips to 7)
    assert np.abs(deq["c"][1] - weights["W3"].T).max() < 1e-7
    assert np.abs(deq["b"][1] - weights["W2"].T).max() < 1e-3  # offsets within d/(2k); RTN: ~d/2 = 1e-2
    assert np.abs(deq["a"][1] - weights["W1"].T).max() <= np.abs(weights["W1"]).max() / 8 * 1.001
    if kind == "q8":
        assert np.array_equal(deq["e"][1], weights["T"])

    # Each node against numpy on its own input; accuracy_level 0 for the check (4 = int8 activations in ORT)
    for n in model.graph.node:
        for a in n.attribute:
            if a.name == "accuracy_level":
                a.i = 0
    got = run_lm(path, model)
    ids = LM_FEEDS
    assert np.array_equal(got["e"][0], deq["e"][1][ids["input_ids"][0]])  # rows are the dequantized table, exactly
    assert np.array_equal(got["e2"][0], deq["e2"][1][ids["type_ids"][0]])
    assert np.array_equal(got["p"][0], weights["P"][ids["pos_ids"][0]])
    for out, inp in (("a", "h"), ("b", None), ("c", "b"), ("logits", "c")):
        x = np.maximum(got["a"], 0) if inp is None else got[inp]
        want = x @ deq[out][1].T
        assert rel_err(got[out], want) < 1e-5, out


def test_q4f16_tracks_the_dequantized_weights_in_fp16(tmp_path: Path) -> None:
    build_lm(tmp_path / "model.onnx", "q8", 32)
    q4 = nbits_weights(onnx.load(variants.write_variant(tmp_path / "model.onnx", "q4", tmp_path)))
    path = variants.write_variant(tmp_path / "model.onnx", "q4f16", tmp_path)
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    deq = nbits_weights(model)
    for out, (node, w) in deq.items():
        assert inits[node.input[2]].data_type == TensorProto.FLOAT16, out  # scales (and so the rows) fp16
        assert rel_err(w, q4[out][1]) < 1e-3, out  # the same codes, fp16 scales
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {TensorProto.INT64}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}
    got = run_lm(path)
    ids = LM_FEEDS["input_ids"][0]
    assert rel_err(got["e"][0], deq["e"][1][ids]) < 1e-3
    for out, inp in (("a", "h"), ("c", "b"), ("logits", "c")):
        assert rel_err(got[out], got[inp] @ deq[out][1].T) < 1e-2, out


@pytest.mark.parametrize("float16", [False, True])
@pytest.mark.parametrize(("bits", "zero_points"), [(4, False), (4, True), (8, False), (8, True)])
def test_block_rows_equal_gather_block_quantized(bits: int, zero_points: bool, float16: bool) -> None:
    """The plain-op embedding rows are onnxruntime's GatherBlockQuantized rows, bit for bit (3 blocks a row: the
    4-bit zero points' last byte holds one block), ids of any rank."""
    rng = np.random.default_rng(bits)
    n, bs, nb = 40, 16, 3
    levels = rng.integers(0, 2**bits, (n, nb, bs))
    scales = rng.uniform(1e-3, 2e-2, (n, nb)).astype(np.float16 if float16 else np.float32)
    zp = pack(rng.integers(0, 2**bits, (n, nb)), bits) if zero_points else None
    code = BlockCode(bits, bs, nb * bs, pack(levels, bits), scales.astype(np.float32), zp, "rtn")
    ids = np.array([[[0, 39], [7, 7]], [[12, 3], [38, 1]]])

    emit = qn.Emitted()
    tensors = qn.add_block_code(emit, "T", code)
    qn.gather_block_rows(emit, "ids", "rows", "/embed", code, tensors, opset=18)
    ours = helper.make_model(
        helper.make_graph(
            emit.nodes,
            "rows",
            [helper.make_tensor_value_info("ids", TensorProto.INT64, None)],
            [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
            emit.initializers,
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    if float16:
        ours = variants.to_fp16(ours)  # as q4f16 gets it: levels table and scales fp16, fp32 output
    assert all(n.domain in ("", "ai.onnx") for n in ours.graph.node)

    gbq_inputs = [
        numpy_helper.from_array(code.packed.reshape(n, -1), "data"),
        numpy_helper.from_array(scales, "scales"),
    ] + ([numpy_helper.from_array(zp, "zp")] if zero_points else [])
    gbq = helper.make_node(
        "GatherBlockQuantized",
        ["data", "ids", "scales"] + (["zp"] if zero_points else []),
        ["rows"],
        domain=qn.MS,
        bits=bits,
        block_size=bs,
        gather_axis=0,
        quantize_axis=1,
    )
    out_type = TensorProto.FLOAT16 if float16 else TensorProto.FLOAT
    reference = helper.make_model(
        helper.make_graph(
            [gbq],
            "gbq",
            [helper.make_tensor_value_info("ids", TensorProto.INT64, None)],
            [helper.make_tensor_value_info("rows", out_type, None)],
            gbq_inputs,
        ),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(qn.MS, 1)],
    )
    for feed in (ids, ids[0, 1], ids[:1]):
        got, want = (
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": feed})[0]
            for m in (ours, reference)
        )
        assert got.shape == (*feed.shape, nb * bs)
        assert np.array_equal(got, want.astype(np.float32))


def dynamic_quantize_ref(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.float32]:
    """ONNX DynamicQuantizeLinear in numpy: uint8, range widened to hold 0, round half to even."""
    lo, hi = np.float32(min(x.min(), 0)), np.float32(max(x.max(), 0))
    scale = np.float32((hi - lo) / np.float32(255))
    zp = np.float32(np.clip(np.rint(-lo / scale), 0, 255))
    return np.clip(np.rint(x / scale) + zp, 0, 255), scale, zp


def matmul_integer_refs(a_q: np.ndarray, a_zp: np.float32, b_q: np.ndarray) -> list[np.ndarray]:
    """MatMulInteger of uint8 `a_q` (zero point `a_zp`) and int8 `b_q` [K, N], as the two results onnxruntime's CPU
    kernels give: exact, and that of x86 CPUs with AVX2 but no VNNI, whose u8×s8 kernel (vpmaddubsw) adds each pair
    of products along K into an int16 that saturates before the pairs are summed (ORT's quantization docs suggest
    7-bit weights there for this). Both in int64, so neither rounds."""
    a, b = a_q.astype(np.int64), b_q.astype(np.int64)
    exact = (a - np.int64(a_zp)) @ b
    products = a[..., :, None] * b  # [..., K, N]
    pairs = products[..., 0::2, :] + products[..., 1::2, :]
    saturated = np.clip(pairs, -(2**15), 2**15 - 1).sum(-2) - np.int64(a_zp) * b.sum(0)
    return [exact, saturated]


def test_q8_table_is_8bit_and_shared_with_lm_head(tmp_path: Path) -> None:
    weights = build_lm(tmp_path / "model.onnx", "random", 32)
    path = variants.write_variant(tmp_path / "model.onnx", "q8", tmp_path)
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulInteger") == 4 and ops.count("DynamicQuantizeLinear") == 4  # one per distinct input
    # the WASM variant: no contrib op at all (ORT-web's WASM build runs MatMulNBits 3-35x slower than fp32)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["T_quantized"].dtype == np.int8 and inits["T_quantized"].shape == (V, H)
    assert not {"T", "U", "W1", "W2", "W3"} & set(inits)
    assert [n for n, a in inits.items() if sorted(a.shape) == sorted((V, H))] == ["T_quantized"]  # stored once
    table = inits["T_quantized"].astype(np.float32) * inits["T_scale"][:, None]
    assert np.abs(table - weights["T"]).max() <= np.abs(weights["T"]).max(1).max() / 127 / 2 * 1.001
    got = run_lm(path)
    assert np.array_equal(got["e"][0], table[LM_FEEDS["input_ids"][0]])
    untied = inits["U_quantized"].astype(np.float32) * inits["U_scale"][:, None]
    assert np.array_equal(got["e2"][0], untied[LM_FEEDS["type_ids"][0]])
    x_q, x_scale, x_zp = dynamic_quantize_ref(got["c"])
    scale = x_scale * inits["T_scale"]
    wants = [(integer * scale).astype(np.float32) for integer in matmul_integer_refs(x_q, x_zp, inits["T_quantized"].T)]
    assert any(np.array_equal(got["logits"], want) for want in wants)


def test_q8_layers_equal_onnxruntimes_quantize_dynamic(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, _ = build(tmp_path, 32)
    x = np.random.default_rng(5).normal(0.3, 1, (1, 6, K)).astype(np.float32)
    quantize_dynamic(fp32, tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8, per_channel=True)
    want = run(tmp_path / "dynamic.onnx", x)
    path = variants.write_variant(fp32, "q8", tmp_path)
    assert path.name == "model_quantized.onnx"
    got = run(path, x)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    ops = sorted(n.op_type for n in onnx.load(path).graph.node)
    assert ops == sorted(n.op_type for n in onnx.load(tmp_path / "dynamic.onnx").graph.node)


@pytest.mark.parametrize("dtype", ["q4", "q4f16", "q8"])
def test_external_data_source_gives_the_same_variant(tmp_path: Path, dtype: str) -> None:
    (tmp_path / "inline").mkdir()
    (tmp_path / "external").mkdir()
    build_lm(tmp_path / "inline" / "model.onnx", "q8", 32)
    build_lm(tmp_path / "external" / "model.onnx", "q8", 32, external=True)
    skeleton = onnx.load(tmp_path / "external" / "model.onnx", load_external_data=False)
    assert all(uses_external_data(t) for t in skeleton.graph.initializer)
    a = variants.write_variant(tmp_path / "inline" / "model.onnx", dtype, tmp_path / "inline", 32)
    b = variants.write_variant(tmp_path / "external" / "model.onnx", dtype, tmp_path / "external", 32)
    assert a.read_bytes() == b.read_bytes()  # single-file variant, byte for byte


def test_external_weights_are_read_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """24 MB of external fp32 weights: the q4 writer's Python-side memory peaks at a few of them, never all.

    tracemalloc sees numpy arrays and bytes, not memory maps: a weight counts once it is copied or computed on.
    """
    import tracemalloc

    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401  (its first import allocates tens of MB)

    rng = np.random.default_rng(0)
    count, k, n = 24, 256, 1024  # 1 MB each
    nodes, inits, x = [], [], "x"
    for i in range(count):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.02, (k, n)).astype(np.float32)[:, :n], f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"y{i}"], name=f"/l{i}/MatMul"))
        nodes.append(helper.make_node("Slice", [f"y{i}", "zero", "k", "last"], [f"x{i}"], name=f"/l{i}/Slice"))
        x = f"x{i}"
    inits += [numpy_helper.from_array(np.array([v]), name) for v, name in ((0, "zero"), (k, "k"), (-1, "last"))]
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, k])],
        inits,
    )
    fp32 = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), fp32, save_as_external_data=True, all_tensors_to_one_file=True)
    monkeypatch.setattr(onnx, "load_external_data_for_model", _no_whole_model_load)
    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", _no_whole_model_load)
    tracemalloc.start()
    try:
        variants.write_variant(fp32, "q4", tmp_path, 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 4.2 MB measured: the 3.9 MB variant's serialization plus a weight or two; 29 MB when every weight is held
    assert peak < count * k * n * 4 / 3, f"{peak / 1e6:.1f} MB traced"


def _no_whole_model_load(*args, **kwargs) -> None:
    raise AssertionError("the whole external data was loaded")


def test_streamed_save_writes_the_same_message(tmp_path: Path) -> None:
    """model_prep.onnx_io.writer writes initializers one by one (no whole-model serialization): same proto back."""
    from model_prep.onnx_io import writer

    build_lm(tmp_path / "model.onnx")
    model = onnx.load(tmp_path / "model.onnx")
    model.metadata_props.add(key="k", value="v")
    size = writer.save(model, tmp_path / "streamed.onnx")
    assert size == (tmp_path / "streamed.onnx").stat().st_size
    assert onnx.load(tmp_path / "streamed.onnx") == model
    want, got = run_lm(tmp_path / "model.onnx"), run_lm(tmp_path / "streamed.onnx")
    assert all(np.array_equal(got[k], want[k]) for k in LM_OUTPUTS)


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int3"])
def test_only_the_shipped_quantizers_exist(tmp_path: Path, dtype: str) -> None:
    fp32, _ = build(tmp_path, 32)
    with pytest.raises(ValueError, match=f"no quantizer for dtype '{dtype}'"):
        variants.write_variant(fp32, dtype, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
