"""OpenID Connect id_tokens (OIDC Core 2, 3.1.3.6, 3.1.3.7, 12.2), issued by the token endpoint when
the granted scope contains ``openid``.

Claims: iss, sub (the user id, as in userinfo and the access token), aud = azp = the client_id,
iat, exp, auth_time (when the user entered their password: always present, so ``max_age`` can be
checked), nonce (the authorization request's, on the code exchange only: OIDC 12.2 says a refreshed
id_token SHOULD NOT carry it), at_hash (of the access token issued with it), and with the ``email``
scope, email and email_verified (false: addresses are not verified). No ``acr``: there is one
authentication method (password), and no acr_values are supported.

Signing: the platform's own keys, published in the JWKS, header ``typ: JWT`` with the ``kid``. An
id_token is never accepted as an access token (AccessTokenVerifier requires ``typ: at+jwt``, and the
audience differs). With JWT_ALGORITHM=RS256 or ES256 the id_token uses the same key as the access
tokens. With the legacy HS256 it does not: OIDC would have HS256 id_tokens keyed with the
client_secret, which we keep only as a hash, and an id_token signed with the platform's HS256 secret
could be verified by nobody but us. So in that mode id_tokens are signed with an RS256 key (created
on first start, rotated with ``oauthctl keys add --alg RS256``), and discovery advertises RS256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from libs.contracts.token import SIGNING_KEYS
from libs.oauth.keys import KeyStore, SigningKey, sign_jwt
from libs.platform.config import Settings
from libs.platform.web import PG, SETTINGS

from .key_admin import ID_TOKEN_ALGORITHMS, verify_window

ID_KEYS = web.AppKey("id_token_keys", KeyStore)
FALLBACK_ALGORITHM = "RS256"


def id_token_algorithm(settings: Settings) -> str:
    return settings.jwt_algorithm if settings.jwt_algorithm in ID_TOKEN_ALGORITHMS else FALLBACK_ALGORITHM


@dataclass(frozen=True)
class Authentication:
    """What the id_token says about the user's login and who they are."""

    auth_time: datetime | None
    nonce: str | None
    email: str | None


def token_hash_claim(value: str) -> str:
    """OIDC Core 3.1.3.6 at_hash: the left half of SHA-256 (RS256, ES256) of the ASCII token, base64url."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode("ascii").rstrip("=")


def id_token_claims(
    settings: Settings, *, sub: str, client_id: str, scope: str, auth: Authentication, now: int
) -> dict[str, Any]:
    """The id_token's claims but ``at_hash``, which sign_with_id_token adds once the access token
    it describes is signed."""
    scopes = scope.split()
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": sub,
        "aud": client_id,
        "azp": client_id,
        "iat": now,
        "exp": now + settings.access_token_ttl_seconds,
    }
    if auth.auth_time is not None:
        claims["auth_time"] = int(auth.auth_time.timestamp())
    if auth.nonce is not None:
        claims["nonce"] = auth.nonce
    if "email" in scopes and auth.email is not None:
        claims["email"] = auth.email
        claims["email_verified"] = False
    return claims


async def sign_with_id_token(
    keys: KeyStore, id_keys: KeyStore | None, access_claims: dict[str, Any], id_claims: dict[str, Any] | None
) -> tuple[str, str | None]:
    """The access token, and with ``id_claims`` (and ``id_keys``) the id_token whose ``at_hash`` is
    that access token's, both signed in ONE hand-off to the signing threads (KeyStore.run_signing)
    rather than one per signature."""
    key = await keys.signing_key()
    if id_claims is None or id_keys is None:
        return await keys.run_signing(functools.partial(sign_jwt, key, access_claims, "at+jwt"), key), None
    id_key = await id_keys.signing_key()
    return await keys.run_signing(
        functools.partial(sign_access_and_id_token, key, access_claims, id_key, id_claims), key, id_key
    )


def sign_access_and_id_token(
    key: SigningKey, access_claims: dict[str, Any], id_key: SigningKey, id_claims: dict[str, Any]
) -> tuple[str, str]:
    access = sign_jwt(key, access_claims, "at+jwt")
    return access, sign_jwt(id_key, {**id_claims, "at_hash": token_hash_claim(access)}, "JWT")


async def load_id_keys(app: web.Application, access_keys: KeyStore) -> None:
    """``app[ID_KEYS]``: the access tokens' KeyStore, or an RS256 one in the legacy HS256 mode
    (``setup_tokens(then=load_id_keys)``, which hands over the loaded access-token KeyStore)."""
    settings = app[SETTINGS]
    alg = id_token_algorithm(settings)
    if alg == settings.jwt_algorithm:
        app[ID_KEYS] = access_keys
        return
    await SIGNING_KEYS.ensure(app[PG], alg)
    store = KeyStore(app[PG], alg, verify_window(settings), SIGNING_KEYS, access_keys.signer)
    await store.load()
    await access_keys.load()  # publish the new key in the JWKS now, not at the next reload
    app[ID_KEYS] = store
