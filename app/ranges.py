"""Range units by RFC 9110 §14: a server MUST ignore a Range header whose unit it does not understand.

Starlette's FileResponse answers any unit but `bytes` with 400. Edge Chat understands only bytes, so a Range in
another unit (`items=0-1`) is dropped before any route sees it and the client gets the whole body (200), with its
If-Range, which only qualifies a Range. Units are case-insensitive (§14.1): `BYTES=0-9` is a byte range. A header
that is not `unit=ranges` at all (no `=`, an empty unit) is an invalid ranges-specifier, which §14.2 lets a server
reject: FileResponse's 400 stands, as it does for an invalid or unsatisfiable (416) byte range.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

# RFC 9110 §5.6.2: a token is one or more of these.
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def understood_range(value: bytes) -> bytes | None:
    """The Range header to pass on: `value` itself, its unit spelt `bytes`, or None to ignore it."""
    unit, equals, ranges = value.partition(b"=")
    unit = unit.strip()
    if not equals or not unit or not set(unit) <= TCHAR:
        return value  # not a ranges-specifier: FileResponse refuses it
    if unit.lower() != b"bytes":
        return None
    return b"bytes=" + ranges


class RangeUnitsMiddleware:
    """Pure ASGI: rewrites the request's headers only, never touches a response body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            ranges = [value for name, value in headers if name == b"range"]
            if len(ranges) == 1:
                kept = understood_range(ranges[0])
                if kept is None:
                    headers = [(n, v) for n, v in headers if n not in (b"range", b"if-range")]
                else:
                    headers = [(n, kept if n == b"range" else v) for n, v in headers]
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
