"""An example resource server: a paid API that charges the user's balance through the app's grant
(docs/spending.md "A resource server").

``POST /api/answer`` with ``Authorization: Bearer <the app's access token>``:

1. The token is verified here, offline, with the platform's keys (``/api/oauth2/jwks``, cached and
   fetched again for an unknown ``kid``): signature, ``typ: at+jwt``, issuer, audience, expiry
   (RFC 9068), and the ``spend`` scope.
2. The call is charged ``price`` minor units through the platform's internal quota API
   (``POST /internal/quota/spend`` with the token: the platform checks the grant, its limit, the
   balance and revocation in one transaction), with the caller's ``Idempotency-Key`` header (or a
   fresh one) so a retried call is charged once.
3. It answers 200 with the charge, or **402** when the allowance or the balance is spent (the
   platform's error, e.g. ``spend_limit_exceeded``), 401/403 for a bad token.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web

log = logging.getLogger("example.resource_server")
SCOPE = "spend"
JWKS_MIN_REFRESH_SECONDS = 30.0  # an unknown kid fetches the keys again at most this often
ERROR_RE_CHARS = set("abcdefghijklmnopqrstuvwxyz_")


@dataclass(frozen=True)
class Config:
    oauth_server: str = "http://localhost:8080"  # the platform's issuer (public base URL)
    account_internal_url: str = "http://127.0.0.1:8083"  # the account service, never the gateway
    internal_token: str = field(default="", repr=False)
    price: int = 100  # minor units per call
    port: int = 3001
    host: str = "127.0.0.1"
    audience: str = ""  # ACCESS_TOKEN_AUDIENCE of the platform; empty: the issuer

    def __post_init__(self) -> None:
        object.__setattr__(self, "oauth_server", self.oauth_server.rstrip("/"))
        object.__setattr__(self, "account_internal_url", self.account_internal_url.rstrip("/"))
        if self.price <= 0:
            raise ValueError("the price must be a positive number of minor units")


class Keys:
    """The platform's JWKS, fetched lazily and again (rate-limited) when a token names a new kid."""

    def __init__(self, config: Config, http: aiohttp.ClientSession) -> None:
        self.url = config.oauth_server + "/api/oauth2/jwks"
        self.http = http
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = 0.0

    async def get(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self.keys and time.monotonic() - self.fetched_at > JWKS_MIN_REFRESH_SECONDS:
            await self._fetch()
        return self.keys.get(kid)

    async def _fetch(self) -> None:
        self.fetched_at = time.monotonic()
        async with self.http.get(self.url) as resp:
            resp.raise_for_status()
            data = await resp.json()
        keys = {}
        for jwk in data.get("keys", []):
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk)
            except (KeyError, jwt.PyJWTError):
                continue
        self.keys = keys


def _error(status: int, error: str, description: str, challenge: bool = False) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if challenge:
        headers["WWW-Authenticate"] = f'Bearer error="{error}", scope="{SCOPE}"'
    return web.json_response({"error": error, "error_description": description}, status=status, headers=headers)


async def verify(config: Config, keys: Keys, token: str) -> dict[str, Any] | None:
    """The token's claims if it is a valid platform access token, else None (RFC 9068 4)."""
    try:
        header = jwt.get_unverified_header(token)
        key = await keys.get(str(header.get("kid", "")))
        if key is None or header.get("typ") not in ("at+jwt", "application/at+jwt"):
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            audience=config.audience or config.oauth_server,
            issuer=config.oauth_server,
            options={"require": ["exp", "iat", "sub", "jti", "client_id"]},
        )
        return claims
    except (jwt.PyJWTError, aiohttp.ClientError, ValueError):
        return None


CONFIG = web.AppKey("config", Config)
KEYS = web.AppKey("keys", Keys)
HTTP = web.AppKey("http", aiohttp.ClientSession)


async def answer(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "invalid_request", "send Authorization: Bearer <access token>", challenge=True)
    claims = await verify(config, request.app[KEYS], token.strip())
    if claims is None:
        return _error(401, "invalid_token", "the access token is not valid", challenge=True)
    if SCOPE not in str(claims.get("scope", "")).split():
        return _error(403, "insufficient_scope", "the token needs the spend scope", challenge=True)
    key = request.headers.get("Idempotency-Key") or "rs-" + secrets.token_urlsafe(16)
    body = {
        "access_token": token.strip(),
        "amount": config.price,
        "idempotency_key": key[:200],
        "description": "example resource server: one answer",
    }
    try:
        async with request.app[HTTP].post(
            config.account_internal_url + "/internal/quota/spend",
            json=body,
            headers={"Authorization": f"Bearer {config.internal_token}"},
        ) as resp:
            status, data = resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return _error(502, "temporarily_unavailable", "the platform did not answer")
    if status == 200 and isinstance(data, dict) and data.get("success"):
        charge = data["data"]
        return web.json_response(
            {"answer": 42, "charged": charge["amount_formatted"], "allowance": charge["allowance"]},
            headers={"Cache-Control": "no-store"},
        )
    message = str(data.get("message", "")) if isinstance(data, dict) else ""
    error, _, description = message.partition(": ")
    if not error or not set(error) <= ERROR_RE_CHARS:
        error, description = "server_error", message
    if status in (401, 402, 403, 409):
        return _error(status, error, description[:300], challenge=status in (401, 403))
    log.warning("the platform refused a charge: HTTP %s", status)
    return _error(502, "temporarily_unavailable", "the platform could not charge the call")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        app[HTTP] = http
        app[KEYS] = Keys(app[CONFIG], http)
        yield


def build_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=16 * 1024)
    app[CONFIG] = config
    app.cleanup_ctx.append(_client)
    app.router.add_post("/api/answer", answer)
    app.router.add_get("/healthz", healthz)
    return app
