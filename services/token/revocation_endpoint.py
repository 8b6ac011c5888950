"""``POST /api/oauth2/revoke`` (RFC 7009): a client revokes one of its own tokens.

- Client authentication exactly as at the token endpoint (client_auth.py: client_secret_post or
  client_secret_basic; a public client sends its ``client_id``), form parsing by form.py.
- ``token`` is required. ``token_type_hint`` (``access_token`` | ``refresh_token``) decides which
  kind is looked up first; the other is searched too when the first finds nothing (RFC 7009 2.1).
  Another value is ignored as a hint.
- A refresh token revokes its whole family: the family's refresh tokens and every access token
  issued from the same grant (RFC 7009 2.1 "SHOULD also invalidate all access tokens based on the
  same authorization grant"); the user's consent (the grant) stays.
- An access token (a JWT) is checked like every access token (signature by ``kid``, issuer,
  audience; an expired one needs no revoking) and its ``jti`` is revoked, alone.
- 200 with an empty body for everything that is not a client error: revoked now, already revoked,
  unknown, expired, malformed, and *another client's* token, which is left untouched (the caller
  learns nothing about it).
- Every revocation is recorded in PostgreSQL with a ``token.revoked`` event in the same
  transaction, written to Redis before the answer, and published before the answer (settle).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import jwt
from aiohttp import web

from libs.oauth.access_tokens import KEYS, unverified_header
from libs.oauth.clients import Client
from libs.oauth.errors import OAuthError
from libs.oauth.revocation import mark_revoked_safely, revoke_access_token
from libs.oauth.vocabulary import NO_STORE, REFRESH_PREFIX
from libs.platform.params import is_kid
from libs.platform.security import token_hash
from libs.platform.web import PG, REDIS, SETTINGS

from . import store
from .client_auth import authenticate
from .families import revoke_family
from .form import read_form, required

log = logging.getLogger("oauth.token")

PARAMETERS = frozenset({"token", "token_type_hint", "client_id", "client_secret"})
MAX_TOKEN_CHARS = 8192
HINTS = ("access_token", "refresh_token")


async def _revoke_refresh(request: web.Request, client: Client, token: str) -> bool | None:
    """True: revoked (or already), False: found but not the caller's, None: not a refresh token."""
    if not token.startswith(REFRESH_PREFIX + "_") or len(token) > 256:
        return None
    app = request.app
    settings = app[SETTINGS]
    row = await store.find_refresh_owner(app[PG], token_hash(settings.pepper_bytes, token))
    if row is None:
        return None
    if row["client_id"] != client.client_id:
        log.warning("revocation of another client's refresh token refused", extra={"client_id": client.client_id})
        return False
    await revoke_family(app[PG], app[REDIS], settings, row["family_id"], "revoked_by_client")
    return True


def _our_kid(token: str) -> str | None:
    """The ``kid`` of an access-token JWT (None if ``token`` does not look like one of ours): read
    the way every verifier reads it (libs/oauth/access_tokens.unverified_header), and checked
    before any lookup (libs/platform/params.is_kid)."""
    if token.count(".") != 2:
        return None
    try:
        header = unverified_header(token)
    except OAuthError:
        return None
    kid = header.get("kid")
    if not is_kid(kid) or header.get("typ") not in ("at+jwt", "application/at+jwt"):
        return None
    return kid


async def _revoke_access(request: web.Request, client: Client, token: str) -> bool | None:
    """True: revoked (or already), False: found but not the caller's, None: not a live access token."""
    app = request.app
    settings = app[SETTINGS]
    keys = app[KEYS]
    kid = _our_kid(token)
    if kid is None:
        return None
    signing = await keys.verification_key(kid)
    if signing is None:
        return None
    try:
        claims = jwt.decode(
            token,
            signing.public,
            algorithms=[signing.alg],
            audience=settings.resource_audience,
            issuer=settings.issuer,
            options={"require": ["exp", "iat", "sub", "jti", "client_id", "iss", "aud"]},
            leeway=5,
        )
    except jwt.PyJWTError:  # expired (nothing left to revoke), forged, not ours
        return None
    if claims["client_id"] != client.client_id:
        log.warning("revocation of another client's access token refused", extra={"client_id": client.client_id})
        return False
    sub = str(claims["sub"])
    jti = str(claims["jti"])
    async with app[PG].acquire() as conn, conn.transaction():
        await revoke_access_token(
            conn,
            jti=jti,
            family_id=claims.get("fam"),
            client_id=client.client_id,
            user_id=int(sub) if sub.isdigit() else None,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            reason="revoked_by_client",
        )
    await mark_revoked_safely(app[REDIS], settings, jtis=[jti])
    return True


async def handle_revoke(request: web.Request) -> web.Response:
    form = await read_form(request, PARAMETERS)
    client = await authenticate(request, form)
    token = required(form, "token")
    if len(token) <= MAX_TOKEN_CHARS:
        order = [_revoke_access, _revoke_refresh]
        if form.get("token_type_hint") == "refresh_token":
            order.reverse()
        for attempt in order:
            if await attempt(request, client, token) is not None:
                break
    return web.Response(status=200, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/oauth2/revoke", handle_revoke)
