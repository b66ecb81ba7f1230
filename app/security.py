"""Headers every response carries: cross-origin isolation for threaded WASM and a same-origin CSP."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(artifact_origins: Iterable[str] = ()) -> str:
    """The CSP; `artifact_origins` (from MODELS_BASE_URL) are the only other origins the page may fetch from.

    ORT instantiates its wasm factory from a blob: module, hence blob: in script-src and worker-src;
    'wasm-unsafe-eval' allows WebAssembly compilation without allowing JS eval.
    """
    connect = " ".join(["'self'", *sorted(set(artifact_origins)), "blob:", "data:"])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval' blob:",
            "worker-src 'self' blob:",
            "img-src 'self' blob: data:",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(artifact_origins: Iterable[str] = ()) -> dict[str, str]:
    return {
        # COOP + COEP make the page crossOriginIsolated, which SharedArrayBuffer (WASM threads) requires; with
        # require-corp, an artifact origin must answer CORS (or send Cross-Origin-Resource-Policy: cross-origin).
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Embedder-Policy": "require-corp",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": content_security_policy(artifact_origins),
        "Referrer-Policy": "no-referrer",
    }


SECURITY_HEADERS = security_headers()


class SecurityHeadersMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so streamed artifact bodies pass through untouched."""

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = SECURITY_HEADERS if headers is None else headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
