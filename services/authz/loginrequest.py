"""Server-side login freshness for authorization requests (OIDC Core 3.1.2.1: ``prompt=login``,
``max_age``; docs/operations.md "Logins").

When an authorization request needs a login, authorize.py keeps the request in Redis as a *pending
login request* under a random 256-bit id and sends the browser to the login page with ``next`` =
the same request plus ``login_request=<id>``::

    loginreq:<sha256(id)> -> hash {query: the request's parameters, created: unix time}
                                  + {session, login_time} once a login satisfied it

``POST /login``, after the password was verified and the new session started, records on the
pending request that session (its Redis key) and the login time. Back at the authorize endpoint a
login counts as fresh only if the pending request exists, carries exactly the same parameters, and
was satisfied by a password entry of *this* session after it was created; it is consumed then
(single use). Nothing in the URL can claim a fresh login: the id is only a pointer, worthless
without the password entry that marks it and the session cookie that entry created.

The rules (``start``, ``record_login``, ``take_fresh``, ``fresh_login_time``) work over the
``PendingLogins`` protocol, so they are tested against an in-memory fake
(tests/unit/domain/test_authz_login_requests.py); ``RedisPendingLogins`` is the real store, and
``create`` / ``mark_login`` / ``take_fresh_login`` are what the handlers call.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import orjson
import redis.asyncio as aioredis

from libs.oauth.sessions import Session
from libs.platform.config import Settings
from libs.platform.redis import key

PARAM = "login_request"
AUTHORIZE_PATH = "/api/oauth2/authorize"
MAX_ID = 100

# Mark a pending request as satisfied by a login, once, only while it exists (no key without TTL).
_MARK = """
if redis.call('exists', KEYS[1]) == 1 and redis.call('hexists', KEYS[1], 'session') == 0 then
  redis.call('hset', KEYS[1], 'session', ARGV[1], 'login_time', ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class PendingLogin:
    """A stored pending login request, as read (and consumed) from the store."""

    query: bytes  # _canonical(the request's parameters)
    created: int  # unix time it was stored
    session: bytes | None = None  # the session whose password login satisfied it, once one did
    login_time: int | None = None  # that login's time


class PendingLogins(Protocol):
    """Where pending login requests live (Redis: ``RedisPendingLogins``)."""

    async def put(self, request_id: str, query: bytes, created: int) -> None:
        """Store a new request (it expires after CONSENT_REQUEST_TTL_SECONDS)."""

    async def mark(self, request_id: str, session_key: str, login_time: int) -> None:
        """Record the login that satisfied it: once, and only while it exists."""

    async def take(self, request_id: str) -> PendingLogin | None:
        """Read and delete it in one step (single use)."""


class RedisPendingLogins:
    """``loginreq:<sha256(id)>`` hashes (the module docstring)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def put(self, request_id: str, query: bytes, created: int) -> None:
        rkey = _rkey(self.settings, request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(rkey, mapping={"query": query, "created": created})
            pipe.expire(rkey, self.settings.consent_request_ttl_seconds)
            await pipe.execute()

    async def mark(self, request_id: str, session_key: str, login_time: int) -> None:
        await self.redis.eval(_MARK, 1, _rkey(self.settings, request_id), session_key, str(login_time))  # type: ignore[misc]

    async def take(self, request_id: str) -> PendingLogin | None:
        rkey = _rkey(self.settings, request_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(rkey)
            pipe.delete(rkey)
            stored, _ = await pipe.execute()
        if not stored:
            return None
        marked = b"session" in stored
        return PendingLogin(
            query=stored[b"query"],
            created=int(stored[b"created"]),
            session=stored[b"session"] if marked else None,
            login_time=int(stored[b"login_time"]) if marked else None,
        )


def _rkey(settings: Settings, request_id: str) -> str:
    return key(settings, "loginreq", hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest())


def _canonical(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The request's parameters without the pointer itself, order-independent."""
    return orjson.dumps(sorted((k, v) for k, v in pairs if k != PARAM))


def _id_in(next_url: str) -> str | None:
    """The pending request id of a local ``next`` URL that resumes an authorization request."""
    parts = urlsplit(next_url)
    if parts.path != AUTHORIZE_PATH:
        return None
    return pending_id(parse_qsl(parts.query))


def pending_id(pairs: Iterable[tuple[str, str]]) -> str | None:
    """The one ``login_request`` parameter of an authorization request, if well-formed."""
    ids = [v for k, v in pairs if k == PARAM]
    return ids[0] if len(ids) == 1 and 0 < len(ids[0]) <= MAX_ID else None


def fresh_login_time(stored: PendingLogin | None, pairs: Iterable[tuple[str, str]], session: Session) -> int | None:
    """The rule: a login counts only if it marked this pending request, was made in ``session``,
    after the request was stored, for exactly these parameters."""
    if stored is None or stored.session is None or stored.login_time is None:
        return None
    if (
        not secrets.compare_digest(stored.session, session.key.encode())
        or stored.query != _canonical(pairs)
        or stored.login_time < stored.created
    ):
        return None
    return stored.login_time


# --- over the protocol ---------------------------------------------------------------------------
async def start(store: PendingLogins, pairs: Iterable[tuple[str, str]], now: int) -> str:
    """Store a pending login request for these authorization parameters; return its id."""
    request_id = secrets.token_urlsafe(32)
    await store.put(request_id, _canonical(pairs), now)
    return request_id


async def record_login(store: PendingLogins, next_url: str, session: Session) -> None:
    """After a password login: the pending request ``next_url`` resumes (if any) is satisfied by
    this session's login."""
    request_id = _id_in(next_url)
    if request_id is not None:
        await store.mark(request_id, session.key, session.auth_time)


async def take_fresh(store: PendingLogins, pairs: Iterable[tuple[str, str]], session: Session) -> int | None:
    """The time of the login that satisfied this request's pending login request (``fresh_login_time``),
    else None. Consumes the pending request either way."""
    pairs = list(pairs)
    request_id = pending_id(pairs)
    if request_id is None:
        return None
    return fresh_login_time(await store.take(request_id), pairs, session)


# --- what the handlers call (Redis) --------------------------------------------------------------
async def create(redis: aioredis.Redis, settings: Settings, pairs: Iterable[tuple[str, str]], now: int) -> str:
    """Store a pending login request for these authorization parameters; return its id."""
    return await start(RedisPendingLogins(redis, settings), pairs, now)


async def mark_login(redis: aioredis.Redis, settings: Settings, next_url: str, session: Session) -> None:
    """Called right after a password login: the pending request ``next_url`` resumes (if any) is
    satisfied by this session's login."""
    await record_login(RedisPendingLogins(redis, settings), next_url, session)


async def take_fresh_login(
    redis: aioredis.Redis, settings: Settings, pairs: Iterable[tuple[str, str]], session: Session
) -> int | None:
    """The time of the login that satisfied this request's pending login request, if it was made
    in ``session``, after the request was stored, for the same parameters; else None. Consumes it."""
    return await take_fresh(RedisPendingLogins(redis, settings), pairs, session)
