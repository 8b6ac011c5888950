"""``POST /api/oauth2/token`` (RFC 6749 3.2, 4.1.3, 5.1, 5.2, 6): parse the form, dispatch on
``grant_type``, authenticate the client, run the grant, render the response.

The handler stays thin; the rules live in ``client_auth`` and ``grants/*``. Errors are
``OAuthError``s, rendered by the shared error middleware as RFC 6749 5.2 bodies with
``Cache-Control: no-store``.
"""

from __future__ import annotations

from aiohttp import web

from libs.oauth.access_tokens import KEYS
from libs.oauth.errors import UnsupportedGrantType
from libs.oauth.metrics import TOKENS_ISSUED
from libs.oauth.vocabulary import NO_STORE
from libs.platform.web import PG, REDIS, SETTINGS, json_response

from .client_auth import authenticate
from .form import read_form, required
from .grants import GRANTS
from .id_tokens import ID_KEYS
from .issuance import Deps

__all__ = ["GRANTS", "add_routes"]
PARAMETERS = frozenset(
    {
        "grant_type",
        "client_id",
        "client_secret",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "device_code",
    }
)


def deps_of(app: web.Application) -> Deps:
    return Deps(pool=app[PG], redis=app[REDIS], keys=app[KEYS], settings=app[SETTINGS], id_keys=app.get(ID_KEYS))


async def handle_token(request: web.Request) -> web.Response:
    form = await read_form(request, PARAMETERS)
    grant_type = required(form, "grant_type")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantType(f"Supported grant types: {', '.join(GRANTS)}")
    client = await authenticate(request, form)
    body = await grant.issue(deps_of(request.app), client, grant.validate(client, form))
    TOKENS_ISSUED.labels(grant_type).inc()
    return json_response(body, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/oauth2/token", handle_token)
