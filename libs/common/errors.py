"""The two error types: one per protocol. Handlers raise them; ``web.error_middleware`` renders them."""

from __future__ import annotations


class OAuthError(Exception):
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


class ApiError(Exception):
    """A developer-API error, rendered as the guide's envelope ``{"success": false, "message", "data"}``."""

    def __init__(self, status: int, message: str, *, www_authenticate: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.www_authenticate = www_authenticate

    def body(self) -> dict[str, object]:
        return {"success": False, "message": self.message, "data": None}


class PageError(Exception):
    """An error for a browser: rendered as a readable HTML page."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail


class DependencyUnavailable(Exception):
    """PostgreSQL, Redis or RabbitMQ did not answer in time: the request may succeed if retried.

    Rendered as 503 with ``Retry-After`` in the path's style (``web.error_middleware``): RFC 6749
    ``temporarily_unavailable`` on OAuth endpoints, the envelope on the developer API, a page for
    browsers. The driver errors that mean the same are mapped there too (``DEPENDENCY_ERRORS``)."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail
