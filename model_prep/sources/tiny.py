"""Tiny random-weight checkpoints of the exact architectures the recipes export: what the tests run, offline.

Each is a real HF folder (config, safetensors, byte-level BPE tokenizer trained here on a fixed corpus, chat
template inlined), built once per cache folder and deterministic: fixed seeds, fixed corpus, no hub.
"""

import json
import shutil
from pathlib import Path

from ..errors import SourceMissing
from .chat_tokenizer import BOS, CHATML_TEMPLATE, EOS, UNK, write_tokenizer_files

# Bump when what build_tiny writes changes: cached folders with an older stamp are rebuilt.
TINY_VERSION = "1"
SEED = 0
VOCAB_SIZE = {"llama": 384, "qwen3": 384, "smolvlm": 448}
EMBED_STD = 0.3  # embeddings and lm_head: random logits with clear winners, so greedy tokens differ
LAYER_STD = 0.3  # other matrices: as strong as the embeddings, or tied models just echo the last token

# SmolVLM's special tokens (Idefics3 processor): the image wrapper, the image placeholder, the global tile marker,
# the end of a turn, and one `<row_R_col_C>` per tile of a split image (SmolVLM ships rows and columns 1..6).
FAKE_IMAGE, IMAGE, GLOBAL_IMAGE, END_OF_UTTERANCE = (
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    "<end_of_utterance>",
)
ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# SmolVLM-256M/500M-Instruct's template: content is a list of {"type": "text"|"image"} parts.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# Qwen3's ChatML without its thinking branches and without SmolLM's default system turn.
QWEN_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# SmolVLM image processing sized for the tiny vision tower: 128 px tiles, images up to 256 px (2×2 tiles + global).
TINY_IMAGE_SIZE, TINY_PATCH, TINY_SCALE = 128, 16, 4
TINY_IMAGE_SEQ_LEN = (TINY_IMAGE_SIZE // TINY_PATCH) ** 2 // TINY_SCALE**2

CORPUS = """\
The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.
Write a haiku about the sea. Waves fold into foam, the tide returns what it took, salt wind on the stones.
Explain in two sentences why the sky is blue. Sunlight scatters off the molecules of the air, and blue light
scatters more than red light because its wavelength is shorter. So the sky looks blue from every direction.
You are a helpful AI assistant. The user asks a question and the assistant answers it clearly and briefly.
What is in this image? The image shows a red square on a blue background with a small green circle.
Can you describe the picture? There is a cat sitting on a wooden table next to a cup of coffee.
Models run in the browser with WebGPU or WebAssembly. The weights are quantized to four bits to save memory.
Numbers: one two three four five six seven eight nine ten, 1 2 3 4 5 6 7 8 9 10, 2026, 3.14, 42.
A small model learns the patterns of the text it reads; a large model learns more of them, and slowly.
The quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly.
How are you today? I am fine, thank you. Please tell me a story about a dragon who loved to read books.
Once upon a time there was a dragon in the mountains, and every evening she read by the light of her own fire.
"""


def build_tiny(arch: str, out_dir: Path) -> Path:
    """Build (once) a tiny random-weight checkpoint of `arch` ("llama", "qwen3" or "smolvlm") in `out_dir`."""
    if arch not in VOCAB_SIZE:
        raise SourceMissing(f"no tiny model for {arch!r}: choose one of tiny:{', tiny:'.join(VOCAB_SIZE)}")
    key = f"tiny:{arch}:v{TINY_VERSION}"
    stamp = out_dir / ".complete"
    if stamp.is_file() and stamp.read_text() == key:
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    specials = [UNK, BOS, EOS] + (
        [FAKE_IMAGE, IMAGE, GLOBAL_IMAGE, END_OF_UTTERANCE, *ROW_COL] if arch == "smolvlm" else []
    )
    tokenizer_json = train_tokenizer(specials, VOCAB_SIZE[arch])
    vocab = tokenizer_json["model"]["vocab"]
    ids = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    if arch == "smolvlm":
        _build_smolvlm(tmp, len(vocab), ids)
        write_tokenizer_files(tmp, tokenizer_json, SMOLVLM_TEMPLATE, model_max_length=8192)
        _patch_tokenizer_config(tmp, eos=END_OF_UTTERANCE, extra=[FAKE_IMAGE, IMAGE, END_OF_UTTERANCE])
        eos, pad = [ids[END_OF_UTTERANCE], ids[EOS]], ids[EOS]
    else:
        _build_text(arch, tmp, len(vocab), ids)
        template = CHATML_TEMPLATE if arch == "llama" else QWEN_TEMPLATE
        write_tokenizer_files(tmp, tokenizer_json, template, model_max_length=8192)
        eos, pad = ids[EOS], ids[EOS] if arch == "llama" else ids[UNK]
    _write_generation_config(tmp, bos=ids[BOS], eos=eos, pad=pad)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out_dir)
    stamp.write_text(key)
    return out_dir


def train_tokenizer(specials: list[str], vocab_size: int) -> dict:
    """A GPT2-style byte-level BPE trained on CORPUS: special tokens first (ids 0…), then the 256 bytes, merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer)
    data = json.loads(tokenizer.to_str())
    data["model"].update(unk_token=None, fuse_unk=False, byte_fallback=False)
    return data


def _init_weights(model, embed_names: tuple[str, ...]) -> None:
    """Seeded re-initialisation: N(0, LAYER_STD) for matrices, N(0, EMBED_STD) for embeddings and lm_head."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() < 2:  # norms keep weight 1 / bias 0, as HF initialises them
                continue
            std = EMBED_STD if name.endswith(embed_names) else LAYER_STD
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def _text_config(arch: str, vocab_size: int, ids: dict[str, int]) -> dict:
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[EOS],
        tie_word_embeddings=True,
        dtype="float32",
    )
    if arch == "qwen3":  # Qwen3-0.6B's shape: head_dim explicit (heads × head_dim ≠ hidden), q/k norms, tied
        return common | dict(
            intermediate_size=192,
            head_dim=32,
            max_position_embeddings=40960,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            use_sliding_window=False,
            pad_token_id=ids[UNK],
        )
    return common | dict(  # SmolLM2-style Llama
        intermediate_size=128, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5
    )


def _build_text(arch: str, folder: Path, vocab_size: int, ids: dict[str, int]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen3Config, Qwen3ForCausalLM)
    torch.manual_seed(SEED)
    model = model_cls(config_cls(**_text_config(arch, vocab_size, ids))).eval()
    _init_weights(model, ("embed_tokens.weight", "lm_head.weight"))
    model.save_pretrained(folder)


def _build_smolvlm(folder: Path, vocab_size: int, ids: dict[str, int]) -> None:
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    text = _text_config("llama", vocab_size, ids) | dict(tie_word_embeddings=False, model_type="llama")
    config = Idefics3Config(
        text_config=text,
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=TINY_IMAGE_SIZE,
            patch_size=TINY_PATCH,
        ),
        scale_factor=TINY_SCALE,
        image_token_id=ids[IMAGE],
        pad_token_id=ids[EOS],
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(config).eval()
    _init_weights(model, ("embed_tokens.weight", "lm_head.weight", "position_embedding.weight"))
    model.save_pretrained(folder)
    (folder / "processor_config.json").write_text(
        json.dumps({"image_seq_len": TINY_IMAGE_SEQ_LEN, "processor_class": "Idefics3Processor"}, indent=2)
    )
    preprocessor = {
        "do_convert_rgb": True,
        "do_image_splitting": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "Idefics3ImageProcessor",
        "max_image_size": {"longest_edge": TINY_IMAGE_SIZE},
        "processor_class": "Idefics3Processor",
        "resample": 1,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": 2 * TINY_IMAGE_SIZE},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))


def _patch_tokenizer_config(folder: Path, eos: str, extra: list[str]) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["eos_token"] = eos
    config["additional_special_tokens"] = extra
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    specials = folder / "special_tokens_map.json"
    data = json.loads(specials.read_text())
    data.update(eos_token=eos, additional_special_tokens=extra)
    specials.write_text(json.dumps(data, indent=2))


def _write_generation_config(folder: Path, bos: int, eos: int | list[int], pad: int) -> None:
    config = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(config, indent=2))
