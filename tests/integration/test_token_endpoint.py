"""POST /api/oauth2/token with grant_type=authorization_code, and GET /api/oauth2/jwks, through the
gateway against real Postgres and Redis (guide section "2. 令牌(Token)获取端点"; RFC 6749 4.1.3,
5.1, 5.2; RFC 7636; RFC 9700). Codes are inserted as authz stores them (tests/support/codes.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from urllib.parse import quote_plus

import aiohttp
import asyncpg
import jwt
import orjson
import pytest

from libs.oauth.access_tokens import AccessTokenVerifier
from libs.oauth.errors import OAuthError
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from tests.support.clock import expire_code
from tests.support.codes import (
    ClientApp,
    issue_code,
    make_client,
    make_verifier,
    pkce_pair,
    post_token,
    refresh_form,
)
from tests.support.stack import Stack

JSON_ERROR_KEYS = {"error", "error_description"}


@pytest.fixture
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


@pytest.fixture
async def public_app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings, method="none", redirect_uri="http://127.0.0.1:3000/callback")


@pytest.fixture
async def verifier(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[AccessTokenVerifier]:
    v, redis = make_verifier(db, settings)
    yield v
    await redis.aclose()


async def code_form(db, settings, app: ClientApp, **kw) -> dict[str, str]:
    code = await issue_code(
        db, settings, client_id=app.client_id, user_id=app.user_id, redirect_uri=app.redirect_uri, **kw
    )
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": app.redirect_uri,
        "client_id": app.client_id,
    }
    if app.client_secret:
        form["client_secret"] = app.client_secret
    return form


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def assert_error(status: int, headers: dict[str, str], body: dict, want_status: int, error: str) -> None:
    assert (status, body.get("error")) == (want_status, error), body
    assert set(body) <= JSON_ERROR_KEYS and body.get("error_description")
    assert headers.get("Cache-Control") == "no-store"
    assert headers.get("Content-Type", "").startswith("application/json")


# --- success -------------------------------------------------------------------------------------
async def test_exchange_with_client_secret_post(stack: Stack, http, db, settings, app, verifier) -> None:
    form = await code_form(db, settings, app)
    status, headers, body = await post_token(http, stack.base, form)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 7200 == settings.access_token_ttl_seconds
    assert body["scope"] == "profile balance"

    # The access token: an RS256 JWT (RFC 9068) that the shared verifier accepts.
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"]
    token = await verifier.verify(body["access_token"])
    claims = token.claims
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.resource_audience
    assert claims["sub"] == str(app.user_id) and token.user_id == app.user_id
    assert claims["client_id"] == app.client_id
    assert claims["scope"] == "profile balance"
    assert claims["exp"] - claims["iat"] == 7200
    assert len(claims["jti"]) >= 32
    family = claims["fam"]

    # Its kid is published in the JWKS.
    async with http.get(f"{stack.base}/api/oauth2/jwks") as r:
        jwks = await r.json()
        assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=300"
    published = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in published
    assert published[header["kid"]]["kty"] == "RSA" and "d" not in published[header["kid"]]

    # The refresh token: refresh_<43 url-safe chars>, stored only as its keyed hash.
    refresh = body["refresh_token"]
    assert refresh.startswith("refresh_") and len(refresh) == len("refresh_") + 43
    rows = await db.fetch("SELECT * FROM refresh_tokens WHERE family_id = $1::uuid", family)
    assert len(rows) == 1
    expected = hmac.new(settings.pepper_bytes, refresh.encode(), hashlib.sha256).digest()
    assert bytes(rows[0]["token_hash"]) == expected
    assert not any(refresh in str(v) for v in dict(rows[0]).values())
    ttl = (rows[0]["expires_at"] - rows[0]["created_at"]).total_seconds()
    assert abs(ttl - settings.refresh_token_ttl_seconds) < 5

    # The code is consumed and linked to the family, which records the grant.
    code_row = await db.fetchrow(
        "SELECT used_at, family_id FROM authorization_codes WHERE code_hash = $1",
        hmac.new(settings.pepper_bytes, form["code"].encode(), hashlib.sha256).digest(),
    )
    assert code_row["used_at"] is not None and str(code_row["family_id"]) == family
    fam = await db.fetchrow("SELECT * FROM token_families WHERE id = $1::uuid", family)
    assert (fam["client_id"], fam["user_id"], fam["scope"], fam["revoked_at"]) == (
        app.client_id,
        app.user_id,
        "profile balance",
        None,
    )


async def test_exchange_with_client_secret_basic(stack: Stack, http, db, settings, app, verifier) -> None:
    form = await code_form(db, settings, app)
    del form["client_id"], form["client_secret"]
    status, _, body = await post_token(http, stack.base, form, headers=basic(app.client_id, app.client_secret))
    assert status == 200, body
    assert (await verifier.verify(body["access_token"])).client_id == app.client_id


async def test_basic_may_repeat_the_client_id_in_the_body(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    del form["client_secret"]
    status, _, body = await post_token(http, stack.base, form, headers=basic(app.client_id, app.client_secret))
    assert status == 200, body


async def test_form_with_charset_and_unknown_parameters_is_accepted(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app, scope="profile")
    form["unknown_extension"] = "ignored"  # RFC 6749 3.2: unrecognized parameters are ignored
    headers = {"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}
    status, _, body = await post_token(http, stack.base, form, headers=headers)
    assert status == 200, body
    assert body["scope"] == "profile"


async def test_public_client_with_pkce(stack: Stack, http, db, settings, public_app, verifier) -> None:
    code_verifier, challenge = pkce_pair()
    form = await code_form(db, settings, public_app, code_challenge=challenge)
    form["code_verifier"] = code_verifier
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body
    assert (await verifier.verify(body["access_token"])).client_id == public_app.client_id
    # The guide's SDK sends client_secret even when it is empty: an empty value counts as absent.
    form = await code_form(db, settings, public_app, code_challenge=challenge)
    form |= {"code_verifier": code_verifier, "client_secret": ""}
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


async def test_confidential_client_with_pkce(stack: Stack, http, db, settings, app) -> None:
    code_verifier, challenge = pkce_pair()
    form = await code_form(db, settings, app, code_challenge=challenge)
    form["code_verifier"] = code_verifier
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


async def test_jwks(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/api/oauth2/jwks") as r:
        body = await r.json()
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, max-age=300"
    assert body["keys"]
    for k in body["keys"]:
        assert {"kid", "kty", "alg", "use"} <= set(k)
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k)


# --- invalid_request -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda f: f.pop("grant_type"), "missing grant_type"),
        (lambda f: f.pop("code"), "missing code"),
        (lambda f: f.pop("redirect_uri"), "missing redirect_uri"),
        (lambda f: f.update(code=""), "empty code counts as missing"),
    ],
)
async def test_missing_parameters(stack: Stack, http, db, settings, app, mutate, why) -> None:
    form = await code_form(db, settings, app)
    mutate(form)
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_request")


@pytest.mark.parametrize("name", ["grant_type", "code", "redirect_uri", "client_id", "client_secret", "code_verifier"])
async def test_a_parameter_sent_twice(stack: Stack, http, db, settings, app, name) -> None:
    form = await code_form(db, settings, app)
    extra = [(name, form[name])] if name in form else [(name, "x" * 50), (name, "y" * 50)]
    pairs = list(form.items()) + extra
    status, headers, body = await post_token(http, stack.base, pairs)
    assert_error(status, headers, body, 400, "invalid_request")
    assert name in body["error_description"]
    # Nothing was consumed: the same code still works.
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded; charset=iso-8859-1",
        None,
    ],
)
async def test_only_form_encoding_is_accepted(stack: Stack, http, db, settings, app, content_type) -> None:
    form = await code_form(db, settings, app)
    headers = {"Content-Type": content_type} if content_type else {}
    raw = orjson.dumps(form) if content_type == "application/json" else "&".join(f"{k}={v}" for k, v in form.items())
    async with http.post(
        f"{stack.base}/api/oauth2/token", data=raw, headers=headers, skip_auto_headers=["Content-Type"]
    ) as r:
        body = await r.json(content_type=None)
        assert_error(r.status, dict(r.headers), body, 400, "invalid_request")
    # The code was not touched: the same request, form-encoded, succeeds.
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


async def test_both_basic_and_post_authentication(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    status, headers, body = await post_token(http, stack.base, form, headers=basic(app.client_id, app.client_secret))
    assert_error(status, headers, body, 400, "invalid_request")


async def test_basic_and_a_different_body_client_id(stack: Stack, http, db, settings, app) -> None:
    other = await make_client(db, settings)
    form = await code_form(db, settings, app)
    del form["client_secret"]
    form["client_id"] = other.client_id
    status, headers, body = await post_token(http, stack.base, form, headers=basic(app.client_id, app.client_secret))
    assert_error(status, headers, body, 400, "invalid_request")


async def test_get_is_not_allowed(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/api/oauth2/token?grant_type=authorization_code") as r:
        assert r.status == 405
        assert (await r.json())["error"]


# --- invalid_client ------------------------------------------------------------------------------
async def test_wrong_secret_post(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    form["client_secret"] = app.client_secret[:-1] + ("A" if app.client_secret[-1] != "A" else "B")
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 401, "invalid_client")
    assert "WWW-Authenticate" not in headers  # the client did not try HTTP Basic
    # A failed client authentication does not consume the code.
    form["client_secret"] = app.client_secret
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.pop("client_secret"),
        lambda f: f.update(client_secret=""),
        lambda f: f.pop("client_id"),
        lambda f: f.update(client_id="client_" + "0" * 32),
        lambda f: f.update(client_id="x" * 200),
    ],
    ids=["no secret", "empty secret", "no client_id", "unknown client", "oversized client_id"],
)
async def test_invalid_client_post(stack: Stack, http, db, settings, app, mutate) -> None:
    form = await code_form(db, settings, app)
    mutate(form)
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 401, "invalid_client")


@pytest.mark.parametrize(
    "authorization",
    [
        "wrong-secret",
        "no-colon",
        "not base64!",
        "unknown-client",
        "bearer",
    ],
)
async def test_invalid_client_basic_gets_a_basic_challenge(
    stack: Stack, http, db, settings, app, authorization
) -> None:
    form = await code_form(db, settings, app)
    del form["client_id"], form["client_secret"]
    value = {
        "wrong-secret": basic(app.client_id, "secret_wrong")["Authorization"],
        "no-colon": "Basic " + base64.b64encode(app.client_id.encode()).decode(),
        "not base64!": "Basic !!!not-base64***",
        "unknown-client": basic("client_nope", "secret_x")["Authorization"],
        "bearer": "Bearer abc",
    }[authorization]
    status, headers, body = await post_token(http, stack.base, form, headers={"Authorization": value})
    assert_error(status, headers, body, 401, "invalid_client")
    assert headers["WWW-Authenticate"] == 'Basic realm="oauth"'


async def test_public_client_must_not_send_a_secret(stack: Stack, http, db, settings, public_app) -> None:
    code_verifier, challenge = pkce_pair()
    form = await code_form(db, settings, public_app, code_challenge=challenge)
    form |= {"code_verifier": code_verifier, "client_secret": "secret_guess"}
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 401, "invalid_client")


# --- unsupported_grant_type ----------------------------------------------------------------------
@pytest.mark.parametrize("grant_type", ["password", "implicit", "CLIENT_CREDENTIALS", "AUTHORIZATION_CODE", "x" * 100])
async def test_unsupported_grant_type(stack: Stack, http, db, settings, app, grant_type) -> None:
    form = await code_form(db, settings, app)
    form["grant_type"] = grant_type
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "unsupported_grant_type")


# --- invalid_grant -------------------------------------------------------------------------------
async def test_unknown_code(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    form["code"] = "code_" + "A" * 43
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")


async def test_code_of_another_client_is_not_burned(stack: Stack, http, db, settings, app) -> None:
    other = await make_client(db, settings)
    form = await code_form(db, settings, app)
    stolen = form | {"client_id": other.client_id, "client_secret": other.client_secret}
    status, headers, body = await post_token(http, stack.base, stolen)
    assert_error(status, headers, body, 400, "invalid_grant")
    # The code stays usable by the client it was issued to.
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


async def test_redirect_uri_must_be_identical(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    for uri in (app.redirect_uri + "/", app.redirect_uri.upper(), app.redirect_uri + "?x=1", "https://evil.example/cb"):
        status, headers, body = await post_token(http, stack.base, form | {"redirect_uri": uri})
        assert_error(status, headers, body, 400, "invalid_grant")
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body


async def test_expired_code(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    await expire_code(db, settings, form["code"])
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")
    assert "expired" in body["error_description"]


async def test_disabled_user(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    await account_store.set_user_status(db, app.user_id, UserStatus.DISABLED)
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")


async def test_code_used_twice_revokes_what_it_issued(stack: Stack, http, db, settings, app, verifier) -> None:
    form = await code_form(db, settings, app)
    status, _, first = await post_token(http, stack.base, form)
    assert status == 200, first
    family = (await verifier.verify(first["access_token"])).family

    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")

    # The first use's access token is rejected everywhere, its refresh token is dead.
    with pytest.raises(OAuthError) as exc:
        await verifier.verify(first["access_token"])
    assert exc.value.error == "invalid_token"
    status, headers, body = await post_token(http, stack.base, refresh_form(app, first["refresh_token"]))
    assert_error(status, headers, body, 400, "invalid_grant")

    fam = await db.fetchrow("SELECT revoked_at, revoked_reason FROM token_families WHERE id = $1::uuid", family)
    assert fam["revoked_at"] is not None and fam["revoked_reason"] == "code_replay"
    events = await db.fetch(
        "SELECT data::text AS data FROM event_outbox WHERE type = 'token.revoked' AND data->>'family_id' = $1", family
    )
    assert len(events) == 1
    assert '"reason": "code_replay"' in events[0]["data"]

    # A third try is still refused and writes no second event.
    status, _, body = await post_token(http, stack.base, form)
    assert status == 400 and body["error"] == "invalid_grant"
    n = await db.fetchval(
        "SELECT count(*) FROM event_outbox WHERE type = 'token.revoked' AND data->>'family_id' = $1", family
    )
    assert n == 1


async def test_concurrent_exchanges_of_one_code(stack: Stack, http, db, settings, app, verifier) -> None:
    form = await code_form(db, settings, app)
    results = await asyncio.gather(*(post_token(http, stack.base, form) for _ in range(3)))
    ok = [body for status, _, body in results if status == 200]
    failed = [body for status, _, body in results if status != 200]
    assert len(ok) == 1 and len(failed) == 2
    assert all(b["error"] == "invalid_grant" for b in failed)
    # The losers were replays: the winner's tokens are revoked too.
    with pytest.raises(OAuthError):
        await verifier.verify(ok[0]["access_token"])


# --- PKCE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    ["missing verifier", "wrong verifier", "short verifier", "verifier with bad chars", "challenge as verifier"],
)
async def test_pkce_failures(stack: Stack, http, db, settings, public_app, case) -> None:
    code_verifier, challenge = pkce_pair()
    form = await code_form(db, settings, public_app, code_challenge=challenge)
    if case == "wrong verifier":
        form["code_verifier"] = pkce_pair()[0]
    elif case == "short verifier":
        form["code_verifier"] = code_verifier[:42]
    elif case == "verifier with bad chars":
        form["code_verifier"] = code_verifier[:-1] + "+"
    elif case == "challenge as verifier":
        form["code_verifier"] = challenge  # a "plain" downgrade
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")
    # A failed verification does not burn the code for its rightful holder.
    status, _, body = await post_token(http, stack.base, form | {"code_verifier": code_verifier})
    assert status == 200, body


async def test_verifier_without_challenge_is_refused(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    form["code_verifier"] = pkce_pair()[0]
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")


async def test_public_client_without_pkce_is_refused(stack: Stack, http, db, settings, public_app) -> None:
    form = await code_form(db, settings, public_app)
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "invalid_grant")


# --- hostile input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, want",
    [
        ("code", "x" * 5000, (400, "invalid_request")),
        ("redirect_uri", "https://a.example/" + "a" * 3000, (400, "invalid_request")),
        ("code", "' OR 1=1; DROP TABLE authorization_codes; --", (400, "invalid_grant")),
        ("code", "代码🙂\u202e", (400, "invalid_grant")),
        ("code", "abc\x00def", (400, "invalid_request")),
        ("code", "line\r\nbreak", (400, "invalid_request")),
        ("client_id", "client_' OR '1'='1", (401, "invalid_client")),
        ("client_id", "客户端🙂", (401, "invalid_client")),
        ("client_secret", "' OR ''='", (401, "invalid_client")),
        ("grant_type", "authorization_code\x00", (400, "invalid_request")),
        ("redirect_uri", "javascript:alert(1)", (400, "invalid_grant")),
    ],
)
async def test_hostile_values(stack: Stack, http, db, settings, app, field, value, want) -> None:
    form = await code_form(db, settings, app)
    form[field] = value
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, *want)


@pytest.mark.parametrize(
    "raw, want_status",
    [
        (b"grant_type=authorization_code&code=%ff%fe&redirect_uri=x", 400),  # not UTF-8
        (b"\xff\xfe\x00garbage", 400),
        ("&".join(f"p{i}=1" for i in range(100)).encode(), 400),  # too many fields
        (b"grant_type=authorization_code&pad=" + b"a" * 20000, 413),  # body too large
        (b"=&&&==&grant_type", 400),
    ],
)
async def test_hostile_bodies(stack: Stack, http, raw, want_status) -> None:
    status, headers, body = await post_token(http, stack.base, raw)
    assert_error(status, headers, body, want_status, "invalid_request")


async def test_oversized_basic_header(stack: Stack, http, db, settings, app) -> None:
    form = await code_form(db, settings, app)
    del form["client_id"], form["client_secret"]
    status, headers, body = await post_token(http, stack.base, form, headers=basic("c" * 5000, "s"))
    assert_error(status, headers, body, 401, "invalid_client")


async def test_no_store_on_every_error(stack: Stack, http) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{stack.base}/api/oauth2/token", data={"grant_type": "nope"}) as r:
            assert r.status == 400 and r.headers["Cache-Control"] == "no-store"
