"""An HF checkpoint folder → one GGUF file that llama.cpp (wllama in the browser) runs as it is.

Weights are read one tensor at a time and quantized with the `gguf` package's numpy quantizers (Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0), then streamed into the file: the header and tensor table go first, so no quantized tensor is held
beyond the one being written. The k-quants (Q6_K), which those quantizers lack, come from llama.cpp's own quantizer
run on an f32 file written first; this writer then writes its output again, with the same metadata and in load order.
The tokenizer metadata (byte-level BPE tokens, token types, merges, special ids, the pre-tokenizer llama.cpp must
apply, the chat template) comes from the same tokenizer.json the browser's Transformers.js reads, so a prompt
tokenized either way is the same token ids.

When the checkpoint came from a GGUF (the default model: Q4_1 layers, a Q8_0 embedding), re-encoding its
dequantized weights on the same grid gives back the source's bytes: `grid_match` counts how many tensors do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_contracts import GGUF_TYPES

from ..errors import SourceCorrupt, UnsupportedArchitecture
from ..recipes import GgufPlan

# HF architecture → (gguf architecture, rotary layout). Llama checkpoints keep q/k rows in HF's rotate-half order,
# which llama.cpp's Llama graph expects interleaved (convert_hf_to_gguf permutes them); Qwen3 is NEOX-style as is.
ARCHITECTURES = {"LlamaForCausalLM": ("llama", True), "Qwen3ForCausalLM": ("qwen3", False)}
QUANT_TYPES = GGUF_TYPES
LLAMA_CPP_QUANTIZED = ("q6_k",)  # made by llama.cpp's quantizer (rows it cannot split into 256-wide blocks: Q8_0)
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7, "q6_k": 18}  # llama_ftype
# llama.cpp's token types (llama_token_type / gguf.TokenType).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
# GPT-2's split regex: what a ByteLevel pre-tokenizer with use_regex applies.
GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
QWEN2_REGEX_START = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
# The order llama.cpp loads tensors in (the order llama-model.cpp creates them): these first, then each block's in
# BLOCK_ORDER. The file is written in that order so llama.cpp reads it front to back: wllama reads ahead 1 MB for
# every read under 1 MB, and in any other order it throws most of that away and reads the file almost twice.
TOP_ORDER = ("token_embd", "output_norm", "output")
BLOCK_ORDER = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "attn_q_norm",
    "attn_k_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_down",
    "ffn_up",
)


@dataclass
class GgufReport:
    path: Path
    bytes: int
    tensors: int
    types: dict[str, int]  # ggml type name → tensor count
    grid_match: dict[str, int] | None = None  # {"same": n, "compared": m} against the source GGUF, when there is one


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for what tokenizer.json's pre-tokenizer does (it matches by name, not regex)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # SmolLM's own: single digits, then GPT-2's regex
    if kinds == ["Split", "ByteLevel"]:
        regex = (steps[0].get("pattern") or {}).get("Regex", "")
        if regex.startswith(QWEN2_REGEX_START):
            return "qwen2"
    raise SourceCorrupt(f"no llama.cpp pre-tokenizer matches tokenizer.json's {json.dumps(pre)[:200]}")


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    bos: int | None
    eos: int | None
    unk: int | None
    pad: int | None
    chat_template: str | None


def read_vocab(source: Path, vocab_size: int) -> Vocab:
    """Tokens padded to the model's vocab_size (Qwen3's embedding has more rows than the tokenizer has tokens)."""
    data = json.loads((source / "tokenizer.json").read_text())
    model = data["model"]
    if model.get("type") != "BPE":
        raise SourceCorrupt(f"tokenizer.json is {model.get('type')}, not the byte-level BPE a GGUF 'gpt2' vocab holds")
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types = dict.fromkeys(by_id, NORMAL)
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    if max(by_id) >= vocab_size:
        raise SourceCorrupt(f"tokenizer.json has token id {max(by_id)}, but the model's vocab_size is {vocab_size}")
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    token_types = [types.get(i, UNUSED) for i in range(vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    config = _json(source / "tokenizer_config.json")
    ids = {t: i for i, t in by_id.items()}
    special = {k: _token_text(config.get(f"{k}_token")) for k in ("bos", "eos", "unk", "pad")}
    gen = _json(source / "generation_config.json")
    eos_id = ids.get(special["eos"]) if special["eos"] else None
    if eos_id is None and gen.get("eos_token_id") is not None:
        eos = gen["eos_token_id"]
        eos_id = eos[0] if isinstance(eos, list) else eos
    return Vocab(
        tokens=tokens,
        types=token_types,
        merges=merges,
        pre=pre_tokenizer_name(data),
        bos=ids.get(special["bos"]) if special["bos"] else None,
        eos=eos_id,
        unk=ids.get(special["unk"]) if special["unk"] else None,
        pad=ids.get(special["pad"]) if special["pad"] else None,
        chat_template=config.get("chat_template") if isinstance(config.get("chat_template"), str) else None,
    )


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def load_order(gguf_name: str) -> tuple[int, int, int, str]:
    """Sort key: llama.cpp's load order (TOP_ORDER, then blocks by number in BLOCK_ORDER); unknown names last."""
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        kind = parts[2]
        return 1, int(parts[1]), BLOCK_ORDER.index(kind) if kind in BLOCK_ORDER else len(BLOCK_ORDER), gguf_name
    return 0, 0, TOP_ORDER.index(parts[0]) if parts[0] in TOP_ORDER else len(TOP_ORDER), gguf_name


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows → llama.cpp's interleaved pairs (convert_hf_to_gguf's LlamaModel.permute)."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def write_gguf(source: Path, out_path: Path, plan: GgufPlan, name: str, source_gguf: Path | None = None) -> GgufReport:
    """Write `source` (an HF folder) as a GGUF at `out_path` (via a `.part` file, renamed when complete)."""
    for kind in (plan.weights, plan.embedding):
        if kind not in QUANT_TYPES:
            raise ValueError(f"GGUF type {kind!r} is not one of {', '.join(QUANT_TYPES)}")
    if not {plan.weights, plan.embedding} & set(LLAMA_CPP_QUANTIZED):
        return _write(source, out_path, plan, name, source_gguf)
    f32 = out_path.with_name(out_path.name + ".f32.part")
    quantized = out_path.with_name(out_path.name + ".quantized.part")
    try:
        _write(source, f32, GgufPlan("f32", "f32"), name)
        _llama_cpp_quantize(f32, quantized, plan)
        f32.unlink()
        # llama.cpp's quantizer writes the tensors sorted by name: written again here, they lie in load order.
        return _write(source, out_path, plan, name, quantized=quantized)
    finally:
        f32.unlink(missing_ok=True)
        quantized.unlink(missing_ok=True)


def _llama_cpp_quantize(f32: Path, out: Path, plan: GgufPlan) -> None:
    from ..llama_cpp_isa import require_portable_llama_cpp

    require_portable_llama_cpp()
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPE[plan.weights]
    params.token_embedding_type = int(_ggml_type(plan.embedding))
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {f32.name} to {plan.weights}")


def _write(
    source: Path,
    out_path: Path,
    plan: GgufPlan,
    name: str,
    source_gguf: Path | None = None,
    quantized: Path | None = None,
) -> GgufReport:
    """The file itself; with `quantized` (a GGUF of the same checkpoint), its tensors as they are, not re-encoded."""
    import gguf

    from ..sources.checkpoint import SafetensorsReader

    config = json.loads((source / "config.json").read_text())
    found = (config.get("architectures") or ["unknown"])[0]
    if found not in ARCHITECTURES:
        raise UnsupportedArchitecture(found, " or ".join(ARCHITECTURES), "gguf")
    arch, permute = ARCHITECTURES[found]
    n_layer = config["num_hidden_layers"]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    vocab = read_vocab(source, config["vocab_size"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layer)
    reader = SafetensorsReader(source)
    tied = config.get("tie_word_embeddings", False)

    def gguf_name(hf: str) -> str:
        mapped = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise SourceCorrupt(f"{hf} has no GGUF name for {arch}: the checkpoint does not match its config")
        return mapped

    # (checkpoint tensor, GGUF tensor) in file order; llama.cpp reads a tied lm_head from token_embd.
    entries = [(hf, gguf_name(hf)) for hf in reader.files if not (tied and hf == "lm_head.weight")]
    entries.sort(key=lambda entry: load_order(entry[1]))

    def qtype(gname: str, shape: tuple[int, ...]) -> str:
        if len(shape) < 2:
            return "f32"  # norms
        kind = plan.embedding if gname == "token_embd.weight" else plan.weights
        block = gguf.GGML_QUANT_SIZES[_ggml_type(kind)][0]
        return kind if shape[-1] % block == 0 else "f16"  # a row the block does not divide stays f16

    def tensors() -> Iterator[tuple[str, str, np.ndarray]]:
        for hf, gname in entries:
            data = reader.read([hf])
            if permute and gname.endswith(("attn_q.weight", "attn_k.weight")):
                data = permute_rotary(data, n_head if gname.endswith("attn_q.weight") else n_kv)
            yield gname, qtype(gname, data.shape), data

    part = out_path.with_name(out_path.name + ".part")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(part, arch)
    _add_metadata(writer, arch, config, head_dim, n_kv, vocab, plan, name)
    types: dict[str, int] = {}
    done = {t.name: t for t in gguf.GGUFReader(quantized).tensors} if quantized else None
    if done is None:
        shapes = _tensor_shapes(reader, entries, qtype)
    else:
        shapes = {
            g: (tuple(int(n) for n in reversed(done[g].shape)), done[g].tensor_type.name.lower()) for _, g in entries
        }
    for gname, (shape, kind) in shapes.items():
        qt = _ggml_type(kind)
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(shape, qt))) if kind not in ("f32", "f16") else 0
        if kind == "f32":
            writer.add_tensor_info(gname, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
        elif kind == "f16":
            writer.add_tensor_info(gname, shape, np.dtype(np.float16), int(np.prod(shape)) * 2)
        else:
            writer.add_tensor_info(gname, gguf.quant_shape_to_byte_shape(shape, qt), np.dtype(np.uint8), nbytes, qt)
        types[qt.name] = types.get(qt.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    written = list(shapes)
    i = 0
    compare = _SourceGrid(source_gguf) if source_gguf else None
    encoded_tensors = (
        ((g, _encode(data, kind)) for g, kind, data in tensors())
        if done is None
        else ((g, np.asarray(done[g].data)) for g in shapes)
    )
    for gname, encoded in encoded_tensors:
        if gname != written[i]:
            raise RuntimeError(f"tensor order changed while writing: {gname} != {written[i]}")
        i += 1
        if compare:
            compare.check(gname, encoded)
        writer.write_tensor_data(encoded)
    writer.close()
    part.rename(out_path)
    return GgufReport(
        path=out_path,
        bytes=out_path.stat().st_size,
        tensors=len(shapes),
        types=types,
        grid_match=compare.result() if compare else None,
    )


def _tensor_shapes(reader, entries: list[tuple[str, str]], qtype) -> dict[str, tuple[tuple[int, ...], str]]:
    """{gguf name: (shape, type)} in file order, from the safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for hf, gname in entries:
        with safe_open(reader.files[hf], "np") as f:
            shape = tuple(f.get_slice(hf).get_shape())
        shapes[gname] = (shape, qtype(gname, shape))
    return shapes


def _ggml_type(kind: str):
    import gguf

    return gguf.GGMLQuantizationType[kind.upper()]


def _encode(data: np.ndarray, kind: str) -> np.ndarray:
    from gguf import quants

    if kind == "f32":
        return np.ascontiguousarray(data, dtype=np.float32)
    if kind == "f16":
        return np.ascontiguousarray(data, dtype=np.float16)
    return quants.quantize(np.ascontiguousarray(data, dtype=np.float32), _ggml_type(kind))


class _SourceGrid:
    """Compares each written tensor's bytes with the source GGUF's tensor of the same name and type."""

    def __init__(self, path: Path) -> None:
        import gguf

        self.reader = gguf.GGUFReader(path)
        self.by_name = {t.name: t for t in self.reader.tensors}
        self.same = self.compared = 0

    def check(self, name: str, encoded: np.ndarray) -> None:
        src = self.by_name.get(name)
        if src is None or src.tensor_type.name in ("F32", "F16") or encoded.dtype != np.uint8:
            return
        self.compared += 1
        raw = np.asarray(src.data).view(np.uint8).reshape(-1)
        if raw.size == encoded.size and np.array_equal(raw, encoded.reshape(-1)):
            self.same += 1

    def result(self) -> dict[str, int]:
        return {"same": self.same, "compared": self.compared}


def _add_metadata(writer, arch: str, config: dict, head_dim: int, n_kv: int, vocab: Vocab, plan, name: str) -> None:
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(FILE_TYPE[plan.weights])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for key, value in (("bos", vocab.bos), ("eos", vocab.eos), ("unk", vocab.unk), ("pad", vocab.pad)):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(value)
    # The chat template adds <|im_start|> itself: no BOS in front of a prompt (as tokenizer_config.json says).
    writer.add_add_bos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
