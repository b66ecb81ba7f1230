"""Bad input to the pipeline: a one-line error that says what to do, a non-zero exit, nothing written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_prep.__main__ import main
from model_prep.errors import HubUnreachable, SourceCorrupt, SourceMissing, UnsupportedArchitecture
from model_prep.recipes import get_recipe
from model_prep.sources.resolve import resolve_source

ROOT = Path(__file__).resolve().parents[2]


def test_unknown_recipe_exits_2_with_the_known_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["export", "gpt-17", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown recipe 'gpt-17'") and "smollm2-135m" in err
    assert list(tmp_path.iterdir()) == []


def test_hub_unreachable_says_to_pass_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable, match=r"pass --source PATH"):
        resolve_source(get_recipe("qwen3-0.6b"), None, tmp_path)


def test_cli_prints_one_line_for_an_unreachable_hub(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "model_prep", "export", "qwen3-0.6b", "--out", str(tmp_path / "m")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--source" in errors[0]
    assert not (tmp_path / "m" / "qwen3-0.6b").exists()


def test_missing_source_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing, match="no config.json"):
        resolve_source(get_recipe("qwen3-0.6b"), str(tmp_path / "nowhere"), tmp_path)


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing, match="GGUF file not found"):
        resolve_source(get_recipe("smollm2-135m"), str(tmp_path / "x.gguf"), tmp_path)


def test_corrupt_gguf_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(SourceCorrupt, match="cannot load bad.gguf"):
        resolve_source(get_recipe("smollm2-135m"), str(bad), tmp_path / "cache")


def test_corrupt_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SourceCorrupt, match="config.json"):
        resolve_source(get_recipe("qwen3-0.6b"), str(tmp_path), tmp_path)


def test_wrong_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(UnsupportedArchitecture, match="exports Qwen3ForCausalLM, but the source is BertModel"):
        resolve_source(get_recipe("qwen3-0.6b"), str(tmp_path), tmp_path)


@pytest.mark.slow
def test_an_export_killed_midway_leaves_the_previous_model_intact(tmp_path: Path) -> None:
    models = tmp_path / "models"
    cmd = [sys.executable, "-m", "model_prep", "export", "tiny-llama", "--out", str(models)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    manifest_before = (models / "tiny-llama" / "manifest.json").read_text()
    files_before = {p: p.read_bytes() for p in (models / "tiny-llama").rglob("*") if p.is_file()}

    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # kill it once it is writing variants into its temporary folder
        if line.startswith("[3/5] quantize"):
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (models / "tiny-llama" / "manifest.json").read_text() == manifest_before
    assert {p: p.read_bytes() for p in (models / "tiny-llama").rglob("*") if p.is_file()} == files_before
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(".tmp-tiny-llama-")]
    assert len(leftovers) == 1, "the killed export's half-written folder stays hidden"

    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")], "the next export cleans it up"


@pytest.mark.parametrize(
    ("name", "content"),
    [("chat_template.jinja", "{{ x }}"), ("chat_template.json", json.dumps({"chat_template": "{{ x }}"}))],
)
def test_a_chat_template_kept_beside_the_tokenizer_is_inlined(tmp_path: Path, name: str, content: str) -> None:
    from model_prep.layout import inline_chat_template

    (tmp_path / name).write_text(content)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    inline_chat_template(tmp_path, tmp_path / "tokenizer_config.json")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == "{{ x }}"
