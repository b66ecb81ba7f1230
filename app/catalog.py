"""The model catalog: every `<models_dir>/<id>/manifest.json` that honours the schema-1 contract.

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

from edge_contracts import REVISION_HEX_DIGITS, revision_of

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1

# Ids end up in URLs and in Transformers.js model ids, so only plain URL-safe names qualify.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REVISION_RE = re.compile(f"[0-9a-f]{{{REVISION_HEX_DIGITS}}}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# The forms of `source` the pipeline writes that name public things (docs/architecture.md); anything else, e.g. an
# old manifest's `--source /home/me/...`, is published as "local".
_PUBLIC_SOURCE_RES = (
    re.compile(r"hub:[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?"),
    re.compile(
        r"gguf-wheel:[A-Za-z0-9][A-Za-z0-9._-]{0,99}(==[A-Za-z0-9.+!_-]{1,64})?:[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}"
    ),
    re.compile(r"tiny:[A-Za-z0-9_-]{1,64}"),
)


class ManifestError(ValueError):
    """A manifest that breaks the schema-1 contract; the message names the field to fix."""


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


def is_safe_relpath(path: object) -> bool:
    """A relative POSIX path with no empty, `.` or `..` segment, no backslash, NUL or control character."""
    if not isinstance(path, str) or not path or path.startswith("/"):
        return False
    if any(ch == "\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def is_valid_model_id(model_id: str) -> bool:
    return _ID_RE.fullmatch(model_id) is not None


def _is_int(value: object) -> bool:
    # bool is an int subclass; `true` is never a byte count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


def _parse_files(raw: object) -> dict[str, ArtifactFile]:
    _require(isinstance(raw, list) and len(raw) > 0, "'files' must be a non-empty list")
    files: dict[str, ArtifactFile] = {}
    for index, entry in enumerate(raw):  # type: ignore[arg-type]
        where = f"files[{index}]"
        _require(isinstance(entry, dict), f"{where} must be an object")
        path, size, sha256 = entry.get("path"), entry.get("bytes"), entry.get("sha256")
        _require(is_safe_relpath(path), f"{where}.path must be a relative POSIX path without '..': {path!r}")
        _require(path != MANIFEST_NAME, f"{where}: manifest.json must not list itself")
        _require(path not in files, f"{where}.path {path!r} is listed twice")
        _require(_is_int(size), f"{where}.bytes must be a non-negative integer")
        _require(isinstance(sha256, str) and _SHA256_RE.fullmatch(sha256) is not None, f"{where}.sha256")
        files[path] = ArtifactFile(path=path, size=size, sha256=sha256)
    return files


def _check_dtypes(dtypes: object, files: Mapping[str, ArtifactFile]) -> None:
    _require(isinstance(dtypes, dict) and len(dtypes) > 0, "'dtypes' must be a non-empty object")
    for dtype, spec in dtypes.items():  # type: ignore[union-attr]
        _require(isinstance(spec, dict), f"dtypes.{dtype} must be an object")
        _require(_is_int(spec.get("bytes")), f"dtypes.{dtype}.bytes must be a non-negative integer")
        listed = spec.get("files")
        _require(isinstance(listed, list) and len(listed) > 0, f"dtypes.{dtype}.files must be a list")
        missing = [p for p in listed if p not in files]
        _require(not missing, f"dtypes.{dtype}.files are not in 'files': {missing}")


def parse_manifest(data: object, folder: Path) -> Model:
    """Validate a decoded manifest against the contract; raises ManifestError naming the first problem."""
    _require(isinstance(data, dict), "the manifest must be a JSON object")
    assert isinstance(data, dict)
    schema = data.get("schema")
    _require(_is_int(schema) and schema == SCHEMA_VERSION, f"'schema' must be 1, got {schema!r}")
    # The folder name is what URLs and Transformers.js resolve, so the manifest must agree with it.
    _require(data.get("id") == folder.name, f"'id' {data.get('id')!r} differs from the folder name")
    _require(isinstance(data.get("name"), str) and data["name"] != "", "'name' must be a non-empty string")
    _require(isinstance(data.get("task"), str), "'task' must be a string")
    _require(isinstance(data.get("capabilities"), dict), "'capabilities' must be an object")
    files = _parse_files(data.get("files"))
    revision = data.get("revision")
    _require(isinstance(revision, str) and _REVISION_RE.fullmatch(revision) is not None, "'revision' format")
    # Revisioned URLs are cached forever; a revision that does not follow the files would serve stale bytes.
    expected = revision_of((f.path, f.sha256) for f in files.values())
    _require(revision == expected, f"'revision' {revision!r} does not match its files ({expected!r})")
    dtypes = data.get("dtypes")
    _check_dtypes(dtypes, files)
    devices = data.get("devices")
    _require(isinstance(devices, dict), "'devices' must be an object")
    for device, dtype in devices.items():
        _require(dtype in dtypes, f"devices.{device} names unknown dtype {dtype!r}")
    memory = data.get("memory_bytes")
    _require(isinstance(memory, dict) and all(_is_int(v) for v in memory.values()), "'memory_bytes' values")
    return Model(id=folder.name, folder=folder, manifest=data, files=files)


def load_model(folder: Path, remote_base: str | None = None) -> Model:
    """Read and validate `folder/manifest.json`; raises ManifestError (or OSError if unreadable)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_bytes())
    except FileNotFoundError as exc:
        raise ManifestError("no manifest.json (the export did not finish?)") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"not valid JSON: {exc}") from exc
    return dataclasses.replace(parse_manifest(data, folder), remote_base=remote_base)


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
