"""Who may use the app: the Host names it answers to, and who may post benchmark results how often.

Even a loopback server is reachable from any page the user opens: DNS rebinding points an attacker's name at
127.0.0.1, so requests must name a host the app is served under (Starlette's TrustedHostMiddleware). `--lan` makes
the app a network service: posting results then needs the token printed with the URL (the phone's page carries
it), and every client's posts are rate limited. The machine itself (a loopback peer) needs neither.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException
from starlette.requests import Request

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
TOKEN_HEADER = "authorization"  # `Bearer <token>`, sent by web/bench/bench.js when its URL carries ?token=


@dataclass(frozen=True)
class Access:
    """What `create_app` enforces; the default is a loopback-only server."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    token: str | None = None  # required to post results from another machine
    post_rate: str = "10/minute"  # per client address (`limits` notation)
    results_cap: int = 5000  # rows kept; the oldest are pruned past it


def new_token() -> str:
    return secrets.token_urlsafe(18)


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def host_name(address: str) -> str:
    """How a Host header names `address`: IPv6 literals in brackets."""
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address.lower()


class PostGate:
    """Checks one POST from a client: its rate first (floods of any kind stop there), then the token."""

    def __init__(self, token: str | None, rate: str) -> None:
        self.token = token
        self.rate = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, request: Request) -> None:
        client = request.client.host if request.client else None
        if is_loopback(client):
            return
        if not self.limiter.hit(self.rate, client or "unknown"):
            raise HTTPException(429, f"too many posts from {client}: at most {self.rate} per client")
        if self.token is None:
            return
        scheme, _, given = request.headers.get(TOKEN_HEADER, "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(
                401,
                "posting results from another device needs the token: open the /bench URL the server printed",
                {"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPException(403, "wrong token: open the /bench URL the server printed at its last start")
