"""`python -m app --models models --web web [--state DIR] [--host 127.0.0.1] [--port 8000] [--lan]`.

`--lan` serves https on every interface (0.0.0.0) with a self-signed certificate kept in the state folder, and
prints the LAN URL with a QR code for a phone, plus the /bench URL carrying the token that posting results from
another device needs. Without it the app binds loopback only, over http, and needs no token.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sqlite3
from pathlib import Path

import uvicorn

from app.access import LOOPBACK_HOSTS, Access, host_name, is_loopback, new_token
from app.server import create_app
from app.state import STATE_ENV, default_state_dir, tls_dir

MODELS_BASE_URL_ENV = "MODELS_BASE_URL"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve Edge Chat and its models.")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of exported models (only read)")
    parser.add_argument("--web", type=Path, default=Path("web"), help="front-end folder (src/, bench/, vendor/)")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help=f"folder for what the app writes: bench results, the --lan certificate (default: ${STATE_ENV}, "
        f"else {default_state_dir()})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--lan",
        action="store_true",
        help="https on 0.0.0.0 with a self-signed certificate (made once in the state folder), URL + QR code printed",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another Host name the app answers to (e.g. behind a reverse proxy); repeatable",
    )
    parser.add_argument(
        "--models-base-url",
        default=os.environ.get(MODELS_BASE_URL_ENV) or None,
        metavar="URL",
        help=f"download artifacts from URL/<id>/<path> (a copy of the models folder on a CDN or bucket that sends "
        f"CORS headers); integrity still comes from the manifests (default: ${MODELS_BASE_URL_ENV})",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def served_hosts(bind: str, lan_address: str | None, hostname: str, extra: list[str]) -> tuple[str, ...]:
    """The Host names to accept: loopback's, the bound address, and on --lan the LAN address and host name."""
    names = [*LOOPBACK_HOSTS]
    if bind not in ("0.0.0.0", "::", ""):
        names.append(host_name(bind))
    if lan_address is not None:
        names += [host_name(lan_address), hostname.lower()]
    names += [name.lower() for name in extra]
    return tuple(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    state = (args.state or default_state_dir()).resolve()
    bind = "0.0.0.0" if args.lan else args.host
    networked = args.lan or not is_loopback(bind)
    address = None
    if networked:
        from app.tls import lan_address

        address = lan_address() if bind in ("0.0.0.0", "::") else bind
    hostname = socket.gethostname()
    access = Access(
        allowed_hosts=served_hosts(bind, address, hostname, args.allow_host),
        token=new_token() if networked else None,
    )
    try:
        app = create_app(
            args.models.resolve(), args.web.resolve(), state, access=access, artifacts_base_url=args.models_base_url
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    except (OSError, sqlite3.Error) as err:
        raise SystemExit(f"error: cannot write the state folder {state} ({err}): pass --state DIR") from None
    if not networked:
        uvicorn.run(app, host=bind, port=args.port, log_level=args.log_level)
        return
    ssl: dict[str, str] = {}
    scheme = "http"
    lines: list[str] = []
    if args.lan:
        from app.tls import ensure_certificate, fingerprint

        tls = ensure_certificate(tls_dir(state), [address], hostname)
        ssl = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
        scheme = "https"
        lines = certificate_lines(tls.cert, tls.created, fingerprint(tls.cert))
    url = f"{scheme}://{host_name(address)}:{args.port}/"
    print(lan_banner(url, access.token, lines), flush=True)
    uvicorn.run(app, host=bind, port=args.port, log_level=args.log_level, **ssl)


def certificate_lines(cert: Path, created: bool, fingerprint: str) -> list[str]:
    state = "created" if created else "reused"
    return [
        f"self-signed certificate ({state}): {cert}",
        f"  SHA-256 {fingerprint}",
        "  the browser warns once; check the fingerprint, then accept it to continue.",
    ]


def lan_banner(url: str, token: str | None, certificate: list[str]) -> str:
    from app.tls import qr_text

    bench = f"{url}bench?token={token}" if token else f"{url}bench"
    return "\n".join(
        [
            f"Edge Chat on your network: {url}",
            *certificate,
            qr_text(url),
            f"Benchmark another device (its results are posted here; the token is new at every start): {bench}",
            qr_text(bench),
        ]
    )


if __name__ == "__main__":
    main()
