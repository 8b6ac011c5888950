"""JWT signing keys: generating one, the current signing key, verification keys by ``kid``, JWKS.

Keys live in the token service's ``signing_keys`` table, read through the ``KeyTable`` the service
passes in (``libs/contracts/token.SIGNING_KEYS``; storing a new key is ``add_signing_key`` there).
Only the token service signs: every other verifier reads ``VERIFYING_KEYS``, whose rows carry the
public JWK and no private key, so it never loads or holds one (the one exception is the legacy
HS256, whose shared secret is the only key that verifies; docs/operations.md "Signing keys").
A key is published (JWKS) from creation and signs from ``activates_at`` (rotation: publish first,
sign later, so caches of JWKS see a key before any token carries its kid). Retired keys stop
signing but keep verifying until every token they signed has expired. Parsed key objects are
cached in-process: signing and verifying never parse PEM on the hot path.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from libs.platform.cpus import usable_cpus
from libs.platform.params import is_kid

ALGORITHMS = ("RS256", "ES256", "HS256")
log = logging.getLogger("oauth.keys")
KEYGEN_LOCK = 0x0A07_4B45
T = TypeVar("T")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any  # a cryptography private key, or bytes for HS256; None in a verifying store
    public: Any  # a cryptography public key, or bytes for HS256 (the same shared secret)
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


def _secret(stored: str) -> bytes:
    return base64.urlsafe_b64decode(stored + "=" * (-len(stored) % 4))


def _load(row: asyncpg.Record) -> SigningKey:
    """A signing key from a ``SIGNING_KEYS`` row: its private key parsed from PEM (for RSA, with
    cryptography's key checks: tens of ms per key, docs/performance.md)."""
    alg = row["alg"]
    if alg == "HS256":
        secret = _secret(row["private_pem"])
        return SigningKey(row["kid"], alg, secret, secret, row["activates_at"], row["retired_at"])
    priv = serialization.load_pem_private_key(row["private_pem"].encode(), password=None)
    return SigningKey(row["kid"], alg, priv, priv.public_key(), row["activates_at"], row["retired_at"])


def public_key_from_jwk(alg: str, jwk: dict[str, Any]) -> Any:
    """The public key of a published JWK (RFC 7517, RFC 7518 6.2/6.3) for ``alg``. Refuses a JWK
    with private members (pyjwt would load the private key), another key type or curve."""
    if "d" in jwk or alg not in ("RS256", "ES256"):
        raise ValueError(f"not a public {alg} JWK")
    key = jwt.get_algorithm_by_name(alg).from_jwk(jwk)  # checks kty (and crv for EC)
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
        return key
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError(f"not a public {alg} JWK")


def _load_public(row: asyncpg.Record) -> SigningKey:
    """A verification key from a ``VERIFYING_KEYS`` row: the public key from its published JWK,
    no private key parsed or held (``private`` is None). HS256 has no public key: its shared
    secret verifies."""
    alg = row["alg"]
    if alg == "HS256":
        public: Any = _secret(row["shared_secret"])
    else:
        public = public_key_from_jwk(alg, _as_dict(row["public_jwk"]))
    return SigningKey(row["kid"], alg, None, public, row["activates_at"], row["retired_at"])


class VerifyingOnly(RuntimeError):
    """Signing with a key or a KeyStore that only verifies (a ``KeyTable`` with ``signs=False``):
    a programming error. Only the token service signs."""


@dataclass(frozen=True)
class KeyTable:
    """Where the keys are read and the first key is made: the token service's ``signing_keys``
    table, reached through ``libs/contracts/token.SIGNING_KEYS`` (the token service, which signs)
    or ``VERIFYING_KEYS`` (every other verifier) (this layer runs no SQL on a service's table;
    the service passes this in)."""

    signs: bool  # True: rows carry ``private_pem``; False: ``public_jwk`` and HS256's ``shared_secret``
    rows: Callable[[asyncpg.Pool, timedelta], Awaitable[Sequence[asyncpg.Record]]]  # signing or verifying keys
    exists: Callable[[asyncpg.Pool, str, timedelta], Awaitable[bool]]  # does this kid still verify?
    ensure: Callable[[asyncpg.Pool, str], Awaitable[None]]  # create the first key of an algorithm


@functools.lru_cache(maxsize=64)
def _jose_header(alg: str, kid: str, typ: str) -> bytes:
    return _b64(orjson.dumps({"alg": alg, "kid": kid, "typ": typ})).encode()


_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def jws_signature(key: SigningKey, signing_input: bytes) -> bytes:
    """The JWS Signature of ``signing_input`` (RFC 7518 3.2 HS256, 3.3 RS256, 3.4 ES256), with
    cryptography's key objects directly: what pyjwt's ``Algorithm.sign`` does, without building its
    padding and hash objects per call. ES256's DER signature becomes the fixed-size R || S of RFC
    7518 3.4."""
    if key.private is None:
        raise VerifyingOnly(f"key {key.kid} only verifies: it was loaded without its private key")
    if key.alg == "RS256":
        return key.private.sign(signing_input, _PKCS1V15, _SHA256)  # type: ignore[no-any-return]
    if key.alg == "ES256":
        r, s = decode_dss_signature(key.private.sign(signing_input, _ECDSA_SHA256))
        size = (key.private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if key.alg == "HS256":
        return hmac.digest(key.private, signing_input, "sha256")
    raise ValueError(f"unsupported algorithm {key.alg}")


def sign_jwt(key: SigningKey, claims: dict[str, Any], typ: str) -> str:
    """A compact JWS (RFC 7515) of ``claims`` signed with ``key``: the same bytes pyjwt's encode
    makes, without its per-call header merging and JSON re-encoding (the header is cached per key)."""
    signing_input = _jose_header(key.alg, key.kid, typ) + b"." + _b64(orjson.dumps(claims)).encode()
    return (signing_input + b"." + _b64(jws_signature(key, signing_input)).encode()).decode()


def signing_threads(setting: int) -> int:
    """Threads of the signing pool for ``SIGNING_THREADS`` (-1: one per CPU this process may use,
    its container's CPU limit included: libs/platform/cpus.py)."""
    return setting if setting >= 0 else usable_cpus()


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class SigningPool:
    """The threads RS256 signatures run in (docs/performance.md "Signing off the event loop"):
    pyca/cryptography releases the GIL while it signs, so with them one process signs on every core
    while the event loop goes on parsing and answering.

    A lighter hand-off than ``loop.run_in_executor``: a job goes on a queue, a thread runs it and
    hands the outcome back with one ``call_soon_threadsafe``, without the concurrent.futures Future,
    work item and the two futures chained both ways per call (docs/performance.md, round two)."""

    def __init__(self, threads: int) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"jws-sign_{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def run(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """``job()`` in one of the threads; await the returned future for its result or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, job))
        return future

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            loop, future, job = item
            if future.cancelled():  # its request is gone: nobody will read the signature
                continue
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def shutdown(self) -> None:
        """Cancel the jobs not started yet and let the threads end (called on the event loop; the
        threads are daemons, so exiting does not wait for a signature in progress)."""
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        for _ in self._threads:
            self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def signing_pool(setting: int) -> SigningPool | None:
    """The signing threads for ``SIGNING_THREADS`` (signing_threads); None (``SIGNING_THREADS=0``):
    sign on the event loop."""
    threads = signing_threads(setting)
    return SigningPool(threads) if threads > 0 else None


# Signatures too cheap to hand to a thread: ES256 signs in about 0.05 ms, about what the hand-off
# to a thread and back costs; HS256 is a hash.
INLINE_ALGORITHMS = frozenset({"HS256", "ES256"})


class KeyStore:
    """In-process cache of the signing keys, reloaded periodically and on an unknown ``kid``.
    ``signer``: the thread pool that signs (signing_pool), or None to sign on the event loop.
    Over a verifying ``KeyTable`` (``signs=False``) it holds public keys only and refuses to sign
    (VerifyingOnly)."""

    RELOAD_SECONDS = 30.0
    UNKNOWN_KID_TTL = 5.0  # how long a kid that is not in the database stays "unknown"
    UNKNOWN_KID_LOOKUPS_PER_SECOND = 20  # bounds the database work random kids can cause

    def __init__(
        self,
        pool: asyncpg.Pool,
        alg: str,
        retire_grace: timedelta,
        table: KeyTable,
        signer: SigningPool | None = None,
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
            parse = _load if self.table.signs else _load_public
            keys = {}
            for r in rows:
                cached = self._keys.get(r["kid"])
                keys[r["kid"]] = (
                    cached
                    if cached and cached.retired_at == r["retired_at"] and cached.activates_at == r["activates_at"]
                    else parse(r)
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
        if not self.table.signs:
            raise VerifyingOnly("this KeyStore only verifies (VERIFYING_KEYS): only the token service signs")
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
        return await self.run_signing(functools.partial(sign_jwt, key, claims, typ), key)

    async def run_signing(self, job: Callable[[], T], *keys: SigningKey) -> T:
        """``job``, which signs with ``keys``, in ONE hand-off to the signer pool (all the
        signatures of a response together), or on the event loop when there is no pool or every
        key's algorithm is too cheap to hand off (INLINE_ALGORITHMS)."""
        if self.signer is None or all(k.alg in INLINE_ALGORITHMS for k in keys):
            return job()
        return await self.signer.run(job)

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
