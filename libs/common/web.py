"""What every service's aiohttp app shares: request ids, access log and metrics, error rendering,
security headers, health and readiness, resource lifetimes (Postgres, Redis, RabbitMQ)."""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from .amqp import AmqpLink
from .config import Settings
from .db import create_pool
from .errors import ApiError, OAuthError, PageError
from .logs import request_id_var, setup_logging
from .params import InvalidInput
from .redis import create_redis

log = logging.getLogger("oauth.web")
access_log = logging.getLogger("oauth.access")

SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", str)
PG = web.AppKey("pg", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
AMQP: web.AppKey[AmqpLink] = web.AppKey("amqp")
READY_CHECKS = web.AppKey("ready_checks", dict)
REQUEST_ID = web.RequestKey("request_id", str)
DRAINING = web.AppKey("draining", list)  # [bool]: set on SIGTERM; /readyz then answers 503

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests handled", ["service", "route", "method", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# --- responses -----------------------------------------------------------------------------------
def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def envelope(data: Any, message: str = "ok", status: int = 200) -> web.Response:
    return json_response({"success": True, "message": message, "data": data}, status=status)


def error_style(path: str) -> str:
    """How errors on ``path`` are rendered: RFC 6749 body, developer-API envelope, or an HTML page."""
    if path.startswith(("/api/oauth2/", "/.well-known/")):
        return "oauth"
    if path.startswith(("/api/", "/internal/")):
        return "envelope"
    return "page"


def error_page(status: int, title: str, detail: str = "") -> web.Response:
    body = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f'<title>{html.escape(title)}</title><meta name="viewport" content="width=device-width">'
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}"
        "h1{font-size:1.4rem}p{color:#555}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(detail)}</p>"
        f"<p><small>request id: {html.escape(request_id_var.get())}</small></p></body></html>"
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


_STATUS_ERRORS = {
    400: "invalid_request",
    401: "invalid_token",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def render_http_exception(path: str, exc: web.HTTPException) -> web.StreamResponse:
    style = error_style(path)
    reason = exc.reason or "Error"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")}
    if style == "oauth":
        err = _STATUS_ERRORS.get(exc.status, "server_error" if exc.status >= 500 else "invalid_request")
        return json_response({"error": err, "error_description": reason}, exc.status, headers)
    if style == "envelope":
        return json_response({"success": False, "message": reason, "data": None}, exc.status, headers)
    resp = error_page(exc.status, f"{exc.status} {reason}")
    resp.headers.update(headers)
    return resp


def render_invalid_input(path: str, exc: InvalidInput) -> web.Response:
    """Bad input from a shared parser (params.py), in the endpoint's own error form: RFC 6749
    ``invalid_request`` (5.2), the developer-API envelope, or a readable page."""
    style = error_style(path)
    if style == "oauth":
        body = OAuthError("invalid_request", exc.message).body()
        return json_response(body, 400, {"Cache-Control": "no-store"})
    if style == "envelope":
        return json_response(ApiError(400, exc.message).body(), 400)
    return error_page(400, "400 Bad Request", exc.message)


# --- middlewares ---------------------------------------------------------------------------------
@web.middleware
async def observe_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id in and out, one JSON access-log line and metrics per request."""
    incoming = request.headers.get("X-Request-Id", "")
    rid = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(rid)
    request[REQUEST_ID] = rid
    start = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - start
        service = request.app[SERVICE]
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        HTTP_REQUESTS.labels(service, route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(service, route).observe(elapsed)
        if request.app[SETTINGS].access_log and request.path not in ("/healthz", "/readyz", "/metrics"):
            # The path only: query strings carry codes and states, which never go to logs.
            access_log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "remote": request.remote,
                },
            )
        request_id_var.reset(token)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except OAuthError as exc:
        headers = {"Cache-Control": "no-store"}
        if exc.www_authenticate:
            headers["WWW-Authenticate"] = exc.www_authenticate
        return json_response(exc.body(), exc.status, headers)
    except ApiError as exc:
        api_headers = {"WWW-Authenticate": exc.www_authenticate} if exc.www_authenticate else None
        return json_response(exc.body(), exc.status, api_headers)
    except PageError as exc:
        return error_page(exc.status, exc.title, exc.detail)
    except InvalidInput as exc:
        return render_invalid_input(request.path, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render_http_exception(request.path, exc)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        exc500 = web.HTTPInternalServerError(reason="Internal error; quote the request id when reporting it")
        return render_http_exception(request.path, exc500)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    if request.app[DRAINING][0]:
        # Shutting down: tell keep-alive clients to reconnect (to another instance) rather than
        # reuse a connection that is about to close under them.
        response.force_close()
    if REQUEST_ID in request:
        h["X-Request-Id"] = request[REQUEST_ID]
    h["Server"] = "oauth-platform"  # not aiohttp's default, which names the exact server version
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if response.content_type == "text/html":
        h.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; form-action 'self' http: https:; base-uri 'none'",
        )
    if request.app[SETTINGS].cookie_secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


# --- health, readiness, metrics ------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": request.app[SERVICE]})


async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAINING][0]:
        return json_response({"status": "draining", "checks": {}}, 503)
    checks: dict[str, Callable[[], Awaitable[None]]] = request.app[READY_CHECKS]
    results: dict[str, str] = {}
    ok = True
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=2)
            results[name] = "ok"
        except Exception as exc:  # a failed dependency is the answer here, not an error
            ok = False
            results[name] = f"unavailable: {type(exc).__name__}"
    return json_response({"status": "ok" if ok else "unavailable", "checks": results}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


# --- RabbitMQ link: libs/common/amqp.py (AmqpLink, imported above) ------------------------------


# --- app factory ---------------------------------------------------------------------------------
def create_app(
    service: str,
    settings: Settings,
    *,
    postgres: bool = True,
    redis: bool = True,
    amqp: bool = True,
) -> web.Application:
    app = web.Application(
        middlewares=[observe_middleware, error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SERVICE] = service
    app[SETTINGS] = settings
    app[READY_CHECKS] = {}
    app[DRAINING] = [False]
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/healthz", healthz)
    if settings.admin_port_of(service) is None:
        # Internal services: their own port is not public, so probes and scrapes use it.
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)

    if postgres:

        async def pg_ctx(app: web.Application) -> AsyncIterator[None]:
            pool = await create_pool(settings)
            app[PG] = pool

            async def check() -> None:
                await pool.fetchval("SELECT 1")

            app[READY_CHECKS]["postgres"] = check
            yield
            await pool.close()

        app.cleanup_ctx.append(pg_ctx)

    if redis:

        async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
            client = create_redis(settings)
            app[REDIS] = client

            async def check() -> None:
                await client.ping()

            app[READY_CHECKS]["redis"] = check
            yield
            await client.aclose()

        app.cleanup_ctx.append(redis_ctx)

    if amqp:

        async def amqp_ctx(app: web.Application) -> AsyncIterator[None]:
            link = AmqpLink(
                settings.amqp_url,
                name=f"{service}-{uuid.uuid4().hex[:6]}",
                retry_initial_seconds=settings.events_retry_initial_seconds,
                retry_max_seconds=settings.events_retry_max_seconds,
            )
            app[AMQP] = link
            app[READY_CHECKS]["rabbitmq"] = link.check
            yield
            await link.close()

        async def amqp_start(app: web.Application) -> None:
            # After every cleanup_ctx, so the event bus has registered its connect hooks.
            await app[AMQP].start()

        app.cleanup_ctx.append(amqp_ctx)
        app.on_startup.append(amqp_start)
    return app


def create_admin_app(app: web.Application) -> web.Application:
    """The admin listener of a public service: /healthz, /readyz and /metrics of ``app``, sharing its
    readiness checks and draining flag (the same objects), on a port that is never public."""
    admin = web.Application(middlewares=[error_middleware])
    admin[SERVICE] = app[SERVICE]
    admin[SETTINGS] = app[SETTINGS]
    admin[READY_CHECKS] = app[READY_CHECKS]  # the dict the app's startup fills in
    admin[DRAINING] = app[DRAINING]
    admin.on_response_prepare.append(_security_headers)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics)
    return admin


def run_service(service: str, build: Callable[[Settings], web.Application]) -> None:
    """Entry point of ``python -m services.<name>``: settings from the environment, uvloop, JSON
    logs, and a graceful shutdown on SIGTERM/SIGINT:

    1. ``/readyz`` answers 503 at once, so load balancers stop sending new requests;
    2. for SHUTDOWN_DRAIN_SECONDS the service keeps serving (requests already routed here succeed);
    3. it stops accepting, waits up to SHUTDOWN_TIMEOUT_SECONDS for in-flight requests, then runs
       the cleanup (the outbox relay's last flush, pools closed).
    """
    from .config import load_settings

    settings = load_settings()
    setup_logging(service, settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional on exotic platforms
        pass
    asyncio.run(_serve(service, build(settings), settings))


async def _serve(service: str, app: web.Application, settings: Settings) -> None:
    import signal

    from .server import start_service

    runner = await start_service(
        service, app, settings, shutdown_timeout=settings.shutdown_timeout_seconds, reuse_port=settings.reuse_port
    )
    log.info(
        "started",
        extra={
            "port": settings.port_of(service),
            "host": settings.bind_host,
            "admin_port": settings.admin_port_of(service),
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app[DRAINING][0] = True
    log.info("stopping: draining", extra={"drain_seconds": settings.shutdown_drain_seconds})
    await asyncio.sleep(settings.shutdown_drain_seconds)
    await runner.cleanup()
    log.info("stopped")
