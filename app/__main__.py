"""`python -m app --models models --web web --host 127.0.0.1 --port 8000`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from app.server import create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve Edge Chat and its models.")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of exported models")
    parser.add_argument("--web", type=Path, default=Path("web"), help="front-end folder (src/, vendor/)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(args.models.resolve(), args.web.resolve())
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
