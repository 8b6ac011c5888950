"""A verifier that does not sign (``libs/contracts/token.VERIFYING_KEYS``) reads no private key and
holds only public keys built from the published JWKs (HS256, a shared secret, excepted), verifies
what the signing store signs, picks up rotations, and refuses to sign (docs/operations.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from libs.contracts import token as contract
from libs.oauth.access_tokens import setup_tokens
from libs.oauth.keys import (
    KeyStore,
    KeyTable,
    VerifyingOnly,
    _as_dict,
    _load,
    _load_public,
    generate,
    public_key_from_jwk,
    sign_jwt,
)

PUBLIC_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)
PRIVATE_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)


class Recorder:
    """Stands in for the pool: remembers the SQL it is given."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.sql.append(sql)
        return []


async def test_the_verifying_query_selects_no_private_key() -> None:
    db = Recorder()
    await contract.verifying_key_rows(db, timedelta(hours=1))  # type: ignore[arg-type]
    await contract.signing_key_rows(db, timedelta(hours=1))  # type: ignore[arg-type]
    verifying, signing = (" ".join(s.split()) for s in db.sql)
    # private_pem only as HS256's shared secret, the one key that verifies HMAC (RFC 7518 3.2)
    assert verifying.split(" FROM ")[0] == (
        "SELECT kid, alg, public_jwk, activates_at, retired_at,"
        " CASE WHEN alg = 'HS256' THEN private_pem END AS shared_secret"
    )
    assert verifying.count("private_pem") == 1
    assert "private_pem" in signing.split(" FROM ")[0]
    assert verifying.split(" FROM ")[1] == signing.split(" FROM ")[1]  # the same keys
    assert contract.VERIFYING_KEYS.signs is False and contract.SIGNING_KEYS.signs is True
    assert contract.VERIFYING_KEYS.rows is contract.verifying_key_rows


def rows_of(alg: str, activates_at: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new key as a SIGNING_KEYS row and as the VERIFYING_KEYS row of the same key."""
    kid, private, jwk = generate(alg)
    when = {"activates_at": activates_at or datetime.now(UTC) - timedelta(seconds=1), "retired_at": None}
    public_jwk = json.dumps(jwk) if jwk else None  # asyncpg hands jsonb over as text
    signing = {"kid": kid, "alg": alg, "private_pem": private, "public_jwk": public_jwk, **when}
    shared = private if alg == "HS256" else None
    return signing, {"kid": kid, "alg": alg, "public_jwk": public_jwk, "shared_secret": shared, **when}


@pytest.mark.parametrize("alg", ["RS256", "ES256", "HS256"])
def test_a_verification_key_verifies_what_the_signing_key_signs(alg: str) -> None:
    signing_row, verifying_row = rows_of(alg)
    signer, verifier = _load(signing_row), _load_public(verifying_row)  # type: ignore[arg-type]
    assert verifier.private is None and verifier.kid == signer.kid
    if alg != "HS256":
        assert isinstance(verifier.public, PUBLIC_TYPES) and not isinstance(verifier.public, PRIVATE_TYPES)
    token = sign_jwt(signer, {"sub": "42"}, "at+jwt")
    assert jwt.decode(token, verifier.public, algorithms=[alg]) == {"sub": "42"}
    with pytest.raises(VerifyingOnly):
        sign_jwt(verifier, {"sub": "42"}, "at+jwt")


def test_only_public_jwks_of_the_right_type_are_accepted() -> None:
    rsa_jwk, ec_jwk = (_as_dict(generate(alg)[2]) for alg in ("RS256", "ES256"))
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048)))
    p384 = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()))
    for alg, jwk in [("RS256", private), ("ES256", rsa_jwk), ("RS256", ec_jwk), ("ES256", p384), ("HS256", rsa_jwk)]:
        with pytest.raises((ValueError, jwt.InvalidKeyError)):
            public_key_from_jwk(alg, jwk)


class Table:
    """The rows a KeyTable would read, changed by the test as a rotation changes the table."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.reads = 0

    async def read(self, pool: Any, grace: timedelta) -> list[dict[str, Any]]:
        self.reads += 1
        return list(self.rows)

    async def exists(self, pool: Any, kid: str, grace: timedelta) -> bool:
        return any(r["kid"] == kid for r in self.rows)

    async def ensure(self, pool: Any, alg: str) -> None:
        raise AssertionError("a verifier never creates a key")


async def held_keys(store: KeyStore, kids: list[str]) -> list[Any]:
    keys = [await store.verification_key(kid) for kid in kids]
    assert all(k is not None for k in keys)
    return keys


async def test_a_verifying_store_holds_public_keys_only_and_follows_rotations() -> None:
    old_rs, old_rs_public = rows_of("RS256")
    es, es_public = rows_of("ES256")
    table = Table([old_rs_public, es_public])
    store = KeyStore(None, "RS256", timedelta(hours=1), KeyTable(False, table.read, table.exists, table.ensure))  # type: ignore[arg-type]
    await store.load()
    for key in await held_keys(store, [old_rs["kid"], es["kid"]]):
        assert key.private is None and isinstance(key.public, PUBLIC_TYPES)
    with pytest.raises(VerifyingOnly):
        await store.sign({"sub": "1"}, "at+jwt")
    with pytest.raises(VerifyingOnly):
        await store.signing_key()

    # A rotation: a new key (found by its unknown kid, no wait for the periodic reload) and the
    # old one retired; both keep verifying, both as public keys.
    new_rs, new_rs_public = rows_of("RS256", activates_at=datetime.now(UTC) + timedelta(seconds=30))
    table.rows = [{**old_rs_public, "retired_at": new_rs["activates_at"]}, es_public, new_rs_public]
    token = sign_jwt(_load(new_rs), {"sub": "7"}, "at+jwt")  # type: ignore[arg-type]
    key = await store.verification_key(new_rs["kid"])
    assert key is not None and key.private is None
    assert jwt.decode(token, key.public, algorithms=["RS256"]) == {"sub": "7"}
    old = await store.verification_key(old_rs["kid"])
    assert old is not None and old.retired_at == new_rs["activates_at"] and old.private is None
    assert {k["kid"] for k in (await store.jwks())["keys"]} == {old_rs["kid"], es["kid"], new_rs["kid"]}


async def test_the_signing_store_still_signs() -> None:
    signing, _ = rows_of("ES256")
    table = Table([signing])
    store = KeyStore(None, "ES256", timedelta(hours=1), KeyTable(True, table.read, table.exists, table.ensure))  # type: ignore[arg-type]
    token = await store.sign({"sub": "9"}, "at+jwt")
    key = await store.verification_key(signing["kid"])
    assert key is not None and isinstance(key.private, ec.EllipticCurvePrivateKey)
    assert jwt.decode(token, key.public, algorithms=["ES256"]) == {"sub": "9"}


def test_a_verifier_cannot_create_the_first_key() -> None:
    with pytest.raises(ValueError, match="SIGNING_KEYS"):
        setup_tokens(web.Application(), contract.VERIFYING_KEYS, create_first_key=True)
