"""The front end's own files (web/src, web/vendor): not revisioned, so revalidated on every load."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

# The platform's mime table varies (Windows registry, missing /etc/mime.types) and browsers refuse a
# module script or a streamed wasm compile with the wrong type, so the types that matter are pinned.
MEDIA_TYPES: dict[str, str] = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}


def static_media_type(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"


class RevalidatedStaticFiles(StaticFiles):
    """StaticFiles with `Cache-Control: no-cache`, pinned media types, and a folder that may not exist yet."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=False)

    async def check_config(self) -> None:
        # web/vendor is filled by a later build step; until then its URLs are plain 404s, not a crash.
        return None

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = FileResponse(
            full_path,
            status_code=status_code,
            stat_result=stat_result,
            media_type=static_media_type(full_path),
            headers={"Cache-Control": "no-cache"},
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response
