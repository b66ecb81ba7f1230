"""tiny-smolvlm end to end: `python -m model_prep export`, the graph interface Transformers.js 4.3.1 loads for
idefics3/smolvlm, and greedy tokens from the ONNX graphs equal to HF generate on the same pixels and prompt."""

import json
from pathlib import Path

import numpy as np
import pytest

from model_prep.__main__ import main
from model_prep.errors import VerificationFailed
from model_prep.export.smolvlm import check_graphs
from model_prep.layout import SMOLVLM_GRAPHS
from model_prep.sources.smolvlm_model import fixed_vision_positions, load_model
from model_prep.verify.vlm import VLMSession, graph_paths, greedy, image_prompt_ids, synthetic_image

pytestmark = pytest.mark.slow

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    assert main(["export", "tiny-smolvlm", "--out", str(models)]) == 0
    return models / "tiny-smolvlm"


@pytest.fixture(scope="module")
def source(exported: Path) -> Path:
    return exported.parent / ".cache" / "sources" / "tiny-smolvlm"


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_cli_writes_a_complete_folder(exported: Path) -> None:
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "preprocessor_config.json",
        "verification.json",
        "manifest.json",
    ):
        assert (exported / name).is_file(), name
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["capabilities"] == {"text": True, "image": True}
    assert manifest["task"] == "image-text-to-text" and manifest["model_type"] == "idefics3"
    suffix = {"fp32": "", "q4": "_q4", "q4f16": "_q4f16"}
    assert {d: info["files"] for d, info in manifest["dtypes"].items()} == {
        d: [f"onnx/{g}{s}.onnx" for g in SMOLVLM_GRAPHS] for d, s in suffix.items()
    }
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert listed == on_disk - {"manifest.json"}
    assert not list(exported.parent.glob(".tmp-*"))

    processor = json.loads((exported / "processor_config.json").read_text())
    preprocessor = json.loads((exported / "preprocessor_config.json").read_text())
    assert processor["image_seq_len"] == 4 and preprocessor["processor_class"] == "Idefics3Processor"
    tokenizer_config = json.loads((exported / "tokenizer_config.json").read_text())
    assert "<image>" in tokenizer_config["chat_template"] and "Assistant:" in tokenizer_config["chat_template"]

    report = json.loads((exported / "verification.json").read_text())
    assert set(report["variants"]) == {"fp32", "q4", "q4f16"}
    assert report["variants"]["fp32"]["top1_agreement"] == 1.0
    assert report["variants"]["fp32"]["mean_logit_cosine"] > 0.9999
    assert report["image"]["tiles"] == 5 and report["image"]["image_tokens"] == 5 * 4


def test_graphs_have_the_interface_transformersjs_expects(exported: Path) -> None:
    """Names, element types and axes that Transformers.js 4.3.1 reads (MODEL_TYPES.ImageTextToText sessions,
    image_text_to_text_forward, addPastKeyValues: a past axis named `batch_size` is the batch, any other symbolic
    axis becomes 0, so heads and head_dim must be numbers)."""
    config = json.loads((exported / "config.json").read_text())
    text = config["text_config"]
    layers, kv_heads, head_dim = text["num_hidden_layers"], text["num_key_value_heads"], text["head_dim"]
    for dtype, suffix in (("fp32", ""), ("q4", "_q4"), ("q4f16", "_q4f16")):
        vision = _session(exported / "onnx" / f"vision_encoder{suffix}.onnx")
        assert [(i.name, i.type, len(i.shape)) for i in vision.get_inputs()] == [
            ("pixel_values", "tensor(float)", 5),
            ("pixel_attention_mask", "tensor(bool)", 4),
        ], dtype
        assert [(o.name, o.type) for o in vision.get_outputs()] == [("image_features", "tensor(float)")]
        assert vision.get_outputs()[0].shape[-1] == text["hidden_size"]

        embed = _session(exported / "onnx" / f"embed_tokens{suffix}.onnx")
        assert [(i.name, i.type) for i in embed.get_inputs()] == [("input_ids", "tensor(int64)")]
        assert [(o.name, o.type) for o in embed.get_outputs()] == [("inputs_embeds", "tensor(float)")]

        decoder = _session(exported / "onnx" / f"decoder_model_merged{suffix}.onnx")
        past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
        inputs = {i.name: i for i in decoder.get_inputs()}
        # no position_ids: GroupQueryAttention takes positions from the mask (Transformers.js feeds what is declared)
        assert list(inputs) == ["inputs_embeds", "attention_mask", *past]
        assert inputs["inputs_embeds"].type == "tensor(float)"
        assert inputs["attention_mask"].type == "tensor(int64)"
        for name in past:  # q4f16 keeps its KV cache in fp16: no per-layer Cast of the whole cache each step
            assert inputs[name].type == ("tensor(float16)" if dtype == "q4f16" else "tensor(float)")
            assert inputs[name].shape == ["batch_size", kv_heads, "past_sequence_length", head_dim]
        outputs = [o.name for o in decoder.get_outputs()]
        assert outputs == ["logits", *(n.replace("past_key_values", "present") for n in past)]


def test_onnx_greedy_equals_hf_generate(exported: Path, source: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    model = load_model(source)
    image_token_id = json.loads((exported / "config.json").read_text())["image_token_id"]
    pixels, mask, rows, cols = synthetic_image(exported)
    ids = image_prompt_ids(tokenizer, exported, "What is in this image?", rows, cols)
    assert ids.count(image_token_id) == 5 * 4 and tokenizer.convert_tokens_to_ids("<row_2_col_2>") in ids

    with torch.inference_mode(), fixed_vision_positions(model):
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            pixel_values=torch.from_numpy(pixels),
            pixel_attention_mask=torch.from_numpy(mask),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    want = out[0, len(ids) :].tolist()
    assert len(want) == NEW_TOKENS and len(set(want)) > 2, "a degenerate tiny model could not fail this test"

    # The ONNX pipeline step by step, the way Transformers.js runs it.
    onnx_dir = exported / "onnx"
    vision, embed, decoder = (_session(onnx_dir / f"{g}.onnx") for g in SMOLVLM_GRAPHS)
    features = vision.run(None, {"pixel_values": pixels, "pixel_attention_mask": mask})[0]
    features = features.reshape(-1, features.shape[-1])
    embeds = embed.run(None, {"input_ids": np.array([ids], dtype=np.int64)})[0]
    slots = np.flatnonzero(np.array(ids) == image_token_id)
    assert len(slots) == len(features)
    embeds[0, slots] = features
    past = {
        i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
        for i in decoder.get_inputs()
        if i.name.startswith("past_key_values.")
    }
    names = [o.name for o in decoder.get_outputs()]
    got, length = [], 0
    for _ in range(NEW_TOKENS):
        n = embeds.shape[1]
        outputs = decoder.run(
            None,
            {
                "inputs_embeds": embeds,
                "attention_mask": np.ones((1, length + n), np.int64),
                **past,
            },
        )
        length += n
        past = {name.replace("present.", "past_key_values."): v for name, v in zip(names[1:], outputs[1:], strict=True)}
        got.append(int(outputs[0][0, -1].argmax()))
        embeds = embed.run(None, {"input_ids": np.array([[got[-1]]], dtype=np.int64)})[0]
    assert got == want

    # The runner that verification scores variants with agrees, and the image really reaches the logits.
    session = VLMSession(graph_paths(onnx_dir, "fp32"), image_token_id)
    raw = session.image_features(pixels, mask)
    assert greedy(session, ids, raw, NEW_TOKENS, eos_ids=set()) == want
    session.reset()
    with_image = session.forward(ids, raw)[-1]
    session.reset()
    flipped = session.image_features(np.ascontiguousarray(pixels[..., ::-1]), mask)
    assert np.abs(session.forward(ids, flipped)[-1] - with_image).max() > 0.1


def test_graph_check_fails_on_a_wrong_graph(exported: Path, source: Path) -> None:
    import torch

    model = load_model(source)
    paths = graph_paths(exported / "onnx", "fp32")
    with torch.no_grad(), fixed_vision_positions(model):
        check_graphs(model, paths)  # the exported graphs pass
        model.lm_head.weight.mul_(1.01)
        with pytest.raises(VerificationFailed, match="decoder_model_merged logits"):
            check_graphs(model, paths)


def test_vision_positions_follow_the_upstream_fix(source: Path) -> None:
    """transformers 4.55–4.57 give patches 0, 0, 1, …, n-2 per row (transformers#41190); SmolVLM was trained with
    0, 1, …, n-1, which the exported graph computes and `fixed_vision_positions` restores in torch."""
    import torch

    model = load_model(source)
    embeddings = model.model.vision_model.embeddings
    size = model.config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    grid = size // model.config.vision_config.patch_size
    mask = torch.ones(1, grid, grid, dtype=torch.bool)
    with torch.no_grad(), fixed_vision_positions(model):
        got = embeddings(pixels, mask)
        want = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
        want = want + embeddings.position_embedding(torch.arange(grid * grid)[None])
    torch.testing.assert_close(got, want)
