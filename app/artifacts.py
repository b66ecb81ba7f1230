"""Serving one model artifact under an immutable, revisioned URL.

Model files reach 2 GB, so the body is streamed in chunks from an open file and never held in memory.
The ETag is the manifest's sha256: it names the content, not the file's mtime, so every server and
every re-export of identical bytes agrees on it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from app.catalog import ArtifactFile

CACHE_CONTROL = "public, max-age=31536000, immutable"
CHUNK_SIZE = 1024 * 1024

# One range only: Transformers.js and the service worker never ask for more, and multipart bodies would
# be the only reason to buffer. Nineteen digits cover any file size and keep int() cheap.
_RANGE_RE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)


class ArtifactUnavailable(Exception):
    """The manifest lists the file but the folder cannot serve it (missing, changed, or outside)."""


class RangeNotSatisfiable(Exception):
    """A Range header that is malformed, multi-range, or outside the file."""


def media_type(path: str) -> str:
    return "application/json" if path.endswith(".json") else "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int]:
    """`bytes=a-b`, `bytes=a-` or `bytes=-n` as a half-open (start, stop); ends past the file are clamped."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise RangeNotSatisfiable(header)
    first, last = match.groups()
    if first == "":
        if last == "" or int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - int(last)), size
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(header)
    if last == "":
        return start, size
    end = int(last)
    if end < start:
        raise RangeNotSatisfiable(header)
    return start, min(end + 1, size)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: `W/"x"` matches `"x"`; `*` matches anything."""
    value = if_none_match.strip()
    if value == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in value.split(","))


def locate_artifact(folder: Path, entry: ArtifactFile) -> Path:
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
    return target


def serve_artifact(path: Path, entry: ArtifactFile, request_headers: Headers, method: str) -> Response:
    """The 200, 206, 304 or 416 response for a GET or HEAD of one located artifact."""
    etag = f'"{entry.sha256}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    # Conditions before ranges (RFC 9110 §13.2.2): a cached copy beats a partial one.
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)

    headers["Content-Type"] = media_type(entry.path)
    send_body = method != "HEAD"
    range_header = request_headers.get("range")
    if_range = request_headers.get("if-range")
    # If-Range names the representation the client already holds part of; on any mismatch (a date, a weak
    # or other tag) the safe answer is the whole file.
    if range_header is None or (if_range is not None and if_range.strip() != etag):
        return FileSliceResponse(path, entry.size, 0, entry.size, 200, headers, send_body)
    try:
        start, stop = parse_range(range_header, entry.size)
    except RangeNotSatisfiable:
        del headers["Content-Type"]
        headers["Content-Range"] = f"bytes */{entry.size}"
        return JSONResponse({"error": "range not satisfiable"}, status_code=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{entry.size}"
    return FileSliceResponse(path, entry.size, start, stop, 206, headers, send_body)


def _open_checked(path: Path, size: int) -> BinaryIO:
    # The folder may be swapped by a new export between locating and opening; the open file is what
    # gets served, so it is the one whose size must still match the manifest.
    file = open(path, "rb", buffering=0)  # closed by the response that owns it
    try:
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            raise ArtifactUnavailable(f"{path} changed while being opened")
    except BaseException:
        file.close()
        raise
    return file


def _read_at(file: BinaryIO, offset: int, length: int) -> bytes:
    file.seek(offset)
    return file.read(length)


class FileSliceResponse(Response):
    """Streams bytes [start, stop) of a file, opened only when the body is actually sent."""

    def __init__(
        self,
        path: Path,
        size: int,
        start: int,
        stop: int,
        status_code: int,
        headers: dict[str, str],
        send_body: bool,
    ) -> None:
        self.path = path
        self.size = size
        self.start = start
        self.stop = stop
        self.send_body = send_body
        self.status_code = status_code
        self.background = None
        self.init_headers({**headers, "Content-Length": str(stop - start)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start_message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        if not self.send_body:
            await send(start_message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # Opened before the status line goes out, so a vanished file still becomes a clean 404.
        file = await anyio.to_thread.run_sync(_open_checked, self.path, self.size)
        try:
            await send(start_message)
            spec = tuple(int(x) for x in scope.get("asgi", {}).get("spec_version", "2.0").split("."))
            if spec >= (2, 4):
                # ASGI 2.4 servers raise from send() once the client is gone.
                await self._stream(file, send)
            else:
                await self._stream_until_disconnect(file, receive, send)
        finally:
            file.close()

    async def _stream_until_disconnect(self, file: BinaryIO, receive: Receive, send: Send) -> None:
        # Older servers swallow sends to a closed connection; without this a dropped download of a
        # 2 GB model would still read the whole file.
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self._stream(file, send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

    async def _stream(self, file: BinaryIO, send: Send) -> None:
        offset = self.start
        if offset == self.stop:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        while offset < self.stop:
            length = min(CHUNK_SIZE, self.stop - offset)
            chunk = await anyio.to_thread.run_sync(_read_at, file, offset, length)
            if not chunk:
                raise RuntimeError(f"{self.path} is shorter than its manifest says")
            offset += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": offset < self.stop})
