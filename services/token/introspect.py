"""``POST /api/oauth2/introspect`` (RFC 7662): is this token active, and what does it carry?

- The caller must authenticate as a confidential client (client_secret_basic or _post, the token
  endpoint's own rules in client_auth.py); a public client cannot, so it gets ``invalid_client``.
- ``token`` is required; ``token_type_hint`` is accepted and not needed (RFC 7662 2.1 lets the
  server search all types): access tokens are JWTs, refresh tokens start with ``refresh_``.
- Access tokens are checked exactly as every resource endpoint checks them (AccessTokenVerifier:
  signature by ``kid``, ``typ``, issuer, audience, expiry, revocation in Redis), and then against
  PostgreSQL too: the token family not revoked, the user still there and active (a disabled user's
  tokens are refused by userinfo, so they are not "active" here either).
- That PostgreSQL answer is kept per token (``jti``) in an event-invalidated cache
  (``app[INTROSPECTED]``, libs/oauth/caches.LiveCache): trusted only while this instance's event
  consumer is live, for ``CACHE_TTL_SECONDS`` at most, dropped when the consumer reconnects. A
  revoked jti drops its entry; a revoked family (``token.revoked``, ``authorization.revoked``,
  ``user.disabled``, ``client.deleted``) is rejected from then on by the verifier's revocation check,
  which learns it from the same event (libs/oauth/revocation.py, step 1); any ``user.*`` event
  drops the whole cache. Each of these events also fences loads in flight, so an answer read
  before the event is never cached after it. While the consumer is down every call reads
  PostgreSQL, as before.
- Refresh tokens are looked up by their keyed hash: active while unused (rotation consumed it
  otherwise), unexpired, of a family that is not revoked, of an active user.
- Every failure is the same ``{"active": false}`` (RFC 7662 2.2): revoked, expired, unknown,
  malformed and someone else's tokens are indistinguishable.

Whose tokens a client may introspect (the decision RFC 7662 4 leaves to us): its own only. Another
client's token answers ``{"active": false}``, as in Keycloak and Hydra's defaults, so an app cannot
learn anything about tokens it was not issued (a leaked token, another app's user). The exception
is internal service apps (``oauth_apps.internal``, flagged by an operator with ``oauthctl app
set-internal``): they are the platform's own resource servers, whose job is to check tokens that
third-party apps present to them, so they may introspect any token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from libs.oauth.access_tokens import REVOCATIONS, VERIFIER, AccessTokenVerifier
from libs.oauth.caches import LiveCache
from libs.oauth.clients import Client
from libs.oauth.errors import OAuthError
from libs.oauth.events.bus import EVENTS
from libs.oauth.events.types import Event
from libs.oauth.revocation import REVOKING_EVENTS, RevocationCache, revoked_by
from libs.oauth.vocabulary import NO_STORE, REFRESH_PREFIX
from libs.platform.config import Settings
from libs.platform.security import token_hash
from libs.platform.web import PG, SETTINGS, json_response

from . import store
from .client_auth import authenticate
from .form import read_form, required

PARAMETERS = frozenset({"token", "token_type_hint", "client_id", "client_secret"})
INACTIVE: dict[str, Any] = {"active": False}
ACTIVE_USER = 1  # users.status
MAX_TOKEN_CHARS = 4096
# Claims of an access token that the response repeats (RFC 7662 2.2); ``fam`` stays private.
ACCESS_CLAIMS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti")


@dataclass(frozen=True, slots=True)
class Checked:
    """What PostgreSQL said about one access token: its family live, its user (if any) active."""

    username: str | None


INTROSPECTED: web.AppKey[LiveCache[str, Checked]] = web.AppKey("introspected")


def may_introspect(caller: Client, token_client_id: str) -> bool:
    return caller.internal or caller.client_id == token_client_id


async def _check_in_postgres(db: asyncpg.Pool, family: str | None, user_id: int | None) -> Checked | None:
    """None if the family is revoked (or gone) or the user is not there and active."""
    if family is not None:
        try:
            family_id = uuid.UUID(family)
        except ValueError:
            return None
        if not await store.family_is_live(db, family_id):  # revoked, or gone with its user
            return None
    username: str | None = None
    if user_id is not None:
        user = await store.user_name_and_status(db, user_id)
        if user is None or user["status"] != ACTIVE_USER:
            return None
        username = user["username"]
    return Checked(username)


async def introspect_access_token(
    db: asyncpg.Pool,
    verifier: AccessTokenVerifier,
    caller: Client,
    token: str,
    cache: LiveCache[str, Checked] | None = None,
) -> dict[str, Any]:
    try:
        at = await verifier.verify(token)
    except OAuthError:  # malformed, unknown key, bad signature, expired, revoked
        return INACTIVE
    if not may_introspect(caller, at.client_id):
        return INACTIVE
    body: dict[str, Any] = {"active": True}
    if at.family is not None or at.user_id is not None:
        checked = cache.get(at.jti) if cache is not None else None
        if checked is None:
            ticket = cache.ticket() if cache is not None else None
            checked = await _check_in_postgres(db, at.family, at.user_id)
            if checked is None:
                return INACTIVE  # not cached: a refusal is not worth remembering
            if cache is not None and ticket is not None:
                cache.put(at.jti, checked, ticket)
        if at.user_id is not None:
            body["username"] = checked.username
    body.update({name: at.claims[name] for name in ACCESS_CLAIMS if name in at.claims})
    body["token_type"] = "Bearer"
    body["token_use"] = "access_token"
    return body


async def introspect_refresh_token(db: asyncpg.Pool, settings: Settings, caller: Client, token: str) -> dict[str, Any]:
    row = await store.live_refresh_token(db, token_hash(settings.pepper_bytes, token))
    if row is None or row["status"] != ACTIVE_USER or not may_introspect(caller, row["client_id"]):
        return INACTIVE
    return {
        "active": True,
        "scope": row["scope"],
        "client_id": row["client_id"],
        "username": row["username"],
        "sub": str(row["user_id"]),
        "iss": settings.issuer,
        "exp": int(row["expires_at"].timestamp()),
        "iat": int(row["created_at"].timestamp()),
        "token_use": "refresh_token",
    }


async def introspect(
    db: asyncpg.Pool,
    verifier: AccessTokenVerifier,
    settings: Settings,
    caller: Client,
    token: str,
    cache: LiveCache[str, Checked] | None = None,
) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_CHARS:
        return INACTIVE
    if token.startswith(REFRESH_PREFIX + "_"):
        return await introspect_refresh_token(db, settings, caller, token)
    if token.count(".") == 2:
        return await introspect_access_token(db, verifier, caller, token, cache)
    return INACTIVE


async def handle_introspect(request: web.Request) -> web.Response:
    form = await read_form(request, PARAMETERS)
    caller = await authenticate(request, form, public_allowed=False)
    settings = request.app[SETTINGS]
    db = request.app[PG]
    token = required(form, "token")
    body = await introspect(db, request.app[VERIFIER], settings, caller, token, request.app.get(INTROSPECTED))
    return json_response(body, headers=NO_STORE)


def setup_cache(app: web.Application) -> LiveCache[str, Checked] | None:
    """The per-token cache of the PostgreSQL checks (after setup_events and setup_revocation). Not
    set up without the verifier's event-fed revocation check, which it relies on for families."""
    if REVOCATIONS not in app or not isinstance(app[REVOCATIONS], RevocationCache):
        return None
    bus = app[EVENTS]
    cache: LiveCache[str, Checked] = LiveCache(
        bus, ttl=app[SETTINGS].cache_ttl_seconds, max_entries=100_000, name="introspection"
    )

    async def on_revoked(event: Event) -> None:
        jtis, families = revoked_by(event)
        for jti in jtis:
            cache.invalidate(jti)
        if families:
            cache.fence()  # entries stay: the verifier rejects these families from now on

    async def on_user(event: Event) -> None:
        cache.clear()  # a status (or name) may have changed; these events are rare

    for event_type in REVOKING_EVENTS:
        bus.subscribe(event_type, on_revoked)
    bus.subscribe("user.*", on_user)
    bus.on_reset(cache.clear)
    app[INTROSPECTED] = cache
    return cache


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/oauth2/introspect", handle_introspect)
