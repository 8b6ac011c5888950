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
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
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


def _rkey(settings: Settings, request_id: str) -> str:
    return key(settings, "loginreq", hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest())


def _canonical(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The request's parameters without the pointer itself, order-independent."""
    return orjson.dumps(sorted((k, v) for k, v in pairs if k != PARAM))


async def create(redis: aioredis.Redis, settings: Settings, pairs: Iterable[tuple[str, str]], now: int) -> str:
    """Store a pending login request for these authorization parameters; return its id."""
    request_id = secrets.token_urlsafe(32)
    rkey = _rkey(settings, request_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(rkey, mapping={"query": _canonical(pairs), "created": now})
        pipe.expire(rkey, settings.consent_request_ttl_seconds)
        await pipe.execute()
    return request_id


def _id_in(next_url: str) -> str | None:
    """The pending request id of a local ``next`` URL that resumes an authorization request."""
    parts = urlsplit(next_url)
    if parts.path != AUTHORIZE_PATH:
        return None
    ids = [v for k, v in parse_qsl(parts.query) if k == PARAM]
    return ids[0] if len(ids) == 1 and 0 < len(ids[0]) <= MAX_ID else None


async def mark_login(redis: aioredis.Redis, settings: Settings, next_url: str, session: Session) -> None:
    """Called right after a password login: the pending request ``next_url`` resumes (if any) is
    satisfied by this session's login."""
    request_id = _id_in(next_url)
    if request_id is not None:
        await redis.eval(_MARK, 1, _rkey(settings, request_id), session.key, str(session.auth_time))  # type: ignore[misc]


async def take_fresh_login(
    redis: aioredis.Redis, settings: Settings, pairs: Iterable[tuple[str, str]], session: Session
) -> int | None:
    """The time of the login that satisfied this request's pending login request, if it was made
    in ``session``, after the request was stored, for the same parameters; else None. Consumes it."""
    pairs = list(pairs)
    ids = [v for k, v in pairs if k == PARAM]
    if len(ids) != 1 or not 0 < len(ids[0]) <= MAX_ID:
        return None
    rkey = _rkey(settings, ids[0])
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(rkey)
        pipe.delete(rkey)
        stored, _ = await pipe.execute()
    if not stored or b"session" not in stored:
        return None
    login_time = int(stored[b"login_time"])
    if (
        not secrets.compare_digest(stored[b"session"], session.key.encode())
        or stored[b"query"] != _canonical(pairs)
        or login_time < int(stored[b"created"])
    ):
        return None
    return login_time
