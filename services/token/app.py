"""The token service: token endpoint, refresh tokens, revocation, introspection, signing keys, JWKS."""

from __future__ import annotations

from aiohttp import web

from libs.common.config import Settings
from libs.common.web import create_app


def build(settings: Settings) -> web.Application:
    settings.pepper_bytes  # noqa: B018 - fail at start, not on the first request, without a pepper
    return create_app("token", settings)
