"""The service worker script at `/sw.js`, with its precache list injected.

The precache list names the app shell (every file of web/src but the service worker itself) and the
runtime the page needs from web/vendor, each with a content hash as its revision. The list is written
into the script in place of `self.__WB_MANIFEST` (Workbox's inject-manifest convention), so any change
to a shell file changes the bytes of /sw.js, which is what makes the browser install the new version.
Hashes are remembered per (path, size, mtime), so only changed files are hashed again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = "self.__WB_MANIFEST"
SW_SOURCE = "sw.js"
# What the page and its worker load from web/vendor (web/scripts/vendor.mjs copies it there). workbox/ is not
# listed: it is loaded by importScripts and kept by the browser with the SW script.
VENDOR_SHELL = (
    "transformers.min.js",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
    "marked.esm.js",
    "purify.es.mjs",
    "hash-wasm.esm.js",
    "wllama/index.js",  # llama.cpp in WASM: the CPU runtime for GGUF dtypes (web/src/runtime-wllama.js)
    "wllama/wllama.wasm",
)
# Headers a service worker script needs beyond the app's security headers: always revalidated (the
# browser also caps SW script caching at 24 h), and allowed to control the whole origin.
SW_HEADERS = {
    "Cache-Control": "no-cache",
    "Service-Worker-Allowed": "/",
    "Content-Type": "text/javascript; charset=utf-8",
}


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class PrecacheManifest:
    """The revisioned precache list for one web folder (`src/` and `vendor/`)."""

    web_dir: Path
    _hashes: dict[Path, tuple[int, int, str]] = field(default_factory=dict)

    def _revision(self, path: Path) -> str:
        st = path.stat()
        known = self._hashes.get(path)
        if known and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        revision = _file_hash(path)
        self._hashes[path] = (st.st_size, st.st_mtime_ns, revision)
        return revision

    def entries(self) -> list[dict[str, str]]:
        src = self.web_dir / "src"
        vendor = self.web_dir / "vendor"
        entries = []
        if src.is_dir():
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                rel = path.relative_to(src).as_posix()
                if rel == SW_SOURCE or any(part.startswith(".") for part in Path(rel).parts):
                    continue
                entries.append({"url": f"/static/src/{rel}", "revision": self._revision(path)})
        for name in VENDOR_SHELL:
            path = vendor / name
            if path.is_file():
                entries.append({"url": f"/static/vendor/{name}", "revision": self._revision(path)})
        return entries

    def script(self) -> str | None:
        """The service worker's source with the precache list injected, or None without web/src/sw.js."""
        source_path = self.web_dir / "src" / SW_SOURCE
        try:
            source = source_path.read_text(encoding="utf-8")
        except OSError:
            return None
        if PLACEHOLDER not in source:
            raise ValueError(f"{source_path} does not contain {PLACEHOLDER}")
        return source.replace(PLACEHOLDER, json.dumps(self.entries(), separators=(",", ":")), 1)
