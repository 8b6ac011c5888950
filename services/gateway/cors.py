"""CORS for the browser-facing OAuth endpoints (docs/architecture.md "Browsers and CORS"; Fetch standard, "CORS protocol").

Which paths: the token, userinfo, top-up and revocation endpoints, which the guide's browser SDK
(and public clients with PKCE) call from the page, plus the public metadata a browser OIDC library
reads first (discovery documents and JWKS). Nothing else ever gets CORS headers; in particular
``/api/oauth2/authorize`` never does (it is a top-level navigation, never a fetch), and neither do
pages, the developer API or introspection (server to server).

Which origins: exactly the origins of the apps' registered redirect URIs, read from the Redis set
the account service maintains (libs/oauth/cors.py), with a short in-process cache per origin
(CACHE_SECONDS), so a new app works within seconds and a deleted one stops as fast.

- Preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered here,
  never forwarded: 204 with ``Access-Control-Allow-Origin: <that origin>``, the path's methods,
  ``Authorization, Content-Type`` and a max age when the origin is allowed and the method is one of
  the path's; otherwise 403 without any CORS header.
- Actual requests from an allowed origin get ``Access-Control-Allow-Origin`` (also on errors, so a
  page can read an RFC 6749 error body) and expose ``WWW-Authenticate`` (RFC 6750 errors).
- Never ``Access-Control-Allow-Credentials``: these endpoints take tokens in headers or bodies,
  never cookies. Responses on these paths always carry ``Vary: Origin``, and any ``Access-Control-*``
  header an upstream might send is dropped: the gateway alone decides.
- Redis down: fail closed (no CORS), logged; the request itself still reaches its service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from libs.oauth.cors import has_origin, request_origin
from libs.platform.config import Settings
from libs.platform.web import REDIS, SETTINGS, render_http_exception

log = logging.getLogger("oauth.gateway.cors")

# path -> the methods a browser may use on it cross-origin
CORS_PATHS: dict[str, tuple[str, ...]] = {
    "/api/oauth2/token": ("POST",),
    "/api/oauth2/userinfo": ("GET", "POST"),
    "/api/oauth2/topup": ("GET",),
    "/api/oauth2/revoke": ("POST",),
    "/api/oauth2/jwks": ("GET",),
    "/.well-known/openid-configuration": ("GET",),
    "/.well-known/oauth-authorization-server": ("GET",),
}
# Only the gateway answers CORS: the proxy drops these fields (lowercase prefix) from every upstream answer.
FIELD_PREFIX = "access-control-"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "WWW-Authenticate, Retry-After"  # Retry-After: a 429 is readable by the app
MAX_AGE_SECONDS = 600
CACHE_SECONDS = 2.0
CACHE_MAX_ENTRIES = 10_000

ALLOWED_ORIGIN = web.RequestKey("cors_allowed_origin", str)
ANSWERED = web.RequestKey("cors_preflight_answered", bool)  # the preflight response is our own


class AllowedOrigins:
    """``allows(origin)``: is ``origin`` in the Redis set? Answers are cached CACHE_SECONDS."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, ttl: float = CACHE_SECONDS) -> None:
        self.redis = redis
        self.settings = settings
        self.ttl = ttl
        self._cache: dict[str, tuple[bool, float]] = {}

    async def allows(self, origin: str) -> bool:
        now = time.monotonic()
        hit = self._cache.get(origin)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            allowed = await has_origin(self.redis, self.settings, origin)
        except (RedisError, OSError) as exc:
            log.warning("cors origins unavailable; refusing cross-origin access", extra={"error": type(exc).__name__})
            allowed = False
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()  # many distinct origins (probing): start over rather than grow
        self._cache[origin] = (allowed, now + self.ttl)
        return allowed


ORIGINS = web.AppKey("cors_origins", AllowedOrigins)


def _vary(response: web.StreamResponse, *names: str) -> None:
    current = response.headers.get("Vary")
    if current is None:
        response.headers["Vary"] = ", ".join(names)
        return
    present = {v.strip().lower() for v in current.split(",") if v.strip()}
    missing = [n for n in names if n.lower() not in present]
    if missing:
        response.headers["Vary"] = ", ".join([current, *missing] if current else missing)


async def admit(request: web.Request, methods: tuple[str, ...]) -> web.StreamResponse | None:
    """The CORS step of a request on one of CORS_PATHS (``methods``: the path's), run by the
    gateway's edge middleware before anything else of its own: the answer to a preflight, or None
    (the request goes on; from an allowed origin, its response will carry the CORS headers)."""
    raw_origin = request.headers.get("Origin")
    origin = request_origin(raw_origin)
    allowed = origin is not None and await request.app[ORIGINS].allows(origin)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        request[ANSWERED] = True
        return preflight(request, methods, raw_origin if allowed else None)
    if allowed and raw_origin is not None:
        request[ALLOWED_ORIGIN] = raw_origin
    return None


def preflight(request: web.Request, methods: tuple[str, ...], origin: str | None) -> web.StreamResponse:
    wanted = request.headers.get("Access-Control-Request-Method", "")
    if origin is None or wanted not in methods:
        # Not an allowed origin (or method): no CORS headers at all, so the browser refuses.
        # In the path's own error form (RFC 6749 JSON on the OAuth endpoints), never text/plain.
        resp = render_http_exception(request.path, web.HTTPForbidden(reason="CORS request refused"))
        resp.headers["Cache-Control"] = "no-store"
        _vary(resp, "Origin")
        return resp
    resp = web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        },
    )
    _vary(resp, "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
    return resp


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.path not in CORS_PATHS or request.get(ANSWERED):
        return
    _vary(response, "Origin")
    origin = request.get(ALLOWED_ORIGIN)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def setup(app: web.Application) -> None:
    """CORS for the gateway ``app`` (which must have Redis): the allowed origins and a response hook;
    the gateway's edge middleware calls ``admit`` for the requests on CORS_PATHS."""
    app.on_response_prepare.append(_on_prepare)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[ORIGINS] = AllowedOrigins(app[REDIS], app[SETTINGS])
        yield

    app.cleanup_ctx.append(ctx)
