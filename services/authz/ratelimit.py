"""Login rate limits in Redis: failed logins are counted per account and per client IP in a fixed
window (defaults: 5 per account, 30 per IP, per 15 minutes). When either count reaches its limit,
further attempts are refused (even with the right password) until the window ends.

Keys (under REDIS_PREFIX): ``loginfail:acct:<account>`` and ``loginfail:ip:<ip>``. ``<account>``
is ``u<user id>`` for a known user (so username and email share one counter) and a SHA-256 of the
lower-cased identifier otherwise (unknown names are limited alike, so the limit reveals nothing).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from libs.common.config import Settings
from libs.common.redis import key


def account_key(settings: Settings, user_id: int | None, identifier: str) -> str:
    if user_id is not None:
        who = f"u{user_id}"
    else:
        who = "n" + hashlib.sha256(identifier.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()
    return key(settings, "loginfail", "acct", who)


def ip_key(settings: Settings, ip: str) -> str:
    return key(settings, "loginfail", "ip", ip)


def client_ip(request: web.Request) -> str:
    """The browser's address: the last X-Forwarded-For entry (the one the gateway appends, the
    peer it saw), else the TCP peer. Entries that are not IP addresses are ignored."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded:
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass
    return request.remote or "unknown"


@dataclass(frozen=True)
class Blocked:
    retry_after: int  # seconds until the attempt may be retried


async def check(redis: aioredis.Redis, settings: Settings, acct: str, ip: str) -> Blocked | None:
    """None when a login attempt may proceed, else how long to wait."""
    async with redis.pipeline(transaction=False) as pipe:
        for k in (acct, ip_key(settings, ip)):
            pipe.get(k)
            pipe.ttl(k)
        acct_n, acct_ttl, ip_n, ip_ttl = await pipe.execute()
    waits = []
    if acct_n is not None and int(acct_n) >= settings.login_max_failures_per_account:
        waits.append(acct_ttl)
    if ip_n is not None and int(ip_n) >= settings.login_max_failures_per_ip:
        waits.append(ip_ttl)
    if not waits:
        return None
    wait = max(waits)
    # ttl is -1 (no expiry) or -2 (just expired) only in races; never tell the user to wait 0 s.
    return Blocked(wait if wait > 0 else settings.login_failure_window_seconds)


async def record_failure(redis: aioredis.Redis, settings: Settings, acct: str, ip: str) -> None:
    window = settings.login_failure_window_seconds
    async with redis.pipeline(transaction=True) as pipe:
        for k in (acct, ip_key(settings, ip)):
            pipe.incr(k)
            pipe.expire(k, window, nx=True)
        await pipe.execute()


async def clear_account(redis: aioredis.Redis, acct: str) -> None:
    """After a successful login the account's counter starts again (the IP's does not)."""
    await redis.delete(acct)
