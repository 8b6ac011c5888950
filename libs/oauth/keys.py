"""JWT signing keys: generating one, the current signing key, verification keys by ``kid``, JWKS.

Keys live in the token service's ``signing_keys`` table, read through the ``KeyTable`` the service
passes in (``libs/contracts/token.SIGNING_KEYS``; storing a new key is ``add_signing_key`` there).
A key is published (JWKS) from creation and signs from ``activates_at`` (rotation: publish first,
sign later, so caches of JWKS see a key before any token carries its kid). Retired keys stop
signing but keep verifying until every token they signed has expired. Parsed key objects are
cached in-process: signing and verifying never parse PEM on the hot path.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from libs.platform.cpus import usable_cpus
from libs.platform.params import is_kid

ALGORITHMS = ("RS256", "ES256", "HS256")
log = logging.getLogger("oauth.keys")
KEYGEN_LOCK = 0x0A07_4B45


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any  # a cryptography private key, or bytes for HS256
    public: Any  # a cryptography public key, or bytes for HS256
    activates_at: datetime
    retired_at: datetime | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def generate(alg: str) -> tuple[str, str, dict[str, Any] | None]:
    """A new key: (kid, private material, public JWK or None for HS256)."""
    kid = _b64(secrets.token_bytes(12))
    if alg == "RS256":
        priv: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        priv = ec.generate_private_key(ec.SECP256R1())
    elif alg == "HS256":
        return kid, _b64(secrets.token_bytes(32)), None
    else:
        raise ValueError(f"unsupported algorithm {alg}; use one of {', '.join(ALGORITHMS)}")
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(priv.public_key()))
    jwk.pop("key_ops", None)  # RFC 7517 4.3: "use" and "key_ops" should not both be present
    jwk.update(kid=kid, alg=alg, use="sig")
    return kid, pem, jwk


def _as_dict(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def _load(row: asyncpg.Record) -> SigningKey:
    alg = row["alg"]
    if alg == "HS256":
        secret = base64.urlsafe_b64decode(row["private_pem"] + "=" * (-len(row["private_pem"]) % 4))
        return SigningKey(row["kid"], alg, secret, secret, row["activates_at"], row["retired_at"])
    priv = serialization.load_pem_private_key(row["private_pem"].encode(), password=None)
    return SigningKey(row["kid"], alg, priv, priv.public_key(), row["activates_at"], row["retired_at"])


@dataclass(frozen=True)
class KeyTable:
    """Where the keys are read and the first key is made: the token service's ``signing_keys``
    table, reached through ``libs/contracts/token.SIGNING_KEYS`` (this layer runs no SQL on a
    service's table; the service passes this in)."""

    rows: Callable[[asyncpg.Pool, timedelta], Awaitable[Sequence[asyncpg.Record]]]  # signing or verifying keys
    exists: Callable[[asyncpg.Pool, str, timedelta], Awaitable[bool]]  # does this kid still verify?
    ensure: Callable[[asyncpg.Pool, str], Awaitable[None]]  # create the first key of an algorithm


@functools.lru_cache(maxsize=64)
def _jose_header(alg: str, kid: str, typ: str) -> bytes:
    return _b64(orjson.dumps({"alg": alg, "kid": kid, "typ": typ})).encode()


def sign_jwt(key: SigningKey, claims: dict[str, Any], typ: str) -> str:
    """A compact JWS (RFC 7515) of ``claims`` signed with ``key``: the same bytes pyjwt's encode
    makes, without its per-call header merging and JSON re-encoding (the header is cached per key)."""
    signing_input = _jose_header(key.alg, key.kid, typ) + b"." + _b64(orjson.dumps(claims)).encode()
    signature = jwt.get_algorithm_by_name(key.alg).sign(signing_input, key.private)
    return (signing_input + b"." + _b64(signature).encode()).decode()


def signing_threads(setting: int) -> int:
    """Threads of the signing pool for ``SIGNING_THREADS`` (-1: one per CPU this process may use,
    its container's CPU limit included: libs/platform/cpus.py)."""
    return setting if setting >= 0 else usable_cpus()


def signing_pool(setting: int) -> ThreadPoolExecutor | None:
    """The small thread pool RS256 signatures run in (docs/performance.md "Signing off the event
    loop"): pyca/cryptography releases the GIL while it signs, so with it one process signs on every
    core while the event loop goes on parsing and answering. None (``SIGNING_THREADS=0``): sign on
    the event loop."""
    threads = signing_threads(setting)
    return ThreadPoolExecutor(threads, thread_name_prefix="jws-sign") if threads > 0 else None


# Signatures too cheap to hand to a thread: ES256 signs in about 0.05 ms, about what the hand-off
# to a thread and back costs; HS256 is a hash.
INLINE_ALGORITHMS = frozenset({"HS256", "ES256"})


class KeyStore:
    """In-process cache of the signing keys, reloaded periodically and on an unknown ``kid``.
    ``signer``: the thread pool that signs (signing_pool), or None to sign on the event loop."""

    RELOAD_SECONDS = 30.0
    UNKNOWN_KID_TTL = 5.0  # how long a kid that is not in the database stays "unknown"
    UNKNOWN_KID_LOOKUPS_PER_SECOND = 20  # bounds the database work random kids can cause

    def __init__(
        self,
        pool: asyncpg.Pool,
        alg: str,
        retire_grace: timedelta,
        table: KeyTable,
        signer: ThreadPoolExecutor | None = None,
    ) -> None:
        self.pool = pool
        self.table = table
        self.signer = signer
        self.alg = alg
        self.retire_grace = retire_grace  # how long a retired key keeps verifying
        self._keys: dict[str, SigningKey] = {}
        self._jwks: list[dict[str, Any]] = []
        self._loaded_at = 0.0
        self._unknown: dict[str, float] = {}  # kid -> until (monotonic)
        self._lookup_window = (0.0, 0)  # (second, lookups in it)
        self._lock = asyncio.Lock()
        self._reload_task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        async with self._lock:
            rows = await self.table.rows(self.pool, self.retire_grace)
            keys = {}
            for r in rows:
                cached = self._keys.get(r["kid"])
                keys[r["kid"]] = (
                    cached
                    if cached and cached.retired_at == r["retired_at"] and cached.activates_at == r["activates_at"]
                    else _load(r)
                )
            self._keys = keys
            self._jwks = [_as_dict(r["public_jwk"]) for r in rows if r["public_jwk"] is not None]
            self._loaded_at = time.monotonic()

    async def _fresh(self) -> None:
        if not self._loaded_at:  # never loaded: nothing to serve yet
            await self.load()
        else:
            self._reload_if_stale()

    def _reload_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at > self.RELOAD_SECONDS and self._reload_task is None:
            # Stale: reload in the background and serve the cached keys meanwhile. Waiting here
            # could deadlock the pool: when every pooled connection is held by a caller that
            # waits for a key, this reload would wait for a free connection forever while they
            # wait for it (found by `make bench`; docs/performance.md).
            self._reload_task = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        try:
            await self.load()
        except Exception as exc:  # keep serving the cached keys; try again in a few seconds
            log.warning("signing keys reload failed", extra={"error": type(exc).__name__})
            self._loaded_at = time.monotonic() - self.RELOAD_SECONDS + 5.0
        finally:
            self._reload_task = None

    def _active(self) -> list[SigningKey]:
        # retired_at may lie in the future: a rotation retires the old key when the new one activates.
        now = datetime.now(UTC)
        return [
            k
            for k in self._keys.values()
            if k.alg == self.alg and (k.retired_at is None or k.retired_at > now) and k.activates_at <= now
        ]

    async def signing_key(self) -> SigningKey:
        """The newest active key of the configured algorithm."""
        await self._fresh()
        candidates = self._active()
        if not candidates:  # e.g. a rotated key just became active
            await self.load()
            candidates = self._active()
        if not candidates:
            raise RuntimeError(f"no active {self.alg} signing key; run 'oauthctl keys add --alg {self.alg}'")
        return max(candidates, key=lambda k: k.activates_at)

    async def sign(self, claims: dict[str, Any], typ: str) -> str:
        """``claims`` signed with the current signing key (sign_jwt), in the signer pool if any."""
        key = await self.signing_key()
        if self.signer is None or key.alg in INLINE_ALGORITHMS:
            return sign_jwt(key, claims, typ)
        return await asyncio.get_running_loop().run_in_executor(self.signer, sign_jwt, key, claims, typ)

    def knows(self, kid: str) -> bool:
        """Is ``kid`` among the loaded keys (signing or still verifying)? No I/O; a stale set of
        keys is reloaded in the background, as for verification_key."""
        self._reload_if_stale()
        return kid in self._keys

    async def verification_key(self, kid: str) -> SigningKey | None:
        if not is_kid(kid):  # never looked up: the caller should have checked it (params.is_kid)
            return None
        await self._fresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        # A kid we have not seen: a key another instance just created, or garbage. Look it up by
        # primary key, remembering misses for a few seconds and capping lookups per second.
        now = time.monotonic()
        if self._unknown.get(kid, 0.0) > now or len(kid) > 64:
            return None
        second, count = self._lookup_window
        if int(now) != second:
            second, count = int(now), 0
        if count >= self.UNKNOWN_KID_LOOKUPS_PER_SECOND:
            return None
        self._lookup_window = (second, count + 1)
        exists = await self.table.exists(self.pool, kid, self.retire_grace)
        if exists:
            await self.load()
            return self._keys.get(kid)
        if len(self._unknown) > 1000:
            self._unknown = {k: t for k, t in self._unknown.items() if t > now}
        self._unknown[kid] = now + self.UNKNOWN_KID_TTL
        return None

    async def jwks(self) -> dict[str, Any]:
        await self._fresh()
        return {"keys": list(self._jwks)}
