"""Rate limits at the gateway, shared by every gateway instance through Redis.

What is limited (requests per minute, bursts of up to that many; settings GATEWAY_RATE_LIMIT_*):

- ``client``: the token, introspection, revocation and device authorization endpoints, per ``client_id`` (RFC 6749 2.3.1:
  from HTTP Basic, else from the form body, which the gateway reads whole when small). A request
  without a readable client_id counts against its client IP instead. Answers 401 (a wrong secret)
  also count per client_id and client IP in a much smaller bucket, which once full refuses that
  pair's requests: guessing stops early while the client's real backend, elsewhere, is untouched;
- ``login``: ``POST /login`` per client IP (the account's own throttling is authz's);
- ``page``: the HTML pages and the authorize endpoint per client IP.

Everything else (userinfo, top-up, the developer API, discovery, JWKS) is not limited here: third
party backends call those from a few addresses at high rates.

The algorithm is GCRA (the "generic cell rate algorithm", a leaky bucket kept as one timestamp per
key): one short Lua script, atomic across instances, and it yields the exact wait for
``Retry-After`` (RFC 9110 10.2.3). The ``limits`` library was the alternative; its async Redis
storage keeps its own connection pool, and its moving window needs a second round trip to learn the
reset time, for no gain over these lines.

Leases: a limit under 400 a minute (logins, auth failures) costs one round trip per request, as
exact as GCRA is (the smallest limit a request is counted in decides). From 400 a minute on, one
script call reserves a batch for this instance: it advances the key's TAT by ``n`` intervals at
once, ``n`` being what fits now, at most ``per_minute // 200`` (and 64). The instance spends the
batch without Redis for up to LEASE_SECONDS, then lets what is left lapse. A reservation is a count
in the shared bucket, so the instances together never admit more than the bucket allows (a leased
request is admitted at most LEASE_SECONDS after it was counted); a client may only be refused
slightly early (by the lapsed rest: at most one batch per instance and key). The batch starts at
one request and doubles while this instance uses it up within its lifetime, and shrinks to what
was used when it lapses, so a client far below its limit does not waste its bucket on leases. A
lease is per set of keys: for a client, per client_id *and* address, because its failure bucket is
checked with every reservation; a 401 drops that pair's lease, so its next request asks Redis
(where the failure was just counted) again. One refill per lease at a time: concurrent requests
wait for it rather than each reserving a batch. A refusal is remembered for its wait: Retry-After
stays exact (the wait counts down; other instances can only lengthen it).

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
from dataclasses import dataclass, field, replace
from typing import NamedTuple
from urllib.parse import unquote_plus

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter

from libs.platform.config import Settings
from libs.platform.web import REDIS, SETTINGS, error_style, media_type

log = logging.getLogger("oauth.gateway.limits")

RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused with 429 by the gateway", ["bucket"])
LIMITER_FALLBACK = Counter("gateway_rate_limit_fallback_total", "Rate-limit decisions made without Redis")

CLIENT_PATHS = frozenset(
    {"/api/oauth2/token", "/api/oauth2/introspect", "/api/oauth2/revoke", "/api/oauth2/device_authorization"}
)
MAX_CLIENT_ID = 128
WINDOW_MS = 60_000.0
REDIS_RETRY_SECONDS = 5.0
LEASE_SECONDS = 1.0  # a reserved batch not spent within this lapses
LEASE_PER_MINUTE = 200  # one more request per lease for each 200 a minute of the limit ...
MAX_LEASE = 64  # ... up to this many
MAX_LEASES = 100_000

# KEYS: the buckets. ARGV: per bucket, its emission interval (ms per request), its burst window (ms)
# and whether this request is counted in it ("1") or the bucket is only checked ("0"); last, the
# most requests to reserve at once. Each bucket stores its "theoretical arrival time" (TAT); a
# request is allowed while every new TAT stays within one window of now. Then as many requests as
# fit in every counted bucket (at least one, at most the last argument) are counted in them at
# once. Returns {requests reserved, 0} or {0, milliseconds to wait}. (All keys of one request; on
# Redis Cluster they would need one hash slot.)
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[3 * #KEYS + 1])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tats[i] = tat
  local interval = tonumber(ARGV[3 * i - 2])
  local room = tonumber(ARGV[3 * i - 1]) + now - tat
  if interval - room > wait then wait = interval - room end
  if ARGV[3 * i] == '1' and math.floor(room / interval) < n then n = math.floor(room / interval) end
end
if wait > 0 then return {0, math.ceil(wait)} end
if n < 1 then n = 1 end
for i, key in ipairs(KEYS) do
  if ARGV[3 * i] == '1' then
    local tat = tats[i] + n * tonumber(ARGV[3 * i - 2])
    redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil(tat - now))
  end
end
return {n, 0}
"""


@dataclass(frozen=True)
class Bucket:
    key: str  # without the Redis prefix
    per_minute: int
    count: bool = True  # False: only checked (the auth-failure bucket, counted after a 401)

    @property
    def interval(self) -> float:
        return WINDOW_MS / self.per_minute


def lease_cap(buckets: list[Bucket]) -> int:
    """The most requests one reservation may take for these buckets (1: no lease)."""
    counted = [b.per_minute for b in buckets if b.count]
    return max(1, min(MAX_LEASE, min(counted, default=0) // LEASE_PER_MINUTE))


@dataclass(eq=False)
class Lease:
    """Requests reserved in Redis for this instance, spent locally until ``expires``."""

    left: int = 0
    expires: float = 0.0
    granted: int = 0  # the size of the last reservation
    size: int = 1  # how many the next reservation asks for
    refused_until: float = 0.0
    refill: asyncio.Event | None = field(default=None, repr=False)

    def take(self, now: float) -> bool:
        if self.left > 0 and now < self.expires:
            self.left -= 1
            return True
        return False

    def next_size(self, now: float, cap: int) -> int:
        """Double while the batches run out before they lapse; shrink to what was used when they lapse."""
        if self.granted:
            if now < self.expires:
                self.size = min(cap, self.size * 2)
            elif self.left:
                self.size = max(1, self.granted - self.left)
        return min(self.size, cap)

    def fill(self, granted: int, now: float) -> None:
        self.granted, self.left, self.expires = granted, granted - 1, now + LEASE_SECONDS


class LocalGcra:
    """The same algorithm on this process's clock: the fallback while Redis is unreachable."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    def acquire(self, buckets: list[Bucket]) -> float:
        now = time.monotonic() * 1000
        if len(self._tat) >= self.MAX_KEYS:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        tats = [max(self._tat.get(b.key, now), now) + b.interval for b in buckets]
        wait = max((tat - WINDOW_MS - now for tat in tats), default=0.0)
        if wait > 0:
            return wait
        for bucket, tat in zip(buckets, tats, strict=True):
            if bucket.count:
                self._tat[bucket.key] = tat
        return 0.0


class Limiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local = LocalGcra()
        self.leases: dict[tuple[str, ...], Lease] = {}
        self._script: Callable[..., Awaitable[object]] | None = None
        self._warned_at = 0.0
        # After a failure Redis is left alone for a few seconds, so an outage that makes it hang
        # does not add its timeout to every limited request.
        self._skip_redis_until = 0.0

    async def acquire(self, redis: aioredis.Redis, buckets: list[Bucket]) -> float:
        """Check every bucket and count the request in those it counts in, atomically; the seconds
        to wait before retrying, 0 when allowed (and then counted)."""
        cap = lease_cap(buckets)
        if cap == 1:
            return (await self._reserve(redis, buckets, 1))[1] / 1000
        return await self._leased(redis, buckets, cap) / 1000

    def forget(self, keys: tuple[str, ...]) -> None:
        """Drop the lease of these buckets: their next request asks Redis."""
        self.leases.pop(keys, None)

    async def _leased(self, redis: aioredis.Redis, buckets: list[Bucket], cap: int) -> float:
        keys = tuple(b.key for b in buckets)
        while True:
            lease = self.leases.get(keys) or self._new_lease(keys)
            now = time.monotonic()
            if lease.take(now):
                return 0.0
            if now < lease.refused_until:
                return (lease.refused_until - now) * 1000
            if lease.refill is None:
                break
            await lease.refill.wait()  # another request is reserving for this lease: share its batch
        lease.refill = refill = asyncio.Event()
        try:
            granted, wait_ms = await self._reserve(redis, buckets, lease.next_size(now, cap))
        finally:
            lease.refill = None
            refill.set()
        if granted:
            lease.fill(granted, time.monotonic())
        else:
            lease.refused_until = now + wait_ms / 1000
        return wait_ms

    def _new_lease(self, keys: tuple[str, ...]) -> Lease:
        if len(self.leases) >= MAX_LEASES:
            now = time.monotonic()
            self.leases = {k: v for k, v in self.leases.items() if v.refill or max(v.expires, v.refused_until) > now}
        lease = self.leases[keys] = Lease()
        return lease

    async def _reserve(self, redis: aioredis.Redis, buckets: list[Bucket], most: int) -> tuple[int, float]:
        """Up to ``most`` requests counted in Redis at once: (how many, 0), or (0, ms to wait)."""
        if time.monotonic() < self._skip_redis_until:
            LIMITER_FALLBACK.inc()
            return self._local(buckets)
        keys = [self.settings.redis_prefix + "rl:" + b.key for b in buckets]
        args = [a for b in buckets for a in (b.interval, WINDOW_MS, int(b.count))] + [most]
        try:
            if self._script is None:
                self._script = redis.register_script(GCRA_LUA)
            # asyncio.timeout, not wait_for: no task per call (Python 3.11's wait_for wraps one).
            async with asyncio.timeout(self.settings.gateway_rate_limit_redis_timeout_seconds):
                granted, wait = await self._script(keys=keys, args=args)  # type: ignore[misc]
        except (TimeoutError, OSError, aioredis.RedisError) as exc:
            LIMITER_FALLBACK.inc()
            self._skip_redis_until = time.monotonic() + REDIS_RETRY_SECONDS
            self._warn(exc)
            return self._local(buckets)
        return int(granted), float(wait)

    def _local(self, buckets: list[Bucket]) -> tuple[int, float]:
        wait_ms = self.local.acquire(buckets)
        return (0, wait_ms) if wait_ms > 0 else (1, 0.0)

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.warning(
                "rate limits: Redis unavailable, this instance counts alone", extra={"error": type(exc).__name__}
            )


LIMITER = web.AppKey("rate_limiter", Limiter)


class Failures(NamedTuple):
    """What ``count_failure`` needs after a 401: the pair's failure bucket, and the lease to drop."""

    bucket: Bucket
    lease: tuple[str, ...]


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
    if path == "/favicon.ico" or path.startswith("/assets/"):
        return None  # the pages' own stylesheet, script and images: fixed files served from memory
    if path == "/api/oauth2/authorize" or error_style(path) == "page":
        return "page", settings.gateway_rate_limit_pages_per_minute
    return None


MAX_FORM_FIELDS = 64


def _form_client_id(form: str) -> str | None:
    """The form's first non-empty ``client_id`` ("" when there is none), read as
    ``parse_qs(form, max_num_fields=MAX_FORM_FIELDS)["client_id"][0]`` reads it (same splitting on
    "&", same blank-value skipping, same decoding of names and values), without decoding every other
    field; None when the form has more than MAX_FORM_FIELDS fields, where parse_qs raises."""
    if form.count("&") >= MAX_FORM_FIELDS:
        return None
    for pair in form.split("&"):
        name, _, value = pair.partition("=")
        if not value:
            continue  # no "=" or a blank value: parse_qs skips it
        if name == "client_id" or (("%" in name or "+" in name) and unquote_plus(name) == "client_id"):
            return unquote_plus(value)
    return ""


def client_id_of(request: web.Request, body: bytes | None) -> str | None:
    """The client_id the request authenticates with (RFC 6749 2.3.1), if readable and sane."""
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        client_id = unquote_plus(decoded.partition(":")[0])
    elif body and media_type(request) == "application/x-www-form-urlencoded":
        found = _form_client_id(body.decode("utf-8", "replace"))
        if found is None:  # more fields than any token request has: the upstream will refuse it
            return None
        client_id = found
    else:
        return None
    if 0 < len(client_id) <= MAX_CLIENT_ID and client_id.isascii() and client_id.isprintable():
        return client_id
    return None


async def check(request: web.Request, read_body: Callable[[], Awaitable[bytes | None]]) -> Failures | None:
    """Count the request in its buckets; raise 429 with Retry-After when over a limit. Returns the
    bucket of failed client authentications to count the request in if it is answered 401."""
    settings = request.app[SETTINGS]
    rule = rule_for(request, settings)
    if rule is None:
        return None
    name, per_minute = rule
    ip = client_ip(request, settings)
    failures = None
    if name != "client":
        buckets = [Bucket(f"{name}:ip:{ip}", per_minute)]
    else:
        client_id = client_id_of(request, await read_body())
        key = f"client:ip:{ip}" if client_id is None else f"client:id:{client_id}"
        buckets = [Bucket(key, per_minute)]
        if settings.gateway_rate_limit_auth_failures_per_minute:
            # Per client_id *and* address: wrong secrets from one place are stopped early, and
            # nobody can block a client's own backend by failing with its client_id elsewhere.
            per = settings.gateway_rate_limit_auth_failures_per_minute
            failures = Bucket(f"authfail:{client_id or '-'}:{ip}", per, count=False)
            buckets.append(failures)
    buckets = [b for b in buckets if b.per_minute > 0]
    wait = await request.app[LIMITER].acquire(request.app[REDIS], buckets) if buckets else 0.0
    if wait > 0:
        RATE_LIMITED.labels(name).inc()
        retry_after = max(1, math.ceil(wait))
        raise web.HTTPTooManyRequests(
            reason=f"Too many requests; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    return None if failures is None else Failures(failures, tuple(b.key for b in buckets))


async def count_failure(request: web.Request, failures: Failures) -> None:
    """The client failed to authenticate (RFC 6749 5.2 invalid_client, 401): count it, and drop the
    pair's lease first, so its next request is checked in Redis against the failure just counted."""
    limiter = request.app[LIMITER]
    limiter.forget(failures.lease)
    await limiter.acquire(request.app[REDIS], [replace(failures.bucket, count=True)])
