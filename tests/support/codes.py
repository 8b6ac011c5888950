"""Authorization codes stored by the authz service's own store (docs/contracts.md), so the
token endpoint can be tested without the authorize endpoint; plus small token-endpoint helpers."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from libs.contracts.token import SIGNING_KEYS
from libs.oauth.access_tokens import AccessTokenVerifier
from libs.oauth.keys import KeyStore
from libs.platform.config import Settings
from libs.platform.security import token_hash
from services.account import apps
from services.authz.store.codes import CodeRow, insert_code
from tests.support.factories import make_user

REDIRECT_URI = "https://client.example/cb"


async def issue_code(
    db: asyncpg.Pool,
    settings: Settings,
    *,
    client_id: str,
    user_id: int,
    redirect_uri: str,
    scope: str = "profile balance",
    code_challenge: str | None = None,
    nonce: str | None = None,
    ttl: int = 600,
) -> str:
    """Store an authorization code through the authz service's own store (the one code-row shape,
    ``services/authz/store/codes.insert_code``); returns the plain code."""
    code = secrets.token_urlsafe(32)  # as services/authz/codes.py makes them
    row = CodeRow(
        code_hash=token_hash(settings.pepper_bytes, code),
        client_id=client_id,
        user_id=user_id,
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge=code_challenge,
        code_challenge_method="S256" if code_challenge else None,
        nonce=nonce,
        auth_time=datetime.fromtimestamp(int(time.time()), UTC),  # whole seconds, as authz records it
        ttl_seconds=ttl,
    )
    async with db.acquire() as conn:
        await insert_code(conn, row)
    return code


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) as RFC 7636 4.1-4.2 make them."""
    verifier = secrets.token_urlsafe(48)[:64]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


@dataclass
class ClientApp:
    client_id: str
    client_secret: str | None
    redirect_uri: str
    user_id: int  # a user who "authorized" the app


async def make_client(
    db: asyncpg.Pool, settings: Settings, *, method: str = "client_secret_post", redirect_uri: str = REDIRECT_URI
) -> ClientApp:
    """A fresh app (through the account service's own code) and a fresh active user."""
    owner = await make_user(db)
    created = await apps.create_app(
        db, settings.pepper_bytes, owner.id, apps.NewApp("test app", "", [redirect_uri], method), max_apps=100
    )
    user = await make_user(db)
    return ClientApp(created["client_id"], created.get("client_secret"), redirect_uri, user.id)


def make_verifier(db: asyncpg.Pool, settings: Settings) -> tuple[AccessTokenVerifier, aioredis.Redis]:
    keys = KeyStore(
        db, settings.jwt_algorithm, timedelta(seconds=settings.access_token_ttl_seconds + 300), SIGNING_KEYS
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    return AccessTokenVerifier(keys, redis, settings), redis


async def post_token(
    http: aiohttp.ClientSession,
    base: str,
    data: dict[str, str] | list[tuple[str, str]] | str | bytes,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict]:
    """POST the token endpoint form-encoded; (status, headers, JSON body)."""
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"} | (headers or {})
    async with http.post(f"{base}/api/oauth2/token", data=data, headers=hdrs) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def obtain_tokens(
    http: aiohttp.ClientSession,
    base: str,
    db: asyncpg.Pool,
    settings: Settings,
    app: ClientApp,
    *,
    scope: str = "profile balance",
) -> dict:
    """A code exchanged for a token pair the guide's way (client_secret_post, PKCE for public apps)."""
    verifier, challenge = pkce_pair() if app.client_secret is None else (None, None)
    code = await issue_code(
        db,
        settings,
        client_id=app.client_id,
        user_id=app.user_id,
        redirect_uri=app.redirect_uri,
        scope=scope,
        code_challenge=challenge,
    )
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": app.redirect_uri,
        "client_id": app.client_id,
    }
    if app.client_secret:
        form["client_secret"] = app.client_secret
    if verifier:
        form["code_verifier"] = verifier
    status, _, body = await post_token(http, base, form)
    assert status == 200, body
    return body


def refresh_form(app: ClientApp, refresh_token: str, **extra: str) -> dict[str, str]:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.client_id}
    if app.client_secret:
        form["client_secret"] = app.client_secret
    return form | extra


async def userinfo_status(http: aiohttp.ClientSession, base: str, token: str) -> int:
    """The status userinfo at ``base`` answers for an access token."""
    async with http.get(f"{base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"}) as r:
        await r.read()
        return r.status


async def refresh_status(http: aiohttp.ClientSession, base: str, app: ClientApp, refresh_token: str) -> int:
    """The status the token endpoint at ``base`` answers for a refresh."""
    async with http.post(f"{base}/api/oauth2/token", data=refresh_form(app, refresh_token)) as r:
        await r.read()
        return r.status
