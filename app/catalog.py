"""The model catalog: every `<models_dir>/<id>/manifest.json` that honours the schema-1 contract
(edge_contracts.Manifest, the record model_prep writes).

The pipeline renames whole folders into place, so a manifest's identity on disk (mtime, size, inode) is
enough to know when to parse it again. A folder that breaks the contract is logged once and left out;
it never takes the server, or the other models, down with it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from edge_contracts import Manifest, ManifestError
from edge_contracts import is_safe_relpath as is_safe_relpath  # the path rule, where the app has always had it

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"

# Ids end up in URLs and in Transformers.js model ids, so only plain URL-safe names qualify.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The forms of `source` the pipeline writes that name public things (docs/architecture.md); anything else, e.g. an
# old manifest's `--source /home/me/...`, is published as "local".
_PUBLIC_SOURCE_RES = (
    re.compile(r"hub:[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?"),
    re.compile(
        r"gguf-wheel:[A-Za-z0-9][A-Za-z0-9._-]{0,99}(==[A-Za-z0-9.+!_-]{1,64})?:[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}"
    ),
    re.compile(r"tiny:[A-Za-z0-9_-]{1,64}"),
)


@dataclass(frozen=True)
class ArtifactFile:
    path: str
    size: int
    sha256: str


def public_source(source: object) -> str:
    """The manifest's `source` if it is one of the public forms, else "local": a served model never names a path."""
    if isinstance(source, str) and ".." not in source and any(r.fullmatch(source) for r in _PUBLIC_SOURCE_RES):
        return source
    return "local"


def models_base_url(value: str) -> str:
    """MODELS_BASE_URL checked and ending in '/': an absolute http(s) URL without query, fragment or credentials."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"MODELS_BASE_URL must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"MODELS_BASE_URL must not carry a query, fragment or credentials: {value!r}")
    return value.strip().rstrip("/") + "/"


def url_origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Model:
    id: str
    folder: Path
    manifest: Mapping[str, Any]
    files: Mapping[str, ArtifactFile]
    # MODELS_BASE_URL: artifacts are fetched from `<it>/<id>/<path>` (a copy of the models folder on a CDN or an
    # object store); integrity still comes from this manifest's sha256, checked by the page for every byte.
    remote_base: str | None = None

    @property
    def revision(self) -> str:
        return str(self.manifest["revision"])

    @property
    def base_url(self) -> str:
        """Where this revision lives for the page: Transformers.js's model path and the model cache's keys."""
        return f"/models/{self.id}/{self.revision}/"

    @property
    def artifacts_url(self) -> str:
        """Where the page downloads the artifacts from: the remote copy, or this app's `base_url`."""
        return f"{self.remote_base}{quote(self.id)}/" if self.remote_base else self.base_url

    def summary(self) -> dict[str, Any]:
        """The entry `/api/models` lists: enough for the UI to choose a model, dtype and device."""
        m = self.manifest
        return {
            "id": self.id,
            "name": m["name"],
            "revision": self.revision,
            "task": m["task"],
            "capabilities": m["capabilities"],
            "dtypes": {dtype: spec["bytes"] for dtype, spec in m["dtypes"].items()},
            "devices": m["devices"],
            "memory_bytes": m["memory_bytes"],
            "base_url": self.base_url,
            "artifacts_url": self.artifacts_url,
        }

    def detail(self) -> dict[str, Any]:
        """The manifest with its `source` made public, plus `base_url` and `artifacts_url`: `/api/models/{id}`."""
        published = {**self.manifest, "source": public_source(self.manifest.get("source"))}
        if "recipe" in published and not (
            isinstance(published["recipe"], str) and is_valid_model_id(published["recipe"])
        ):
            del published["recipe"]
        return {**published, "base_url": self.base_url, "artifacts_url": self.artifacts_url}


def is_valid_model_id(model_id: str) -> bool:
    return _ID_RE.fullmatch(model_id) is not None


def parse_manifest(data: object, folder: Path, config: Mapping[str, Any] | None = None) -> Model:
    """Validate a decoded manifest against the contract (edge_contracts.Manifest; `config`: the folder's config.json,
    which bounds its context_length); raises ManifestError naming the first problem."""
    record = Manifest.parse(data)
    # The folder name is what URLs and Transformers.js resolve, so the manifest must agree with it.
    if record.id != folder.name:
        raise ManifestError(f"'id' {record.id!r} differs from the folder name")
    if config is not None:
        record.check_config(config)
    files = {f.path: ArtifactFile(path=f.path, size=f.bytes, sha256=f.sha256) for f in record.files}
    return Model(id=folder.name, folder=folder, manifest=record.to_json(), files=files)


def load_model(folder: Path, remote_base: str | None = None) -> Model:
    """Read and validate `folder/manifest.json`; raises ManifestError (or OSError if unreadable)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_bytes())
    except FileNotFoundError as exc:
        raise ManifestError("no manifest.json (the export did not finish?)") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"not valid JSON: {exc}") from exc
    return dataclasses.replace(parse_manifest(data, folder, _config(folder, data)), remote_base=remote_base)


def _config(folder: Path, manifest: object) -> dict | None:
    """The folder's config.json where the manifest lists it (the model's own limits), else None."""
    listed = isinstance(manifest, dict) and isinstance(manifest.get("files"), list)
    if not listed or not any(isinstance(f, dict) and f.get("path") == "config.json" for f in manifest["files"]):
        return None
    try:
        config = json.loads((folder / "config.json").read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"config.json is not valid JSON: {exc}") from exc
    return config if isinstance(config, dict) else None


# What identifies one version of a manifest on disk: a rename-swap changes the inode even in one mtime tick.
# None stands for "the folder exists but has no readable manifest".
_StatKey = tuple[int, int, int] | None


class Catalog:
    """The models under one folder, re-read whenever a manifest changes on disk."""

    def __init__(self, models_dir: Path, remote_base: str | None = None) -> None:
        self.models_dir = models_dir
        self.remote_base = remote_base
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[_StatKey, Model | None]] = {}
        self._bad_names: set[str] = set()

    def models(self) -> list[Model]:
        """Every valid model, sorted by id."""
        try:
            names = sorted(e.name for e in os.scandir(self.models_dir) if e.is_dir())
        except OSError:
            return []
        found: list[Model] = []
        for name in names:
            if name.startswith("."):
                continue  # work in progress (`.tmp-*`) or hidden: never part of the catalog
            if not is_valid_model_id(name):
                self._warn_bad_name(name)
            elif (model := self.get(name)) is not None:
                found.append(model)
        with self._lock:
            # Forget folders that were removed so the cache never outgrows the folder.
            for gone in set(self._cache) - set(names):
                del self._cache[gone]
        return found

    def get(self, model_id: str) -> Model | None:
        """The model with this id, or None if absent, hidden (`.tmp-*`) or invalid."""
        if not is_valid_model_id(model_id):
            return None
        folder = self.models_dir / model_id
        key: _StatKey
        try:
            st = (folder / MANIFEST_NAME).stat()
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            if not folder.is_dir():
                return None  # not cached: request paths must not grow the cache
            key = None
        with self._lock:
            cached = self._cache.get(model_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            model: Model | None = None
            try:
                model = load_model(folder, self.remote_base)
            except (ManifestError, OSError) as exc:
                # Logged once per manifest version: the cache remembers the failure until the file changes.
                log.warning("skipping model folder %s: %s", folder, exc)
            self._cache[model_id] = (key, model)
            return model

    def _warn_bad_name(self, name: str) -> None:
        with self._lock:
            if name in self._bad_names:
                return
            self._bad_names.add(name)
        log.warning("skipping model folder %r: not a valid model id (letters, digits, '.', '_', '-')", name)
