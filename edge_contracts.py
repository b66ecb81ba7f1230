"""The contracts Python and the browser share, written once per language: here and in web/src/contracts.js.

A neutral top-level module because both app/ and model_prep/ need it and neither may import the other; it imports
nothing of the project. tests/unit/test_contracts.py runs the JS module in Node and checks that the two agree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

# The model the page selects first, the pipeline builds offline, and the tests and the benchmark use.
DEFAULT_MODEL = "smollm2-135m"

# One Cache Storage cache per model revision: MODEL_CACHE_PREFIX + "<id>-<revision>" (web/src/cache.js).
MODEL_CACHE_PREFIX = "edge-chat-model-"

REVISION_HEX_DIGITS = 12

# The runtimes a dtype can run on (the manifest's dtypes[d].runtime, absent for ONNX; the metrics' `runtime`):
# ONNX Runtime Web (Transformers.js) for ONNX graphs, llama.cpp (wllama) for a GGUF.
ONNX_RUNTIME = "onnxruntime-web"
LLAMA_CPP = "llama.cpp"
RUNTIMES = (ONNX_RUNTIME, LLAMA_CPP)
# llama.cpp's KV cache type (K and V; a quantized V needs flash attention) where a GGUF's attention heads split into
# its blocks (model_prep/verify/gguf.kv_cache_type; else llama.cpp's f16). The manifest's dtypes[d].kv_cache tells the
# browser, and the Python references and verification run the same. q8_0 rather than f16: WASM has no f16 conversion
# instruction, so at long contexts reading an f16 cache dominated decode; q8_0 is also half the memory.
LLAMA_CPP_KV_CACHE = "q8_0"
# The tensor types the pipeline's GGUF writer makes (model_prep/export/gguf.py); a GGUF dtype is "gguf-<type>".
GGUF_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q6_k", "f16", "f32")

# The one metrics schema of every generation (docs/architecture.md): the UI, the tests and the benchmark.
METRIC_NUMBERS = (
    "load_s",
    "ttft_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "prompt_tokens",
    "new_tokens",
)
METRIC_TEXTS = ("device", "dtype", "runtime", "model", "revision")
METRICS = METRIC_NUMBERS + METRIC_TEXTS
# What a benchmark run adds per row, beyond the metrics (posted by /bench, stored by app/bench_results.py).
BENCH_NUMBERS = ("warm_load_s", "turn2_ttft_s", "turn2_ttft_no_reuse_s", "peak_memory_bytes", "threads")
BENCH_TEXTS = ("prompt", "error")


def revision_of(files: Iterable[tuple[str, str]]) -> str:
    """The first 12 hex digits of sha256 over the sorted `path\\0sha256\\n` lines of a manifest's (path, sha256)s.

    Sorted by code point (= UTF-8 byte order), so the order the files come in does not matter.
    """
    lines = sorted(f"{path}\0{sha256}\n" for path, sha256 in files)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()[:REVISION_HEX_DIGITS]


def model_cache_name(model_id: str, revision: str) -> str:
    return f"{MODEL_CACHE_PREFIX}{model_id}-{revision}"


# --- The manifest: each model folder's manifest.json, the one hand-over from model_prep/ to app/ and the page -------
# Written by model_prep/layout.build_manifest, read by app/catalog.py, typed for the page by contracts.js's
# `Manifest` typedef (tests/unit/test_contracts.py checks that the field names agree).

MANIFEST_SCHEMA = 1
# The KV cache types model_prep/verify/gguf.kv_cache_type verifies a GGUF with, and the browser then runs.
LLAMA_CPP_KV_CACHES = ("f16", LLAMA_CPP_KV_CACHE)
_REVISION_RE = re.compile(f"[0-9a-f]{{{REVISION_HEX_DIGITS}}}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that breaks the schema-1 contract; the message names the field to fix."""


def is_safe_relpath(path: object) -> bool:
    """A relative POSIX path with no empty, `.` or `..` segment, no backslash, NUL or control character."""
    if not isinstance(path, str) or not path or path.startswith("/"):
        return False
    if any(ch == "\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


def _is_count(value: object) -> bool:
    # bool is an int subclass; `true` is never a byte count.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _string(data: Mapping[str, Any], key: str, where: str = "", empty: bool = True) -> str:
    value = data.get(key)
    _require(
        isinstance(value, str) and (empty or value != ""),
        f"'{where}{key}' must be a {'' if empty else 'non-empty '}string, got {value!r}",
    )
    return value  # type: ignore[return-value]


def _object(data: Mapping[str, Any], key: str) -> dict:
    value = data.get(key)
    _require(isinstance(value, dict), f"'{key}' must be an object, got {value!r}")
    return value  # type: ignore[return-value]


def _fields_only(data: Mapping[str, Any], record: type, where: str) -> None:
    """Refuse a key the record does not declare: a field written but not declared is the drift this record ends."""
    known = {f.name for f in fields(record)}
    unknown = sorted(set(data) - known)
    _require(not unknown, f"{where or 'the manifest'} has unknown field(s) {unknown}: declared are {sorted(known)}")


@dataclass(frozen=True)
class ManifestFile:
    """One file of the folder (manifest.json itself is never listed)."""

    path: str
    bytes: int
    sha256: str

    @classmethod
    def parse(cls, data: object, where: str) -> ManifestFile:
        _require(isinstance(data, dict), f"{where} must be an object")
        assert isinstance(data, dict)
        _fields_only(data, cls, where)
        path, size, sha256 = data.get("path"), data.get("bytes"), data.get("sha256")
        _require(is_safe_relpath(path), f"{where}.path must be a relative POSIX path without '..': {path!r}")
        _require(path != "manifest.json", f"{where}: manifest.json must not list itself")
        _require(_is_count(size), f"{where}.bytes must be a non-negative integer, got {size!r}")
        _require(
            isinstance(sha256, str) and _SHA256_RE.fullmatch(sha256) is not None,
            f"{where}.sha256 must be 64 lowercase hex digits, got {sha256!r}",
        )
        return cls(path=path, bytes=size, sha256=sha256)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class Capabilities:
    text: bool
    image: bool

    @classmethod
    def parse(cls, data: object) -> Capabilities:
        _require(isinstance(data, dict), f"'capabilities' must be an object, got {data!r}")
        assert isinstance(data, dict)
        _fields_only(data, cls, "capabilities")
        for key in ("text", "image"):
            _require(isinstance(data.get(key), bool), f"capabilities.{key} must be true or false")
        return cls(text=data["text"], image=data["image"])

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "image": self.image}


@dataclass(frozen=True)
class DtypeEntry:
    """One variant: its files, their total size, and for a dtype ONNX Runtime does not run, the runtime and its
    settings (a GGUF: llama.cpp and the KV cache type it was verified with)."""

    files: tuple[str, ...]
    bytes: int
    runtime: str | None = None  # None: ONNX Runtime Web
    kv_cache: str | None = None  # llama.cpp's K and V cache type

    @classmethod
    def parse(cls, dtype: str, data: object, listed: Mapping[str, ManifestFile]) -> DtypeEntry:
        where = f"dtypes.{dtype}"
        _require(isinstance(data, dict), f"{where} must be an object")
        assert isinstance(data, dict)
        _fields_only(data, cls, where)
        _require(_is_count(data.get("bytes")), f"{where}.bytes must be a non-negative integer")
        files = data.get("files")
        _require(
            isinstance(files, list) and len(files) > 0 and all(isinstance(p, str) for p in files),
            f"{where}.files must be a non-empty list of paths",
        )
        missing = [p for p in files if p not in listed]  # type: ignore[union-attr]
        _require(not missing, f"{where}.files are not in 'files': {missing}")
        runtime, kv_cache = data.get("runtime"), data.get("kv_cache")
        _require(runtime is None or runtime in RUNTIMES, f"{where}.runtime must be one of {RUNTIMES}, got {runtime!r}")
        # The page runs a gguf-* dtype on llama.cpp; the manifest says so itself, with the KV cache it was verified
        # with, so that the browser runs what was verified.
        gguf = dtype.startswith("gguf-") or any(p.endswith(".gguf") for p in files)  # type: ignore[union-attr]
        _require(runtime == LLAMA_CPP or not gguf, f"{where}.runtime must be {LLAMA_CPP!r} for a GGUF, got {runtime!r}")
        _require(runtime != LLAMA_CPP or gguf, f"{where}.runtime {LLAMA_CPP!r} runs GGUF files only: {files}")
        if runtime == LLAMA_CPP:
            _require(
                kv_cache in LLAMA_CPP_KV_CACHES,
                f"{where}.kv_cache must be one of {LLAMA_CPP_KV_CACHES} for llama.cpp, got {kv_cache!r}",
            )
        else:
            _require(kv_cache is None, f"{where}.kv_cache is llama.cpp's setting; {where} runs on ONNX Runtime")
        return cls(files=tuple(files), bytes=data["bytes"], runtime=runtime, kv_cache=kv_cache)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"files": list(self.files), "bytes": self.bytes}
        if self.runtime is not None:
            out["runtime"] = self.runtime
        if self.kv_cache is not None:
            out["kv_cache"] = self.kv_cache
        return out


@dataclass(frozen=True)
class Manifest:
    """manifest.json, schema 1. `parse` checks a decoded one and raises ManifestError naming the first bad field;
    `to_json` gives the dict that `json.dump` writes (parse(m.to_json()) == m)."""

    schema: int
    id: str
    name: str
    revision: str  # revision_of(files): the app's cache-forever URLs and the page's cache name follow it
    architecture: str
    model_type: str
    task: str
    capabilities: Capabilities
    context_length: int  # positive; at most the model config's max_position_embeddings (check_config)
    created: str
    dtypes: dict[str, DtypeEntry]
    devices: dict[str, str]  # device class → a dtype of `dtypes`
    memory_bytes: dict[str, int]
    files: tuple[ManifestFile, ...]
    source: str | None = None  # published by app/catalog only in a public form
    recipe: str | None = None  # the model_prep recipe it was exported with

    @classmethod
    def parse(cls, data: object) -> Manifest:
        _require(isinstance(data, dict), "the manifest must be a JSON object")
        assert isinstance(data, dict)
        _fields_only(data, cls, "")
        schema = data.get("schema")
        _require(_is_count(schema) and schema == MANIFEST_SCHEMA, f"'schema' must be {MANIFEST_SCHEMA}, got {schema!r}")
        raw_files = data.get("files")
        _require(isinstance(raw_files, list) and len(raw_files) > 0, "'files' must be a non-empty list")
        listed: dict[str, ManifestFile] = {}
        for index, entry in enumerate(raw_files):  # type: ignore[arg-type]
            file = ManifestFile.parse(entry, f"files[{index}]")
            _require(file.path not in listed, f"files[{index}].path {file.path!r} is listed twice")
            listed[file.path] = file
        revision = data.get("revision")
        _require(
            isinstance(revision, str) and _REVISION_RE.fullmatch(revision) is not None,
            f"'revision' must be {REVISION_HEX_DIGITS} lowercase hex digits, got {revision!r}",
        )
        # Revisioned URLs are cached forever; a revision that does not follow the files would serve stale bytes.
        expected = revision_of((f.path, f.sha256) for f in listed.values())
        _require(revision == expected, f"'revision' {revision!r} does not match its files ({expected!r})")
        raw_dtypes = data.get("dtypes")
        _require(isinstance(raw_dtypes, dict) and len(raw_dtypes) > 0, "'dtypes' must be a non-empty object")
        dtypes = {d: DtypeEntry.parse(d, spec, listed) for d, spec in raw_dtypes.items()}  # type: ignore[union-attr]
        devices = _object(data, "devices")
        for device, dtype in devices.items():
            _require(dtype in dtypes, f"devices.{device} names unknown dtype {dtype!r}")
        memory = _object(data, "memory_bytes")
        for dtype, value in memory.items():
            _require(_is_count(value), f"memory_bytes.{dtype} must be a non-negative integer, got {value!r}")
        context = data.get("context_length")
        _require(
            isinstance(context, int) and not isinstance(context, bool) and context > 0,
            f"'context_length' must be a positive integer, got {context!r}",
        )
        source, recipe = data.get("source"), data.get("recipe")
        _require(source is None or isinstance(source, str), f"'source' must be a string, got {source!r}")
        _require(recipe is None or isinstance(recipe, str), f"'recipe' must be a string, got {recipe!r}")
        return cls(
            schema=schema,  # type: ignore[arg-type]
            id=_string(data, "id"),
            name=_string(data, "name", empty=False),
            revision=revision,
            architecture=_string(data, "architecture"),
            model_type=_string(data, "model_type"),
            task=_string(data, "task"),
            capabilities=Capabilities.parse(data.get("capabilities")),
            context_length=context,  # type: ignore[arg-type]
            created=_string(data, "created"),
            dtypes=dtypes,
            devices=dict(devices),
            memory_bytes=dict(memory),
            files=tuple(listed.values()),
            source=source,
            recipe=recipe,
        )

    def check_config(self, config: Mapping[str, Any]) -> None:
        """`context_length` within what the model's config.json allows: its (text model's) max_position_embeddings,
        where the config states one. A longer context would send positions the model was never trained on."""
        text_config = config.get("text_config", config)
        limit = text_config.get("max_position_embeddings") if isinstance(text_config, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool):
            _require(
                self.context_length <= limit,
                f"'context_length' {self.context_length} exceeds the model's max_position_embeddings {limit} "
                "(config.json)",
            )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema,
            "id": self.id,
            "name": self.name,
            "revision": self.revision,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "task": self.task,
            "capabilities": self.capabilities.to_json(),
            "context_length": self.context_length,
            "source": self.source,
            "recipe": self.recipe,
            "created": self.created,
            "dtypes": {d: e.to_json() for d, e in self.dtypes.items()},
            "devices": dict(self.devices),
            "memory_bytes": dict(self.memory_bytes),
            "files": [f.to_json() for f in self.files],
        }
        return {k: v for k, v in out.items() if v is not None or k not in ("source", "recipe")}
