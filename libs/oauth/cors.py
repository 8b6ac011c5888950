"""CORS origins (docs/architecture.md "Browsers and CORS"): the browser origins allowed to call the platform's browser-facing
endpoints are exactly the origins of the apps' registered redirect URIs.

The account service owns the apps, so it computes the set and keeps it in Redis
(``<REDIS_PREFIX>cors:origins``, rebuilt whenever an app is created, changed or deleted, at start
and periodically: services/account/cors_origins.py); the gateway, which has no Postgres, answers
CORS from it (services/gateway/cors.py). This module is what both sides share: the origin
serialization (``origin_of``) and the Redis set (``replace_origins`` writes it, ``has_origin``
reads it), so they cannot disagree on either.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis

from libs.platform.config import Settings
from libs.platform.redis import key

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ORIGIN_CHARS = 300
SADD_CHUNK = 1000


def origins_key(settings: Settings) -> str:
    return key(settings, "cors", "origins")


async def replace_origins(redis: aioredis.Redis, settings: Settings, origins: set[str]) -> None:
    """Replace the set in one MULTI/EXEC, so a reader never sees it half-written."""
    name = origins_key(settings)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(name)
        ordered = sorted(origins)
        for i in range(0, len(ordered), SADD_CHUNK):
            pipe.sadd(name, *ordered[i : i + SADD_CHUNK])
        await pipe.execute()


async def has_origin(redis: aioredis.Redis, settings: Settings, origin: str) -> bool:
    """Is ``origin`` (as ``request_origin`` returned it) in the set?"""
    return bool(await redis.sismember(origins_key(settings), origin))  # type: ignore[misc]


def origin_of(url: str) -> str | None:
    """The ASCII serialization of ``url``'s origin (RFC 6454 6.2: ``scheme://host[:port]``, lower
    case, default port left out), or None when it has none we can serve (not http/https, no host).

    Browsers send exactly this form in the ``Origin`` header, so a registered redirect URI
    ``https://App.example:443/cb`` allows ``Origin: https://app.example``.
    """
    if not url or len(url) > 4096:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    origin = f"{scheme}://{host}"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        origin += f":{port}"
    return origin


def request_origin(header: str | None) -> str | None:
    """The ``Origin`` request header if it is a serialized http(s) origin (no path, query, userinfo
    or fragment), else None (``null``, garbage, or an origin we could never have registered)."""
    # RFC 6454 6.2: a serialized origin is ASCII (hosts in punycode); anything else never reaches a lookup.
    if not header or len(header) > MAX_ORIGIN_CHARS or header != header.strip() or not header.isascii():
        return None
    origin = origin_of(header)
    if origin is None:
        return None
    # Only a bare origin: "https://a.example/" or "https://user@a.example" are not what a browser sends.
    return origin if origin == header.lower() else None
