"""The OAuth error: RFC 6749 section 5.2 JSON, rendered by the platform's error middleware through
``ErrorResponse.response`` (libs/platform/errors.py)."""

from __future__ import annotations

from aiohttp import web

from libs.platform.errors import ErrorResponse
from libs.platform.responses import json_response


class OAuthError(ErrorResponse):
    """An RFC 6749 error: ``{"error", "error_description"}`` (section 5.2 and 4.1.2.1).

    ``redirectable`` tells the authorize endpoint whether the error may go back to the client's
    redirect_uri (only once client and redirect_uri are known to be valid, RFC 6749 4.1.2.1).
    ``www_authenticate`` is the value of an RFC 6750 / RFC 6749 ``WWW-Authenticate`` header, if any.
    """

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        status: int = 400,
        redirectable: bool = True,
        www_authenticate: str | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.redirectable = redirectable
        self.www_authenticate = www_authenticate

    def body(self) -> dict[str, str]:
        out = {"error": self.error}
        if self.description:
            out["error_description"] = self.description
        return out

    def response(self) -> web.Response:
        headers = {"Cache-Control": "no-store"}  # RFC 6749 5.1/5.2
        if self.www_authenticate:
            headers["WWW-Authenticate"] = self.www_authenticate
        return json_response(self.body(), self.status, headers)
