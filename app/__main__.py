"""`python -m app --models models --web web --host 127.0.0.1 --port 8000 [--lan]`.

`--lan` serves https on every interface (0.0.0.0) with a self-signed certificate kept in `<models>/.tls/`,
and prints the LAN URL with a QR code for a phone. Without it the app binds loopback only, over http.
"""

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
    parser.add_argument(
        "--lan",
        action="store_true",
        help="https on 0.0.0.0 with a self-signed certificate (made once under MODELS/.tls), URL + QR code printed",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(args.models.resolve(), args.web.resolve())
    if not args.lan:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return
    from app.tls import ensure_certificate, fingerprint, lan_address, qr_text

    address = lan_address()
    tls = ensure_certificate(args.models.resolve() / ".tls", [address])
    url = f"https://{address}:{args.port}/"
    print(lan_banner(url, tls.cert, tls.created, fingerprint(tls.cert), qr_text(url)), flush=True)
    uvicorn.run(
        app,
        host="0.0.0.0",
        port=args.port,
        log_level=args.log_level,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
    )


def lan_banner(url: str, cert: Path, created: bool, fingerprint: str, qr: str) -> str:
    state = "created" if created else "reused"
    return "\n".join(
        [
            f"Edge Chat on your network: {url}",
            f"self-signed certificate ({state}): {cert}",
            f"  SHA-256 {fingerprint}",
            "  the browser warns once; check the fingerprint, then accept it to continue.",
            qr,
        ]
    )


if __name__ == "__main__":
    main()
