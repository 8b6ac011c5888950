"""The typed OAuth errors (libs/oauth/errors.py): each class renders its RFC body, status and
``WWW-Authenticate`` (RFC 6749 5.2, RFC 6750 3.1, OIDC Core 3.1.2.6, RFC 8628 3.5), and its
log-only ``detail`` never reaches the response."""

from __future__ import annotations

import orjson
import pytest

from libs.oauth import errors as E

SECRET_DETAIL = "client_id 'x' looked up; kid k-1 unknown; do-not-leak-7f3a"

# class, constructor args, code, status, WWW-Authenticate (None: no header)
CASES: list[tuple[type[E.OAuthError], tuple[str, ...], str, int, str | None]] = [
    (E.InvalidRequest, (), "invalid_request", 400, None),
    (E.InvalidClient, (), "invalid_client", 401, None),
    (E.InvalidGrant, (), "invalid_grant", 400, None),
    (E.UnauthorizedClient, (), "unauthorized_client", 400, None),
    (E.UnsupportedGrantType, (), "unsupported_grant_type", 400, None),
    (E.InvalidScope, (), "invalid_scope", 400, None),
    (E.AccessDenied, (), "access_denied", 400, None),
    (E.UnsupportedResponseType, (), "unsupported_response_type", 400, None),
    (E.ServerError, (), "server_error", 500, None),
    (E.TemporarilyUnavailable, (), "temporarily_unavailable", 503, None),
    (E.LoginRequired, (), "login_required", 400, None),
    (E.ConsentRequired, (), "consent_required", 400, None),
    (E.InteractionRequired, (), "interaction_required", 400, None),
    (E.MissingToken, (), "invalid_request", 401, 'Bearer realm="oauth"'),
    (E.InvalidBearerRequest, (), "invalid_request", 400, 'Bearer realm="oauth", error="invalid_request"'),
    (
        E.InvalidToken,
        (),
        "invalid_token",
        401,
        'Bearer realm="oauth", error="invalid_token", error_description="The access token is invalid"',
    ),
    (
        E.InsufficientScope,
        ("quota:write",),
        "insufficient_scope",
        403,
        'Bearer realm="oauth", error="insufficient_scope", scope="quota:write"',
    ),
    (E.AuthorizationPending, (), "authorization_pending", 400, None),
    (E.SlowDown, (), "slow_down", 400, None),
    (E.ExpiredToken, (), "expired_token", 400, None),
    (E.SpendLimitExceeded, (), "spend_limit_exceeded", 402, None),
    (E.InsufficientBalance, (), "insufficient_balance", 402, None),
]


def test_every_class_is_in_the_table() -> None:
    assert {c[0] for c in CASES} == set(E.ERRORS)


@pytest.mark.parametrize(("cls", "args", "code", "status", "challenge"), CASES, ids=[c[0].__name__ for c in CASES])
def test_renders_rfc_body_status_and_challenge(
    cls: type[E.OAuthError], args: tuple[str, ...], code: str, status: int, challenge: str | None
) -> None:
    err = cls(*args, detail=SECRET_DETAIL)  # type: ignore[call-arg]
    resp = err.response()
    assert resp.status == status
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers.get("WWW-Authenticate") == challenge
    assert resp.body is not None
    body = orjson.loads(bytes(resp.body))  # type: ignore[arg-type]
    assert body["error"] == code
    assert body["error_description"]  # a default, client-safe description
    assert set(body) == {"error", "error_description"}
    # detail is for the log only
    assert err.log_detail() == SECRET_DETAIL
    assert "do-not-leak" not in bytes(resp.body).decode()  # type: ignore[arg-type]
    assert "do-not-leak" not in str(err.body())
    assert "do-not-leak" not in str(err)


def test_description_overrides_the_default_and_may_be_empty() -> None:
    assert E.InvalidGrant("The authorization code expired").body() == {
        "error": "invalid_grant",
        "error_description": "The authorization code expired",
    }
    assert E.InvalidGrant("").body() == {"error": "invalid_grant"}


@pytest.mark.parametrize(
    ("err", "challenge"),
    [
        (E.InvalidClient("Unknown client", via_basic=True), 'Basic realm="oauth"'),
        (E.InvalidClient("Unknown client", via_basic=False), None),
        (
            E.InvalidToken("The access token expired"),
            'Bearer realm="oauth", error="invalid_token", error_description="The access token expired"',
        ),
    ],
)
def test_challenges_follow_the_request(err: E.OAuthError, challenge: str | None) -> None:
    assert err.response().headers.get("WWW-Authenticate") == challenge


def test_status_may_be_overridden() -> None:
    assert E.InvalidRequest("The request body is larger than 10 bytes", status=413).response().status == 413


async def test_the_error_middleware_logs_detail_and_sends_only_the_body(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from libs.platform.web import error_middleware

    async def handler(request: web.Request) -> web.StreamResponse:
        raise E.InvalidGrant("The authorization code expired", detail=SECRET_DETAIL)

    request = make_mocked_request("POST", "/api/oauth2/token")
    with caplog.at_level("INFO", logger="oauth.web"):
        resp = await error_middleware(request, handler)
    assert resp.status == 400
    assert isinstance(resp, web.Response) and resp.body is not None
    assert orjson.loads(bytes(resp.body)) == {  # type: ignore[arg-type]
        "error": "invalid_grant",
        "error_description": "The authorization code expired",
    }
    logged = [r for r in caplog.records if getattr(r, "detail", None) == SECRET_DETAIL]
    assert len(logged) == 1 and logged[0].path == "/api/oauth2/token"  # type: ignore[attr-defined]
