"""Login throttling in Redis that an attacker cannot turn against the account's owner
(docs/operations.md "Logins"; OWASP Authentication Cheat Sheet, "Account lockout").

There is no account lockout. Three rules, all shared by every authz instance:

- per account + client IP: after LOGIN_BACKOFF_FREE_FAILURES failures, each further attempt from
  that IP on that account must wait LOGIN_BACKOFF_BASE_SECONDS * 2^(n - free) (capped at
  LOGIN_BACKOFF_MAX_SECONDS) after the last failure; a success from that IP clears it. Guessing
  from one address slows down exponentially, while the owner's own address is untouched.
- per client IP: LOGIN_MAX_FAILURES_PER_IP failures in LOGIN_FAILURE_WINDOW_SECONDS stop that
  address (spraying many accounts from one address).
- per account, from anywhere: once LOGIN_SLOWDOWN_AFTER_FAILURES failures piled up in the window,
  every attempt on the account waits LOGIN_SLOWDOWN_SECONDS before the password is checked. A
  slowdown, never a refusal: the owner still logs in while an attacker hammers from elsewhere.

Keys (under REDIS_PREFIX): ``loginfail:pair:<account>:<ip>`` (hash: n, last),
``loginfail:ip:<ip>`` and ``loginfail:acct:<account>`` (counters). ``<account>`` is
``u<user id>`` for a known user (username and email share the counters) and a SHA-256 of the
lower-cased identifier otherwise (unknown names are throttled alike, so throttling reveals nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from libs.platform.config import Settings
from libs.platform.redis import key


@dataclass(frozen=True)
class Attempt:
    """The Redis keys of one login attempt: who is tried, from where."""

    account: str  # loginfail:acct:<account>
    pair: str  # loginfail:pair:<account>:<ip>
    ip: str  # loginfail:ip:<ip>


def attempt_keys(settings: Settings, user_id: int | None, identifier: str, ip: str) -> Attempt:
    if user_id is not None:
        who = f"u{user_id}"
    else:
        who = "n" + hashlib.sha256(identifier.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()
    return Attempt(
        account=key(settings, "loginfail", "acct", who),
        pair=key(settings, "loginfail", "pair", who, ip),
        ip=ip_key(settings, ip),
    )


def ip_key(settings: Settings, ip: str) -> str:
    return key(settings, "loginfail", "ip", ip)


@dataclass(frozen=True)
class Blocked:
    retry_after: int  # seconds until the attempt may be retried


def backoff_seconds(settings: Settings, failures: int) -> int:
    """How long after the last failure the next attempt from the same IP on the same account waits."""
    over = failures - settings.login_backoff_free_failures
    if over < 0:
        return 0
    return int(min(settings.login_backoff_max_seconds, settings.login_backoff_base_seconds * 2 ** min(over, 30)))


async def check(
    redis: aioredis.Redis, settings: Settings, attempt: Attempt, now: float | None = None
) -> Blocked | None:
    """None when a login attempt may proceed (after any slowdown), else how long to wait."""
    now = time.time() if now is None else now
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(attempt.pair, "n", "last")
        pipe.get(attempt.ip)
        pipe.ttl(attempt.ip)
        pipe.get(attempt.account)
        (pair_n, pair_last), ip_n, ip_ttl, acct_n = await pipe.execute()
    waits = []
    if pair_n is not None and pair_last is not None:
        ready_at = float(pair_last) + backoff_seconds(settings, int(pair_n))
        if ready_at > now:
            waits.append(int(ready_at - now) + 1)
    if ip_n is not None and int(ip_n) >= settings.login_max_failures_per_ip:
        # ttl is -1 (no expiry) or -2 (just expired) only in races; never tell the user to wait 0 s.
        waits.append(ip_ttl if ip_ttl > 0 else settings.login_failure_window_seconds)
    if waits:
        return Blocked(max(waits))
    if acct_n is not None and int(acct_n) >= settings.login_slowdown_after_failures:
        await asyncio.sleep(settings.login_slowdown_seconds)
    return None


async def record_failure(redis: aioredis.Redis, settings: Settings, attempt: Attempt, now: float | None = None) -> None:
    window = settings.login_failure_window_seconds
    # The pair's record lives as long as its longest possible backoff, so the backoff can grow.
    pair_ttl = max(window, settings.login_backoff_max_seconds)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(attempt.pair, "n", 1)
        pipe.hset(attempt.pair, "last", repr(time.time() if now is None else now))
        pipe.expire(attempt.pair, pair_ttl)
        for k in (attempt.account, attempt.ip):
            pipe.incr(k)
            pipe.expire(k, window, nx=True)
        await pipe.execute()


async def record_success(redis: aioredis.Redis, attempt: Attempt) -> None:
    """A success clears this IP's backoff on this account; the IP's and the account's failure
    counts stay (a lucky guess must not reset the defences for the attacker's next account)."""
    await redis.delete(attempt.pair)
