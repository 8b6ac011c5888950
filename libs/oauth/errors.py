"""The OAuth errors: one class per RFC error code, rendered as RFC 6749 5.2 JSON by the platform's
error middleware through ``ErrorResponse.response`` (libs/platform/errors.py), or sent back to a
client's redirect_uri by the authorize endpoint (RFC 6749 4.1.2.1, services/authz/responses.py).

Each class carries its ``error`` code and default HTTP ``status``. An instance has:

- ``description``: client-safe text for ``error_description`` (RFC 6749 5.2: printable ASCII, no
  quote or backslash in practice); the class's ``default_description`` when omitted.
- ``detail``: log-only text (why exactly, which id): logged by the error middleware
  (``log_detail``), never sent to the client. Never put a secret, token or code in it.

Codes: RFC 6749 5.2 (token endpoint), 4.1.2.1 (authorization endpoint), RFC 6750 3.1 (bearer
resources, with ``WWW-Authenticate``), OpenID Connect Core 3.1.2.6 (``prompt=none``) and RFC 8628
3.5 (device authorization polling). RFC 7009 and RFC 7662 reuse the RFC 6749 codes.
"""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web

from libs.platform.errors import ErrorResponse
from libs.platform.responses import json_response

REALM = 'Bearer realm="oauth"'  # RFC 6750 3
BASIC_CHALLENGE = 'Basic realm="oauth"'  # RFC 6749 5.2 invalid_client via the Authorization header


def bearer_challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """An RFC 6750 3 ``WWW-Authenticate`` value: the realm, then the error attributes given."""
    parts = [REALM]
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)


class OAuthError(ErrorResponse):
    """An RFC 6749 error: ``{"error", "error_description"}``. Raise a subclass, never this base."""

    error: ClassVar[str] = "server_error"
    default_status: ClassVar[int] = 400
    default_description: ClassVar[str] = ""

    def __init__(
        self,
        description: str | None = None,
        *,
        detail: str = "",
        status: int | None = None,
        www_authenticate: str | None = None,
    ) -> None:
        self.description = self.default_description if description is None else description
        self.detail = detail
        self.status = self.default_status if status is None else status
        self.www_authenticate = www_authenticate
        super().__init__(f"{self.error}: {self.description}")

    def body(self) -> dict[str, str]:
        """The RFC 6749 5.2 body (also the query of a 4.1.2.1 redirect): never ``detail``."""
        out = {"error": self.error}
        if self.description:
            out["error_description"] = self.description
        return out

    def log_detail(self) -> str:
        return self.detail

    def response(self) -> web.Response:
        headers = {"Cache-Control": "no-store"}  # RFC 6749 5.1/5.2
        if self.www_authenticate:
            headers["WWW-Authenticate"] = self.www_authenticate
        return json_response(self.body(), self.status, headers)


# -- RFC 6749 5.2: the token endpoint (also revocation, RFC 7009 2.2.1, and introspection, RFC 7662 2.3)


class InvalidRequest(OAuthError):
    error = "invalid_request"
    default_description = "The request is missing a parameter or is otherwise malformed"


class InvalidClient(OAuthError):
    """401; ``WWW-Authenticate: Basic`` when the client tried the Authorization header (RFC 6749 5.2)."""

    error = "invalid_client"
    default_status = 401
    default_description = "Client authentication failed"

    def __init__(self, description: str | None = None, *, via_basic: bool = False, detail: str = "") -> None:
        super().__init__(description, detail=detail, www_authenticate=BASIC_CHALLENGE if via_basic else None)


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    default_description = "The authorization grant is invalid, expired or revoked"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    default_description = "This client may not use this grant type"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    default_description = "The grant type is not supported"


class InvalidScope(OAuthError):
    error = "invalid_scope"
    default_description = "The requested scope is invalid or unknown"


# -- RFC 6749 4.1.2.1: the authorization endpoint (sent to the redirect_uri)


class AccessDenied(OAuthError):
    """The user (or the server) denied the request; also RFC 8628 3.5 for a denied device code."""

    error = "access_denied"
    default_description = "The request was denied"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"
    default_description = "The response type is not supported"


class ServerError(OAuthError):
    error = "server_error"
    default_status = 500
    default_description = "The server could not complete the request"


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    default_status = 503
    default_description = "The service is temporarily unavailable"


# -- OpenID Connect Core 3.1.2.6: prompt=none could not be honoured


class LoginRequired(OAuthError):
    error = "login_required"
    default_description = "the user must log in"


class ConsentRequired(OAuthError):
    error = "consent_required"
    default_description = "the user has not authorized this app for these scopes"


class InteractionRequired(OAuthError):
    error = "interaction_required"
    default_description = "the user must interact with the authorization server"


# -- RFC 6750 3.1: protected resources (bearer tokens), always with WWW-Authenticate


class MissingToken(OAuthError):
    """No credentials at all: 401 with the bare challenge (RFC 6750 3.1: no error attribute then)."""

    error = "invalid_request"
    default_status = 401
    default_description = "Missing access token"

    def __init__(self, description: str | None = None, *, detail: str = "") -> None:
        super().__init__(description, detail=detail, www_authenticate=bearer_challenge())


class InvalidBearerRequest(OAuthError):
    """A malformed ``Authorization`` header: 400 ``invalid_request`` with the bearer challenge."""

    error = "invalid_request"
    default_description = "Malformed Authorization header; expected 'Bearer <access token>'"

    def __init__(self, description: str | None = None, *, detail: str = "") -> None:
        super().__init__(description, detail=detail, www_authenticate=bearer_challenge("invalid_request"))


class InvalidToken(OAuthError):
    error = "invalid_token"
    default_status = 401
    default_description = "The access token is invalid"

    def __init__(self, description: str | None = None, *, detail: str = "") -> None:
        super().__init__(description, detail=detail)
        self.www_authenticate = bearer_challenge("invalid_token", self.description)


class InsufficientScope(OAuthError):
    """403 naming the scope the resource needs (RFC 6750 3.1)."""

    error = "insufficient_scope"
    default_status = 403

    def __init__(self, scope: str, description: str | None = None, *, detail: str = "") -> None:
        description = f"The access token needs the scope: {scope}" if description is None else description
        super().__init__(
            description, detail=detail, www_authenticate=bearer_challenge("insufficient_scope", scope=scope)
        )
        self.scope = scope


# -- RFC 8628 3.5: device authorization polling at the token endpoint


class AuthorizationPending(OAuthError):
    error = "authorization_pending"
    default_description = "The user has not yet completed the authorization"


class SlowDown(OAuthError):
    error = "slow_down"
    default_description = "Polling too fast: increase the interval by 5 seconds"


class ExpiredToken(OAuthError):
    error = "expired_token"
    default_description = "The device code expired; start a new device authorization"


# -- docs/spending.md: an app's charge refused (402 Payment Required, RFC 9110 15.5.3)


class SpendLimitExceeded(OAuthError):
    error = "spend_limit_exceeded"
    default_status = 402
    default_description = "The charge would pass the spending limit the user chose for this period"


class InsufficientBalance(OAuthError):
    error = "insufficient_balance"
    default_status = 402
    default_description = "The user's balance does not cover the charge"


# Every concrete class, for documentation and tests.
ERRORS: tuple[type[OAuthError], ...] = (
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    ServerError,
    TemporarilyUnavailable,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    MissingToken,
    InvalidBearerRequest,
    InvalidToken,
    InsufficientScope,
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    SpendLimitExceeded,
    InsufficientBalance,
)
