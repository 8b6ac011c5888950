"""JWT access tokens (RFC 9068): minting (token service) and verification (every resource endpoint).

Claims: iss, sub, aud, exp, iat, jti, client_id, scope, and ``fam``: the token family (everything
issued from one authorization code) so revoking a grant or a replayed code rejects its access tokens
without listing them. Header: ``typ: at+jwt`` and ``kid``.

Revocation state is shared in Redis (``revoked:jti:<jti>`` and ``revoked:fam:<family>``, kept for
one access-token lifetime); the token service writes it in the same request that revokes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import jwt
import orjson
import redis.asyncio as aioredis
from aiohttp import web

from libs.oauth.errors import InsufficientScope, InvalidBearerRequest, InvalidToken, MissingToken
from libs.platform.config import Settings
from libs.platform.params import is_kid
from libs.platform.redis import key
from libs.platform.web import PG, REDIS, SETTINGS

from .keys import KeyStore, KeyTable, signing_pool


class RevocationCheck(Protocol):
    """How a verifier asks whether a token was revoked (libs/oauth/revocation.RevocationCache:
    in-process memory invalidated by events, Redis, PostgreSQL when Redis is down)."""

    async def is_revoked(self, jti: str, family: str | None) -> bool: ...


REVOCATIONS: web.AppKey[RevocationCheck] = web.AppKey("revocations")


@dataclass(frozen=True)
class AccessToken:
    sub: str
    user_id: int | None  # None for client_credentials tokens
    client_id: str
    scopes: frozenset[str]
    jti: str
    family: str | None
    exp: int
    iat: int
    claims: dict[str, Any]


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read only to pick the key by ``kid``: just the first segment is decoded.
    (pyjwt's get_unverified_header checks all three segments character by character in Python, and
    jwt.decode does it again: that was a quarter of userinfo's CPU.) jwt.decode then checks the
    whole token strictly, header included."""
    head, dot, _ = token.partition(".")
    if not dot or len(head) > 1024:
        raise InvalidToken("The access token is malformed")
    try:
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:  # binascii.Error, orjson.JSONDecodeError, non-ASCII text
        raise InvalidToken("The access token is malformed") from None
    if not isinstance(header, dict):
        raise InvalidToken("The access token is malformed")
    return header


def new_jti() -> str:
    """A fresh ``jti``: 128 bits from the OS CSPRNG as 32 hex digits (one ``os.urandom`` call;
    ``uuid4().hex`` had the same shape with 122 random bits and cost four times as much)."""
    return os.urandom(16).hex()


def access_claims(
    settings: Settings,
    *,
    sub: str,
    client_id: str,
    scope: str,
    family: str | None,
    jti: str,
    now: int,
    ttl: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of an access token (RFC 9068 2.2), ``fam`` when it belongs to a token family."""
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": sub,
        "aud": settings.resource_audience,
        "exp": now + (ttl or settings.access_token_ttl_seconds),
        "iat": now,
        "nbf": now,
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
    }
    if family:
        claims["fam"] = family
    if extra:
        claims.update(extra)
    return claims


async def mint(
    keys: KeyStore,
    settings: Settings,
    *,
    sub: str,
    client_id: str,
    scope: str,
    family: str | None,
    ttl: int | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """An access token signed with the current key (KeyStore.sign), and its claims."""
    claims = access_claims(
        settings,
        sub=sub,
        client_id=client_id,
        scope=scope,
        family=family,
        jti=new_jti(),
        now=int(time.time()),
        ttl=ttl,
        extra=extra,
    )
    token = await keys.sign(claims, "at+jwt")
    return token, claims


def revoked_jti_key(settings: Settings, jti: str) -> str:
    return key(settings, "revoked", "jti", jti)


def revoked_family_key(settings: Settings, family: str) -> str:
    return key(settings, "revoked", "fam", family)


async def mark_revoked(
    redis: aioredis.Redis,
    settings: Settings,
    *,
    jtis: Sequence[str] = (),
    families: Sequence[str] = (),
) -> None:
    """Record revocations for every verifier (kept as long as an access token can live)."""
    ttl = settings.access_token_ttl_seconds + 60
    async with redis.pipeline(transaction=False) as pipe:
        for j in jtis:
            pipe.set(revoked_jti_key(settings, j), b"1", ex=ttl)
        for f in families:
            pipe.set(revoked_family_key(settings, f), b"1", ex=ttl)
        await pipe.execute()


LEEWAY_SECONDS = 5


class AccessTokenVerifier:
    """Verifies access tokens (signature, claims) and asks the revocation check on EVERY call.

    Verified tokens are remembered in a bounded in-process map keyed by the SHA-256 of the token
    (``verified_max`` entries, oldest out; off with ``CACHE_TTL_SECONDS=0``), so a token presented
    again costs a hash and a dictionary lookup instead of a signature check and pyjwt's decoding
    (docs/performance.md). What is remembered never changes: a token's signature and claims. What
    can change is checked again on every hit: expiry, that its key is still known (a key deleted
    after its retirement stops verifying its tokens at once), and revocation, through the same
    event-fed, lease-guarded RevocationCache (or Redis) as a token seen for the first time. A
    revoked token is therefore refused at once, cached or not."""

    def __init__(
        self,
        keys: KeyStore,
        redis: aioredis.Redis,
        settings: Settings,
        revocations: RevocationCheck | None = None,
        verified_max: int = 20_000,
    ) -> None:
        self.keys = keys
        self.redis = redis
        self.settings = settings
        self.revocations = revocations  # None: Redis on every call
        self.verified_max = verified_max if settings.cache_ttl_seconds > 0 else 0
        self._verified: OrderedDict[bytes, tuple[str, AccessToken]] = OrderedDict()  # sha256 -> (kid, token)

    async def verify(self, token: str) -> AccessToken:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest() if self.verified_max else b""
        remembered = self._verified.get(digest) if digest else None
        if remembered is not None:
            kid, at = remembered
            if at.exp + LEEWAY_SECONDS > time.time() and self.keys.knows(kid):
                if await self._revoked(at.jti, at.family):
                    raise InvalidToken("The access token was revoked")
                return at
            self._verified.pop(digest, None)  # expired or its key gone: the full check says why
        at, kid = await self._verify_fully(token)
        if digest:
            if len(self._verified) >= self.verified_max:
                self._verified.popitem(last=False)
            self._verified[digest] = (kid, at)
        return at

    async def _verify_fully(self, token: str) -> tuple[AccessToken, str]:
        header = unverified_header(token)
        kid = header.get("kid")
        # The kid is checked before it is looked up (libs/platform/params.py): a NUL or other
        # control character in it would otherwise reach PostgreSQL as an invalid string.
        if not is_kid(kid) or header.get("typ") not in ("at+jwt", "application/at+jwt"):
            raise InvalidToken("The access token is malformed")
        signing = await self.keys.verification_key(kid)
        if signing is None:
            raise InvalidToken("The access token was signed by an unknown key", detail=f"kid {kid} is not known")
        if header.get("alg") != signing.alg:
            raise InvalidToken("The access token is malformed")
        try:
            claims = jwt.decode(
                token,
                signing.public,
                algorithms=[signing.alg],
                audience=self.settings.resource_audience,
                issuer=self.settings.issuer,
                options={"require": ["exp", "iat", "sub", "jti", "client_id", "iss", "aud"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The access token expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken("The access token is invalid", detail=f"{type(exc).__name__}: {exc}") from None
        family = claims.get("fam")
        if await self._revoked(str(claims["jti"]), family):
            raise InvalidToken("The access token was revoked")
        sub = str(claims["sub"])
        at = AccessToken(
            sub=sub,
            user_id=int(sub) if sub.isdigit() else None,
            client_id=str(claims["client_id"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            jti=str(claims["jti"]),
            family=family,
            exp=int(claims["exp"]),
            iat=int(claims["iat"]),
            claims=claims,
        )
        return at, kid

    async def _revoked(self, jti: str, family: str | None) -> bool:
        if self.revocations is not None:
            return await self.revocations.is_revoked(jti, family)
        names = [revoked_jti_key(self.settings, jti)]
        if family:
            names.append(revoked_family_key(self.settings, family))
        return any(await self.redis.mget(names))


def bearer_from(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750 2.1), else the RFC 6750 3.1 error."""
    header = request.headers.get("Authorization")
    if not header:
        raise MissingToken()
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value or len(value) > 8192:
        raise InvalidBearerRequest()
    return value


def require_scope(token: AccessToken, *needed: str) -> None:
    """403 ``insufficient_scope`` unless the token carries at least one of ``needed``."""
    if needed and not token.scopes.intersection(needed):
        raise InsufficientScope(" ".join(needed))


KEYS = web.AppKey("keys", KeyStore)
VERIFIER = web.AppKey("verifier", AccessTokenVerifier)


def setup_tokens(
    app: web.Application,
    keys: KeyTable,
    *,
    revocations: RevocationCheck | None = None,
    create_first_key: bool = False,
    then: Callable[[web.Application, KeyStore], Awaitable[None]] | None = None,
) -> None:
    """Give ``app`` a KeyStore over ``keys`` as ``app[KEYS]`` and an AccessTokenVerifier
    (``app[VERIFIER]``, checking ``revocations`` when given, else Redis) once its Postgres and Redis
    are up; ``then`` runs right after, with the loaded KeyStore (e.g. the token service's ID-token
    keys). The service that signs (``create_first_key``, ``libs/contracts/token.SIGNING_KEYS``) gets
    the signing thread pool (SIGNING_THREADS, docs/performance.md); a service that only verifies
    passes ``VERIFYING_KEYS`` and never loads a private key."""
    if create_first_key and not keys.signs:
        raise ValueError("create_first_key needs a KeyTable that signs (SIGNING_KEYS)")

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        signer = None
        if create_first_key:
            await keys.ensure(app[PG], settings.jwt_algorithm)
            signer = signing_pool(settings.signing_threads)
        ttl = timedelta(seconds=settings.access_token_ttl_seconds + 300)
        store = KeyStore(app[PG], settings.jwt_algorithm, ttl, keys, signer)
        await store.load()
        app[KEYS] = store
        app[VERIFIER] = AccessTokenVerifier(store, app[REDIS], settings, revocations)
        try:
            if then is not None:
                await then(app, store)
            yield
        finally:
            if signer is not None:
                signer.shutdown()

    app.cleanup_ctx.append(ctx)


async def authenticate(request: web.Request, *scopes: str) -> AccessToken:
    """The verified access token of this request, with one of ``scopes`` (RFC 6750 errors otherwise)."""
    token = await request.app[VERIFIER].verify(bearer_from(request))
    require_scope(token, *scopes)
    return token
