"""The token service: token endpoint, refresh tokens, revocation, introspection, signing keys, JWKS."""

from __future__ import annotations

from aiohttp import web

from libs.common.access_tokens import setup_tokens
from libs.common.config import Settings
from libs.common.web import create_app

from . import jwks, token_endpoint


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    app = create_app("token", settings)
    setup_tokens(app, create_first_key=True)
    token_endpoint.add_routes(app)
    jwks.add_routes(app)
    return app
