"""``GET /api/oauth2/jwks``: the public signing keys (RFC 7517), published before they sign and
kept while tokens they signed can still be valid (libs/oauth/keys.py)."""

from __future__ import annotations

from aiohttp import web

from libs.oauth.access_tokens import KEYS
from libs.platform.web import json_response

CACHE = {"Cache-Control": "public, max-age=300"}


async def handle_jwks(request: web.Request) -> web.Response:
    return json_response(await request.app[KEYS].jwks(), headers=CACHE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/oauth2/jwks", handle_jwks)
