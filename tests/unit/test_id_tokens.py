"""services/token/id_tokens.py and key_admin.py rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from libs.oauth.vocabulary import SCOPES
from libs.platform.config import Settings
from services.token import discovery
from services.token.id_tokens import (
    Authentication,
    id_token_algorithm,
    id_token_claims,
    sign_access_and_id_token,
    token_hash_claim,
)
from services.token.key_admin import _state, signing_algorithms
from tests.unit.test_sign_jwt import signing_key

SETTINGS = Settings(token_pepper="x" * 40, public_base_url="https://auth.example")


def test_at_hash_matches_the_oidc_core_example() -> None:
    # OpenID Connect Core 1.0, Appendix A.3 (RS256): access_token -> at_hash
    assert token_hash_claim("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y") == "77QmUPtjPfzWtF2AnpK9RQ"


def test_claims() -> None:
    auth = Authentication(auth_time=datetime(2026, 1, 1, tzinfo=UTC), nonce="n", email="a@example.com")
    claims = id_token_claims(SETTINGS, sub="7", client_id="client_x", scope="openid email", auth=auth, now=1000)
    assert claims == {
        "iss": "https://auth.example",
        "sub": "7",
        "aud": "client_x",
        "azp": "client_x",
        "iat": 1000,
        "exp": 1000 + SETTINGS.access_token_ttl_seconds,
        "auth_time": int(auth.auth_time.timestamp()),  # type: ignore[union-attr]
        "nonce": "n",
        "email": "a@example.com",
        "email_verified": False,
    }
    plain = id_token_claims(
        SETTINGS,
        sub="7",
        client_id="client_x",
        scope="openid profile",
        auth=Authentication(None, None, "a@example.com"),
        now=1000,
    )
    assert not {"nonce", "email", "email_verified", "auth_time", "at_hash"} & set(plain)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_the_id_token_signed_with_its_access_token_carries_its_at_hash(alg: str) -> None:
    key = signing_key(alg)
    claims = id_token_claims(
        SETTINGS, sub="7", client_id="client_x", scope="openid", auth=Authentication(None, "n", None), now=1000
    )
    access, id_token = sign_access_and_id_token(key, {"sub": "7", "jti": "j"}, key, claims)
    assert jwt.decode(access, key.public, algorithms=[alg]) == {"sub": "7", "jti": "j"}
    decoded = jwt.decode(id_token, key.public, algorithms=[alg], options={"verify_aud": False, "verify_exp": False})
    assert decoded == claims | {"at_hash": token_hash_claim(access)}
    assert jwt.get_unverified_header(id_token) == {"alg": alg, "kid": key.kid, "typ": "JWT"}


@pytest.mark.parametrize("alg, expected", [("RS256", "RS256"), ("ES256", "ES256"), ("HS256", "RS256")])
def test_id_tokens_are_never_hs256(alg: str, expected: str) -> None:
    settings = SETTINGS.model_copy(update={"jwt_algorithm": alg})
    assert id_token_algorithm(settings) == expected
    assert expected in signing_algorithms(settings)


def test_discovery_lists_what_the_authorize_endpoint_accepts() -> None:
    assert set(discovery.SCOPES_SUPPORTED) == set(SCOPES)


def test_key_states() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    window = timedelta(hours=2)

    def row(activates: int, retired: int | None) -> dict:
        return {
            "activates_at": now + timedelta(seconds=activates),
            "retired_at": None if retired is None else now + timedelta(seconds=retired),
        }

    assert _state(row(60, None), now, window) == "pending"
    assert _state(row(-60, None), now, window) == "active"
    assert _state(row(-60, 60), now, window) == "active"  # retires when the next key activates
    assert _state(row(-600, -60), now, window) == "retired"  # still verifies
    assert _state(row(-99999, -7201), now, window) == "expired"  # prunable
