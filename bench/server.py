"""The app as `python -m app` serves it, plus one bench-only route: the peer's GGUF, same-origin.

Only the one file passed in is reachable (at GGUF_ROUTE); nothing else on disk is exposed. The chat app
itself never serves it: this server exists only while `python -m bench` runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from app.server import create_app

GGUF_ROUTE = "/bench/peer/model.gguf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_app(models_dir: Path, web_dir: Path, state_dir: Path, gguf: Path | None):
    app = create_app(models_dir, web_dir, state_dir)
    if gguf is not None:
        path = gguf.resolve()

        def serve_gguf(request: Request) -> Response:
            return FileResponse(path, media_type="application/octet-stream", headers={"Cache-Control": "no-cache"})

        app.router.routes.insert(0, Route(GGUF_ROUTE, serve_gguf, methods=["GET", "HEAD"]))
    return app


@contextmanager
def serving(models_dir: Path, web_dir: Path, state_dir: Path, gguf: Path | None = None) -> Iterator[str]:
    """Serves the app on a free loopback port in a background thread; yields the base URL."""
    port = _free_port()
    config = uvicorn.Config(
        build_app(models_dir, web_dir, state_dir, gguf), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the bench server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
