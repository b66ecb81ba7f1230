"""SmolVLM variants against the torch model: a fixed prompt with a fixed synthetic image, the recipe's text prompts
and the natural text, scored like verify/text.py (top-1 agreement, logit cosine, perplexity) in the same report shape.

The ONNX side runs the way Transformers.js does: vision_encoder → embed_tokens → image features written over the
`<image>` embeddings → decoder_model_merged with KV cache.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..folder import SMOLVLM_GRAPHS, SUFFIX
from .onnx_runner import greedy as onnx_greedy
from .text import CONTINUATION_TOKENS, NATURAL_TEXT, Fidelity, LogitStore, reference_perplexity, score_teacher_forced

IMAGE_QUESTION = "Describe this image in one sentence."
# The strings the Idefics3 processor (Python and Transformers.js) wraps image tokens with.
FAKE_IMAGE, IMAGE, GLOBAL_IMAGE = "<fake_token_around_image>", "<image>", "<global-img>"


def graph_paths(onnx_dir: Path, dtype: str) -> dict[str, Path]:
    return {name: onnx_dir / f"{name}{SUFFIX[dtype]}.onnx" for name in SMOLVLM_GRAPHS}


# ---------------------------------------------------------------------------------------------------- inputs


def synthetic_image(model_dir: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A fixed 2×2-tile picture, preprocessed the Idefics3 way (tiles row by row, then the global image, rescaled and
    normalised): pixel_values [1, 5, 3, S, S] float32, pixel_attention_mask [1, 5, S, S] bool, rows, cols.

    Built without an image library (PIL is not a dependency): the picture is exactly two tiles on a side, so no
    resize is needed except the global view, a 2×2 mean. Browser resizing differs slightly from any Python one, so
    comparisons are made on these pixels, not on an image file."""
    config = json.loads((model_dir / "preprocessor_config.json").read_text())
    size = config["max_image_size"]["longest_edge"]
    y, x = np.mgrid[0 : 2 * size, 0 : 2 * size].astype(np.float64) / (2 * size)
    disc = ((x - 0.62) ** 2 + (y - 0.38) ** 2 < 0.05).astype(np.float64)
    stripes = (np.floor(x * 12 + y * 5) % 2).astype(np.float64)
    image = np.round(255 * np.stack([x, 0.3 + 0.6 * disc, 0.8 * stripes * (1 - y)])).clip(0, 255)
    tiles = [image[:, r * size : (r + 1) * size, c * size : (c + 1) * size] for r in range(2) for c in range(2)]
    tiles.append(image.reshape(3, size, 2, size, 2).mean(axis=(2, 4)).round())
    pixels = np.stack(tiles) * config.get("rescale_factor", 1 / 255)
    mean = np.asarray(config.get("image_mean", [0.5] * 3))[None, :, None, None]
    std = np.asarray(config.get("image_std", [0.5] * 3))[None, :, None, None]
    pixels = ((pixels - mean) / std).astype(np.float32)[None]
    return pixels, np.ones((1, len(tiles), size, size), dtype=bool), 2, 2


def expand_image_tokens(text: str, rows: int, cols: int, image_seq_len: int) -> str:
    """Replace each `<image>` of a chat prompt by the tile layout the Idefics3 processor emits
    (Transformers.js `get_image_prompt_string`, one image of rows × cols tiles plus the global view)."""
    tokens = IMAGE * image_seq_len
    if rows == 0 and cols == 0:
        layout = f"{FAKE_IMAGE}{GLOBAL_IMAGE}{tokens}{FAKE_IMAGE}"
    else:
        layout = "".join(
            "".join(f"{FAKE_IMAGE}<row_{r + 1}_col_{c + 1}>{tokens}" for c in range(cols)) + "\n" for r in range(rows)
        )
        layout += f"\n{FAKE_IMAGE}{GLOBAL_IMAGE}{tokens}{FAKE_IMAGE}"
    return layout.join(text.split(IMAGE))


def load_tokenizer(model_dir: Path):
    """The tokenizer with its chat template; hub SmolVLM folders may keep the template in the processor's
    chat_template.json instead of tokenizer_config.json."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor_template = model_dir / "chat_template.json"
    if not tokenizer.chat_template and processor_template.is_file():
        tokenizer.chat_template = json.loads(processor_template.read_text())["chat_template"]
    return tokenizer


def image_prompt_ids(tokenizer, model_dir: Path, question: str, rows: int, cols: int) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image_seq_len = json.loads((model_dir / "processor_config.json").read_text())["image_seq_len"]
    return tokenizer(expand_image_tokens(text, rows, cols, image_seq_len)).input_ids


def text_prompt_ids(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


# ---------------------------------------------------------------------------------------------------- ONNX


class VLMSession:
    """The three graphs driven like Transformers.js: features over `<image>` embeddings, then a KV-cached decoder."""

    def __init__(self, paths: dict[str, Path], image_token_id: int, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in paths.items()
        }
        self.image_token_id = image_token_id
        decoder = self.sessions["decoder_model_merged"]
        self.past_inputs = [i for i in decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.input_names = {i.name for i in decoder.get_inputs()}
        self.output_names = [o.name for o in decoder.get_outputs()]
        self.reset()

    def reset(self) -> None:
        self.past = {
            i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float16 if "float16" in i.type else np.float32)
            for i in self.past_inputs
        }
        self.length = 0

    def image_features(self, pixel_values: np.ndarray, pixel_attention_mask: np.ndarray) -> np.ndarray:
        feed = {"pixel_values": pixel_values, "pixel_attention_mask": pixel_attention_mask}
        return self.sessions["vision_encoder"].run(None, feed)[0]

    def embed(self, ids: list[int], features: np.ndarray | None = None) -> np.ndarray:
        embeds = self.sessions["embed_tokens"].run(None, {"input_ids": np.array([ids], dtype=np.int64)})[0]
        if features is not None:
            slots = np.flatnonzero(np.asarray(ids) == self.image_token_id)
            rows = features.reshape(-1, features.shape[-1])
            if len(slots) != len(rows):
                raise ValueError(f"{len(slots)} <image> tokens but {len(rows)} image feature rows")
            embeds[0, slots] = rows
        return embeds

    def forward(self, ids: list[int], features: np.ndarray | None = None) -> np.ndarray:
        """Run `ids` after what came before; returns fp32 logits [len(ids), vocab]."""
        n = len(ids)
        feed = {
            "inputs_embeds": self.embed(ids, features),
            "attention_mask": np.ones((1, self.length + n), dtype=np.int64),
            **self.past,
        }
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.arange(self.length, self.length + n, dtype=np.int64)[None]
        outputs = self.sessions["decoder_model_merged"].run(None, feed)
        for name, value in zip(self.output_names[1:], outputs[1:], strict=True):
            self.past[name.replace("present.", "past_key_values.")] = value
        self.length += n
        return outputs[0][0].astype(np.float32)


def greedy(
    session: VLMSession, prompt_ids: list[int], features: np.ndarray | None, max_new_tokens: int, eos_ids: set[int]
) -> list[int]:
    return onnx_greedy(session, prompt_ids, max_new_tokens, eos_ids, prefill=lambda ids: session.forward(ids, features))


# ---------------------------------------------------------------------------------------------------- scoring


@dataclass
class VLMReference:
    """torch's logits on the scored sequences; the first `with_image` of them carry the synthetic image."""

    sequences: list[list[int]]
    prefix_lengths: list[int]
    logits: LogitStore
    perplexity: float
    pixel_values: np.ndarray
    pixel_attention_mask: np.ndarray
    image_token_id: int
    with_image: int = 1
    image_tokens: int = 0
    tiles: int = 0


def torch_reference(source: Path, prompts: tuple[str, ...], logits_dir: Path) -> VLMReference:
    import torch

    from ..sources.smolvlm_model import fixed_vision_positions, load_model

    tokenizer = load_tokenizer(source)
    model = load_model(source)
    pixels, mask, rows, cols = synthetic_image(source)
    image = {"pixel_values": torch.from_numpy(pixels), "pixel_attention_mask": torch.from_numpy(mask)}
    prompt_ids = [image_prompt_ids(tokenizer, source, IMAGE_QUESTION, rows, cols)]
    prompt_ids += [text_prompt_ids(tokenizer, p) for p in prompts]
    store = LogitStore(logits_dir, model.get_output_embeddings().weight.shape[0])
    sequences, prefixes = [], []
    with torch.inference_mode(), fixed_vision_positions(model):
        for i, ids in enumerate(prompt_ids):
            extra = image if i == 0 else {}
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=CONTINUATION_TOKENS,
                min_new_tokens=4,
                do_sample=False,
                **extra,
            )
            sequences.append(out[0].tolist())
            prefixes.append(len(ids))
        sequences.append(tokenizer(NATURAL_TEXT).input_ids)
        prefixes.append(1)
        for i, (seq, prefix) in enumerate(zip(sequences, prefixes, strict=True)):
            extra = image if i == 0 else {}
            full = model(input_ids=torch.tensor([seq]), **extra).logits[0].float().numpy()
            store.write(i, [full[prefix - 1 : len(seq) - 1]])  # SmolVLM's 49k vocab: whole rows are small
    return VLMReference(
        sequences=sequences,
        prefix_lengths=prefixes,
        logits=store,
        perplexity=reference_perplexity(store, sequences, prefixes),
        pixel_values=pixels,
        pixel_attention_mask=mask,
        image_token_id=model.config.image_token_id,
        image_tokens=sum(t == model.config.image_token_id for t in prompt_ids[0]),
        tiles=pixels.shape[1],
    )


def score_variant(paths: dict[str, Path], dtype: str, ref: VLMReference) -> Fidelity:
    session = VLMSession(paths, ref.image_token_id)
    features = session.image_features(ref.pixel_values, ref.pixel_attention_mask)
    return score_teacher_forced(
        session, dtype, ref, prefill=lambda i, ids: session.forward(ids, features if i < ref.with_image else None)
    )


def image_report(ref: VLMReference) -> dict:
    """What text.as_report says nothing about: the image the first prompt carried."""
    return {"tiles": ref.tiles, "image_tokens": ref.image_tokens, "prompts_with_image": ref.with_image}
