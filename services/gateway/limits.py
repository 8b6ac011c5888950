"""Rate limits at the gateway, shared by every gateway instance through Redis.

What is limited (requests per minute, bursts of up to that many; settings GATEWAY_RATE_LIMIT_*):

- ``client``: the token, introspection and revocation endpoints, per ``client_id`` (RFC 6749 2.3.1:
  from HTTP Basic, else from the form body, which the gateway reads whole when small). A request
  without a readable client_id counts against its client IP instead;
- ``login``: ``POST /login`` per client IP (the account's own throttling is authz's);
- ``page``: the HTML pages and the authorize endpoint per client IP.

Everything else (userinfo, top-up, the developer API, discovery, JWKS) is not limited here: third
party backends call those from a few addresses at high rates.

The algorithm is GCRA (the "generic cell rate algorithm", a leaky bucket kept as one timestamp per
key): one short Lua script, one round trip per request, atomic across instances, and it yields the
exact wait for ``Retry-After`` (RFC 9110 10.2.3). The ``limits`` library was the alternative; its
async Redis storage keeps its own connection pool, and its moving window needs a second round trip
to learn the reset time, for no gain over these twenty lines.

When Redis does not answer within GATEWAY_RATE_LIMIT_REDIS_TIMEOUT_SECONDS the same algorithm runs
on this instance's own counters (fail open to a local limit: with N gateways a client then gets up
to N times its limit; nothing is refused for Redis being down). docs/operations.md says so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, unquote_plus

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter

from libs.common.config import Settings
from libs.common.web import REDIS, SETTINGS, error_style

log = logging.getLogger("oauth.gateway.limits")

RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused with 429 by the gateway", ["bucket"])
LIMITER_FALLBACK = Counter("gateway_rate_limit_fallback_total", "Rate-limit decisions made without Redis")

CLIENT_PATHS = frozenset({"/api/oauth2/token", "/api/oauth2/introspect", "/api/oauth2/revoke"})
MAX_CLIENT_ID = 128
WINDOW_MS = 60_000.0
REDIS_RETRY_SECONDS = 5.0

# KEYS[1]: the bucket. ARGV[1]: emission interval (ms per request); ARGV[2]: the burst window (ms).
# The stored value is the "theoretical arrival time" (TAT); a request is allowed while the new TAT
# stays within one window of now. Returns the milliseconds to wait, 0 when allowed.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - window - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now))
return 0
"""


class LocalGcra:
    """The same algorithm on this process's clock: the fallback while Redis is unreachable."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    def hit(self, key: str, interval: float, window: float) -> float:
        now = time.monotonic() * 1000
        if len(self._tat) >= self.MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        tat = max(self._tat.get(key, now), now)
        wait = tat + interval - window - now
        if wait > 0:
            return wait
        self._tat[key] = tat + interval
        return 0.0


class Limiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local = LocalGcra()
        self._script: Callable[..., Awaitable[object]] | None = None
        self._warned_at = 0.0
        # After a failure Redis is left alone for a few seconds, so an outage that makes it hang
        # does not add its timeout to every limited request.
        self._skip_redis_until = 0.0

    async def hit(self, redis: aioredis.Redis, bucket: str, ident: str, per_minute: int) -> float:
        """Count one request; the seconds to wait before retrying, 0 when allowed."""
        key = f"{self.settings.redis_prefix}rl:{bucket}:{ident}"
        interval = WINDOW_MS / per_minute
        if time.monotonic() < self._skip_redis_until:
            LIMITER_FALLBACK.inc()
            return self.local.hit(key, interval, WINDOW_MS) / 1000
        try:
            if self._script is None:
                self._script = redis.register_script(GCRA_LUA)
            wait = await asyncio.wait_for(
                self._script(keys=[key], args=[interval, WINDOW_MS]),
                self.settings.gateway_rate_limit_redis_timeout_seconds,
            )
            wait_ms = float(wait)  # type: ignore[arg-type]
        except (TimeoutError, OSError, aioredis.RedisError) as exc:
            LIMITER_FALLBACK.inc()
            self._skip_redis_until = time.monotonic() + REDIS_RETRY_SECONDS
            self._warn(exc)
            wait_ms = self.local.hit(key, interval, WINDOW_MS)
        return wait_ms / 1000

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning(
                "rate limits: Redis unavailable, this instance counts alone", extra={"error": type(exc).__name__}
            )


LIMITER = web.AppKey("rate_limiter", Limiter)


def client_ip(request: web.Request, settings: Settings) -> str:
    """The client's address: the peer, or behind a trusted proxy the address it appended last."""
    if settings.trust_forwarded_headers:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote or "unknown"


def rule_for(request: web.Request, settings: Settings) -> tuple[str, int] | None:
    """The bucket and its per-minute limit for this request, or None when it is not limited."""
    path = request.path
    if path in CLIENT_PATHS:
        return "client", settings.gateway_rate_limit_client_per_minute
    if path == "/login" and request.method == "POST":
        return "login", settings.gateway_rate_limit_logins_per_minute
    if path == "/api/oauth2/authorize" or error_style(path) == "page":
        return "page", settings.gateway_rate_limit_pages_per_minute
    return None


def client_id_of(request: web.Request, body: bytes | None) -> str | None:
    """The client_id the request authenticates with (RFC 6749 2.3.1), if readable and sane."""
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        client_id = unquote_plus(decoded.partition(":")[0])
    elif body and request.content_type == "application/x-www-form-urlencoded":
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=64).get("client_id") or [""]
        client_id = values[0]
    else:
        return None
    if 0 < len(client_id) <= MAX_CLIENT_ID and client_id.isascii() and client_id.isprintable():
        return client_id
    return None


async def check(request: web.Request, read_body: Callable[[], Awaitable[bytes | None]]) -> None:
    """Count the request in its bucket; raise 429 with Retry-After when over the limit."""
    settings = request.app[SETTINGS]
    rule = rule_for(request, settings)
    if rule is None or rule[1] == 0:
        return
    bucket, per_minute = rule
    ident = f"ip:{client_ip(request, settings)}"
    if bucket == "client":
        client_id = client_id_of(request, await read_body())
        if client_id is not None:
            ident = f"id:{client_id}"
    wait = await request.app[LIMITER].hit(request.app[REDIS], bucket, ident, per_minute)
    if wait > 0:
        RATE_LIMITED.labels(bucket).inc()
        retry_after = max(1, math.ceil(wait))
        raise web.HTTPTooManyRequests(
            reason=f"Too many requests; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
