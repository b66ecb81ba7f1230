"""The model folder's contract: the file names Transformers.js and llama.cpp look up, and the memory budget the
manifest states. Read by every stage (export, quantize, verify, write) and by `model_prep verify`; it writes nothing
(layout.py is the write stage)."""

import hashlib
from pathlib import Path

MANIFEST = "manifest.json"
VERIFICATION = "verification.json"
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "processor_config.json",
    "preprocessor_config.json",
)
# The file suffix Transformers.js appends to a graph's name for each dtype (`model_q4f16.onnx`).
SUFFIX = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "q4": "_q4", "q4f16": "_q4f16"}
# The graphs Transformers.js 4.3.1 opens for idefics3 / smolvlm (a text decoder is one graph, `model`).
SMOLVLM_GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
KV_CONTEXT_FOR_MEMORY = 4096  # the context length the memory estimate budgets KV cache for


def variant_path(fp32_path: Path, dtype: str, out_dir: Path) -> Path:
    """Where `dtype`'s variant of the graph at `fp32_path` goes in `out_dir`."""
    return out_dir / f"{fp32_path.stem}{SUFFIX[dtype]}.onnx"


def graphs_in(folder: Path, dtype: str, files: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """{sub-model: graph} of an ONNX dtype whose manifest entry lists `files` (`onnx/model_q4.onnx` → `model`)."""
    return {
        Path(f).stem.removesuffix(SUFFIX[dtype]) if SUFFIX[dtype] else Path(f).stem: folder / f
        for f in files
        if f.endswith(".onnx")
    }


def kv_cache_bytes(text_config: dict) -> int:
    """fp32 K and V for KV_CONTEXT_FOR_MEMORY tokens: what the manifest's memory_bytes adds to a variant's weights."""
    heads = text_config.get("num_key_value_heads") or text_config["num_attention_heads"]
    head_dim = text_config.get("head_dim") or text_config["hidden_size"] // text_config["num_attention_heads"]
    return 2 * text_config["num_hidden_layers"] * heads * head_dim * KV_CONTEXT_FOR_MEMORY * 4


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
