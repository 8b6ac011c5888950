"""Errors that render themselves: ``web.error_middleware`` answers any ``ErrorResponse`` with its
own ``response()``, so upper layers (libs/oauth's ``OAuthError``) add error forms without the
platform knowing them. ``ApiError`` (the developer-API envelope) and ``PageError`` (a page for a
browser) are the platform's own; ``DependencyUnavailable`` is a 503 in the path's style."""

from __future__ import annotations

from aiohttp import web

from .responses import error_page, json_response


class ErrorResponse(Exception):
    """An error raised by a handler that knows the HTTP response it is answered with.

    ``log_detail()`` is text for the log only (why exactly), logged by the error middleware and
    never sent; ``render(request)`` is the response, by default ``response()`` (a page in the
    request's language overrides ``render``)."""

    def response(self) -> web.Response:
        raise NotImplementedError

    async def render(self, request: web.Request) -> web.StreamResponse:
        return self.response()

    def log_detail(self) -> str:
        return ""


class ApiError(ErrorResponse):
    """A developer-API error, rendered as the guide's envelope ``{"success": false, "message", "data"}``."""

    def __init__(self, status: int, message: str, *, www_authenticate: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.www_authenticate = www_authenticate

    def body(self) -> dict[str, object]:
        return {"success": False, "message": self.message, "data": None}

    def response(self) -> web.Response:
        headers = {"WWW-Authenticate": self.www_authenticate} if self.www_authenticate else None
        return json_response(self.body(), self.status, headers)


class PageError(ErrorResponse):
    """An error for a browser: rendered as a readable HTML page."""

    def __init__(self, status: int, title: str | dict[str, str], detail: str | dict[str, str] = "") -> None:
        super().__init__(title if isinstance(title, str) else title.get("en", ""))
        self.status = status
        self.title = title
        self.detail = detail

    def response(self) -> web.Response:
        return error_page(self.status, self.title, self.detail)


class DependencyUnavailable(Exception):
    """PostgreSQL, Redis or RabbitMQ did not answer in time: the request may succeed if retried.

    Rendered as 503 with ``Retry-After`` in the path's style (``web.error_middleware``): RFC 6749
    ``temporarily_unavailable`` on OAuth endpoints, the envelope on the developer API, a page for
    browsers. The driver errors that mean the same are mapped there too (``DEPENDENCY_ERRORS``)."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail
