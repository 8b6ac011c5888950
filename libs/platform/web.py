"""What every service's aiohttp app shares: request ids, access log and metrics, error rendering,
security headers, health and readiness, resource lifetimes (Postgres, Redis, RabbitMQ)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from .amqp import AmqpLink
from .config import Settings
from .db import create_pool
from .errors import ApiError, DependencyUnavailable, ErrorResponse
from .lang import pick_lang
from .logs import flush_access_log, log_access, request_id_var, setup_logging
from .params import InvalidInput
from .redis import create_redis
from .responses import PageContext, error_page, json_response, page_context
from .responses import envelope as envelope

log = logging.getLogger("oauth.web")

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
# The labelled children of both, per (service, route, method, status): ``labels()`` costs a lock
# and a lookup of its own per call (issue 17). Bounded like the label sets themselves.
_SeriesKey = tuple[str, str, str, int]
_series: dict[_SeriesKey, tuple[Any, Any]] = {}
MAX_SERIES = 10_000
UNLOGGED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


# --- responses -----------------------------------------------------------------------------------
# A media type that is just ``type "/" subtype`` (RFC 9110 8.3.1: two tokens).
_PLAIN_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch


def media_type(message: web.BaseRequest | web.StreamResponse) -> str:
    """``message.content_type`` (the lowercase ``type/subtype`` of Content-Type). aiohttp parses the
    field with the email package on every new request or response (4-8 us); a plain
    ``type/subtype[; parameters]`` is read here with one split instead, anything else still
    goes through aiohttp's parser."""
    raw = message.headers.get("Content-Type")
    if raw is not None:
        plain = raw.partition(";")[0].strip()
        if _PLAIN_MEDIA_TYPE(plain):
            return plain.lower()
    return message.content_type


def error_style(path: str) -> str:
    """How errors on ``path`` are rendered: RFC 6749 body, developer-API envelope, or an HTML page."""
    if path.startswith(("/api/oauth2/", "/.well-known/")):
        return "oauth"
    if path.startswith(("/api/", "/internal/")):
        return "envelope"
    return "page"


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
    resp = error_page(exc.status)  # the status's own words in the page's language (responses.py)
    resp.headers.update(headers)
    return resp


def render_invalid_input(path: str, exc: InvalidInput) -> web.Response:
    """Bad input from a shared parser (params.py), in the endpoint's own error form: RFC 6749
    ``invalid_request`` (5.2), the developer-API envelope, or a readable page."""
    style = error_style(path)
    if style == "oauth":
        body = {"error": "invalid_request", "error_description": exc.message}
        return json_response(body, 400, {"Cache-Control": "no-store"})
    if style == "envelope":
        return json_response(ApiError(400, exc.message).body(), 400)
    return error_page(400)


# --- a dependency that does not answer: 503 -------------------------------------------------------
# Driver errors that mean "PostgreSQL, Redis or RabbitMQ is down, unreachable or too slow", never a
# bug in the request: each is answered 503 with Retry-After (docs/operations.md "Failure modes").
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    DependencyUnavailable,
    asyncpg.PostgresConnectionError,  # class 08: connection failures, incl. ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # 57: statement_timeout (57014), admin shutdown
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # "connection is closed" on a pooled connection the server dropped
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    TimeoutError,  # asyncio.TimeoutError: every wait_for around a dependency
    OSError,  # ConnectionResetError, ConnectionRefusedError, BrokenPipeError, unreachable hosts
)
# OSErrors of this machine's own files: a bug or a broken deployment, not a dependency (500).
LOCAL_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
RETRY_AFTER_SECONDS = "1"
UNAVAILABLE_TITLE = {"zh": "服务暂时不可用", "en": "Service temporarily unavailable"}
UNAVAILABLE_DETAIL = {
    "zh": "系统的一个组成部分暂时无法响应。请稍候片刻再试。",
    "en": "A part of the system is not answering right now. Please try again in a moment.",
}


def render_unavailable(request: web.Request) -> web.Response:
    """503 in the request's protocol style (RFC 6749 5.2 / 4.1.2.1 ``temporarily_unavailable``)."""
    headers = {"Retry-After": RETRY_AFTER_SECONDS, "Cache-Control": "no-store"}
    style = error_style(request.path)
    if style == "oauth":
        body = {"error": "temporarily_unavailable", "error_description": "The service is temporarily unavailable"}
        return json_response(body, 503, headers)
    if style == "envelope":
        return json_response({"success": False, "message": "服务暂时不可用，请稍后重试", "data": None}, 503, headers)
    resp = error_page(503, UNAVAILABLE_TITLE, UNAVAILABLE_DETAIL)
    resp.headers.update(headers)
    return resp


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _page_context(request: web.Request) -> PageContext:
    """What the platform's own error pages need: the language and the brand (docs/operations.md "Branding").
    Computed only when an error page is rendered (``page_context`` holds this, bound to the request)."""
    s = request.app[SETTINGS]
    return PageContext(pick_lang(request), s.brand_name, s.brand_logo_url, s.brand_primary_color, s.brand_support_url)


def _observe(request: web.Request, status: int, elapsed: float) -> None:
    """The request's metrics and its access-log line (the path only: query strings carry codes and
    states, which never go to logs)."""
    service = request.app[SERVICE]
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    key = (service, route, request.method, status)
    series = _series.get(key)
    if series is None:
        if len(_series) >= MAX_SERIES:
            _series.clear()
        series = _series[key] = (
            HTTP_REQUESTS.labels(service, route, request.method, str(status)),
            HTTP_LATENCY.labels(service, route),
        )
    series[0].inc()
    series[1].observe(elapsed)
    if request.app[SETTINGS].access_log and request.path not in UNLOGGED_PATHS:
        log_access(
            {
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "remote": request.remote,
            }
        )


# --- middlewares ---------------------------------------------------------------------------------
@web.middleware
async def observe_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id in and out, one JSON access-log line and metrics per request."""
    incoming = request.headers.get("X-Request-Id", "")
    # 128 bits from the OS CSPRNG, 32 hex digits like the uuid4().hex it replaces, at a fifth of its cost.
    rid = incoming if incoming and REQUEST_ID_RE.match(incoming) else secrets.token_hex(16)
    token = request_id_var.set(rid)
    request[REQUEST_ID] = rid
    page_token = page_context.set(functools.partial(_page_context, request))
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
        _observe(request, status, time.perf_counter() - start)
        request_id_var.reset(token)
        page_context.reset(page_token)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ErrorResponse as exc:  # ApiError, PageError, and libs/oauth's OAuthError: each renders itself
        if detail := exc.log_detail():  # log-only: never in the response
            log.info("request refused", extra={"path": request.path, "error": str(exc), "detail": detail})
        return await exc.render(request)
    except InvalidInput as exc:
        return render_invalid_input(request.path, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render_http_exception(request.path, exc)
    except asyncio.CancelledError:
        raise
    except DEPENDENCY_ERRORS as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            raise  # the client hung up: nobody to answer
        if not isinstance(exc, LOCAL_OS_ERRORS):
            log.warning("dependency unavailable", extra={"path": request.path, "error": type(exc).__name__})
            return render_unavailable(request)
        return _internal_error(request)
    except Exception:
        return _internal_error(request)


def _internal_error(request: web.Request) -> web.StreamResponse:
    """A bug: logged with its traceback (we are inside the ``except``), 500 in the path's style."""
    log.exception("unhandled error", extra={"path": request.path})
    exc500 = web.HTTPInternalServerError(reason="Internal error; quote the request id when reporting it")
    return render_http_exception(request.path, exc500)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    app = request.app
    if app[DRAINING][0]:
        # Shutting down: tell keep-alive clients to reconnect (to another instance) rather than
        # reuse a connection that is about to close under them.
        response.force_close()
    if REQUEST_ID in request:
        h["X-Request-Id"] = request[REQUEST_ID]
    h["Server"] = "oauth-platform"  # not aiohttp's default, which names the exact server version
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("X-Frame-Options", "DENY")
    if media_type(response) == "text/html":
        h.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; form-action 'self' http: https:; base-uri 'none'",
        )
    if app[SETTINGS].cookie_secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


# --- health, readiness, metrics ------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": request.app[SERVICE]})


READY_TIMEOUT_SECONDS = 0.8  # /readyz answers within 1 s, whatever the dependencies do
ReadyCheck = Callable[[], Awaitable[str | None]]  # raises: "down"; returns "degraded" or None ("ok")


async def _ready_state(check: ReadyCheck) -> tuple[str, str]:
    try:
        result = await asyncio.wait_for(check(), timeout=READY_TIMEOUT_SECONDS)
    except Exception as exc:  # a failed dependency is the answer here, not an error
        return "down", type(exc).__name__
    return ("degraded", "") if result == "degraded" else ("ok", "")


async def readyz(request: web.Request) -> web.Response:
    """Each dependency ``ok``, ``degraded`` (serving through fallbacks: RabbitMQ away or the bus
    lease stale) or ``down``; 503 only when something is down. All checks run at once, each
    bounded, so the answer comes within a second (docs/operations.md "Failure modes")."""
    if request.app[DRAINING][0]:
        return json_response({"status": "draining", "checks": {}}, 503)
    checks: dict[str, ReadyCheck] = request.app[READY_CHECKS]
    states = await asyncio.gather(*(_ready_state(c) for c in checks.values()))
    results = {name: state for name, (state, _) in zip(checks, states, strict=True)}
    errors = {name: error for name, (_, error) in zip(checks, states, strict=True) if error}
    values = set(results.values())
    status = "unavailable" if "down" in values else "degraded" if "degraded" in values else "ok"
    body: dict[str, Any] = {"status": status, "checks": results}
    if errors:
        body["errors"] = errors
    return json_response(body, 503 if status == "unavailable" else 200)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


# --- RabbitMQ link: libs/platform/amqp.py (AmqpLink, imported above) ------------------------------


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
        app.cleanup_ctx.append(_postgres_lifetime(settings))
    if redis:
        app.cleanup_ctx.append(_redis_lifetime(settings))
    if amqp:
        app.cleanup_ctx.append(_amqp_lifetime(service, settings))
        app.on_startup.append(_amqp_start)
    return app


CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _postgres_lifetime(settings: Settings) -> CleanupContext:
    """The app's asyncpg pool (``app[PG]``) and its readiness check, closed on shutdown."""

    async def pg_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        app[PG] = pool

        async def check() -> None:
            await pool.fetchval("SELECT 1")

        app[READY_CHECKS]["postgres"] = check
        yield
        try:  # a graceful close waits for the server; a silent server must not hold the shutdown
            await asyncio.wait_for(pool.close(), timeout=settings.shutdown_timeout_seconds or 1.0)
        except TimeoutError:
            pool.terminate()

    return pg_ctx


def _redis_lifetime(settings: Settings) -> CleanupContext:
    """The app's Redis client (``app[REDIS]``) and its readiness check, closed on shutdown."""

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = create_redis(settings)
        app[REDIS] = client

        async def check() -> None:
            await client.ping()

        app[READY_CHECKS]["redis"] = check
        yield
        await client.aclose()

    return redis_ctx


def _amqp_lifetime(service: str, settings: Settings) -> CleanupContext:
    """The app's RabbitMQ link (``app[AMQP]``, started by ``_amqp_start``) and its readiness check."""

    async def amqp_ctx(app: web.Application) -> AsyncIterator[None]:
        link = AmqpLink(
            settings.amqp_url,
            name=f"{service}-{uuid.uuid4().hex[:6]}",
            retry_initial_seconds=settings.events_retry_initial_seconds,
            retry_max_seconds=settings.events_retry_max_seconds,
            connect_timeout_seconds=settings.amqp_connect_timeout_seconds,
            heartbeat_seconds=settings.amqp_heartbeat_seconds,
        )
        app[AMQP] = link

        async def rabbitmq() -> str | None:
            # Degraded, not down: every request is served without the broker (caches fall
            # back to the shared state, events wait in the outbox).
            return None if link.is_up else "degraded"

        app[READY_CHECKS]["rabbitmq"] = rabbitmq
        yield
        await link.close()

    return amqp_ctx


async def _amqp_start(app: web.Application) -> None:
    # After every cleanup_ctx, so the event bus has registered its connect hooks.
    await app[AMQP].start()


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


# Collect the young generation after this many new container objects still alive (CPython's
# default: 700). A request's objects are freed by reference counting as it ends, so at 700 a busy
# service still collected 300-600 times per 40 s of load; at 7,000, twice (docs/performance.md).
YOUNG_GC_THRESHOLD = 7000


def settle_heap() -> None:
    """Once the service is up (modules, app, pools, keys loaded): collect, then freeze what is left
    into the permanent generation, so the garbage collector's full collections no longer walk the
    70,000-85,000 objects start-up made (each such walk paused the event loop for tens of ms);
    objects made later are collected as before, the young ones less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


async def _serve(service: str, app: web.Application, settings: Settings) -> None:
    import signal

    from .server import start_service

    runner = await start_service(
        service, app, settings, shutdown_timeout=settings.shutdown_timeout_seconds, reuse_port=settings.reuse_port
    )
    settle_heap()
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
    flush_access_log()  # the last requests' lines (also flushed at exit)
