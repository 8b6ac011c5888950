"""The gateway: the only public entry. Routes by path prefix to authz, token and account over
pooled keep-alive connections (the lean client of upstream.py for the common small exchange,
aiohttp's client for the rest), streams bodies both ways with a size limit, and never exposes
``/internal/*``."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import NoReturn

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

import libs.platform
from libs.platform.config import Settings
from libs.platform.web import READY_CHECKS, REQUEST_ID, SETTINGS, create_app, render_http_exception

from . import cors, limits, openapi
from .routes import route_for
from .upstream import NO_BODY_STATUSES, SMALL_BODY, Exchange, Upstream, UpstreamBroken, UpstreamError

log = logging.getLogger("oauth.gateway")

CLIENT = web.AppKey("upstream_client", aiohttp.ClientSession)  # streamed uploads, HEAD, https upstreams
UPSTREAMS = web.AppKey("lean_upstreams", dict[str, Upstream])  # the lean client's pools (upstream.py)
BODY_DEADLINE = web.RequestKey("body_deadline", float)

# RFC 9110 7.6.1: connection-specific headers are not forwarded by a proxy.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Set by the gateway itself, never taken from the client as-is.
OWN_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
)
RESPONSE_OWN_HEADERS = frozenset({"content-length", "server", "date"})
RESPONSE_DROP = HOP_BY_HOP | RESPONSE_OWN_HEADERS
_DROP_REQUEST = frozenset(h.encode() for h in HOP_BY_HOP | OWN_REQUEST_HEADERS)
CHUNK = 64 * 1024
# Bodies up to SMALL_BODY (upstream.py) with a known length are read whole and sent in one write,
# without the streaming machinery (token, introspection and API requests and answers are all far
# smaller).
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # aiohttp's client sends no Content-Length: 0
# A request target the lean client forwards as is: an origin-form path (RFC 9112 3.2.1) that
# aiohttp's client (yarl) would send unchanged (RFC 3986 unreserved and sub-delims, ":", "@", "/",
# "?", but not a trailing "?", which it drops); anything else, percent-escapes and absolute-form
# included, goes through aiohttp's client.
_PLAIN_TARGET = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*(?<!\?)").fullmatch


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    """The client did not send its whole body within GATEWAY_BODY_TIMEOUT_SECONDS."""


def _body_deadline(request: web.Request) -> float:
    """When the body must be complete, fixed at the first read (a trickled body cannot extend it)."""
    if BODY_DEADLINE not in request:
        timeout = request.app[SETTINGS].gateway_body_timeout_seconds
        request[BODY_DEADLINE] = asyncio.get_running_loop().time() + timeout
    return request[BODY_DEADLINE]


async def _read_small_body(request: web.Request) -> bytes | None:
    """The whole body of a request with a known length up to SMALL_BODY (cached by aiohttp), else None."""
    length = request.content_length  # parsed from the field on every access
    if length is None or length > SMALL_BODY or not request.body_exists:
        return None
    if request.content.is_eof():
        return await request.read()  # all of it arrived with the head: nothing to wait for
    try:
        async with asyncio.timeout_at(_body_deadline(request)):
            return await request.read()
    except TimeoutError:
        raise BodyTimeout from None


@web.middleware
async def edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The gateway's own steps before the handler, in one middleware (one coroutine frame less per
    request than a middleware each): CORS first (cors.py: a preflight is answered there, never
    counted; an allowed origin is noted before the limits, so a 429 carries the CORS headers too),
    then the rate limits (limits.py) and the body deadline: a slow body gets 408 and the connection
    closed. Their 429 and 408 are rendered in each path's error style by error_middleware."""
    methods = cors.CORS_PATHS.get(request.path)
    if methods is not None:
        answered = await cors.admit(request, methods)
        if answered is not None:
            return answered
    try:
        failures = await limits.check(request, lambda: _read_small_body(request))
        resp = await handler(request)
        if failures is not None and resp.status == 401:
            await limits.count_failure(request, failures)
        return resp
    except BodyTimeout:
        log.info("request body not received in time", extra={"path": request.path})
        resp = render_http_exception(
            request.path, web.HTTPRequestTimeout(reason="The request body did not arrive in time")
        )
        # Send it and close at once (RFC 9110 15.5.9): aiohttp would otherwise linger, reading the
        # rest of the body for its lingering_time, which is just what a slow client wants.
        resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()
        return resp


def _listed(connection: Iterable[str]) -> frozenset[str]:
    """The field names a Connection header lists (RFC 9110 7.6.1), lowercased."""
    return frozenset(t.strip().lower() for v in connection for t in v.split(","))


def _strip(pairs: Iterable[tuple[str, str]], connection: Iterable[str], drop: frozenset[str]) -> list[tuple[str, str]]:
    """``pairs`` without hop-by-hop fields, those ``connection`` lists, ``drop`` (lowercase names)
    and ``Access-Control-*`` (only the gateway answers CORS: cors.py)."""
    if connection:
        drop = drop | _listed(connection)
    return [(k, v) for k, v in pairs if (n := k.lower()) not in drop and not n.startswith(cors.FIELD_PREFIX)]


def _is_unsafe_path(request: web.Request) -> bool:
    """Refuse dot-segments and encoded slashes/dots, which could route one prefix into another."""
    raw = request.raw_path.split("?", 1)[0].lower()
    if "%2e" in raw or "%2f" in raw or "%5c" in raw or "\\" in raw:
        return True
    path = request.path
    return "." in path and any(s in (".", "..") for s in path.split("/"))


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward one request to the service that owns its path, in steps: route lookup, the size
    limit, the body, header filtering, the upstream call and relaying its answer (rate limits ran
    before, in edge_middleware). A failure maps to 413 / 408 / 502 / 504 (``_failed``)."""
    settings = request.app[SETTINGS]
    service = _route(request)
    limit = _check_declared_size(request, settings.max_body_bytes)
    upload = _Upload()
    data = await _request_body(request, limit, upload)
    headers = _forward_headers(request, settings)
    sent: list[web.StreamResponse] = []
    try:
        lean = _lean_upstream(request, service)
        if lean is not None and not upload.streaming:
            assert data is None or isinstance(data, bytes)
            return await _exchange_lean(request, lean, _lean_message(request, lean, headers, data), sent)
        # A streamed body must be complete by its deadline too; the watch stops once the body is
        # sent or the upstream has answered.
        upload.watch = asyncio.timeout_at(_body_deadline(request) if upload.streaming else None)
        async with upload.watch:
            return await _exchange(request, service, _decoded(headers), data, upload, sent)
    except (TimeoutError, BodyTooLarge, BodyTimeout, aiohttp.ClientError, UpstreamError) as exc:
        return _failed(service, exc, upload, limit, sent)


def _route(request: web.Request) -> str:
    """The service owning the request's path (routes.py), after refusing paths that could slip
    from one prefix into another."""
    if _is_unsafe_path(request):
        raise web.HTTPBadRequest(reason="Path contains dot-segments or encoded separators")
    service = route_for(request.path)
    if service is None:
        raise web.HTTPNotFound(reason="No such endpoint")
    return service


def _check_declared_size(request: web.Request, limit: int) -> int:
    """Refuse a declared Content-Length over MAX_BODY_BYTES before reading anything; the limit."""
    length = request.content_length
    if length is not None and length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
    return limit


def _failed(
    service: str, exc: BaseException, upload: _Upload, limit: int, sent: list[web.StreamResponse]
) -> web.StreamResponse:
    """What a failed exchange answers: 413 for an upload that passed the limit while streaming (no
    or a false Content-Length), 408 for a body that missed its deadline, the truncated response if
    its headers already went out (never a second status), else 502 / 504 for the upstream."""
    if upload.too_large:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1) from None
    if upload.timed_out or (upload.watch is not None and upload.watch.expired()):
        raise BodyTimeout from None
    if sent and sent[0].prepared:
        log.warning("upstream failed mid-response", extra={"upstream": service, "error": type(exc).__name__})
        return sent[0]
    _raise_upstream_error(service, exc)


class _Upload:
    """How forwarding the request body went."""

    __slots__ = ("streaming", "too_large", "timed_out", "length", "watch")

    def __init__(self) -> None:
        self.streaming = self.too_large = self.timed_out = False
        self.length: int | None = None  # the Content-Length to send upstream
        self.watch: asyncio.Timeout | None = None

    def done(self) -> None:
        if self.watch is not None:
            self.watch.reschedule(None)


def _forward_headers(request: web.Request, settings: Settings) -> list[tuple[bytes, bytes]]:
    """The request's fields as sent upstream, raw: without hop-by-hop fields (RFC 9110 7.6.1) or
    those the gateway sets itself, plus X-Forwarded-* and X-Request-Id. Content-Length and Host
    are added by the client that sends it."""
    drop = _DROP_REQUEST
    if "Connection" in request.headers:
        drop = drop | {t.encode("utf-8", "surrogateescape") for t in _listed(request.headers.getall("Connection"))}
    out = [(k, v) for k, v in request.raw_headers if k.lower() not in drop]
    peer = request.remote or ""
    trusted = settings.trust_forwarded_headers
    forwarded_for = request.headers.get("X-Forwarded-For") if trusted else None
    proto = request.headers.get("X-Forwarded-Proto", request.scheme) if trusted else request.scheme
    for name, value in (
        (b"X-Forwarded-For", f"{forwarded_for}, {peer}" if forwarded_for else peer),
        (b"X-Forwarded-Proto", proto),
        (b"X-Forwarded-Host", request.host),
        (b"X-Request-Id", request[REQUEST_ID]),
    ):
        out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _decoded(headers: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """Forwarded fields for aiohttp's client, decoded as aiohttp's parser decodes them."""
    return CIMultiDict((k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in headers)


async def _request_body(request: web.Request, limit: int, upload: _Upload) -> AsyncIterator[bytes] | bytes | None:
    length = request.content_length
    if length is not None and length <= SMALL_BODY:
        # Small and of a known, already checked length: read whole, forwarded in one write.
        return await _read_small_body(request)
    if not request.body_exists:
        return None
    upload.length = length
    upload.streaming = True

    async def body() -> AsyncIterator[bytes]:
        seen = 0
        deadline = _body_deadline(request)
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await request.content.read(CHUNK)
            except TimeoutError:
                upload.timed_out = True
                raise BodyTimeout from None
            if not chunk:
                upload.done()
                return
            seen += len(chunk)
            if seen > limit:
                upload.too_large = True
                raise BodyTooLarge
            yield chunk

    return body()


def _lean_upstream(request: web.Request, service: str) -> Upstream | None:
    """The lean client's pool for this exchange (upstream.py), or None for aiohttp's client: a
    streamed upload, HEAD (llhttp cannot be told an answer has no body), an https upstream, or a
    request target aiohttp's client would normalise (percent-escapes, non-ASCII)."""
    if request.method == "HEAD" or _PLAIN_TARGET(request.raw_path) is None:
        return None
    return request.app[UPSTREAMS].get(service)


def _lean_message(
    request: web.Request, upstream: Upstream, headers: list[tuple[bytes, bytes]], data: bytes | None
) -> bytes:
    """The whole request for the lean client: one request line, Host, the forwarded fields, our own
    Content-Length, the body. A field value carrying CR, LF or NUL (which could split the request
    upstream: request smuggling) is refused, though aiohttp's parser never lets one through."""
    block = b"\r\n".join([b": ".join(field) for field in headers])
    # Names are tokens (aiohttp's parser, our constants): any CR or LF beyond the n - 1 separators
    # comes from a value.
    lines = len(headers) - 1
    if block.count(b"\r") != lines or block.count(b"\n") != lines or b"\0" in block:
        raise web.HTTPBadRequest(reason="Invalid header value")
    start = f"{request.method} {upstream.prefix}{request.raw_path} HTTP/1.1\r\n".encode()
    parts = [start, upstream.host_header, block, b"\r\n"]
    if "Accept" not in request.headers or not any(k.lower() == b"accept" for k, _ in headers):
        parts.append(b"Accept: */*\r\n")  # as aiohttp's client adds it
    if data is not None:
        parts += (b"Content-Length: %d\r\n\r\n" % len(data), data)
    elif request.method not in _BODILESS_METHODS:
        parts.append(b"Content-Length: 0\r\n\r\n")  # as aiohttp's client sends for POST, PUT, PATCH, DELETE
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


async def _exchange_lean(
    request: web.Request, lean: Upstream, message: bytes, sent: list[web.StreamResponse]
) -> web.StreamResponse:
    """Send the request with the lean client and relay the answer (``sent`` holds a response once started)."""
    async with Exchange(lean, request.method, message) as upstream:
        headers = _strip(upstream.headers, upstream.connection, RESPONSE_DROP)
        if upstream.small:
            return _relay_small(upstream.status, upstream.reason, headers, upstream.body)
        length = None if upstream.encoded else upstream.content_length
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        sent.append(resp)
        await _relay_stream(request, resp, headers, length, upstream.chunks())
        return resp


async def _exchange(
    request: web.Request,
    service: str,
    headers: CIMultiDict[str],
    data: AsyncIterator[bytes] | bytes | None,
    upload: _Upload,
    sent: list[web.StreamResponse],
) -> web.StreamResponse:
    """Send the request with aiohttp's client and relay the answer (``sent`` holds a response once started)."""
    if isinstance(data, bytes):
        headers["Content-Length"] = str(len(data))
    elif upload.length is not None:
        headers["Content-Length"] = str(upload.length)
    url = request.app[SETTINGS].upstream_url(service) + request.raw_path
    client = request.app[CLIENT]
    async with client.request(request.method, url, headers=headers, data=data, allow_redirects=False) as upstream:
        upload.done()
        kept = _strip(upstream.headers.items(), upstream.headers.getall("Connection", ()), RESPONSE_DROP)
        if _is_small_answer(request, upstream):
            return _relay_small(upstream.status, upstream.reason, kept, await upstream.read())
        encoded = "Content-Encoding" in upstream.headers
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        sent.append(resp)
        length = None if encoded else upstream.content_length
        await _relay_stream(request, resp, kept, length, upstream.content.iter_chunked(CHUNK))
        return resp


def _is_small_answer(request: web.Request, upstream: aiohttp.ClientResponse) -> bool:
    """A body of a known length up to SMALL_BODY, not compressed, where a body is allowed."""
    length = upstream.content_length
    return (
        length is not None
        and length <= SMALL_BODY
        and request.method != "HEAD"
        and upstream.status not in NO_BODY_STATUSES
        and "Content-Encoding" not in upstream.headers
    )


def _relay_small(status: int, reason: str | None, headers: list[tuple[str, str]], payload: bytes) -> web.Response:
    """Small and of a known length: headers and body go out in one write."""
    return web.Response(status=status, reason=reason, body=payload, headers=headers)


async def _relay_stream(
    request: web.Request,
    resp: web.StreamResponse,
    headers: list[tuple[str, str]],
    length: int | None,
    chunks: AsyncIterator[bytes],
) -> None:
    """Stream the upstream's answer through ``resp`` chunk by chunk."""
    resp.headers.extend(headers)
    if length is not None:
        resp.content_length = length
    await resp.prepare(request)
    async for chunk in chunks:
        await resp.write(chunk)
    await resp.write_eof()


def _raise_upstream_error(service: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, aiohttp.ClientPayloadError | UpstreamBroken):
        log.warning("upstream payload error", extra={"upstream": service, "error": type(exc).__name__})
        raise web.HTTPBadGateway(reason=f"The {service} service sent a broken response; try again") from None
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        log.warning("upstream timeout", extra={"upstream": service})
        raise web.HTTPGatewayTimeout(reason=f"The {service} service did not answer in time; try again") from None
    log.warning("upstream unreachable", extra={"upstream": service, "error": type(exc).__name__})
    raise web.HTTPBadGateway(reason=f"The {service} service is unavailable; try again shortly") from None


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/user")


# The brand assets every page links (libs/platform/assets: stylesheet, script, logo, favicon).
ASSETS_DIR = Path(libs.platform.__file__).parent / "assets"
ASSET_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
ASSETS: dict[str, tuple[bytes, str]] = {
    p.name: (p.read_bytes(), ASSET_TYPES[p.suffix]) for p in ASSETS_DIR.iterdir() if p.suffix in ASSET_TYPES
}


async def asset(request: web.Request) -> web.StreamResponse:
    """One of the platform's static assets (a fixed set read at start: no path from the request
    touches the file system). Cached for a day; the names are stable."""
    name = "favicon.ico" if request.path == "/favicon.ico" else request.match_info["name"]
    found = ASSETS.get(name)
    if found is None:
        raise web.HTTPNotFound(reason="No such asset")
    body, content_type = found
    charset = "utf-8" if content_type.startswith("text/") else None
    headers = {"Cache-Control": "public, max-age=86400"}
    return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)


def build(settings: Settings) -> web.Application:
    # Redis: the CORS origins (cors.py); readiness reports it.
    app = create_app("gateway", settings, postgres=False, redis=True, amqp=False)
    app[limits.LIMITER] = limits.Limiter(settings)
    cors.setup(app)
    app.middlewares.append(edge_middleware)  # innermost: CORS, rate limits, body deadline

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            limit=settings.upstream_pool_size, keepalive_timeout=30, ttl_dns_cache=60, enable_cleanup_closed=True
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.upstream_connect_timeout_seconds,
                sock_read=settings.upstream_timeout_seconds,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        app[CLIENT] = session
        app[UPSTREAMS] = _lean_pools(settings)
        for service in ("authz", "token", "account"):
            app[READY_CHECKS][service] = _upstream_check(session, settings.upstream_url(service))
        yield
        for pool in app[UPSTREAMS].values():
            pool.close()
        await session.close()

    app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/", root)
    app.router.add_get("/favicon.ico", asset)
    app.router.add_get("/assets/{name}", asset)
    openapi.add_routes(app)  # served by the gateway itself: it describes every service's public API
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def _lean_pools(settings: Settings) -> dict[str, Upstream]:
    """The lean client's pool per plain-http upstream, sharing UPSTREAM_POOL_SIZE busy connections."""
    slots = asyncio.Semaphore(settings.upstream_pool_size)
    pools = {}
    for service in ("authz", "token", "account"):
        base = settings.upstream_url(service)
        if base.startswith("http://"):
            timeouts = (settings.upstream_connect_timeout_seconds, settings.upstream_timeout_seconds)
            pools[service] = Upstream(base, slots, *timeouts)
    return pools


def _upstream_check(session: aiohttp.ClientSession, base: str):  # type: ignore[no-untyped-def]
    async def check() -> None:
        async with session.get(base + "/healthz") as r:
            if r.status != 200:
                raise ConnectionError(f"{base} answered {r.status}")

    return check
