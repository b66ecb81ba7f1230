"""The Starlette application: the page, the catalog API, model artifacts and the front end's files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from app.access import Access, PostGate
from app.artifacts import ArtifactUnavailable, locate_artifact, serve_artifact
from app.bench_results import MAX_BODY_BYTES, InvalidResults, ResultStore, validate
from app.catalog import Catalog, models_base_url, url_origin
from app.pwa import SW_HEADERS, PrecacheManifest
from app.ranges import RangeUnitsMiddleware
from app.security import SecurityHeadersMiddleware, security_headers
from app.state import results_db
from app.static import RevalidatedStaticFiles

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
# The page and the API describe the catalog as it is now; a new export must show up on the next load.
NO_CACHE = {"Cache-Control": "no-cache"}


class EdgeChatApp(Starlette):
    """Starlette whose security headers wrap even ServerErrorMiddleware, so a 500 carries them too."""

    def __init__(self, *args: Any, headers: dict[str, str], **kwargs: Any) -> None:
        self.security_headers = headers
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeadersMiddleware(super().build_middleware_stack(), self.security_headers)


def catalog_listing(catalog: Catalog) -> dict[str, Any]:
    return {"models": [model.summary() for model in catalog.models()]}


def _error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, dict(exc.headers or {}))


async def _artifact_unavailable(request: Request, exc: Exception) -> Response:
    # The manifest promises a file the folder cannot deliver: worth a log line, but to the client it is
    # simply not there.
    log.warning("artifact unavailable for %s: %s", request.url.path, exc)
    return _error(404, "not found")


async def _server_error(request: Request, exc: Exception) -> Response:
    return _error(500, "internal server error")


async def _read_json_body(request: Request) -> Any:
    """The body as JSON, refusing anything but application/json and anything over MAX_BODY_BYTES."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HTTPException(400, f"body is not JSON: {err}") from None


def create_app(
    models_dir: Path,
    web_dir: Path,
    state_dir: Path,
    *,
    access: Access | None = None,
    artifacts_base_url: str | None = None,
) -> Starlette:
    """The app serving `models_dir` (exported models, only read) and `web_dir` (`src/`, `bench/`, `vendor/`).

    `state_dir` holds what the app writes (app/state.py). `access` says which Host names it answers to and who may
    post results (app/access.py); the default is a loopback server. `artifacts_base_url` (MODELS_BASE_URL): the
    page downloads artifacts from `<it>/<id>/<path>` instead of this app, still checked against the manifests.
    """
    access = access or Access()
    if not models_dir.is_dir():
        log.warning("models folder %s does not exist: the catalog stays empty until an export", models_dir)
    if not (web_dir / "src").is_dir():
        log.warning("front-end folder %s does not exist: the page loads without scripts", web_dir / "src")
    remote = models_base_url(artifacts_base_url) if artifacts_base_url else None
    catalog = Catalog(models_dir, remote)
    templates = Jinja2Templates(directory=TEMPLATES_DIR)

    def index(request: Request) -> Response:
        context = {"catalog": catalog_listing(catalog)}
        return templates.TemplateResponse(request, "index.html", context, headers=NO_CACHE)

    def list_models(request: Request) -> Response:
        return JSONResponse(catalog_listing(catalog), headers=NO_CACHE)

    def get_model(request: Request) -> Response:
        model = catalog.get(request.path_params["model_id"])
        if model is None:
            raise HTTPException(404, "unknown model")
        return JSONResponse(model.detail(), headers=NO_CACHE)

    def get_artifact(request: Request) -> Response:
        params = request.path_params
        model = catalog.get(params["model_id"])
        if model is None:
            raise HTTPException(404, "unknown model")
        if params["revision"] != model.revision:
            raise HTTPException(404, "unknown revision: reload the catalog from /api/models")
        # Exact membership in the manifest is the traversal defence: '..', encoded slashes, backslashes
        # and NUL bytes can never equal a validated manifest path.
        entry = model.files.get(params["path"])
        if entry is None:
            raise HTTPException(404, "not found")
        path, located = locate_artifact(model.folder, entry)
        return serve_artifact(path, located, entry, request.headers)

    precache = PrecacheManifest(web_dir)

    def service_worker(request: Request) -> Response:
        script = precache.script()
        if script is None:
            raise HTTPException(404, "not found")
        return Response(script, headers=SW_HEADERS)

    store = ResultStore(results_db(state_dir), cap=access.results_cap)
    gate = PostGate(access.token, access.post_rate)

    def bench_page(request: Request) -> Response:
        context = {"catalog": catalog_listing(catalog)}
        return templates.TemplateResponse(request, "bench.html", context, headers=NO_CACHE)

    async def post_results(request: Request) -> Response:
        gate.check(request)
        document = await _read_json_body(request)
        try:
            client, user_agent, results = validate(document, {m.id for m in catalog.models()})
        except InvalidResults as err:
            raise HTTPException(400, str(err)) from None
        return JSONResponse({"stored": store.add(client, user_agent, results)}, status_code=201)

    def list_results(request: Request) -> Response:
        return JSONResponse({"results": store.latest()}, headers=NO_CACHE)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/sw.js", service_worker, methods=["GET"]),
        Route("/bench", bench_page, methods=["GET"]),
        Route("/api/bench/results", post_results, methods=["POST"]),
        Route("/api/bench/results", list_results, methods=["GET"]),
        Route("/api/models", list_models, methods=["GET"]),
        Route("/api/models/{model_id}", get_model, methods=["GET"]),
        Route("/models/{model_id}/{revision}/{path:path}", get_artifact, methods=["GET"]),
        Mount("/static/src", app=RevalidatedStaticFiles(web_dir / "src")),
        # The benchmark's pages and prompt set: served, but not part of the chat's precached shell (app/pwa.py).
        Mount("/static/bench", app=RevalidatedStaticFiles(web_dir / "bench")),
        Mount("/static/vendor", app=RevalidatedStaticFiles(web_dir / "vendor")),
    ]
    app = EdgeChatApp(
        routes=routes,
        headers=security_headers([url_origin(remote)] if remote else []),
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(access.allowed_hosts), www_redirect=False),
            Middleware(RangeUnitsMiddleware),
        ],
        exception_handlers={
            HTTPException: _http_error,
            ArtifactUnavailable: _artifact_unavailable,
            Exception: _server_error,
        },
    )
    # One spelling per URL: '/api/models/' is a 404, not a redirect to guess from.
    app.router.redirect_slashes = False
    return app
