"""Serving one model artifact under an immutable, revisioned URL: a thin layer over Starlette's FileResponse.

FileResponse does the HTTP (single and multi-range requests, If-Range, HEAD, streaming in chunks, client
disconnects). What is ours: only files the manifest lists (the route checks that), confinement to the model
folder, the ETag (the manifest's sha256: it names the content, not the file's mtime, so every server and every
re-export of identical bytes agrees on it), If-None-Match, forever-caching headers, and serving only the file
that was checked, even if a new export swaps the folder while the response starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse

from app.catalog import ArtifactFile

CACHE_CONTROL = "public, max-age=31536000, immutable"
# Model files reach 2 GB; 1 MiB per read keeps thread hops few without holding much in memory.
CHUNK_SIZE = 1024 * 1024


class ArtifactUnavailable(Exception):
    """The manifest lists the file but the folder cannot serve it (missing, changed, or outside)."""


def media_type(path: str) -> str:
    return "application/json" if path.endswith(".json") else "application/octet-stream"


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: `W/"x"` matches `"x"`; `*` matches anything."""
    value = if_none_match.strip()
    if value == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in value.split(","))


def locate_artifact(folder: Path, entry: ArtifactFile) -> tuple[Path, os.stat_result]:
    """The file behind a whitelisted manifest entry, refusing symlinks that lead out of the model folder."""
    try:
        root = folder.resolve(strict=True)
        target = (root / entry.path).resolve(strict=True)
        st = target.stat()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ArtifactUnavailable(f"{entry.path}: {exc}") from exc
    if not target.is_relative_to(root):
        raise ArtifactUnavailable(f"{entry.path} resolves outside {root}")
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        raise ArtifactUnavailable(f"{entry.path} is not the {entry.size}-byte file its manifest lists")
    return target, st


class ArtifactResponse(FileResponse):
    """FileResponse for a located artifact, with our ETag and caching headers, serving only the located file."""

    chunk_size = CHUNK_SIZE

    def __init__(self, path: Path, entry: ArtifactFile, located: os.stat_result) -> None:
        # FileResponse only fills in ETag when none is given, so the manifest's sha256 wins over its mtime hash.
        headers = {"ETag": f'"{entry.sha256}"', "Cache-Control": CACHE_CONTROL}
        super().__init__(path, headers=headers, media_type=media_type(entry.path), stat_result=located)
        self.located = located

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        # The pipeline swaps a model folder by rename, so the path may name another export's file by the time
        # FileResponse opens it; Content-Length and the immutable URL promise the located one. A mismatch aborts
        # the response (the client sees a failed download) instead of sending other bytes under this revision.
        async with super()._open_file() as file:
            opened = await anyio.to_thread.run_sync(os.fstat, file.wrapped.fileno())
            if (opened.st_dev, opened.st_ino, opened.st_size) != (
                self.located.st_dev,
                self.located.st_ino,
                self.located.st_size,
            ):
                raise ArtifactUnavailable(f"{self.path} changed between locating and opening it")
            yield file


def serve_artifact(path: Path, located: os.stat_result, entry: ArtifactFile, request_headers: Headers) -> Response:
    """The response to a GET or HEAD of one located artifact: 304 on a matching If-None-Match, else the file."""
    response = ArtifactResponse(path, entry, located)
    # Conditions before ranges (RFC 9110 §13.2.2): a cached copy beats a partial one.
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, response.headers["etag"]):
        return NotModifiedResponse(response.headers)
    return response
