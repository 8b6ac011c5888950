"""Responses of the authorization flow: redirects back to the client and error pages. All carry
``Cache-Control: no-store`` (codes, states and pages must not be cached)."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from libs.oauth.clients import Client
from libs.oauth.pages import render
from libs.oauth.vocabulary import NO_STORE
from libs.platform.lang import pick_lang


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


def lang_url(request: web.Request, query: dict[str, str] | None = None) -> str:
    """The header's language switch for a page whose query matters: this path with ``query`` (by
    default the current query) and ``lang`` set to the other language."""
    other = "en" if pick_lang(request) == "zh" else "zh"
    if query is None:
        return str(request.rel_url.update_query(lang=other))
    return request.rel_url.path + "?" + urlencode({**query, "lang": other})
