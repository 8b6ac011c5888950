"""Responses of the authorization flow: redirects back to the client and error pages. All carry
``Cache-Control: no-store`` (codes, states and pages must not be cached).

Its two error kinds (RFC 6749 4.1.2.1), raised by the checks and handlers and rendered by the
platform's error middleware (``ErrorResponse.render``):

- ``ErrorPage``: shown to the user, never sent to a client (the client or its redirect_uri is not
  trusted, or the browser's own request is wrong);
- ``ClientRedirectError``: a typed ``OAuthError`` (libs/oauth/errors.py) sent back to a trusted
  redirect_uri with ``state`` and ``iss`` (``redirect_error``, which also logs its ``detail``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web

from libs.oauth.clients import Client
from libs.oauth.errors import OAuthError
from libs.oauth.pages import render
from libs.oauth.vocabulary import NO_STORE
from libs.platform.errors import ErrorResponse
from libs.platform.lang import pick_lang
from libs.platform.web import SETTINGS

log = logging.getLogger("oauth.authz")


def with_query(uri: str, params: dict[str, str | None]) -> str:
    """``uri`` with ``params`` appended to its query (keeping any query it already has)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    if "?" not in uri:
        sep = "?"
    elif uri.endswith(("?", "&")):
        sep = ""
    else:
        sep = "&"
    return f"{uri}{sep}{query}"


def found(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, **NO_STORE})


def to_client(redirect_uri: str, issuer: str, state: str | None, **params: str | None) -> web.Response:
    """Redirect to the client's (validated) redirect_uri with ``params``, ``state`` and ``iss``
    (RFC 9207)."""
    return found(with_query(redirect_uri, {**params, "state": state, "iss": issuer}))


def redirect_error(request: web.Request, redirect_uri: str, state: str | None, error: OAuthError) -> web.Response:
    """``error`` sent back to the (trusted) redirect_uri: its RFC body as the query; ``detail`` logged only."""
    if error.detail:
        log.info("authorization refused", extra={"error": error.error, "detail": error.detail})
    return to_client(redirect_uri, request.app[SETTINGS].issuer, state, **error.body())


async def error_page(
    request: web.Request, status: int, message_key: str, *, back_app: Client | None = None, **kw: str
) -> web.Response:
    """The flow's error page: the message, a way back (to ``back_app``'s homepage when it has one,
    else home) and the request id to quote."""
    back = back_app if back_app is not None and back_app.homepage_url else None
    resp = await render(
        request,
        "error.html",
        status=status,
        message_key=message_key,
        message_args=kw,
        back_app=back,
        error_status=status,
    )
    resp.headers["Pragma"] = "no-cache"
    return resp


class ErrorPage(ErrorResponse):
    """An error for the user's browser: ``error.html`` with the strings key ``key`` (strings.py,
    zh and en) and its arguments; never redirected to a client."""

    def __init__(self, status: int, key: str, **message_args: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.message_args = message_args

    async def render(self, request: web.Request) -> web.StreamResponse:
        return await error_page(request, self.status, self.key, back_app=None, **self.message_args)


class ClientRedirectError(ErrorResponse):
    """``oauth`` (an ``OAuthError``) sent back to a trusted ``redirect_uri`` with ``state`` (None
    when the state itself was the problem and must not be echoed)."""

    def __init__(self, oauth: OAuthError, *, redirect_uri: str, state: str | None) -> None:
        super().__init__(str(oauth))
        self.oauth = oauth
        self.redirect_uri = redirect_uri
        self.state = state

    async def render(self, request: web.Request) -> web.StreamResponse:
        return redirect_error(request, self.redirect_uri, self.state, self.oauth)


def lang_url(request: web.Request, query: dict[str, str] | None = None) -> str:
    """The header's language switch for a page whose query matters: this path with ``query`` (by
    default the current query) and ``lang`` set to the other language."""
    other = "en" if pick_lang(request) == "zh" else "zh"
    if query is None:
        return str(request.rel_url.update_query(lang=other))
    return request.rel_url.path + "?" + urlencode({**query, "lang": other})
