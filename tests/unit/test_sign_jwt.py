"""keys.sign_jwt makes standard compact JWS for every supported algorithm (checked with pyjwt)."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest

from libs.oauth.keys import ALGORITHMS, SigningKey, _as_dict, generate, sign_jwt


def _key(alg: str) -> SigningKey:
    kid, private, jwk = generate(alg)
    row = {
        "kid": kid,
        "alg": alg,
        "private_pem": private,
        "public_jwk": jwk,
        "activates_at": datetime.now(UTC),
        "retired_at": None,
    }
    from libs.oauth.keys import _load

    return _load(row)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_jwt_round_trips_with_pyjwt(alg: str) -> None:
    key = _key(alg)
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
