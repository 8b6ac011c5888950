"""keys.sign_jwt makes standard compact JWS for every supported algorithm (checked with pyjwt and
with the published JWK); keys.SigningPool hands jobs to its threads and their outcome back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import jwt
import pytest

from libs.oauth.keys import ALGORITHMS, SigningKey, SigningPool, _as_dict, _load, generate, sign_jwt


def signing_key(alg: str) -> SigningKey:
    kid, private, jwk = generate(alg)
    row = {
        "kid": kid,
        "alg": alg,
        "private_pem": private,
        "public_jwk": jwk,
        "activates_at": datetime.now(UTC),
        "retired_at": None,
    }
    return _load(row)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_jwt_round_trips_with_pyjwt(alg: str) -> None:
    key = signing_key(alg)
    claims = {"sub": "42", "scope": "profile balance", "name": "用户", "n": 1}
    token = sign_jwt(key, claims, "at+jwt")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    assert jwt.decode(token, key.public, algorithms=[alg]) == claims
    # a changed payload no longer verifies
    head, _, rest = token.partition(".")
    forged = head + "." + jwt.utils.base64url_encode(b'{"sub":"1"}').decode() + "." + rest.split(".")[1]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key.public, algorithms=[alg])


def test_public_jwk_of_asymmetric_keys_only() -> None:
    assert generate("HS256")[2] is None
    for alg in ("RS256", "ES256"):
        jwk = _as_dict(generate(alg)[2])
        assert jwk["alg"] == alg and jwk["use"] == "sig" and "d" not in jwk and "key_ops" not in jwk


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_sign_jwt_verifies_with_the_published_jwk(alg: str) -> None:
    kid, private, jwk = generate(alg)
    key = _load({"kid": kid, "alg": alg, "private_pem": private, "activates_at": None, "retired_at": None})  # type: ignore[arg-type]
    token = sign_jwt(key, {"sub": "42"}, "JWT")
    published = jwt.PyJWKSet.from_dict({"keys": [_as_dict(jwk)]})[kid]
    assert jwt.decode(token, published.key, algorithms=[alg]) == {"sub": "42"}
    if alg == "ES256":  # RFC 7518 3.4: R || S, 32 octets each, not DER
        assert len(jwt.utils.base64url_decode(token.rsplit(".", 1)[1])) == 64


async def test_the_signing_pool_runs_jobs_and_hands_back_errors() -> None:
    pool = SigningPool(2)
    try:
        assert await asyncio.gather(*(pool.run(lambda i=i: i * i) for i in range(20))) == [i * i for i in range(20)]

        def broken() -> None:
            raise ValueError("no key")

        with pytest.raises(ValueError, match="no key"):
            await pool.run(broken)
    finally:
        pool.shutdown()


async def test_a_shut_down_pool_cancels_what_it_did_not_start() -> None:
    pool = SigningPool(0)  # no thread: nothing queued ever starts
    future = pool.run(lambda: 1)
    pool.shutdown()
    assert future.cancelled()
