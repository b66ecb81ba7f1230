"""Tokenizer files the browser needs: byte-level BPE, eos `<|im_end|>`, no BOS, chat template inlined."""

import json
from pathlib import Path
from typing import Any

# SmolLM2's own template (the GGUF carries the same one); inlined so Transformers.js never needs a .jinja file.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BOS, EOS, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>"


def fix_gguf_tokenizer(tokenizer: Any, folder: Path) -> None:
    """transformers 4.57 reads a GPT2-style GGUF vocab as a Llama tokenizer that prepends BOS and stops on
    `<|im_start|>`; rewrite it as the byte-level BPE the model was trained with."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["normalizer"] = None
    data["pre_tokenizer"] = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    data["post_processor"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": False,
        "use_regex": True,
    }
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    data["model"].update(unk_token=None, fuse_unk=False, byte_fallback=False)
    template = tokenizer.chat_template or CHATML_TEMPLATE
    write_tokenizer_files(folder, data, template, model_max_length=8192)
    vocab = data["model"]["vocab"]
    _set_token_ids(folder, bos=vocab[BOS], eos=vocab[EOS], pad=vocab[EOS])


def write_tokenizer_files(folder: Path, tokenizer_json: dict, chat_template: str, model_max_length: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    specials = {t["id"]: t for t in tokenizer_json.get("added_tokens", [])}
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": UNK,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "additional_special_tokens": [BOS, EOS],
        "added_tokens_decoder": {
            str(i): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for i, t in sorted(specials.items())
        },
        "chat_template": chat_template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": UNK}, indent=2)
    )


def _set_token_ids(folder: Path, bos: int, eos: int, pad: int) -> None:
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
        path.write_text(json.dumps(data, indent=2))
