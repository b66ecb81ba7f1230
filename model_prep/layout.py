"""The write stage: a model folder is written under a temporary name, its manifest last, then renamed into place.
Its names and budgets are folder.py's contract."""

import json
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from edge_contracts import MANIFEST_SCHEMA, Capabilities, DtypeEntry, Manifest, ManifestError, ManifestFile, revision_of

from .errors import PrepError
from .folder import CONFIG_FILES, MANIFEST, kv_cache_bytes, sha256_file
from .folder import KV_CONTEXT_FOR_MEMORY as KV_CONTEXT_FOR_MEMORY  # re-exported: bench/ and tests read them here
from .folder import SMOLVLM_GRAPHS as SMOLVLM_GRAPHS
from .folder import SUFFIX as SUFFIX
from .recipes import Recipe


def start_folder(models_dir: Path, recipe: Recipe) -> Path:
    """A fresh hidden folder for one export; leftovers of exports that were killed are removed first."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for stale in models_dir.glob(f".tmp-{recipe.id}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = models_dir / f".tmp-{recipe.id}-{uuid.uuid4().hex[:8]}"
    (tmp / "onnx").mkdir(parents=True)
    return tmp


def copy_configs(source: Path, folder: Path) -> None:
    for name in CONFIG_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    inline_chat_template(source, folder / "tokenizer_config.json")


def inline_chat_template(source: Path, config_path: Path) -> None:
    """Transformers.js reads the template from tokenizer_config.json only; hub checkpoints may keep it beside it
    (`chat_template.jinja`, or `chat_template.json` as SmolVLM's processor does)."""
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    if config.get("chat_template"):
        return
    if (source / "chat_template.jinja").is_file():
        config["chat_template"] = (source / "chat_template.jinja").read_text()
    elif (source / "chat_template.json").is_file():
        config["chat_template"] = json.loads((source / "chat_template.json").read_text())["chat_template"]
    else:
        return
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def write_sampling_defaults(folder: Path, recipe: Recipe) -> None:
    """The recipe's chat sampling, merged into generation_config.json under HF's names (`do_sample`, `temperature`,
    `top_p`, `top_k`, `min_p`, `repetition_penalty`); a thinking model's other mode goes under
    `sampling_without_thinking`. The page reads this file to fill its settings."""
    if recipe.sampling is None:
        return
    path = folder / "generation_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config.update(do_sample=True, **asdict(recipe.sampling))
    if recipe.sampling_without_thinking is not None:
        config["sampling_without_thinking"] = asdict(recipe.sampling_without_thinking)
    path.write_text(json.dumps(config, indent=2))


def build_manifest(
    folder: Path,
    recipe: Recipe,
    dtype_files: dict[str, list[str]],
    source_ref: str,
    runtimes: dict[str, dict[str, str]] | None = None,
) -> Manifest:
    """The manifest of `folder`; `source_ref` is published as is (sources/resolve.public_source: never a path);
    `runtimes`: {dtype: {"runtime": ..., other settings it needs}} for dtypes ONNX Runtime does not run (a GGUF:
    {"runtime": "llama.cpp", "kv_cache": "q8_0"}). Refused (PrepError) where it breaks the contract the app checks."""
    # Sorted as POSIX strings, the order the app recomputes the revision in (Path order differs: onnx/ vs onnx.json).
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = tuple(
        ManifestFile(path=rel, bytes=(folder / rel).stat().st_size, sha256=sha256_file(folder / rel))
        for rel in paths
        if rel != MANIFEST
    )
    sizes = {f.path: f.bytes for f in files}
    config = json.loads((folder / "config.json").read_text())
    text_config = config.get("text_config", config)
    dtypes = {
        d: DtypeEntry(files=tuple(listed), bytes=sum(sizes[p] for p in listed), **(runtimes or {}).get(d, {}))
        for d, listed in dtype_files.items()
    }
    manifest = Manifest(
        schema=MANIFEST_SCHEMA,
        id=recipe.id,
        name=recipe.name,
        revision=revision_of((f.path, f.sha256) for f in files),
        architecture=recipe.architecture,
        model_type=config.get("model_type"),
        task=recipe.task,
        capabilities=Capabilities(text=True, image=recipe.image),
        context_length=text_config.get("max_position_embeddings"),
        source=source_ref,
        recipe=recipe.id,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        dtypes=dtypes,
        devices={k: v for k, v in recipe.devices.items() if v in dtypes},
        memory_bytes={d: int(entry.bytes * 1.2) + kv_cache_bytes(text_config) for d, entry in dtypes.items()},
        files=files,
    )
    try:  # what the app would refuse is never written
        Manifest.parse(manifest.to_json()).check_config(config)
    except ManifestError as err:
        raise PrepError(f"{recipe.id}: the manifest breaks the contract app/catalog.py checks: {err}") from err
    return manifest


def finish_folder(tmp: Path, manifest: Manifest, models_dir: Path) -> Path:
    """Write manifest.json last, then swap the folder into place: a model is either whole or absent."""
    with (tmp / MANIFEST).open("w") as f:
        json.dump(manifest.to_json(), f, indent=2)
    final = models_dir / manifest.id
    old = models_dir / f".old-{manifest.id}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
