"""The GGUF writer and its llama.cpp verification, on the tiny Llama and Qwen3 (random weights, exact architectures).

llama.cpp (llama-cpp-python) runs every file written here: an f32 GGUF must reproduce torch's logits (the q/k
permutation, norms, rope and head sizes are right), its tokenizer must give tokenizer.json's ids, and a GGUF written
from the dequantized weights of a Q4_1 GGUF must give back that GGUF's bytes (the default model's grid recovery).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from model_prep.errors import SourceCorrupt, VerificationFailed
from model_prep.export.gguf import permute_rotary, pre_tokenizer_name, write_gguf
from model_prep.recipes import GgufPlan
from model_prep.sources.tiny import build_tiny

pytestmark = pytest.mark.slow
gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")  # noqa: F841 (the verifier's runtime: skip loudly where missing)

from model_prep.verify import quality  # noqa: E402
from model_prep.verify.gguf import (  # noqa: E402
    GgufFidelity,
    LlamaCppSession,
    greedy_gguf,
    kv_cache_type,
    require_tokenizer,
)

TEXTS = [
    "The capital of France is Paris. Numbers 1234567 and 3.14!",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, build_tiny(request.param, tmp_path_factory.mktemp(request.param) / "source")


def fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        try:
            out[key] = field.contents()
        except Exception:  # noqa: BLE001 (some field kinds have no python value; none of those is checked here)
            continue
    return out


def test_metadata_and_tensors(tiny: tuple[str, Path], tmp_path: Path) -> None:
    arch, source = tiny
    report = write_gguf(source, tmp_path / "m.gguf", GgufPlan("q8_0", "q8_0"), "tiny")
    meta = fields(report.path)
    config = json.loads((source / "config.json").read_text())
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    assert meta["general.architecture"] == arch
    assert meta[f"{arch}.block_count"] == config["num_hidden_layers"]
    assert meta[f"{arch}.attention.head_count_kv"] == config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    assert meta[f"{arch}.attention.key_length"] == head_dim
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert len(meta["tokenizer.ggml.tokens"]) == config["vocab_size"]
    assert len(meta["tokenizer.ggml.merges"]) == len(tokenizer["model"]["merges"])
    im_end = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == "<|im_end|>")
    assert meta["tokenizer.ggml.eos_token_id"] == im_end
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    names = {t.name: t.tensor_type.name for t in gguf.GGUFReader(report.path).tensors}
    assert "output.weight" not in names  # tied: llama.cpp reads lm_head from token_embd
    assert names["token_embd.weight"] == "Q8_0" and names["blk.0.ffn_down.weight"] == "Q8_0"
    assert names["blk.0.attn_norm.weight"] == "F32"
    if arch == "qwen3":
        assert names["blk.0.attn_q_norm.weight"] == "F32" and names["blk.1.attn_k_norm.weight"] == "F32"
    assert not (tmp_path / "m.gguf.part").exists()


def test_f32_gguf_reproduces_torch(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """Unquantized, llama.cpp and torch must agree: any layout mistake (q/k order, eps, rope) shows here."""
    import torch

    from model_prep.sources.checkpoint import load_causal_lm_fp32

    _, source = tiny
    path = write_gguf(source, tmp_path / "f32.gguf", GgufPlan("f32", "f32"), "tiny").path
    ids = [1, 7, 42, 99, 3, 250, 17, 8, 64, 5, 300, 12]
    with torch.inference_mode():
        want = load_causal_lm_fp32(source)(torch.tensor([ids])).logits[0].numpy()
    session = LlamaCppSession(path, n_ctx=256, kv_cache="f16")  # the layout alone: not the browser's 8-bit cache
    try:
        got = np.concatenate([session.forward(ids[:5]), session.forward(ids[5:])])  # KV path exercised
        session.reset()
        again = session.forward(ids)
    finally:
        session.close()
    assert (got.argmax(-1) == want.argmax(-1)).all()
    cosine = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cosine.min() > 0.9999, cosine
    np.testing.assert_allclose(again, got, atol=1e-3)


def llama_cpp_load_steps(path: Path) -> list[int]:
    """The bytes llama.cpp loads between its progress reports, one report before each tensor it reads (no mmap:
    the browser's way), in the order it reads them."""
    import llama_cpp

    reports: list[float] = []

    @llama_cpp.llama_progress_callback
    def progress(fraction: float, _user: object) -> bool:
        reports.append(fraction)
        return True

    params = llama_cpp.llama_model_default_params()
    params.use_mmap = False
    params.progress_callback = progress
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, "llama.cpp could not load the file"
    llama_cpp.llama_model_free(model)
    total = sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)
    return [round((b - a) * total) for a, b in zip(reports, reports[1:], strict=False)]


def test_llama_cpp_reads_the_tensors_front_to_back(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """The tensors lie in the order llama.cpp loads them, so a loader that reads ahead (wllama fetches 1 MB for
    every read under 1 MB) gets each byte once: what llama.cpp loads step by step is the file's tensors in order."""
    _, source = tiny
    path = write_gguf(source, tmp_path / "m.gguf", GgufPlan("q8_0", "q8_0"), "tiny").path
    in_file = [int(t.n_bytes) for t in sorted(gguf.GGUFReader(path).tensors, key=lambda t: int(t.data_offset))]
    steps = llama_cpp_load_steps(path)
    assert len(steps) >= len(in_file) - 1
    assert all(abs(got - want) <= 2 for got, want in zip(steps, in_file[:-1], strict=False)), (steps, in_file)


def test_kv_cache_is_8bit_where_the_heads_split_into_its_blocks(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """q8_0 (the browser's cache) where heads are a multiple of its 32-wide blocks; else f16, because llama.cpp
    refuses to create a context with a q8_0 cache over tiny-llama's 16-wide heads."""
    arch, source = tiny
    path = write_gguf(source, tmp_path / "m.gguf", GgufPlan("q8_0", "q8_0"), "tiny").path
    assert kv_cache_type(path) == {"llama": "f16", "qwen3": "q8_0"}[arch]
    session = LlamaCppSession(path, n_ctx=256)
    try:
        assert session.kv_cache == kv_cache_type(path)
        assert np.isfinite(session.forward([1, 7, 42])).all()
    finally:
        session.close()


def test_llama_cpp_tokenizes_like_tokenizer_json(tiny: tuple[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    _, source = tiny
    path = write_gguf(source, tmp_path / "m.gguf", GgufPlan("q8_0", "q8_0"), "tiny").path
    tokenizer = AutoTokenizer.from_pretrained(source)
    session = LlamaCppSession(path, n_ctx=256)
    try:
        for text in TEXTS:
            assert session.tokenize(text) == tokenizer(text, add_special_tokens=False).input_ids
    finally:
        session.close()


def test_greedy_reply_ids_match_torch(tiny: tuple[str, Path], tmp_path: Path) -> None:
    import torch

    from model_prep.sources.checkpoint import load_causal_lm_fp32

    _, source = tiny
    path = write_gguf(source, tmp_path / "f32.gguf", GgufPlan("f32", "f32"), "tiny").path
    prompt = [1, 7, 42, 99, 3]
    model = load_causal_lm_fp32(source)
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, min_new_tokens=10)
    assert greedy_gguf(path, prompt, 10, eos_ids=set()) == out[0, len(prompt) :].tolist()


def test_a_q4_1_gguf_is_recovered_byte_for_byte_from_its_dequantized_weights(tmp_path: Path) -> None:
    """The default model's case: its source is a Q4_1 GGUF; dequantized to fp32 (with HF's q/k order) and written
    again on the same grid, every quantized tensor must come back identical."""
    import torch
    from safetensors.torch import save_file

    source = build_tiny("llama", tmp_path / "tiny")
    first = write_gguf(source, tmp_path / "first.gguf", GgufPlan("q4_1", "q8_0"), "tiny").path
    config = json.loads((source / "config.json").read_text())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    from safetensors import safe_open

    with safe_open(source / "model.safetensors", "np") as f:
        hf_names = list(f.keys())
    to_hf = {names.get_name(n, try_suffixes=(".weight",)): n for n in hf_names}
    tensors = {}
    for t in gguf.GGUFReader(first).tensors:
        values = gguf.quants.dequantize(np.array(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        hf = to_hf[t.name]
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):  # llama.cpp's order back to HF's
            heads = config["num_attention_heads"] if "attn_q" in t.name else config["num_key_value_heads"]
            values = unpermute(values, heads)
        tensors[hf] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    dequantized = tmp_path / "dequantized"
    dequantized.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (dequantized / name).write_bytes((source / name).read_bytes())
    save_file(tensors, dequantized / "model.safetensors")
    again = write_gguf(dequantized, tmp_path / "again.gguf", GgufPlan("q4_1", "q8_0"), "tiny", source_gguf=first)
    matrices = 2 * 7 + 1  # 2 layers × (q, k, v, o, gate, up, down) + the embedding
    assert again.grid_match == {"same": matrices, "compared": matrices}
    # A grid that is not the source's (Q4_0 here) is compared and found different, not silently "recovered".
    other = write_gguf(dequantized, tmp_path / "other.gguf", GgufPlan("q4_0", "q8_0"), "tiny", source_gguf=first)
    assert other.grid_match["same"] < other.grid_match["compared"]


def unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    rows = weights.shape[0]
    return weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def test_permute_round_trip() -> None:
    w = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    assert np.array_equal(unpermute(permute_rotary(w, 2), 2), w)
    assert not np.array_equal(permute_rotary(w, 2), w)


BYTE_LEVEL = {"type": "ByteLevel"}


@pytest.mark.parametrize(
    ("pre", "name"),
    [
        ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}],
            },
            "smollm",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"},
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            "qwen2",
        ),
    ],
)
def test_pre_tokenizer_names(pre: dict, name: str) -> None:
    assert pre_tokenizer_name({"pre_tokenizer": pre}) == name


def test_an_unknown_pre_tokenizer_is_refused() -> None:
    with pytest.raises(SourceCorrupt, match="pre-tokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})


def fidelity(top1: float, ppl: float, agrees: bool = True) -> GgufFidelity:
    return GgufFidelity("gguf-q4_1", top1, 0.99, ppl, 100, tokenizer_agrees=agrees)


def test_the_default_models_gguf_is_held_to_its_own_floor() -> None:
    from dataclasses import asdict

    from model_prep.recipes import GGUF_FLOOR, get_recipe

    plan = get_recipe("smollm2-135m").gguf
    report = {"reference": {"perplexity": 40.69}, "variants": {}}
    report["variants"]["gguf-q4_1"] = asdict(fidelity(0.950, 40.78))  # measured: 95.0 %, +0.2 %
    assert quality.failures(report, plan.floor, ("gguf-q4_1",)) == []
    assert quality.failures(report, GGUF_FLOOR, ("gguf-q4_1",))  # the ONNX grid recipe's 97 % is out of reach
    report["variants"]["gguf-q4_1"] = asdict(fidelity(0.70, 45.0))  # a broken file (stock RTN-like)
    assert len(quality.failures(report, plan.floor, ("gguf-q4_1",))) == 2


def test_a_tokenizer_that_disagrees_fails_the_export() -> None:
    require_tokenizer(fidelity(0.99, 10.0))
    with pytest.raises(VerificationFailed, match="tokenizes differently"):
        require_tokenizer(fidelity(0.99, 10.0, agrees=False))


@pytest.fixture(scope="module")
def wide_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3 with 256-wide rows (hidden and MLP), so the k-quants' 256-wide blocks split them."""
    import shutil

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tiny = build_tiny("qwen3", tmp_path_factory.mktemp("qwen3") / "source")
    out = tmp_path_factory.mktemp("wide-qwen3")
    config = json.loads((tiny / "config.json").read_text()) | {"hidden_size": 256, "intermediate_size": 512}
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(**config)).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, out / name)
    return out


def test_a_k_quant_gguf_is_llama_cpps_own_written_in_load_order(wide_qwen3: Path, tmp_path: Path) -> None:
    """Q6_K comes from llama.cpp's quantizer (gguf's numpy quantizers have no k-quants), which writes tensors sorted by
    name: the writer lays them out again in load order, with its own metadata, and leaves no intermediate file."""
    report = write_gguf(wide_qwen3, tmp_path / "m.gguf", GgufPlan("q6_k", "q6_k"), "wide")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(report.path).tensors}
    assert types["token_embd.weight"] == types["blk.0.attn_q.weight"] == types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert fields(report.path)["general.file_type"] == 18  # LLAMA_FTYPE_MOSTLY_Q6_K
    in_file = [int(t.n_bytes) for t in sorted(gguf.GGUFReader(report.path).tensors, key=lambda t: int(t.data_offset))]
    steps = llama_cpp_load_steps(report.path)
    assert all(abs(got - want) <= 2 for got, want in zip(steps, in_file[:-1], strict=False)), (steps, in_file)
    # Close to the same checkpoint at f32 (random weights: harder to quantize than trained ones).
    f32 = write_gguf(wide_qwen3, tmp_path / "f32.gguf", GgufPlan("f32", "f32"), "wide").path
    ids = [1, 7, 42, 99, 3, 250, 17, 8, 64, 5, 300, 12]
    logits = []
    for path in (report.path, f32):
        session = LlamaCppSession(path, n_ctx=256, kv_cache="f16")
        try:
            logits.append(session.forward(ids))
        finally:
            session.close()
    got, want = logits
    cosine = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cosine.min() > 0.995, cosine
